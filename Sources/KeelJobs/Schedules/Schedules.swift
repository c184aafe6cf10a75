import Foundation
import KeelCore
import KeelServer
import KeelStore
import Logging
import ServiceLifecycle

/// A recurring job (Celery Beat's entry): a cron expression or a fixed interval, in a time zone.
public struct ScheduleRecord: Codable, Sendable, Equatable {
    public var name: String
    public var cron: String?
    public var everySeconds: Int?
    public var timezone: String
    public var queue: String
    public var task: String
    public var args: JSONValue
    public var paused: Bool
    /// `skip`: missed fires are dropped; `run_once`: after downtime the schedule fires once to catch up.
    public var misfire: String
    public var nextRunAt: Date?
    public var lastRunAt: Date?
    public var lastJobID: String?
    public var createdAt: Date
    public var updatedAt: Date
    /// The next five fire times (on reads of one schedule).
    public var upcoming: [Date]?
    /// Kept as declared in configuration (`schedules`): changes through the API last until the next start.
    public var declared: Bool

    enum CodingKeys: String, CodingKey {
        case name, cron, timezone, queue, task, args, paused, misfire, upcoming, declared
        case everySeconds = "every_seconds"
        case nextRunAt = "next_run_at"
        case lastRunAt = "last_run_at"
        case lastJobID = "last_job_id"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    init(row: SQLRow) throws {
        name = try row.string("name")
        cron = try row.optionalString("cron")
        everySeconds = try row.optionalInt("every_seconds")
        timezone = try row.string("timezone")
        queue = try row.string("queue")
        task = try row.string("task")
        args = (try? JSONDecoder.keel().decode(JSONValue.self, from: Data(try row.string("args").utf8))) ?? .object([:])
        paused = try row.bool("paused")
        misfire = try row.string("misfire")
        nextRunAt = try row.optionalDate("next_run_at")
        lastRunAt = try row.optionalDate("last_run_at")
        lastJobID = try row.optionalString("last_job_id")
        createdAt = try row.date("created_at")
        updatedAt = try row.date("updated_at")
        declared = try row.bool("declared")
    }

    /// Whether `input` describes this schedule as it stands (pausing aside).
    func matches(_ input: ScheduleInput) -> Bool {
        cron == input.cron && everySeconds == input.everySeconds && timezone == (input.timezone ?? "UTC")
            && queue == (input.queue ?? JobQueue.defaultQueue) && task == input.task && args == (input.args ?? .object([:]))
            && misfire == (input.misfire ?? "skip") && (input.paused == nil || input.paused == paused)
    }

    /// When this schedule fires next after `date`.
    func nextFire(after date: Date) -> Date? {
        if let everySeconds {
            // Anchored at creation, so every replica computes the same ticks.
            let elapsed = date.timeIntervalSince(createdAt)
            let ticks = max(0, (elapsed / Double(everySeconds)).rounded(.down) + 1)
            return createdAt.addingTimeInterval(ticks * Double(everySeconds))
        }
        guard let cron, let expression = try? CronExpression(cron), let zone = TimeZone(identifier: timezone) else { return nil }
        return expression.next(after: date, in: zone)
    }
}

/// `POST /api/v1/schedules` and `PUT /api/v1/schedules/{name}`.
public struct ScheduleInput: Codable, Sendable {
    public var name: String?
    public var cron: String?
    public var everySeconds: Int?
    public var timezone: String?
    public var queue: String?
    public var task: String
    public var args: JSONValue?
    public var paused: Bool?
    public var misfire: String?

    public init(name: String? = nil, cron: String? = nil, everySeconds: Int? = nil, timezone: String? = nil, queue: String? = nil,
                task: String, args: JSONValue? = nil, paused: Bool? = nil, misfire: String? = nil) {
        self.name = name
        self.cron = cron
        self.everySeconds = everySeconds
        self.timezone = timezone
        self.queue = queue
        self.task = task
        self.args = args
        self.paused = paused
        self.misfire = misfire
    }

    enum CodingKeys: String, CodingKey {
        case name, cron, timezone, queue, task, args, paused, misfire
        case everySeconds = "every_seconds"
    }
}

extension JobQueue {
    static let scheduleColumns: StaticString = """
        name, cron, every_seconds, timezone, queue, task, args, paused, misfire, next_run_at, last_run_at, last_job_id, created_at, updated_at, \
        declared
        """

    public func schedules() async throws -> [ScheduleRecord] {
        try await store.query("SELECT \(unsafeRaw: Self.scheduleColumns) FROM keel_schedules ORDER BY name").map(ScheduleRecord.init(row:))
    }

