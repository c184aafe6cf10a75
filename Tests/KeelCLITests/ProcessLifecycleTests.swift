import Foundation
import KeelTestSupport
import Testing

/// `keel up` and `keel serve` as orchestrators run them: ready quickly, drained on SIGTERM,
/// stopped at once on a second signal.
@Suite struct ProcessLifecycleTests {
    @Test func upServesEveryRoleOnTheEmbeddedStoreAndStopsCleanly() async throws {
        let keel = try KeelProcess(["up", "--port", "0"])
        let port = try await keel.waitUntilReady()
        let status = try await HTTP.get(port: port, path: "/api/v1/status")
        #expect(status.status == 200)
        #expect(status.body.contains(#""roles":["api","worker","scheduler","gateway","console"]"#))
        #expect(FileManager.default.fileExists(atPath: keel.directory + "/.keel/keel.db"))
        keel.signal(SIGTERM)
        #expect(try await keel.waitForExit() == 0)
        #expect(keel.logLines.contains { $0["msg"] as? String == "stopped" })
    }

    @Test func sigtermDrainsAnInFlightRequestBeforeExiting() async throws {
        let keel = try KeelProcess(["up", "--port", "0"])
        let port = try await keel.waitUntilReady()
        let body = #"{"port": 9000, "roles": ["api"]}"#
        let connection = try RawConnection(port: port)
        // Headers and half the body: the request is in flight when the signal arrives.
        try connection.send("POST /api/v1/config/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n")
        try connection.send(String(body.prefix(10)))
        try await Task.sleep(for: .milliseconds(200))
        keel.signal(SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        #expect(keel.process.isRunning, "keel exited with a request in flight")
        try connection.send(String(body.dropFirst(10)))
        let response = connection.readAll()
        #expect(response.hasPrefix("HTTP/1.1 200"))
        #expect(response.contains(#""valid":true"#))
        #expect(try await keel.waitForExit() == 0)
    }

    @Test func aSecondSignalForcesExit() async throws {
        let keel = try KeelProcess(["up", "--port", "0"])
        let port = try await keel.waitUntilReady()
        let connection = try RawConnection(port: port)
        try connection.send("POST /api/v1/config/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        try await Task.sleep(for: .milliseconds(200))
        keel.signal(SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        #expect(keel.process.isRunning)
        keel.signal(SIGINT)
        let status = try await keel.waitForExit(timeout: .seconds(5))
        #expect(status != 0)
        #expect(keel.logLines.contains { $0["msg"] as? String == "second signal: exiting without draining" })
    }

    @Test func workerProcessesServeProbesAndMetricsButNoAPI() async throws {
        let keel = try KeelProcess(["serve", "--roles", "worker,scheduler", "--port", "0"])
        let port = try await keel.waitUntilReady()
        #expect(try await HTTP.get(port: port, path: "/healthz").status == 200)
        #expect(try await HTTP.get(port: port, path: "/readyz").status == 200)
        let metrics = try await HTTP.get(port: port, path: "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains(#"keel_role_enabled{role="worker"} 1"#))
        #expect(metrics.body.contains(#"keel_role_enabled{role="api"} 0"#))
        #expect(try await HTTP.get(port: port, path: "/api/v1/nodes").status == 404)
        keel.signal(SIGINT)
        #expect(try await keel.waitForExit() == 0)
    }

    @Test func logsAreJSONWithRequestAndTraceIDs() async throws {
        let keel = try KeelProcess(["up", "--port", "0"])
        let port = try await keel.waitUntilReady()
        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        let response = try RawConnection.get(port: port, path: "/healthz", headers: [
            "traceparent": "00-\(traceID)-00f067aa0ba902b7-01", "X-Request-ID": "req-from-client",
        ])
        #expect(response.hasPrefix("HTTP/1.1 200"))
        keel.signal(SIGTERM)
        #expect(try await keel.waitForExit() == 0)
        let access = keel.logLines.first { $0["msg"] as? String == "request" && $0["path"] as? String == "/healthz" }
        #expect(access?["request_id"] as? String == "req-from-client")
        #expect(access?["trace_id"] as? String == traceID)
        #expect(access?["status"] as? String == "200")
        #expect(access?["level"] as? String == "info")
        #expect(keel.stdout.split(separator: "\n").allSatisfy { $0.hasPrefix("{") && $0.hasSuffix("}") })
    }

    @Test func concurrentMigrateProcessesAgreeOnOneSchema() async throws {
        try await TestPostgres.withDatabase { url in
            let databaseURL = url.connectionString()
            let environment = ["KEEL_DATABASE_URL": databaseURL, "KEEL_DATABASE_TLS": "disable"]
            let migrators = try (0..<4).map { _ in try KeelProcess(["migrate"], environment: environment) }
            for migrator in migrators {
                #expect(try await migrator.waitForExit() == 0, "\(migrator.stderr)")
            }
            let applied = migrators.map { $0.stdout.components(separatedBy: "applied core").count - 1 }
            #expect(applied.reduce(0, +) == 1)
            let status = try KeelProcess(["migrate", "--status"], environment: environment)
            #expect(try await status.waitForExit() == 0)
            #expect(status.stdout.contains("core\t1\tapplied\tcreate keel_nodes"))
            #expect(!status.stdout.contains(url.password?.value ?? "-"))
        }
    }
}
