import Foundation
import KeelCore

/// A real SMTP server (aiosmtpd, `Tests/Support/smtp_server.py`) on loopback with a throwaway certificate, and
/// the settings that reach it.
public struct SMTPTestServer: Sendable {
    public let helper: PythonHelper
    /// Host, port, TLS mode and the server's certificate as the trusted CA.
    public let settings: MailSettings

    /// The messages received so far: `mail_from`, `rcpt_tos`, `data`, `tls`, `login`.
    public var received: [[String: Any]] {
        helper.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Runs `body` with a server in `mode` (`starttls`, `tls` or `plain`), requiring `credentials` (`user:password`) if given.
    public static func with(_ mode: String, credentials: String? = nil, _ body: (SMTPTestServer) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keel-smtp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let helper = try PythonHelper("smtp_server.py", arguments: ["0", directory.path, mode] + (credentials.map { [$0] } ?? []))
        defer { helper.stop() }
        let port = try await helper.listeningPort()
        var settings = MailSettings()
        settings.host = "127.0.0.1"
        settings.port = port
        settings.security = mode == "plain" ? .none : mode == "tls" ? .tls : .starttls
        settings.caFile = directory.appendingPathComponent("cert.pem").path
        settings.timeoutSeconds = 10
        try await body(SMTPTestServer(helper: helper, settings: settings))
    }
}