    public func schedule(named name: String) async throws -> ScheduleRecord {
        guard let row = try await store.query("SELECT \(unsafeRaw: Self.scheduleColumns) FROM keel_schedules WHERE name = \(name)").first else {
            throw Problem.notFound("No schedule is named \(name).")
        }
        var schedule = try ScheduleRecord(row: row)
        var upcoming: [Date] = []
        var cursor = clock.now()
        while upcoming.count < 5, let next = schedule.nextFire(after: cursor) {
            upcoming.append(next)
            cursor = next
        }
        schedule.upcoming = upcoming
        return schedule
    }

    /// Creates or replaces a schedule; the next fire is computed from now.
    /// - Parameter declared: the schedule comes from configuration.
    public func saveSchedule(named name: String, _ input: ScheduleInput, declared: Bool = false) async throws -> ScheduleRecord {
        var errors: [FieldError] = []
        if !Self.isValidName(name, maxLength: 100) { errors.append(FieldError(field: "name", message: "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'")) }
        switch (input.cron, input.everySeconds) {
        case (let cron?, nil):
            do { _ = try CronExpression(cron) } catch { errors.append(FieldError(field: "cron", message: error.description)) }
        case (nil, let seconds?):
            if !(1...31_536_000).contains(seconds) { errors.append(FieldError(field: "every_seconds", message: "must be from 1 to 31536000")) }
        default:
            errors.append(FieldError(field: "cron", message: "give exactly one of cron and every_seconds"))
        }
        let timezone = input.timezone ?? "UTC"
        if TimeZone(identifier: timezone) == nil { errors.append(FieldError(field: "timezone", message: "\"\(timezone)\" is not an IANA time zone such as Europe/Berlin")) }
        let misfire = input.misfire ?? "skip"
        if !["skip", "run_once"].contains(misfire) { errors.append(FieldError(field: "misfire", message: "must be skip or run_once")) }
        let external = try await externalQueues(among: [input.queue ?? Self.defaultQueue])
        errors += validate(NewJob(queue: input.queue, task: input.task, args: input.args), now: clock.now(), externalQueue: !external.isEmpty)
        guard errors.isEmpty else { throw Problem.validation("The schedule is invalid.", errors: errors) }

        let now = clock.now()
        let existing = try? await schedule(named: name)
        let args = Self.encodeJSON(input.args ?? .object([:]))
        let createdAt = existing?.createdAt ?? now
        try await store.transaction { tx in
            try await tx.execute("DELETE FROM keel_schedules WHERE name = \(name)")
            try await tx.execute("""
                INSERT INTO keel_schedules (name, cron, every_seconds, timezone, queue, task, args, paused, misfire, next_run_at, last_run_at,
                                            last_job_id, created_at, updated_at, declared)
                VALUES (\(name), \(input.cron), \(input.everySeconds), \(timezone), \(input.queue ?? Self.defaultQueue), \(input.task), \(args),
                        \(input.paused ?? false), \(misfire), \(Optional<Date>.none), \(existing?.lastRunAt), \(existing?.lastJobID), \(createdAt), \(now),
                        \(declared))
                """)
        }
        var saved = try await schedule(named: name)
        let next = saved.nextFire(after: now)
        try await store.execute("UPDATE keel_schedules SET next_run_at = \(next) WHERE name = \(name)")
        saved.nextRunAt = next
        return saved
    }

    /// Makes the stored schedules match those declared in configuration (name → `ScheduleInput` JSON): new ones are
    /// created, changed ones replaced (keeping whether an operator paused them), and formerly declared ones no longer
    /// in the configuration removed. Unchanged ones are left alone, so restarts do not move their timetable.
    /// - Throws: ``FatalStartupError`` naming the schedule and field at fault.
    public func syncDeclaredSchedules(_ declared: [String: String]) async throws {
        for (name, json) in declared.sorted(by: { $0.key < $1.key }) {
            let input: ScheduleInput
            do {
                input = try JSONDecoder.keel().decode(ScheduleInput.self, from: Data(json.utf8))
            } catch {
                let reason = (error as? DecodingError).map { FieldError($0) }.map { "\($0.field): \($0.message)" } ?? "\(error)"
                throw FatalStartupError("schedules.\(name) is invalid: \(reason)")
            }
            let existing = try? await schedule(named: name)
            if let existing, existing.declared, existing.matches(input) { continue }
            var kept = input
            kept.paused = input.paused ?? existing?.paused
            do {
                _ = try await saveSchedule(named: name, kept, declared: true)
            } catch let problem as Problem {
                let faults = (problem.fieldErrors.map { "\($0.field): \($0.message)" }).joined(separator: "; ")
                throw FatalStartupError("schedules.\(name) is invalid: \(faults.isEmpty ? problem.detail : faults)")
            }
            logger.info("schedule declared in configuration saved", metadata: ["schedule": .string(name)])
        }
        for row in try await store.query("SELECT name FROM keel_schedules WHERE declared = \(true)") {
            let name = try row.string("name")
            guard declared[name] == nil else { continue }
            try? await deleteSchedule(named: name)
            logger.info("schedule no longer declared in configuration removed", metadata: ["schedule": .string(name)])
        }
    }

