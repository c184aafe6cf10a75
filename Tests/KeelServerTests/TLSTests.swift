import Foundation
import KeelTestSupport
import Testing

/// HTTPS from PEM files, and certificate renewal by SIGHUP without dropping open connections.
@Suite struct TLSTests {
    /// A self-signed certificate for 127.0.0.1 made by Debian's openssl; returns (certificate, key) paths.
    static func makeCertificate(in directory: String, name: String) throws -> (String, String) {
        let (certificate, key) = ("\(directory)/\(name).pem", "\(directory)/\(name)-key.pem")
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                             "-keyout", key, "-out", certificate]
        openssl.standardOutput = FileHandle.nullDevice
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else { throw TestSetupError("openssl could not make a certificate") }
        return (certificate, key)
    }

    @Test func servesHTTPSAndReloadsTheCertificateOnSIGHUP() async throws {
        let directory = NSTemporaryDirectory() + "keel-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (certificate, key) = try Self.makeCertificate(in: directory, name: "live")
        let (renewed, renewedKey) = try Self.makeCertificate(in: directory, name: "renewed")

        let keel = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_TLS_CERT_FILE": certificate, "KEEL_TLS_KEY_FILE": key,
            "KEEL_ADMIN_EMAIL": "admin@example.com", "KEEL_ADMIN_PASSWORD": "tls-admin-passphrase-1", "KEEL_AUTH_BCRYPT_COST": "4",
        ])
        let port = try await keel.waitUntilReady()
        let probe = try PythonHelper("tls_client.py", arguments: [String(port), String(keel.process.processIdentifier),
                                                                  certificate, key, renewed, renewedKey])
        #expect(try await probe.waitForExit() == 0, "\(probe.output)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(probe.output.utf8)) as? [String: Any], "\(probe.output)")
        #expect(result["before"] as? Int == 200)
        #expect(result["same_connection"] as? Int == 200)
        #expect(result["kept_socket"] as? Bool == true)
        #expect(result["new_connection"] as? Int == 200)
        #expect(result["serial_before"] as? String != result["serial_after"] as? String)
        #expect(keel.stdout.contains("reloaded the TLS certificate"))
        #expect(keel.process.isRunning)
    }

    @Test func aCertificateWithoutItsKeyIsAStartupError() async throws {
        let directory = NSTemporaryDirectory() + "keel-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (certificate, _) = try Self.makeCertificate(in: directory, name: "live")
        let (_, otherKey) = try Self.makeCertificate(in: directory, name: "other")
        for environment in [["KEEL_TLS_CERT_FILE": certificate], ["KEEL_TLS_CERT_FILE": certificate, "KEEL_TLS_KEY_FILE": otherKey]] {
            let keel = try KeelProcess(["up", "--port", "0"], environment: environment.merging(["KEEL_ADMIN_PASSWORD": "tls-admin-passphrase-1"]) { a, _ in a })
            #expect(try await keel.waitForExit() == 2)
            #expect(keel.stderr.contains("tls_"), "\(keel.stderr)")
        }
    }
}
