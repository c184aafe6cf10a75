import Foundation
import KeelTestSupport
import Testing

/// First start without default passwords, and the identity verbs of the command line.
@Suite struct IdentityCommandTests {
    func post(_ port: Int, _ path: String, _ body: [String: Any]) throws -> (status: Int, json: [String: Any]) {
        let data = try JSONSerialization.data(withJSONObject: body)
        let response = try RawConnection.request(port: port, method: "POST", path: path, headers: ["Content-Type": "application/json"],
                                                 body: String(decoding: data, as: UTF8.self))
        return (response.status, (try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]) ?? [:])
    }

    @Test func firstStartPrintsAGeneratedAdminPasswordOnceAndNeverLogsIt() async throws {
        let up = try KeelProcess(["up", "--port", "0"], environment: ["KEEL_AUTH_BCRYPT_COST": "4"])
        let port = try await up.waitUntilReady()
        let password = try #require(up.stderr.split(separator: "\n").first { $0.contains("password:") }?.split(separator: " ").last.map(String.init))
        #expect(password.count >= 20)
        #expect(up.stderr.contains("admin@keel.local"))
        #expect(!up.stdout.contains(password), "the generated password reached the log stream")
        #expect(up.logLines.contains { $0["msg"] as? String == "created the first admin" && $0["password_source"] as? String == "generated" })
        let login = try post(port, "/api/v1/auth/login", ["email": "admin@keel.local", "password": password])
        #expect(login.status == 200)
        #expect(!up.stdout.contains(login.json["access_token"] as? String ?? "missing"), "a token reached the log stream")
        #expect(!up.stdout.contains(login.json["refresh_token"] as? String ?? "missing"))

        // A second start on the same store creates nobody and prints nothing.
        up.signal(SIGTERM)
        #expect(try await up.waitForExit() == 0)
        let again = try KeelProcess(["up", "--port", "0"], environment: ["KEEL_AUTH_BCRYPT_COST": "4"], directory: up.directory)
        _ = try await again.waitUntilReady()
        #expect(!again.stderr.contains("password:"))
    }

    @Test func adminFromTheEnvironmentAndWeakOnesRefused() async throws {
        let up = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_ADMIN_EMAIL": "Ops@Example.com", "KEEL_ADMIN_PASSWORD": "a-strong-bootstrap-passphrase", "KEEL_AUTH_BCRYPT_COST": "4",
        ])
        let port = try await up.waitUntilReady()
        #expect(!up.stderr.contains("password:"))
        #expect(try post(port, "/api/v1/auth/login", ["email": "ops@example.com", "password": "a-strong-bootstrap-passphrase"]).status == 200)

        let weak = try KeelProcess(["up", "--port", "0"], environment: ["KEEL_ADMIN_PASSWORD": "admin", "KEEL_AUTH_BCRYPT_COST": "4"])
        #expect(try await weak.waitForExit() == 2)
        #expect(weak.stderr.contains("keel: KEEL_ADMIN_PASSWORD must be at least 12 characters long"))
        #expect(weak.stdout.contains("KEEL_ADMIN_PASSWORD must be at least 12 characters long"))
        #expect(!weak.stdout.contains("\"admin\""))
    }

    @Test func usersAPIKeysAndKeysVerbs() async throws {
        let env = ["KEEL_AUTH_BCRYPT_COST": "4"]
        let directory = NSTemporaryDirectory() + "keel-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func keel(_ arguments: [String]) async throws -> KeelProcess {
            let process = try KeelProcess(arguments, environment: env, directory: directory)
            _ = try await process.waitForExit()
            return process
        }
        let create = try await keel(["users", "create", "ada@example.com", "--role", "developer"])
        #expect(create.process.terminationStatus == 0, "\(create.stderr)")
        #expect(create.stdout.contains("created user usr_"))
        #expect(create.stdout.contains("password setup token"))
        let service = try await keel(["users", "create", "billing", "--service-account", "--role", "developer"])
        #expect(service.stdout.contains("created service_account svc_"))

        let setRole = try await keel(["users", "set-role", "ada@example.com", "operator", "viewer"])
        #expect(setRole.stdout.contains("now has roles operator,viewer"))
        let disable = try await keel(["users", "disable", "ada@example.com"])
        #expect(disable.process.terminationStatus == 0)
        let list = try await keel(["users", "list"])
        #expect(list.stdout.contains("ada@example.com\toperator,viewer\tdisabled"))
        #expect(list.stdout.contains("billing\tdeveloper\tactive"))
        #expect(try await keel(["users", "enable", "ada@example.com"]).process.terminationStatus == 0)
        let reset = try await keel(["users", "reset-password", "ada@example.com"])
        #expect(reset.stdout.contains("reset token for ada@example.com"))

        let key = try await keel(["apikeys", "create", "--name", "billing worker", "--owner", "billing", "--permission", "jobs:write", "--expires-in-days", "30"])
        #expect(key.process.terminationStatus == 0, "\(key.stderr)")
        let secret = try #require(key.stdout.split(separator: "\n").last.map(String.init))
        #expect(secret.hasPrefix("keel_") && secret.count == 48)
        let keys = try await keel(["apikeys", "list"])
        #expect(keys.stdout.contains("billing worker") && !keys.stdout.contains(secret))
        let keyID = try #require(key.stdout.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("key_") }.map(String.init))
        let revoke = try await keel(["apikeys", "revoke", keyID])
        #expect(revoke.process.terminationStatus == 0, "\(revoke.stderr)")
        #expect(try await keel(["apikeys", "list"]).stdout.contains("revoked"))
        let rotate = try await keel(["keys", "rotate"])
        #expect(rotate.stdout.contains("new signing key key_"))

        // Bad input names what is wrong and exits 2.
        let unknownRole = try await keel(["users", "set-role", "ada@example.com", "emperor"])
        #expect(unknownRole.process.terminationStatus == 2)
        #expect(unknownRole.stderr.contains("\"emperor\" is not a role"))
        let nobody = try await keel(["users", "disable", "nobody@example.com"])
        #expect(nobody.process.terminationStatus == 2)
        #expect(nobody.stderr.contains("No user has the id or email nobody@example.com"))
        let badPermission = try await keel(["apikeys", "create", "--name", "x", "--owner", "billing", "--permission", "everything"])
        #expect(badPermission.process.terminationStatus == 2)
        #expect(badPermission.stderr.contains("\"everything\" is neither a Keel permission"))
        let badEmail = try await keel(["users", "create", "not-an-email"])
        #expect(badEmail.process.terminationStatus == 2)
        #expect(badEmail.stderr.contains("email: must be an email address"))
    }
}