    public func deleteSchedule(named name: String) async throws {
        let deleted = try await store.execute("DELETE FROM keel_schedules WHERE name = \(name) RETURNING name")
        guard !deleted.isEmpty else { throw Problem.notFound("No schedule is named \(name).") }
        try await store.execute("DELETE FROM keel_schedule_fires WHERE schedule = \(name)")
    }

    public func setSchedulePaused(_ name: String, paused: Bool) async throws -> ScheduleRecord {
        let schedule = try await schedule(named: name)
        let now = clock.now()
        // Resuming starts from now: fires missed while paused are not caught up.
        let next = paused ? schedule.nextRunAt : schedule.nextFire(after: now)
        try await store.execute("UPDATE keel_schedules SET paused = \(paused), next_run_at = \(next), updated_at = \(now) WHERE name = \(name)")
        return try await self.schedule(named: name)
    }

    /// Enqueues the schedule's job now, outside its timetable.
    public func triggerSchedule(_ name: String) async throws -> JobRecord {
        let schedule = try await schedule(named: name)
        return try await enqueue([NewJob(queue: schedule.queue, task: schedule.task, args: schedule.args, tags: ["schedule:\(name)"])])[0].job
    }

    static let misfireGrace: TimeInterval = 60

    /// Fires every due schedule once. Any number of schedulers may run this at once: the fire record's
    /// primary key lets exactly one of them enqueue each tick; the others see the conflict and move on.
    @discardableResult
    func fireDueSchedules() async throws -> Int {
        let now = clock.now()
        let due = try await store.query("""
            SELECT \(unsafeRaw: Self.scheduleColumns) FROM keel_schedules WHERE paused = \(false) AND next_run_at IS NOT NULL AND next_run_at <= \(now)
            """).map(ScheduleRecord.init(row:))
        var fired = 0
        for schedule in due {
            guard let fireAt = schedule.nextRunAt else { continue }
            // A tick less than `misfireGrace` late fires, and the next one follows it (a slow loop catches
            // up tick by tick). Later than that (downtime), `skip` drops the missed ticks and `run_once`
            // fires once for all of them; either way the schedule resumes from now.
            let missed = now.timeIntervalSince(fireAt) > Self.misfireGrace
            let nextAfter = missed ? schedule.nextFire(after: now) : schedule.nextFire(after: fireAt)
            if missed && schedule.misfire == "skip" {
                try await store.execute("UPDATE keel_schedules SET next_run_at = \(nextAfter) WHERE name = \(schedule.name) AND next_run_at = \(fireAt)")
                continue
            }
            let prepared = try await prepare([NewJob(queue: schedule.queue, task: schedule.task, args: schedule.args, tags: ["schedule:\(schedule.name)"])])
            let maxLengths = try await queueLimits().maxLengths
            let outcome: [InsertOutcome]? = try await store.transaction { tx in
                let claimed = try await tx.execute("""
                    INSERT INTO keel_schedule_fires (schedule, fire_at, job_id) VALUES (\(schedule.name), \(fireAt), \(prepared[0].id))
                    ON CONFLICT (schedule, fire_at) DO NOTHING RETURNING job_id
                    """)
                guard !claimed.isEmpty else { return nil }
                let outcome = try await self.insert(prepared, maxLengths: maxLengths, in: tx)
                try await tx.execute("""
                    UPDATE keel_schedules SET next_run_at = \(nextAfter), last_run_at = \(fireAt), last_job_id = \(prepared[0].id)
                    WHERE name = \(schedule.name) AND next_run_at = \(fireAt)
                    """)
                return outcome
            }
            if let outcome {
                try await finishEnqueue(outcome, fetch: false)
                fired += 1
            }
        }
        return fired
    }
}

/// The scheduler role: checks for due schedules every `interval`. No leader: every replica runs it.
public struct JobScheduler: Service {
    let queue: JobQueue
    let interval: Duration
    let readiness: Readiness?
    let logger = Logger(label: "keel.jobs.scheduler")

    public init(queue: JobQueue, interval: Duration = .milliseconds(500), readiness: Readiness? = nil) {
        self.queue = queue
        self.interval = interval
        self.readiness = readiness
    }

    public func run() async throws {
        if let readiness {
            guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await queue.fireDueSchedules()
                    try await queue.expireStaleJobs()
                } catch {
                    logger.warning("cannot fire schedules", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
