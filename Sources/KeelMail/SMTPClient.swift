import Foundation
import KeelCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import Synchronization

/// What the server said when it took the message.
public struct MailDelivery: Codable, Sendable, Equatable {
    public var messageID: String
    public var accepted: [String]
    public var rejected: [String]
    /// The server's reply to the end of the data (often its queue id).
    public var response: String

    enum CodingKeys: String, CodingKey {
        case accepted, rejected, response
        case messageID = "message_id"
    }
}

public struct SMTPError: Error, CustomStringConvertible, Sendable {
    /// The server's reply code, when it gave one.
    public var code: Int?
    public var message: String
    /// A 5xx answer or a setup that cannot work (no STARTTLS offered, login refused): sending again will not help.
    public var isPermanent: Bool

    public var description: String { code.map { "\($0) \(message)" } ?? message }
}

/// A small SMTP submission client (RFC 5321 with STARTTLS, AUTH PLAIN/LOGIN) on SwiftNIO: one connection per message.
/// Make one per mail server and keep it: the TLS context (trust roots read from disk) is built once.
public final class SMTPClient: Sendable {
    public let settings: MailSettings
    let logger = Logger(label: "keel.mail")
    private let tlsContext = Mutex<NIOSSLContext?>(nil)

    public init(settings: MailSettings) {
        self.settings = settings
    }

    public func send(_ message: MailMessage) async throws -> MailDelivery {
        let problems = message.problems()
        guard problems.isEmpty else { throw SMTPError(message: problems.joined(separator: "; "), isPermanent: true) }
        guard let host = settings.host else {
            throw SMTPError(message: "no mail server is configured (smtp_host)", isPermanent: true)
        }
        if settings.security == .none, settings.username != nil {
            throw SMTPError(message: "smtp_tls is none: Keel does not send credentials unencrypted; use starttls or tls", isPermanent: true)
        }
        let (port, timeout) = (settings.port, settings.timeoutSeconds)
        return try await withDeadline(.seconds(timeout),
                                      orThrow: SMTPError(message: "no answer from \(host):\(port) within \(timeout) s", isPermanent: false)) {
            try await self.converse(host: host, message: message)
        }
    }

    private func tlsHandler(host: String) throws -> NIOSSLClientHandler {
        let context = try tlsContext.withLock { cached in
            if let cached { return cached }
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let caFile = settings.caFile { configuration.trustRoots = .file(caFile) }
            let context = try NIOSSLContext(configuration: configuration)
            cached = context
            return context
        }
        // SNI only takes names; certificate checks apply to IP addresses too.
        let isAddress = host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" }
        return try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host)
    }

    /// Connects, greets, secures and signs in as a delivery would, then says goodbye: what `keel health` checks.
    public func check() async throws -> String {
        guard let host = settings.host else { throw SMTPError(message: "no mail server is configured (smtp_host)", isPermanent: true) }
        let (port, timeout) = (settings.port, settings.timeoutSeconds)
        return try await withDeadline(.seconds(timeout),
                                      orThrow: SMTPError(message: "no answer from \(host):\(port) within \(timeout) s", isPermanent: false)) {
            try await self.withSession(host: host) { session in
                try? await session.command("QUIT", expect: 221)
                return "\(host):\(port) accepts mail (\(self.settings.security.rawValue))"
            }
        }
    }

    /// A session that has greeted the server, switched to TLS as configured and signed in, for `body`.
    private func withSession<Result: Sendable>(host: String, _ body: @Sendable (inout SMTPSession) async throws -> Result) async throws -> Result {
        let implicitTLS = settings.security == .tls
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .connect(host: host, port: settings.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if implicitTLS { try channel.pipeline.syncOperations.addHandler(try self.tlsHandler(host: host)) }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw SMTPError(message: "cannot connect to \(host):\(settings.port): \(error)", isPermanent: false)
        }
        return try await channel.executeThenClose { inbound, outbound in
            var session = SMTPSession(lines: inbound.makeAsyncIterator(), outbound: outbound)
            try await session.expect(220, after: nil)
            var extensions = try await session.hello()
            if settings.security == .starttls {
                guard extensions.contains(where: { $0.uppercased() == "STARTTLS" }) else {
                    throw SMTPError(message: "\(host) does not offer STARTTLS; refusing to send in clear (set smtp_tls)", isPermanent: true)
                }
                try await session.command("STARTTLS", expect: 220)
                try await channel.channel.pipeline.addHandler(try tlsHandler(host: host), position: .first).get()
                extensions = try await session.hello()
            }
            if let username = settings.username {
                try await session.authenticate(username: username, password: settings.password?.value ?? "", extensions: extensions)
            }
            return try await body(&session)
        }
    }

    private func converse(host: String, message: MailMessage) async throws -> MailDelivery {
        try await withSession(host: host) { session in
            let fromDomain = message.from.split(separator: "@").last.map(String.init) ?? "keel"
            let messageID = "<\(KeelID.make(prefix: "mail"))@\(fromDomain)>"
            try await session.command("MAIL FROM:<\(message.from)>", expect: 250)
            var accepted: [String] = []
            var rejected: [String] = []
            var lastRefusal: SMTPError?
            for recipient in message.recipients {
                do {
                    try await session.command("RCPT TO:<\(recipient)>", expect: 250, 251)
                    accepted.append(recipient)
                } catch let error as SMTPError where error.code != nil {
                    rejected.append(recipient)
                    lastRefusal = error
                }
            }
            guard !accepted.isEmpty else { throw lastRefusal ?? SMTPError(message: "no recipient accepted", isPermanent: true) }
            try await session.command("DATA", expect: 354)
            let body = message.rendered(messageID: messageID, date: Date(), boundary: "keel-" + KeelID.make(prefix: "part"))
            let response = try await session.sendData(body)
            try? await session.command("QUIT", expect: 221)
            logger.info("mail sent", metadata: ["message_id": .string(messageID), "recipients": "\(accepted.count)"])
            return MailDelivery(messageID: messageID, accepted: accepted, rejected: rejected, response: response)
        }
    }
}

