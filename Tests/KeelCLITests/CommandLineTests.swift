import Foundation
import KeelCore
import KeelTestSupport
import Testing

/// The `keel` binary as scripts use it: exit codes, messages, and no secrets on screen.
@Suite struct CommandLineTests {
    @Test func versionAndHelp() async throws {
        let version = try KeelProcess(["version"])
        #expect(try await version.waitForExit() == 0)
        #expect(version.stdout == "keel \(KeelVersion.current)\n")

        for arguments in [["--help"], ["up", "--help"], ["serve", "--help"], ["migrate", "--help"], ["config", "check", "--help"], ["--version"]] {
            let help = try KeelProcess(arguments)
            #expect(try await help.waitForExit() == 0, "\(arguments)")
            #expect(!help.stdout.isEmpty, "\(arguments)")
        }
    }

    @Test func badConfigurationExitsTwoNamingKeyValueAndExpectation() async throws {
        let check = try KeelProcess(["config", "check"], environment: ["KEEL_PORT": "80a", "KEEL_LOG_LEVEL": "loud"])
        #expect(try await check.waitForExit() == 2)
        #expect(check.stderr.contains(#"port = "80a" (from env KEEL_PORT): expected an integer between 0 and 65535"#))
        #expect(check.stderr.contains(#"log_level = "loud" (from env KEEL_LOG_LEVEL): expected one of trace, debug"#))
        #expect(!check.stderr.contains("Fatal error"))

        let up = try KeelProcess(["up", "--port", "99999"])
        #expect(try await up.waitForExit() == 2)
        #expect(up.stderr.contains(#"port = "99999" (from flag --port)"#))

        let roles = try KeelProcess(["serve", "--roles", "api,queue"])
        #expect(try await roles.waitForExit() == 2)
        #expect(roles.stderr.contains(#""queue" is not a role"#))
    }

    @Test func usageErrorsExitTwo() async throws {
        let unknownFlag = try KeelProcess(["up", "--bogus"])
        #expect(try await unknownFlag.waitForExit() == 2)
        #expect(unknownFlag.stderr.contains("--bogus"))
        let unknownCommand = try KeelProcess(["launch"])
        #expect(try await unknownCommand.waitForExit() == 2)
    }

    @Test func configCheckPrintsEffectiveValuesWithSecretsMasked() async throws {
        let directory = NSTemporaryDirectory() + "keel-cfg-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "port: 9000\nlog:\n  level: debug\n".write(toFile: directory + "/keel.yaml", atomically: true, encoding: .utf8)
        let check = try KeelProcess(["config", "check", "--json", "--host", "0.0.0.0"], environment: [
            "KEEL_SECRET_KEY": "k" + String(repeating: "s", count: 40),
            "KEEL_DATABASE_URL": "postgres://keel:pa55word@db.internal/keel",
        ], directory: directory)
        #expect(try await check.waitForExit() == 0)
        #expect(!check.stdout.contains("pa55word"))
        #expect(!check.stdout.contains("ssssssss"))
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(check.stdout.utf8)) as? [[String: String]])
        let byKey = Dictionary(uniqueKeysWithValues: entries.map { ($0["key"]!, $0) })
        #expect(byKey["port"]?["value"] == "9000")
        #expect(byKey["port"]?["source"] == "file keel.yaml")
        #expect(byKey["log_level"]?["value"] == "debug")
        #expect(byKey["host"]?["source"] == "flag --host")
        #expect(byKey["secret_key"]?["value"] == "****")
        #expect(byKey["database_url"]?["value"] == "postgres://keel:****@db.internal:5432/keel")
    }
}
