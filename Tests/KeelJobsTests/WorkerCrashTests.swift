import Foundation
import KeelCore
@testable import KeelJobs
import KeelPlatform
import KeelStore
import KeelTestSupport
import Testing

/// Worker processes killed with SIGKILL over and over while jobs drain on PostgreSQL: nothing is lost,
/// and only the jobs of killed workers run twice.
@Suite struct WorkerCrashTests {
    @Test func killingWorkersRepeatedlyLosesNoJobs() async throws {
        try await TestPostgres.withDatabase { url in
            let store = try PostgresStore(url: url, tls: .disable, maximumConnections: 4, logger: quietLogger)
            try await withRunningStore(store) { store in
                try await store.migrate(Platform.migrations)
                let queue = JobQueue(store: store, tasks: Platform.tasks(KeelConfig()))
                for _ in 0..<5 { _ = try await queue.enqueue((0..<1000).map { _ in NewJob(task: "keel.noop") }) }

                let environment = [
                    "KEEL_DATABASE_URL": url.connectionString(),
                    "KEEL_DATABASE_TLS": "disable", "KEEL_JOB_LEASE_SECONDS": "3", "KEEL_WORKER_QUEUES": "*=8",
                    "KEEL_LOG_LEVEL": "warning", "KEEL_ACCESS_LOG": "false",
                ]
                func startWorker() throws -> KeelProcess { try KeelProcess(["serve", "--roles", "worker", "--port", "0"], environment: environment) }
                var workers = [try startWorker(), try startWorker()]
                defer { workers.forEach { $0.signal(SIGKILL) } }
                func succeeded() async throws -> Int {
                    try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE state = 'succeeded'").first?.int("n") ?? 0
                }

                var kills = 0
                let deadline = ContinuousClock.now + .seconds(120)
                while try await succeeded() < 5000, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(300))
                    if kills < 6 {
                        let victim = kills % 2
                        workers[victim].signal(SIGKILL)
                        _ = try await workers[victim].waitForExit()
                        workers[victim] = try startWorker()
                        kills += 1
                    }
                }
                #expect(kills == 6)
                #expect(try await succeeded() == 5000)
                let states = try await store.query("SELECT state, COUNT(*) AS n FROM keel_jobs GROUP BY state")
                #expect(try states.map { try $0.string("state") } == ["succeeded"], "\(states)")

                // Every job that ran twice lost its first run to a worker that never said goodbye (was killed).
                let killed = Set(try await store.query("SELECT id FROM keel_workers WHERE stopped_at IS NULL").map { try $0.string("id") })
                let repeated = try await store.query("SELECT attempt, errors FROM keel_jobs WHERE attempt > 1")
                for row in repeated {
                    let errors = try JSONDecoder.keel().decode([JobAttemptError].self, from: Data(try row.string("errors").utf8))
                    #expect(errors.count == (try row.int("attempt")) - 1)
                    for error in errors {
                        #expect(error.error.contains("lost its lease"))
                        #expect(error.workerID.map(killed.contains) == true)
                    }
                }
                // At most a batch of in-flight jobs per kill can repeat.
                #expect(repeated.count <= kills * 8 * 2)
            }
        }
    }
}

/// `keel jobs enqueue` from several processes at once with one unique key: exactly one job.
@Suite struct ConcurrentEnqueueTests {
    @Test func processesRacingOnAUniqueKeyMakeOneJob() async throws {
        try await TestPostgres.withDatabase { url in
            let environment = [
                "KEEL_DATABASE_URL": url.connectionString(),
                "KEEL_DATABASE_TLS": "disable",
            ]
            // Migrate first, so the race is about the key and not the schema.
            let migrate = try KeelProcess(["migrate"], environment: environment)
            #expect(try await migrate.waitForExit() == 0)
            let racers = try (0..<6).map { _ in
                try KeelProcess(["jobs", "enqueue", "keel.noop", "--unique-key", "nightly-2026-11-25"], environment: environment)
            }
            var ids: [String] = []
            for racer in racers {
                #expect(try await racer.waitForExit() == 0, "\(racer.stderr)")
                ids.append(String(racer.stdout.prefix(while: { !$0.isWhitespace })))
            }
            #expect(Set(ids).count == 1, "\(racers.map { $0.stdout + $0.stderr })")
            #expect(racers.filter { !$0.stdout.contains("already enqueued") }.count == 1)
            let store = try PostgresStore(url: url, tls: .disable, maximumConnections: 1, logger: quietLogger)
            let jobs = try await withRunningStore(store) { store in try await store.query("SELECT id FROM keel_jobs").count }
            #expect(jobs == 1)
        }
    }
}

/// The database drops every connection in the middle of a drain (a proxy in front of PostgreSQL is
/// killed and started again): the worker process reconnects and finishes; nothing is lost.
@Suite struct StoreRestartTests {
    @Test func aDrainSurvivesTheDatabaseGoingAwayAndComingBack() async throws {
        try await TestPostgres.withDatabase { direct in
            let store = try PostgresStore(url: direct, tls: .disable, maximumConnections: 2, logger: quietLogger)
            try await withRunningStore(store) { store in
                try await store.migrate(Platform.migrations)
                let queue = JobQueue(store: store, tasks: Platform.tasks(KeelConfig()))
                // Short backoffs: on a loaded machine a run may lose its lease more than once, and this test is about
                // losing nothing, not about waiting out long retries.
                for _ in 0..<3 { _ = try await queue.enqueue((0..<1000).map { _ in NewJob(task: "keel.noop", backoffSeconds: 1) }) }
                func succeeded() async throws -> Int {
                    try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE state = 'succeeded'").first?.int("n") ?? 0
                }

                var proxy = try PythonHelper("tcp_proxy.py", arguments: ["0", String(direct.port)])
                let proxyPort = try await proxy.listeningPort()
                let worker = try KeelProcess(["serve", "--roles", "worker,api", "--port", "0"], environment: [
                    "KEEL_DATABASE_URL": direct.connectionString(port: proxyPort),
                    "KEEL_DATABASE_TLS": "disable", "KEEL_JOB_LEASE_SECONDS": "3", "KEEL_ACCESS_LOG": "false",
                ])
                defer { worker.signal(SIGKILL) }
                let port = try await worker.waitUntilReady()

                // Cut the database off once the drain is under way, for two seconds.
                let started = try await eventually(timeout: .seconds(30)) { try await succeeded() > 300 }
                #expect(started)
                proxy.stop()
                try await Task.sleep(for: .seconds(2))
                let unready = try RawConnection.request(port: port, method: "GET", path: "/readyz")
                #expect(unready.status == 503)
                proxy = try PythonHelper("tcp_proxy.py", arguments: [String(proxyPort), String(direct.port)])
                defer { proxy.stop() }
                _ = try await proxy.listeningPort()

                let finished = try await eventually(timeout: .seconds(90)) { try await succeeded() == 3000 }
                let count = try await succeeded()
                #expect(finished, "\(count) of 3000 succeeded; the worker said: \(worker.stdout.suffix(3000)) \(worker.stderr.suffix(3000))")
                let states = try await store.query("SELECT state, COUNT(*) AS n, MAX(attempt) AS attempts FROM keel_jobs GROUP BY state")
                let summary = try states.map { "\(try $0.string("state"))=\(try $0.int("n")) (attempts up to \(try $0.int("attempts")))" }
                #expect(try states.map { try $0.string("state") } == ["succeeded"], "\(summary)")
                #expect(try RawConnection.request(port: port, method: "GET", path: "/readyz").status == 200)
            }
        }
    }
}
