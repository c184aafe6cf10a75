import Foundation
import KeelCore
@testable import KeelJobs
import KeelServer
import KeelStore
import KeelTestSupport
import Testing

@Suite struct CronExpressionTests {
    static func date(_ text: String) -> Date { Timestamp.parseOrFail(text) }
    let utc = TimeZone(identifier: "UTC")!

    @Test func nextFireTimes() throws {
        let quarter = try CronExpression("*/15 * * * *")
        #expect(quarter.next(after: Self.date("2026-11-25T10:07:30Z"), in: utc) == Self.date("2026-11-25T10:15:00Z"))
        #expect(quarter.next(after: Self.date("2026-11-25T10:15:00Z"), in: utc) == Self.date("2026-11-25T10:30:00Z"))

        let weekdays = try CronExpression("0 9 * * MON-FRI")
        let berlin = try #require(TimeZone(identifier: "Europe/Berlin"))
        // Saturday noon → Monday 09:00 in Berlin (UTC+1 in winter).
        #expect(weekdays.next(after: Self.date("2026-11-28T12:00:00Z"), in: berlin) == Self.date("2026-11-30T08:00:00Z"))
        // In summer the same local time is 07:00 UTC.
        #expect(weekdays.next(after: Self.date("2026-07-04T12:00:00Z"), in: berlin) == Self.date("2026-07-06T07:00:00Z"))

        #expect(try CronExpression("@daily").next(after: Self.date("2026-11-25T10:00:00Z"), in: utc) == Self.date("2026-11-26T00:00:00Z"))
        #expect(try CronExpression("@hourly").next(after: Self.date("2026-11-25T10:00:00Z"), in: utc) == Self.date("2026-11-25T11:00:00Z"))
        #expect(try CronExpression("0 0 29 2 *").next(after: Self.date("2026-03-01T00:00:00Z"), in: utc) == Self.date("2028-02-29T00:00:00Z"))
        // Both day fields restricted: the 13th or any Friday, whichever comes first.
        #expect(try CronExpression("0 0 13 * FRI").next(after: Self.date("2026-11-25T00:00:00Z"), in: utc) == Self.date("2026-11-27T00:00:00Z"))
        #expect(try CronExpression("0 0 * * 7").next(after: Self.date("2026-11-25T00:00:00Z"), in: utc) == Self.date("2026-11-29T00:00:00Z"))
        #expect(try CronExpression("5,35 8-18/5 * JAN,NOV *").next(after: Self.date("2026-11-25T13:36:00Z"), in: utc) == Self.date("2026-11-25T18:05:00Z"))
        #expect(try CronExpression("0 0 31 2 *").next(after: Self.date("2026-01-01T00:00:00Z"), in: utc) == nil)
    }

    @Test(arguments: [
        ("* * * *", "has 4"), ("61 * * * *", "minute field"), ("* 24 * * *", "hour field"), ("* * 0 * *", "day-of-month field"),
        ("* * * 13 *", "month field"), ("* * * * 8", "day-of-week field"), ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"),
        ("@fortnightly", "not a cron macro"), ("* * * FOO *", "FOO"),
    ])
    func invalidExpressionsSayWhatIsWrong(_ text: String, _ expected: String) {
        #expect(throws: CronExpression.ParseError.self) { try CronExpression(text) }
        do { _ = try CronExpression(text) } catch { #expect(error.description.contains(expected), "\(text): \(error.description)") }
    }
}

extension Timestamp {
    static func parseOrFail(_ text: String) -> Date { parse(text)! }
}

@Suite struct SchedulerTests {
    @Test(arguments: StoreKind.allCases)
    func schedulesValidateAndPreviewTheirFireTimes(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let saved = try await queue.saveSchedule(named: "nightly-report", ScheduleInput(cron: "30 2 * * *", timezone: "Europe/Berlin", task: "echo"))
            let next = try #require(saved.nextRunAt)
            #expect(next > Date())
            let read = try await queue.schedule(named: "nightly-report")
            #expect(read.upcoming?.count == 5)
            #expect(read.upcoming?.first == next)

            func problem(_ input: ScheduleInput) async -> String {
                do { _ = try await queue.saveSchedule(named: "x", input); return "" } catch { return String(describing: (error as? Problem)?.extensions["errors"]) }
            }
            #expect(await problem(ScheduleInput(cron: "61 * * * *", task: "echo")).contains("minute field"))
            #expect(await problem(ScheduleInput(cron: "@daily", timezone: "Mars/Olympus", task: "echo")).contains("not an IANA time zone"))
            #expect(await problem(ScheduleInput(cron: "@daily", everySeconds: 5, task: "echo")).contains("exactly one of cron and every_seconds"))
            #expect(await problem(ScheduleInput(everySeconds: 5, task: "nope")).contains("is not a task"))
            #expect(await problem(ScheduleInput(everySeconds: 5, task: "echo", misfire: "later")).contains("skip or run_once"))
        }
    }