/// The command/reply exchange: replies are one or more `NNN-text` lines ending with `NNN text`.
struct SMTPSession {
    var lines: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    struct Reply {
        var code: Int
        var lines: [String]
        var text: String { lines.joined(separator: " ") }
    }

    mutating func reply() async throws -> Reply {
        var collected: [String] = []
        while true {
            guard var buffer = try await lines.next() else {
                throw SMTPError(message: "the server closed the connection", isPermanent: false)
            }
            let line = buffer.readString(length: buffer.readableBytes)?.trimmingCharacters(in: .init(charactersIn: "\r")) ?? ""
            guard line.utf8.count >= 3, let code = Int(line.prefix(3)) else {
                throw SMTPError(message: "not an SMTP reply: \(line.prefix(200))", isPermanent: false)
            }
            collected.append(String(line.dropFirst(4)))
            if line.count == 3 || line[line.index(line.startIndex, offsetBy: 3)] == " " { return Reply(code: code, lines: collected) }
        }
    }

    /// Reads a reply and requires one of `codes`: 5xx answers are permanent failures, anything else transient.
    @discardableResult
    mutating func expect(_ codes: Int..., after command: String?) async throws -> Reply {
        let reply = try await reply()
        guard codes.contains(reply.code) else {
            let what = command.map { "\($0.split(separator: " ").first ?? "") refused" } ?? "greeting"
            throw SMTPError(code: reply.code, message: "\(what): \(reply.text)", isPermanent: reply.code >= 500)
        }
        return reply
    }

    @discardableResult
    mutating func command(_ line: String, expect codes: Int...) async throws -> Reply {
        try await outbound.write(ByteBuffer(string: line + "\r\n"))
        let reply = try await reply()
        guard codes.contains(reply.code) else {
            // Never echo what follows AUTH: credentials.
            let verb = line.hasPrefix("AUTH") || reply.code == 535 ? "AUTH" : String(line.prefix(while: { $0 != ":" && $0 != " " }))
            throw SMTPError(code: reply.code, message: "\(verb) refused: \(reply.text)", isPermanent: reply.code >= 500)
        }
        return reply
    }

    /// `EHLO`, returning the extension lines the server offers (`STARTTLS`, `AUTH PLAIN LOGIN`, `SIZE 10240000`).
    mutating func hello() async throws -> [String] {
        Array(try await command("EHLO \(Self.clientName)", expect: 250).lines.dropFirst())
    }

    mutating func authenticate(username: String, password: String, extensions: [String]) async throws {
        let mechanisms = Set(extensions.map { $0.uppercased().split(separator: " ").map(String.init) }.filter { $0.first == "AUTH" }.flatMap { $0.dropFirst() })
        if mechanisms.contains("PLAIN") {
            let token = Data("\u{0}\(username)\u{0}\(password)".utf8).base64EncodedString()
            try await command("AUTH PLAIN \(token)", expect: 235)
        } else if mechanisms.contains("LOGIN") {
            try await command("AUTH LOGIN", expect: 334)
            try await command(Data(username.utf8).base64EncodedString(), expect: 334)
            try await command(Data(password.utf8).base64EncodedString(), expect: 235)
        } else {
            throw SMTPError(message: "the server offers no login Keel supports (PLAIN, LOGIN); it offers \(mechanisms.sorted())", isPermanent: true)
        }
    }

    /// Sends the message after `DATA`, dot-stuffed and ended with `<CRLF>.<CRLF>`; returns the server's reply.
    mutating func sendData(_ text: String) async throws -> String {
        let stuffed = text.components(separatedBy: "\r\n").map { $0.hasPrefix(".") ? "." + $0 : $0 }.joined(separator: "\r\n")
        try await outbound.write(ByteBuffer(string: stuffed + ".\r\n"))
        let reply = try await reply()
        guard reply.code == 250 else {
            throw SMTPError(code: reply.code, message: "message refused: \(reply.text)", isPermanent: reply.code >= 500)
        }
        return "\(reply.code) \(reply.text)"
    }

    static var clientName: String {
        let name = ProcessInfo.processInfo.hostName
        return name.isEmpty || name.contains(where: \.isWhitespace) ? "keel.localdomain" : name
    }
}
