import Foundation
import KeelCore
@testable import KeelJobs
import KeelPlatform
import KeelStore
import KeelTestSupport
import Testing

/// Three scheduler processes on one PostgreSQL, for minutes, with a one-second schedule declared in their
/// configuration: every tick enqueues exactly one job, also while one of them is killed and restarted.
@Suite struct SchedulerReplicaTests {
    /// Three minutes by default; `KEEL_TEST_SCHEDULER_SECONDS` shortens it for local iteration.
    static let duration = Int(ProcessInfo.processInfo.environment["KEEL_TEST_SCHEDULER_SECONDS"] ?? "") ?? 180

    @Test func threeSchedulerProcessesFireEachTickOnce() async throws {
        try await TestPostgres.withDatabase { url in
            let store = try PostgresStore(url: url, tls: .disable, maximumConnections: 2, logger: quietLogger)
            try await withRunningStore(store) { store in
                let environment = [
                    "KEEL_DATABASE_URL": url.connectionString(), "KEEL_DATABASE_TLS": "disable",
                    "KEEL_LOG_LEVEL": "info", "KEEL_ACCESS_LOG": "false",
                    "KEEL_SCHEDULES": #"{"tick": {"every_seconds": 1, "task": "keel.noop", "queue": "ticks"}}"#,
                ]
                func startScheduler() throws -> KeelProcess {
                    try KeelProcess(["serve", "--roles", "scheduler", "--port", "0"], environment: environment)
                }
                var schedulers = [try startScheduler(), try startScheduler(), try startScheduler()]
                defer { schedulers.forEach { $0.signal(SIGKILL) } }
                for scheduler in schedulers { _ = try await scheduler.waitUntilReady() }

                let started = ContinuousClock.now
                let end = started + .seconds(Self.duration)
                var killed = false
                while ContinuousClock.now < end {
                    try await Task.sleep(for: .seconds(1))
                    // Halfway, one replica dies without a word and comes back.
                    if !killed, ContinuousClock.now - started > .seconds(Self.duration / 2) {
                        schedulers[1].signal(SIGKILL)
                        _ = try await schedulers[1].waitForExit()
                        schedulers[1] = try startScheduler()
                        killed = true
                    }
                }
                for scheduler in schedulers { scheduler.signal(SIGTERM) }
                for scheduler in schedulers { _ = try await scheduler.waitForExit() }

                let fires = try await store.query("SELECT fire_at, job_id FROM keel_schedule_fires WHERE schedule = 'tick' ORDER BY fire_at")
                let jobs = try await store.query("SELECT id FROM keel_jobs WHERE queue = 'ticks'")
                let times = try fires.map { try $0.date("fire_at").timeIntervalSince1970 }
                #expect(fires.count >= Self.duration - 3, "\(fires.count) fires in \(Self.duration) s")
                #expect(jobs.count == fires.count)
                #expect(Set(try fires.map { try $0.string("job_id") }) == Set(try jobs.map { try $0.string("id") }))
                // One second apart throughout: no tick skipped, none fired twice.
                let gaps = zip(times.dropFirst(), times).map { $0 - $1 }.filter { abs($0 - 1) > 0.001 }
                #expect(gaps.isEmpty, "irregular gaps: \(gaps)")
                let declared = try await store.query("SELECT declared FROM keel_schedules WHERE name = 'tick'")
                #expect(try declared.first?.bool("declared") == true)
            }
        }
    }
}