    /// Schedules declared in configuration are created, left alone while unchanged (their timetable and an operator's
    /// pause survive restarts), replaced when changed, and removed when no longer declared; others are untouched.
    @Test(arguments: StoreKind.allCases)
    func declaredSchedulesFollowTheConfiguration(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            _ = try await queue.saveSchedule(named: "by-hand", ScheduleInput(everySeconds: 60, task: "echo"))
            try await queue.syncDeclaredSchedules(["nightly": #"{"cron": "30 2 * * *", "timezone": "Europe/Berlin", "task": "echo", "args": {"n": 1}}"#])
            let created = try await queue.schedule(named: "nightly")
            #expect(created.declared && created.cron == "30 2 * * *" && created.args == .object(["n": .number(1)]))
            _ = try await queue.setSchedulePaused("nightly", paused: true)

            try await queue.syncDeclaredSchedules(["nightly": #"{"cron": "30 2 * * *", "timezone": "Europe/Berlin", "task": "echo", "args": {"n": 1}}"#])
            let unchanged = try await queue.schedule(named: "nightly")
            #expect(unchanged.updatedAt == (try await queue.schedule(named: "nightly")).updatedAt && unchanged.paused)

            try await queue.syncDeclaredSchedules(["nightly": #"{"cron": "0 3 * * *", "timezone": "Europe/Berlin", "task": "echo"}"#])
            let changed = try await queue.schedule(named: "nightly")
            #expect(changed.cron == "0 3 * * *" && changed.paused && changed.createdAt == created.createdAt)

            try await queue.syncDeclaredSchedules([:])
            await #expect(throws: Problem.self) { _ = try await queue.schedule(named: "nightly") }
            #expect(try await queue.schedule(named: "by-hand").declared == false)

            let invalid = await #expect(throws: FatalStartupError.self) {
                try await queue.syncDeclaredSchedules(["bad": #"{"cron": "61 * * * *", "task": "echo"}"#])
            }
            #expect(invalid?.description.contains("schedules.bad is invalid: cron") == true)
            let wrongType = await #expect(throws: FatalStartupError.self) {
                try await queue.syncDeclaredSchedules(["typed": #"{"every_seconds": "often", "task": "echo"}"#])
            }
            #expect(wrongType?.description.contains("every_seconds") == true)
        }
    }

    /// Several scheduler replicas on one store: every tick enqueues exactly one job.
    @Test(arguments: StoreKind.allCases)
    func replicasFireEachTickExactlyOnce(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let started = ContinuousClock.now
            _ = try await queue.saveSchedule(named: "heartbeat", ScheduleInput(everySeconds: 1, task: "echo", args: .object(["n": .number(1)])))
            let schedulers = (0..<3).map { _ in JobScheduler(queue: queue, interval: .milliseconds(100)) }
            let tasks = schedulers.map { scheduler in Task { try await scheduler.run() } }
            try await Task.sleep(for: .milliseconds(4500))
            tasks.forEach { $0.cancel() }
            for task in tasks { _ = try? await task.value }
            let elapsed = (ContinuousClock.now - started) / .seconds(1)

            let fires = try await queue.store.query("SELECT fire_at, job_id FROM keel_schedule_fires WHERE schedule = 'heartbeat' ORDER BY fire_at")
            let jobs = try await queue.list(JobQueue.Filter(), limit: 200, after: nil).items.filter { $0.tags == ["schedule:heartbeat"] }
            // At most one fire per elapsed second (however slow the machine), and at least a few.
            #expect(fires.count >= 3 && Double(fires.count) <= elapsed + 1, "\(fires.count) fires in \(elapsed) s")
            #expect(jobs.count == fires.count)
            #expect(Set(try fires.map { try $0.string("job_id") }) == Set(jobs.map(\.id)))
            // Consecutive ticks one second apart: none skipped, none doubled.
            let times = try fires.map { try $0.date("fire_at").timeIntervalSince1970 }
            #expect(zip(times.dropFirst(), times).allSatisfy { abs($0 - $1 - 1) < 0.001 })

            let triggered = try await queue.triggerSchedule("heartbeat")
            #expect(triggered.task == "echo" && triggered.tags == ["schedule:heartbeat"])
            let paused = try await queue.setSchedulePaused("heartbeat", paused: true)
            #expect(paused.paused)
            try await queue.deleteSchedule(named: "heartbeat")
            await #expect(throws: Problem.self) { _ = try await queue.schedule(named: "heartbeat") }
        }
    }
}
