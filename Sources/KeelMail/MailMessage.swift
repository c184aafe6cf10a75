import Foundation
import KeelCore

/// One email: addresses, subject, and a text and/or HTML body (both make a `multipart/alternative`).
public struct MailMessage: Sendable, Equatable {
    public var from: String
    public var to: [String]
    public var cc: [String]
    public var bcc: [String]
    public var replyTo: String?
    public var subject: String
    public var text: String?
    public var html: String?
    /// Extra headers (`X-Campaign`, `List-Unsubscribe`); the ones the message sets itself are refused.
    public var headers: [String: String]

    public init(from: String, to: [String], cc: [String] = [], bcc: [String] = [], replyTo: String? = nil, subject: String,
                text: String? = nil, html: String? = nil, headers: [String: String] = [:]) {
        self.from = from
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.replyTo = replyTo
        self.subject = subject
        self.text = text
        self.html = html
        self.headers = headers
    }

    public var recipients: [String] { to + cc + bcc }

    static let reservedHeaders: Set<String> = [
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding",
    ]

    /// What is wrong with the message, one line per fault; empty when it can be sent. Line breaks in any header
    /// value are refused, so no input can add headers or recipients (header injection).
    public func problems() -> [String] {
        var problems: [String] = []
        if !isPlausibleEmail(from) { problems.append("from: \"\(from)\" is not an email address") }
        if to.isEmpty { problems.append("to: at least one recipient is required") }
        if recipients.count > 100 { problems.append("to, cc and bcc: at most 100 recipients in all") }
        for (field, addresses) in [("to", to), ("cc", cc), ("bcc", bcc), ("reply_to", replyTo.map { [$0] } ?? [])] {
            for address in addresses where !isPlausibleEmail(address) { problems.append("\(field): \"\(address)\" is not an email address") }
        }
        if subject.contains(where: \.isNewline) { problems.append("subject: must be one line") }
        if subject.utf8.count > 998 { problems.append("subject: must be at most 998 bytes") }
        if text == nil && html == nil { problems.append("text or html: a body is required") }
        for (name, value) in headers {
            let validName = !name.isEmpty && name.utf8.allSatisfy { $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }
            if !validName || Self.reservedHeaders.contains(name.lowercased()) { problems.append("headers: \"\(name)\" cannot be set") }
            if value.contains(where: { $0.isNewline }) { problems.append("headers: the value of \(name) must be one line") }
        }
        return problems
    }

    /// The message as RFC 5322 text with CRLF line ends; bodies in base64 so any UTF-8 passes any server.
    func rendered(messageID: String, date: Date, boundary: String) -> String {
        var lines = [
            "From: \(from)",
            "To: \(to.joined(separator: ", "))",
        ]
        if !cc.isEmpty { lines.append("Cc: \(cc.joined(separator: ", "))") }
        if let replyTo { lines.append("Reply-To: \(replyTo)") }
        lines += [
            "Subject: \(Self.encodedWord(subject))",
            "Date: \(Self.rfc5322Date(date))",
            "Message-ID: \(messageID)",
            "MIME-Version: 1.0",
        ]
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { lines.append("\(name): \(Self.encodedWord(value))") }
        func part(_ type: String, _ body: String) -> [String] {
            ["Content-Type: \(type); charset=utf-8", "Content-Transfer-Encoding: base64", ""] + Self.base64Lines(body)
        }
        switch (text, html) {
        case (let text?, let html?):
            lines.append("Content-Type: multipart/alternative; boundary=\"\(boundary)\"")
            lines += ["", "--\(boundary)"] + part("text/plain", text) + ["--\(boundary)"] + part("text/html", html) + ["--\(boundary)--"]
        case (let text?, nil): lines += part("text/plain", text)
        case (nil, let html?): lines += part("text/html", html)
        case (nil, nil): lines += part("text/plain", "")
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// RFC 2047: non-ASCII header text as `=?UTF-8?B?…?=`.
    static func encodedWord(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 >= 128 }) else { return text }
        return "=?UTF-8?B?\(Data(text.utf8).base64EncodedString())?="
    }

    static func base64Lines(_ text: String) -> [String] {
        let encoded = Data(text.utf8).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        return encoded.components(separatedBy: "\r\n")
    }

    static func rfc5322Date(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return formatter.string(from: date)
    }
}
