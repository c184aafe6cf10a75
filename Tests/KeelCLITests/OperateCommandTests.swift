import Foundation
import KeelTestSupport
import Testing

/// The operator verbs: `keel health` (the seed stacks' health-check script), `keel backup` / `keel restore`, and
/// `keel secrets generate`.
@Suite struct OperateCommandTests {
    /// Runs `keel arguments...` in `directory` to the end: its exit code and what it printed.
    func keel(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:]) async throws -> (code: Int32, out: String, err: String) {
        let process = try KeelProcess(arguments, environment: environment, directory: directory)
        do {
            // Generous: beside the whole suite on two cores a process that stops itself can take tens of seconds.
            let code = try await process.waitForExit(timeout: .seconds(120))
            return (code, process.stdout, process.stderr)
        } catch {
            throw TestSetupError("keel \(arguments.joined(separator: " ")) did not exit; its output so far:\n\(process.stderr)")
        }
    }

    @Test func healthChecksEveryRoleAndDependencyAndFailsWhenOneIsDown() async throws {
        let smtp = try ClosedPort()
        defer { withExtendedLifetime(smtp) {} }
        let environment = ["KEEL_AUTH_BCRYPT_COST": "4", "KEEL_ADMIN_EMAIL": "ops@example.com", "KEEL_ADMIN_PASSWORD": "ops-passphrase-for-health-9"]
        let up = try KeelProcess(["up", "--port", "0"], environment: environment)
        let port = try await up.waitUntilReady()
        let directory = up.directory

        let live = try await keel(["health", "--live", "--port", String(port)], in: directory)
        #expect(live.code == 0, "\(live.err)")
        let healthy = try await keel(["health", "--port", String(port)], in: directory, environment: ["NO_COLOR": "1"])
        #expect(healthy.code == 0, "\(healthy.out)\n\(healthy.err)")
        for role in ["api", "worker", "scheduler", "gateway", "console"] {
            #expect(healthy.out.contains("role \(role)"), "\(healthy.out)")
        }
        #expect(healthy.out.contains("store") && healthy.out.contains("all checks passed") && !healthy.out.contains("\u{1B}["))
        #expect(healthy.out.contains("smtp") && healthy.out.contains("SKIP"))

        let json = try await keel(["health", "--json", "--port", String(port)], in: directory,
                                  environment: ["KEEL_SMTP_HOST": "127.0.0.1", "KEEL_SMTP_PORT": String(smtp.port), "KEEL_SMTP_TLS": "none"])
        #expect(json.code == 1, "an unreachable mail server must fail the check")
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [[String: Any]])
        #expect(checks.first { $0["name"] as? String == "smtp" }?["status"] as? String == "fail")
        #expect(checks.first { $0["name"] as? String == "store" }?["status"] as? String == "ok")

        up.signal(SIGTERM)
        #expect(try await up.waitForExit() == 0)
        // Where it listened nothing answers now; a port held closed, since a freed one may go to another test's process.
        let stoppedAt = try ClosedPort()
        defer { withExtendedLifetime(stoppedAt) {} }
        let down = try await keel(["health", "--live", "--port", String(stoppedAt.port)], in: directory)
        #expect(down.code == 1 && down.err.contains("not healthy"), "\(down.code): \(down.out) \(down.err)")
        // With every process stopped, the roles have nobody to run them (their last heartbeats are fresh, but the
        // processes said goodbye when they stopped).
        let stopped = try await keel(["health", "--port", String(port)], in: directory, environment: ["NO_COLOR": "1"])
        #expect(stopped.code == 1 && stopped.out.contains("no live process runs it"), "\(stopped.out)")
    }

    @Test func backupAndRestoreTheEmbeddedStore() async throws {
        let environment = ["KEEL_AUTH_BCRYPT_COST": "4", "KEEL_ADMIN_EMAIL": "ops@example.com", "KEEL_ADMIN_PASSWORD": "ops-passphrase-for-backup-9"]
        let up = try KeelProcess(["up", "--port", "0"], environment: environment)
        _ = try await up.waitUntilReady()
        let directory = up.directory
        _ = try await keel(["jobs", "enqueue", "keel.noop", "--queue", "before-backup"], in: directory)

        let backup = try await keel(["backup", "--output", "saved.sqlite"], in: directory)
        #expect(backup.code == 0 && backup.out.contains("verified"), "\(backup.err)")
        _ = try await keel(["jobs", "enqueue", "keel.noop", "--queue", "after-backup"], in: directory)
        up.signal(SIGTERM)
        #expect(try await up.waitForExit() == 0)

        let refused = try await keel(["restore", "--input", "saved.sqlite"], in: directory)
        #expect(refused.code == 2 && refused.err.contains("--yes"))
        let missing = try await keel(["restore", "--input", "nowhere.sqlite", "--yes"], in: directory)
        #expect(missing.code == 2 && missing.err.contains("no backup at nowhere.sqlite"))
        let restored = try await keel(["restore", "--input", "saved.sqlite", "--yes"], in: directory)
        #expect(restored.code == 0, "\(restored.err)")
        let queues = try await keel(["queues", "list"], in: directory)
        #expect(queues.out.contains("before-backup") && !queues.out.contains("after-backup"), "\(queues.out)")

        let usage = try await keel(["backup", "--keep", "3"], in: directory)
        #expect(usage.code == 2 && usage.err.contains("--keep needs --dir"))
        let kept = try await keel(["backup", "--dir", "daily", "--keep", "2"], in: directory)
        #expect(kept.code == 0 && kept.out.contains("daily/keel-"), "\(kept.err)")
    }

    /// What stops a process at start says what to fix, exits 2, and leaves nothing running.
    @Test func aPortInUseAnUnreachableStoreAndAWeakSecretStopTheStartClearly() async throws {
        let blocker = try KeelProcess(["up", "--port", "0"], environment: ["KEEL_AUTH_BCRYPT_COST": "4"])
        let taken = try await blocker.waitUntilReady()
        let busy = try await keel(["up", "--port", String(taken)], environment: ["KEEL_AUTH_BCRYPT_COST": "4"])
        #expect(busy.code == 2 && busy.err.contains("port \(taken) on 127.0.0.1 is already in use"), "\(busy.err)")
        let closed = try ClosedPort()
        defer { withExtendedLifetime(closed) {} }
        let started = ContinuousClock.now
        let unreachable = try await keel(["serve", "--roles", "api", "--port", "0"], environment: [
            "KEEL_DATABASE_URL": "postgres://keel:secret@127.0.0.1:\(closed.port)/keel", "KEEL_DATABASE_TLS": "disable",
            "KEEL_STORE_STARTUP_TIMEOUT_SECONDS": "2",
        ])
        #expect(unreachable.code == 2 && unreachable.err.contains("still unreachable") && unreachable.err.contains("KEEL_DATABASE_URL"))
        // It gives up after its 2 s startup timeout, not after the 10 s a statement may wait for the store.
        #expect(ContinuousClock.now - started < .seconds(8), "gave up after \(ContinuousClock.now - started)")
        #expect(!unreachable.err.contains("secret@"), "the password reached the message")
        let weak = try await keel(["up", "--port", "0"], environment: ["KEEL_SECRET_KEY": "short"])
        #expect(weak.code == 2 && weak.err.contains("secret_key") && weak.err.contains("keel secrets generate") && !weak.err.contains("short"))
        withExtendedLifetime(blocker) {}
    }

    @Test func secretsGenerateStrongDistinctValues() async throws {
        let first = try await keel(["secrets", "generate"]), second = try await keel(["secrets", "generate"])
        #expect(first.code == 0)
        let values = first.out.split(separator: "\n").map { $0.split(separator: "=", maxSplits: 1) }
        #expect(values.map { String($0[0]) } == ["POSTGRES_PASSWORD", "KEEL_SECRET_KEY", "KEEL_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"])
        #expect(values.allSatisfy { $0[1].count == 43 })
        #expect(Set(values.map { $0[1] }).count == 4 && first.out != second.out)
    }
}
