import AsyncHTTPClient
import Foundation
import KeelCore
import KeelStore
import KeelTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// The compose `core` topology as processes on loopback: one PostgreSQL, two api+gateway+console processes side by
/// side, two workers, two schedulers, and a real Prometheus (Debian's) scraping all six. Jobs flow end to end, a
/// schedule fires once per tick, every target is up, killing an api process loses no request a client retries
/// elsewhere, and a backup restored into a fresh database holds the same data.
@Suite(.serialized) struct TopologyTests {
    typealias Reply = MonitoringMetricsTests.Reply

    static func call(_ method: HTTPMethod, _ url: String, _ headers: [String: String] = [:], _ body: String? = nil,
                     timeout: TimeAmount = .seconds(30)) async throws -> Reply {
        try await MonitoringMetricsTests.call(method, url, headers, body, timeout: timeout)
    }

    @Test func theCoreTopologyRunsAsProcesses() async throws {
        let prometheus = try #require(["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                      "prometheus (Debian package) is needed; scripts/test installs it")
        try await TestPostgres.withDatabase { database in
            let environment = ["KEEL_DATABASE_URL": database.connectionString(), "KEEL_DATABASE_TLS": "disable", "KEEL_AUTH_BCRYPT_COST": "4",
                               "KEEL_ADMIN_EMAIL": "ops@example.com", "KEEL_ADMIN_PASSWORD": "ops-passphrase-for-topology-9",
                               "KEEL_SECRET_KEY": "topology-secret-key-0123456789abcdef", "KEEL_WORKER_QUEUES": "*=8"]
            let migrate = try KeelProcess(["migrate"], environment: environment)
            #expect(try await migrate.waitForExit(timeout: .seconds(60)) == 0, "\(migrate.stderr)")
            var processes: [(role: String, process: KeelProcess, port: Int)] = []
            for role in ["api,gateway,console", "api,gateway,console", "worker", "worker", "scheduler", "scheduler"] {
                let process = try KeelProcess(["serve", "--roles", role, "--port", "0"], environment: environment)
                processes.append((role, process, try await process.waitUntilReady()))
            }
            defer { for entry in processes { entry.process.signal(SIGKILL) } }
            let apis = processes.filter { $0.role.hasPrefix("api") }.map { "http://127.0.0.1:\($0.port)" }

            // Prometheus scrapes every process once a second.
            try await withTemporaryDirectory { directory in
                let targets = processes.map { "\"127.0.0.1:\($0.port)\"" }.joined(separator: ", ")
                try """
                    global: {scrape_interval: 1s}
                    scrape_configs:
                      - job_name: keel
                        static_configs: [{targets: [\(targets)]}]
                    """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
                // Port 0: Prometheus binds a free one itself and logs it, so nothing can take it in between.
                let log = directory + "/prometheus.log"
                _ = FileManager.default.createFile(atPath: log, contents: nil)
                let server = Process()
                server.executableURL = URL(fileURLWithPath: prometheus)
                server.arguments = ["--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                                    "--web.listen-address=127.0.0.1:0"]
                server.standardOutput = FileHandle.nullDevice
                server.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
                try server.run()
                defer { server.terminate() }
                var port: Int?
                let bound = ContinuousClock.now + .seconds(30)
                while port == nil, server.isRunning, ContinuousClock.now < bound {
                    try await Task.sleep(for: .milliseconds(100))
                    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                    port = text.split(separator: "\n").first { $0.contains("msg=\"Listening on\"") }
                        .flatMap { $0.split(separator: ":").last }.flatMap { Int($0) }
                }
                let prometheusPort = try #require(port, "Prometheus did not log its port: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
                var up: [String] = []
                let deadline = ContinuousClock.now + .seconds(30)
                while up.count < processes.count, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(500))
                    let reply = try? await Self.call(.GET, "http://127.0.0.1:\(prometheusPort)/api/v1/targets?state=active", [:], nil)
                    let active = ((reply?.json["data"] as? [String: Any])?["activeTargets"] as? [[String: Any]]) ?? []
                    up = active.filter { $0["health"] as? String == "up" }.compactMap { $0["scrapeUrl"] as? String }
                }
                #expect(up.count == processes.count, "Prometheus targets up: \(up)")
            }

            let login = try await Self.call(.POST, apis[0] + "/api/v1/auth/login", [:], #"{"email": "ops@example.com", "password": "ops-passphrase-for-topology-9"}"#)
            let admin = ["Authorization": "Bearer \(try #require(login.json["access_token"] as? String))"]

            // Jobs enqueued through either api process run on both workers, each once.
            for n in 0..<60 {
                let reply = try await Self.call(.POST, apis[n % 2] + "/api/v1/jobs", admin, #"{"task": "keel.noop", "queue": "flow", "unique_key": "flow-\#(n)"}"#)
                #expect(reply.status == 201)
            }
            // A schedule every second, fired by two schedulers.
            #expect(try await Self.call(.POST, apis[1] + "/api/v1/schedules", admin, #"{"name": "tick", "every_seconds": 1, "task": "keel.noop", "queue": "ticks"}"#).status == 201)
            let scheduled = ContinuousClock.now

            // Killing one api process: a client that retries elsewhere (as a load balancer does, then keeping away from
            // the dead one) loses nothing, and nothing is done twice.
            var sent = 0
            var down: Set<String> = []
            for n in 0..<80 {
                if n == 30 { processes[0].process.signal(SIGKILL) }
                let body = #"{"task": "keel.noop", "queue": "failover", "unique_key": "failover-\#(n)"}"#
                var delivered = false
                for target in [apis[n % 2], apis[(n + 1) % 2]].sorted(by: { !down.contains($0) && down.contains($1) }) where !delivered {
                    if let reply = try? await Self.call(.POST, target + "/api/v1/jobs", admin, body, timeout: .seconds(2)),
                       reply.status == 201 || reply.status == 200 {
                        delivered = true
                    } else {
                        down.insert(target)
                    }
                }
                #expect(delivered, "request \(n) reached neither api process")
                sent += delivered ? 1 : 0
            }

            try await withRunningStore(try await openStore(.postgres(database))) { store in
                let drained = try await Self.eventually {
                    try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE queue IN ('flow', 'failover') AND state = 'succeeded'").first?.int("n") == 60 + sent
                }
                #expect(drained)
                let byWorker = try await store.query("SELECT COUNT(DISTINCT worker_id) AS n FROM keel_jobs WHERE queue IN ('flow', 'failover')").first?.int("n")
                #expect(byWorker == 2, "both workers ran jobs")
                #expect(try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE queue = 'failover'").first?.int("n") == 80)

                try await Task.sleep(for: .seconds(4))
                // One statement, so one snapshot: the schedulers keep firing, and a fire and its job commit together.
                let fires = try #require(try await store.query("""
                    SELECT (SELECT COUNT(*) FROM keel_schedule_fires WHERE schedule = 'tick') AS n,
                           (SELECT COUNT(DISTINCT fire_at) FROM keel_schedule_fires WHERE schedule = 'tick') AS ticks,
                           (SELECT COUNT(*) FROM keel_jobs WHERE queue = 'ticks') AS jobs
                    """).first)
                let (fired, ticks, jobs) = (try fires.int("n"), try fires.int("ticks"), try fires.int("jobs"))
                let elapsed = Int((ContinuousClock.now - scheduled).components.seconds)
                #expect(fired == ticks && jobs == fired, "a tick fired twice: \(fired) fires of \(ticks) ticks, \(jobs) jobs")
                #expect((elapsed - 2...elapsed + 1).contains(jobs), "\(jobs) fires in \(elapsed) s of a 1 s schedule")
            }

            // A backup restored into a fresh database holds the same data (taken once everything has stopped writing).
            for entry in processes { entry.process.signal(SIGTERM) }
            for entry in processes { _ = try await entry.process.waitForExit(timeout: .seconds(30)) }
            let backup = try KeelProcess(["backup", "--output", "topology.dump"], environment: environment)
            #expect(try await backup.waitForExit(timeout: .seconds(60)) == 0, "\(backup.stderr)")
            let tables = ["keel_jobs", "keel_users", "keel_schedules", "keel_api_keys", "keel_audit_log", "keel_schema_migrations"]
            let before = try await Self.counts(tables, in: database)
            try await TestPostgres.withDatabase { fresh in
                let restore = try KeelProcess(["restore", "--input", backup.directory + "/topology.dump", "--yes"],
                                              environment: environment.merging(["KEEL_DATABASE_URL": fresh.connectionString()]) { _, new in new })
                #expect(try await restore.waitForExit(timeout: .seconds(60)) == 0, "\(restore.stderr)")
                let after = try await Self.counts(tables, in: fresh)
                #expect(after == before && (before["keel_jobs"] ?? 0) > 140, "\(before) → \(after)")
            }
        }
    }

    static func counts(_ tables: [String], in database: PostgresURL) async throws -> [String: Int] {
        try await withRunningStore(try await openStore(.postgres(database))) { store in
            var counts: [String: Int] = [:]
            for table in tables {
                counts[table] = try await store.query(SQLQuery(stringLiteral: "SELECT COUNT(*) AS n FROM \(table)")).first?.int("n")
            }
            return counts
        }
    }

    static func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }
}
