import Foundation
import KeelCore
import KeelServer
import KeelStore

/// A queue as the API shows it: its settings and how many jobs it holds in each state.
public struct QueueRecord: Codable, Sendable, Equatable {
    public var name: String
    public var paused: Bool
    public var maxLength: Int?
    /// Worked by HTTP workers (any language): enqueues may name tasks this binary does not know.
    public var external: Bool
    public var rateLimit: QueueRateLimit?
    public var counts: [String: Int]

    enum CodingKeys: String, CodingKey {
        case name, paused, external, counts
        case maxLength = "max_length"
        case rateLimit = "rate_limit"
    }
}

/// `PATCH /api/v1/queues/{name}`.
public struct QueueChange: Codable, Sendable {
    public var paused: Bool?
    /// Waiting jobs the queue may hold; `0` removes the limit.
    public var maxLength: Int?
    public var external: Bool?
    /// A `limit` of `0` removes the rate limit.
    public var rateLimit: QueueRateLimit?

    public init(paused: Bool? = nil, maxLength: Int? = nil, external: Bool? = nil, rateLimit: QueueRateLimit? = nil) {
        self.paused = paused
        self.maxLength = maxLength
        self.external = external
        self.rateLimit = rateLimit
    }

    enum CodingKeys: String, CodingKey {
        case paused, external
        case maxLength = "max_length"
        case rateLimit = "rate_limit"
    }
}

extension JobQueue {
    /// Every queue that has jobs or settings, with counts by state.
    public func queues() async throws -> [QueueRecord] {
        var records: [String: QueueRecord] = [:]
        for row in try await store.query("SELECT name, paused, max_length, external, rate_limit, rate_per_seconds FROM keel_queues") {
            let name = try row.string("name")
            let rateLimit = try row.optionalInt("rate_limit").map { QueueRateLimit(limit: $0, perSeconds: try row.int("rate_per_seconds")) }
            records[name] = QueueRecord(name: name, paused: try row.bool("paused"), maxLength: try row.optionalInt("max_length"),
                                        external: try row.bool("external"), rateLimit: rateLimit, counts: [:])
        }
        for row in try await store.query("SELECT queue, state, COUNT(*) AS n FROM keel_jobs GROUP BY queue, state") {
            let name = try row.string("queue")
            records[name, default: QueueRecord(name: name, paused: false, maxLength: nil, external: false, rateLimit: nil, counts: [:])].counts[try row.string("state")] = try row.int("n")
        }
        return records.values.map { record in
            var record = record
            for state in JobState.allCases where record.counts[state.rawValue] == nil { record.counts[state.rawValue] = 0 }
            return record
        }.sorted { $0.name < $1.name }
    }

    public func queue(named name: String) async throws -> QueueRecord {
        try await queues().first { $0.name == name } ?? QueueRecord(
            name: name, paused: false, maxLength: nil, external: false, rateLimit: nil, counts: Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, 0) }))
    }

    public func updateQueue(named name: String, _ change: QueueChange) async throws -> QueueRecord {
        var errors: [FieldError] = []
        if !Self.isValidName(name, maxLength: 100) || name == Self.anyQueue {
            errors.append(FieldError(field: "name", message: "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'"))
        }
        if let length = change.maxLength, !(0...100_000_000).contains(length) {
            errors.append(FieldError(field: "max_length", message: "must be from 0 (no limit) to 100000000"))
        }
        if let rate = change.rateLimit {
            if !(0...1_000_000).contains(rate.limit) { errors.append(FieldError(field: "rate_limit.limit", message: "must be from 0 (no limit) to 1000000")) }
            if !(1...86_400).contains(rate.perSeconds) { errors.append(FieldError(field: "rate_limit.per_seconds", message: "must be from 1 to 86400")) }
        }
        guard errors.isEmpty else { throw Problem.validation("The queue change is invalid.", errors: errors) }
        let current = try await queue(named: name)
        let rateLimit = change.rateLimit.map { $0.limit == 0 ? nil : $0 } ?? current.rateLimit
        let paused = change.paused ?? current.paused
        let maxLength = change.maxLength.map { $0 == 0 ? nil : $0 } ?? current.maxLength
        let external = change.external ?? current.external
        try await store.transaction { tx in
            try await tx.execute("DELETE FROM keel_queues WHERE name = \(name)")
            try await tx.execute("""
                INSERT INTO keel_queues (name, paused, max_length, external, rate_limit, rate_per_seconds, updated_at)
                VALUES (\(name), \(paused), \(maxLength), \(external), \(rateLimit?.limit), \(rateLimit?.perSeconds), \(self.clock.now()))
                """)
        }
        forgetQueueLimits()
        if !paused { await wakeWorkers() }
        return try await queue(named: name)
    }

    /// Deletes a queue's jobs in `states` (by default the waiting ones: Celery's purge); returns how many.
    public func purge(queue name: String, states: [JobState]?) async throws -> Int {
        let states = states ?? JobState.claimable
        if states.contains(.running) {
            throw Problem.validation("Running jobs cannot be purged.", errors: [FieldError(field: "states", message: "must not include running; cancel them first")])
        }
        let now = clock.now()
        return try await store.transaction { tx in
            var deleted = 0
            for state in states {
                let rows = try await tx.execute("DELETE FROM keel_jobs WHERE queue = \(name) AND state = \(state.rawValue) RETURNING id, workflow_id")
                deleted += rows.count
                // A purged step can never succeed: its workflow fails rather than waiting forever.
                for row in rows where !state.isFinal {
                    guard let workflowID = try row.optionalString("workflow_id") else { continue }
                    try await self.workflowStepFailed(jobID: try row.string("id"), workflowID: workflowID, now: now, in: tx)
                }
            }
            return deleted
        }
    }
}

