import Foundation
import KeelCore
@testable import KeelMail
import KeelTestSupport
import Testing

/// The client against a real SMTP server (aiosmtpd) on loopback, in each TLS mode.
@Suite struct SMTPClientTests {
    func withServer(_ mode: String, credentials: String? = nil, _ body: (SMTPTestServer) async throws -> Void) async throws {
        try await SMTPTestServer.with(mode, credentials: credentials, body)
    }

    func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(25))
        }
        return false
    }

    let message = MailMessage(from: "reports@keel.example", to: ["ana@example.com", "bo@refused.example"], cc: ["cy@example.com"],
                              bcc: ["audit@example.com"], replyTo: "help@keel.example", subject: "Bericht für März ✓",
                              text: "Hello Ana,\n.\nThe report is ready.", html: "<p>Hello <b>Ana</b></p>", headers: ["X-Campaign": "nightly"])

    @Test func startTLSThenLoginThenDeliver() async throws {
        try await withServer("starttls", credentials: "mailer:s3cret-pass") { server in
            var settings = server.settings
            settings.username = "mailer"
            settings.password = Secret("s3cret-pass")
            let delivery = try await SMTPClient(settings: settings).send(message)
            #expect(delivery.accepted == ["ana@example.com", "cy@example.com", "audit@example.com"])
            #expect(delivery.rejected == ["bo@refused.example"])
            #expect(delivery.response.contains("queued as K33L"))
            #expect(try await eventually { server.received.count == 1 })
            let received = try #require(server.received.first)
            #expect(received["tls"] as? Bool == true && received["login"] as? String == "mailer")
            #expect(received["mail_from"] as? String == "reports@keel.example")
            #expect(received["rcpt_tos"] as? [String] == ["ana@example.com", "cy@example.com", "audit@example.com"])
            let data = try #require(received["data"] as? String)
            #expect(data.contains("Subject: =?UTF-8?B?") && data.contains("X-Campaign: nightly") && data.contains("Reply-To: help@keel.example"))
            #expect(data.contains("multipart/alternative") && data.contains("text/html") && !data.contains("audit@example.com"))
            #expect(data.contains("Message-ID: \(delivery.messageID)"))
            // The bodies survive base64 and dot-stuffing whole.
            let text = try #require(Self.decodedParts(data).first)
            #expect(text == "Hello Ana,\n.\nThe report is ready.")
        }
    }

    @Test func implicitTLS() async throws {
        try await withServer("tls") { server in
            let delivery = try await SMTPClient(settings: server.settings).send(MailMessage(from: "a@keel.example", to: ["b@example.com"], subject: "hi", text: "x"))
            #expect(delivery.accepted == ["b@example.com"])
            #expect(try await eventually { server.received.first?["tls"] as? Bool == true }, "\(server.helper.output)")
        }
    }

    @Test func refusalsAreClearAndSayWhetherToRetry() async throws {
        try await withServer("starttls", credentials: "mailer:s3cret-pass") { server in
            var settings = server.settings
            settings.username = "mailer"
            settings.password = Secret("wrong-password")
            let login = await #expect(throws: SMTPError.self) { try await SMTPClient(settings: settings).send(message) }
            #expect(login?.isPermanent == true && login?.code == 535)
            #expect(login?.description.contains("wrong-password") == false)

            settings.password = Secret("s3cret-pass")
            let nobody = await #expect(throws: SMTPError.self) {
                try await SMTPClient(settings: settings).send(MailMessage(from: "a@keel.example", to: ["x@refused.example"], subject: "s", text: "t"))
            }
            #expect(nobody?.code == 550 && nobody?.isPermanent == true)

            // A certificate Keel does not trust ends the conversation before anything is sent.
            settings.caFile = nil
            let untrusted = await #expect(throws: (any Error).self) { try await SMTPClient(settings: settings).send(message) }
            #expect(untrusted != nil)
            #expect(server.received.isEmpty)
        }
        try await withServer("plain") { server in
            var settings = server.settings
            settings.security = .starttls
            let clear = await #expect(throws: SMTPError.self) {
                try await SMTPClient(settings: settings).send(MailMessage(from: "a@keel.example", to: ["b@example.com"], subject: "s", text: "t"))
            }
            #expect(clear?.description.contains("does not offer STARTTLS") == true && clear?.isPermanent == true)
            settings.security = .none
            settings.username = "u"
            let credentials = await #expect(throws: SMTPError.self) {
                try await SMTPClient(settings: settings).send(MailMessage(from: "a@keel.example", to: ["b@example.com"], subject: "s", text: "t"))
            }
            #expect(credentials?.description.contains("unencrypted") == true)
            settings.username = nil
            let delivery = try await SMTPClient(settings: settings).send(MailMessage(from: "a@keel.example", to: ["b@example.com"], subject: "s", text: "t"))
            #expect(delivery.accepted == ["b@example.com"])
        }
    }

    @Test func badMessagesAreRefusedBeforeConnecting() async throws {
        var settings = MailSettings()
        settings.host = "127.0.0.1"
        let closed = try ClosedPort()  // nothing listens: a refusal must come before any connection
        defer { withExtendedLifetime(closed) {} }
        settings.port = closed.port
        let injected = MailMessage(from: "a@keel.example", to: ["b@example.com\r\nBcc: victim@example.com"], subject: "hi\r\nBcc: x@example.com",
                                   text: "t", headers: ["Content-Type": "text/evil", "X-Ok": "line\nbreak"])
        let error = await #expect(throws: SMTPError.self) { try await SMTPClient(settings: settings).send(injected) }
        let description = error?.description ?? ""
        #expect(error?.isPermanent == true)
        for fault in ["to: ", "subject: must be one line", "\"Content-Type\" cannot be set", "X-Ok must be one line"] {
            #expect(description.contains(fault), "\(fault) in \(description)")
        }
        let unreachable = await #expect(throws: SMTPError.self) {
            try await SMTPClient(settings: settings).send(MailMessage(from: "a@keel.example", to: ["b@example.com"], subject: "s", text: "t"))
        }
        #expect(unreachable?.isPermanent == false)
    }

    /// The base64 bodies of a MIME message, decoded.
    static func decodedParts(_ data: String) -> [String] {
        let lines = data.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n")
        var parts: [String] = []
        var index = 0
        while index < lines.count {
            if lines[index] == "Content-Transfer-Encoding: base64" {
                index += 2  // past the blank line
                var encoded = ""
                while index < lines.count, !lines[index].isEmpty, !lines[index].hasPrefix("--") { encoded += lines[index]; index += 1 }
                parts.append(Data(base64Encoded: encoded).flatMap { String(data: $0, encoding: .utf8) } ?? "")
            }
            index += 1
        }
        return parts
    }
}