extension JobQueue {
    /// The queues, among `names`, that external workers serve.
    func externalQueues(among names: Set<String>) async throws -> Set<String> {
        guard !names.isEmpty else { return [] }
        let rows = try await store.query("SELECT name FROM keel_queues WHERE external = \(true)")
        return Set(try rows.map { try $0.string("name") }).intersection(names)
    }
}

/// A queue's recent work (Flower's graphs): finished jobs in a time window, their rate, and how long
/// they waited and ran, as percentiles.
public struct QueueStats: Codable, Sendable, Equatable {
    public struct Percentiles: Codable, Sendable, Equatable {
        public var p50: Double
        public var p95: Double
        public var p99: Double
        public var max: Double
    }

    public var queue: String
    public var windowSeconds: Int
    public var finished: [String: Int]
    public var throughputPerMinute: Double
    /// Seconds from due (`run_at`) to start, and from start to finish, of the most recent succeeded jobs.
    public var waitSeconds: Percentiles?
    public var runSeconds: Percentiles?
    public var sample: Int

    enum CodingKeys: String, CodingKey {
        case queue, finished, sample
        case windowSeconds = "window_seconds"
        case throughputPerMinute = "throughput_per_minute"
        case waitSeconds = "wait_seconds"
        case runSeconds = "run_seconds"
    }
}

extension JobQueue {
    /// Figures over the last `windowSeconds`; percentiles from the latest 5,000 succeeded jobs in it.
    public func stats(queue name: String, windowSeconds: Int) async throws -> QueueStats {
        let since = clock.now().addingTimeInterval(-TimeInterval(windowSeconds))
        var finished: [String: Int] = [:]
        for row in try await store.query("""
            SELECT state, COUNT(*) AS n FROM keel_jobs WHERE queue = \(name) AND finished_at >= \(since) GROUP BY state
            """) {
            finished[try row.string("state")] = try row.int("n")
        }
        let rows = try await store.query("""
            SELECT run_at, started_at, finished_at FROM keel_jobs
            WHERE queue = \(name) AND state = 'succeeded' AND finished_at >= \(since) ORDER BY finished_at DESC LIMIT 5000
            """)
        var waits: [Double] = [], runs: [Double] = []
        for row in rows {
            guard let started = try row.optionalDate("started_at"), let done = try row.optionalDate("finished_at") else { continue }
            waits.append(max(0, started.timeIntervalSince(try row.date("run_at"))))
            runs.append(max(0, done.timeIntervalSince(started)))
        }
        func percentiles(_ values: [Double]) -> QueueStats.Percentiles? {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            func at(_ fraction: Double) -> Double { sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)] }
            return .init(p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[sorted.count - 1])
        }
        let total = finished.values.reduce(0, +)
        return QueueStats(queue: name, windowSeconds: windowSeconds, finished: finished,
                          throughputPerMinute: Double(total) / (Double(windowSeconds) / 60),
                          waitSeconds: percentiles(waits), runSeconds: percentiles(runs), sample: rows.count)
    }
}

/// Jobs that finished in one minute: for good (succeeded) or for bad (dead after their last attempt).
public struct FinishedMinute: Sendable, Equatable {
    public var minute: Date
    public var succeeded: Int
    public var failed: Int
}

extension JobQueue {
    /// Finished jobs per minute since `since`, oldest first; minutes without any are left out.
    public func finishedPerMinute(since: Date) async throws -> [FinishedMinute] {
        // Timestamps are TIMESTAMPTZ on PostgreSQL and integer microseconds on SQLite.
        let query: SQLQuery = store.dialect == .postgres
            ? """
              SELECT CAST(FLOOR(EXTRACT(EPOCH FROM finished_at) / 60) AS BIGINT) AS minute, state, COUNT(*) AS n FROM keel_jobs
              WHERE state IN ('succeeded', 'dead') AND finished_at >= \(since) GROUP BY 1, 2
              """
            : """
              SELECT finished_at / 60000000 AS minute, state, COUNT(*) AS n FROM keel_jobs
              WHERE state IN ('succeeded', 'dead') AND finished_at >= \(since) GROUP BY 1, 2
              """
        var minutes: [Int: FinishedMinute] = [:]
        for row in try await store.query(query) {
            let index = try row.int("minute")
            var entry = minutes[index] ?? FinishedMinute(minute: Date(timeIntervalSince1970: TimeInterval(index * 60)), succeeded: 0, failed: 0)
            if try row.string("state") == "succeeded" { entry.succeeded += try row.int("n") } else { entry.failed += try row.int("n") }
            minutes[index] = entry
        }
        return minutes.values.sorted { $0.minute < $1.minute }
    }
}

extension JobQueue {
    /// Per queue, how long its oldest due job (available or retrying, `run_at` passed) has waited to start, in seconds.
    public func oldestWaiting() async throws -> [String: Double] {
        let now = clock.now()
        var oldest: [String: Double] = [:]
        for row in try await store.query("""
            SELECT queue, MIN(run_at) AS oldest FROM keel_jobs WHERE state IN ('available', 'retrying') AND run_at <= \(now) GROUP BY queue
            """) {
            oldest[try row.string("queue")] = max(0, now.timeIntervalSince(try row.date("oldest")))
        }
        return oldest
    }
}
