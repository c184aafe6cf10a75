import Foundation
import KeelCore
import KeelServer
import KeelStore
import KeelTelemetry
import Logging
import Metrics
import Synchronization

/// Limits on what one job may carry.
public struct JobLimits: Sendable {
    public var maxArgsBytes = 64 * 1024
    public var maxBatch = 1000
    public init() {}
}

/// What `enqueue` did with one job: created it, or found the live job holding its unique key.
public struct EnqueueOutcome: Encodable, Sendable {
    public var job: JobRecord
    public var duplicate: Bool
}

/// The durable queue: every operation on jobs, shared by the API, the in-process workers and (later)
/// HTTP workers. Every state change is one conditional statement, so two workers can never both own
/// a job, and a stale lease token changes nothing.
public final class JobQueue: Sendable {
    let store: any Store
    let clock: any KeelClock
    let tasks: JobRegistry
    let limits: JobLimits
    let wake = WakeSignal()
    let limitsCache = Mutex(QueueLimitsCache())
    let metrics = MetricHandles()
    /// Successes of plain jobs, written together.
    let completions = WriteBatcher<(claim: Claim, result: String), Bool>(maxBatch: 500)
    /// Single jobs needing no checks, inserted together.
    let inserts = WriteBatcher<PreparedJob, JobRecord>(maxBatch: 200)
    /// This process's workers that can be handed jobs (PostgreSQL, while they hear their channel; see `HandOver.swift`),
    /// by id: they take the jobs this process's inserts hand them as the insert returns. Empty on SQLite, so its inserts
    /// do no hand-over bookkeeping.
    let localWorkers = Mutex<[String: JobWorker]>([:])
    let logger = Logger(label: "keel.jobs")

    static let defaultQueue = "default"
    /// In a worker's queue list: every queue.
    public static let anyQueue = "*"
    static let defaultMaxAttempts = 5
    static let defaultTimeoutSeconds = 300
    static let defaultBackoffSeconds = 10
    static let defaultUniqueSeconds = 3600

    public init(store: any Store, clock: any KeelClock = SystemClock(), tasks: JobRegistry, limits: JobLimits = JobLimits()) {
        self.store = store
        self.clock = clock
        self.tasks = tasks
        self.limits = limits
    }

    // MARK: - Enqueue

    /// Creates the jobs in one transaction; all or none. A job whose unique key is held by a job
    /// enqueued within its window is not created again: the outcome names the existing job.
    public func enqueue(_ jobs: [NewJob]) async throws -> [EnqueueOutcome] {
        let prepared = try await prepare(jobs)
        let maxLengths = try await queueLimits().maxLengths
        // The common case, one job with no unique key into a queue without a max length, is one statement.
        if prepared.count == 1, prepared[0].job.uniqueKey == nil, maxLengths[prepared[0].queue] == nil {
            let record = try await inserts.submit(prepared[0]) { try await self.writeInserts($0) }
            return try await finishEnqueue([InsertOutcome(id: prepared[0].id, duplicate: false, record: record)], fetch: true)
        }
        let outcomes = try await store.transaction { tx in try await self.insert(prepared, maxLengths: maxLengths, in: tx) }
        return try await finishEnqueue(outcomes, fetch: true)
    }

    /// One job `insert` wrote, or the job that already held its unique key (`duplicate`, no `record`).
    struct InsertOutcome: Sendable {
        let id: String
        let duplicate: Bool
        let record: JobRecord?
    }

    /// A validated job ready to insert.
    struct PreparedJob: Sendable {
        let id: String
        let job: NewJob
        let args: String
        let runAt: Date
        let now: Date
        var queue: String { job.queue ?? JobQueue.defaultQueue }
        var initialState: JobState { waitingOn > 0 ? .pending : runAt > now ? .scheduled : .available }
        /// The enqueuer's trace, so the run continues it in whichever process works the job.
        let traceparent: String?
        var workflowID: String? = nil
        /// Earlier workflow steps this one waits for; `pending` until they succeed.
        var waitingOn = 0
    }

    /// Validates `jobs`, naming each bad field (`jobs[3].task` in a batch, or the caller's `fields`), before anything is written.
    func prepare(_ jobs: [NewJob], fields: [String]? = nil) async throws -> [PreparedJob] {
        guard !jobs.isEmpty, jobs.count <= limits.maxBatch else {
            throw Problem.validation("A batch holds 1 to \(limits.maxBatch) jobs.", errors: [FieldError(field: "jobs", message: "must hold 1 to \(limits.maxBatch) jobs")])
        }
        // As the store keeps it (microseconds), so the record built from these values reads back the same.
        let now = Date(timeIntervalSince1970: (clock.now().timeIntervalSince1970 * 1_000_000).rounded() / 1_000_000)
        // Only a task this binary does not know needs its queue to be external.
        let external = try await externalQueues(among: Set(jobs.filter { !tasks.knows($0.task) }.map { $0.queue ?? Self.defaultQueue }))
        let traceparent = TracePropagation.headers().first { $0.name == "traceparent" }?.value
        var errors: [FieldError] = []
        var rows: [PreparedJob] = []
        for (index, job) in jobs.enumerated() {
            let prefix = fields?[index] ?? (jobs.count == 1 ? "" : "jobs[\(index)].")
            errors += validate(job, now: now, externalQueue: external.contains(job.queue ?? Self.defaultQueue))
                .map { FieldError(field: prefix + $0.field, message: $0.message) }
            let args = String(decoding: (try? JSONEncoder.keel().encode(job.args ?? .object([:]))) ?? Data(), as: UTF8.self)
            if args.utf8.count > limits.maxArgsBytes {
                errors.append(FieldError(field: prefix + "args", message: "must be at most \(limits.maxArgsBytes) bytes of JSON"))
            }
            rows.append(PreparedJob(id: KeelID.make(prefix: "job", now: now), job: job, args: args,
                                    runAt: job.runAt ?? now.addingTimeInterval(job.delaySeconds ?? 0), now: now, traceparent: traceparent))
        }
        guard errors.isEmpty else { throw Problem.validation(jobs.count == 1 ? "The job is invalid." : "The batch is invalid; nothing was enqueued.", errors: errors) }
        return rows
    }

    /// Inserts prepared jobs inside the caller's transaction (the scheduler enqueues with its fire record). PostgreSQL
    /// wakes other processes' workers at commit through a trigger on the table.
    /// - Parameter maxLengths: ``queueLimits()``, read before the transaction (a read inside it would wait for a
    ///   second connection while holding one).
    func insert(_ prepared: [PreparedJob], maxLengths: [String: Int], in tx: any StoreTransaction) async throws -> [InsertOutcome] {
        try await Self.checkMaxLength(prepared.map(\.queue), maxLengths: maxLengths, in: tx)
        var outcomes: [InsertOutcome] = []
        for row in prepared {
            if let key = row.job.uniqueKey {
                let until = row.now.addingTimeInterval(TimeInterval(row.job.uniqueForSeconds ?? Self.defaultUniqueSeconds))
                let won = try await tx.execute("""
                    INSERT INTO keel_job_unique_keys (key, job_id, until) VALUES (\(key), \(row.id), \(until))
                    ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, until = excluded.until WHERE keel_job_unique_keys.until <= \(row.now)
                    RETURNING job_id
                    """)
                if won.isEmpty {
                    let holder = try await tx.query("SELECT job_id FROM keel_job_unique_keys WHERE key = \(key)")
                    outcomes.append(InsertOutcome(id: try holder.first?.string("job_id") ?? row.id, duplicate: true, record: nil))
                    continue
                }
            }
            let handedOver = try await tx.execute(insertStatement([row]))
            outcomes.append(InsertOutcome(id: row.id, duplicate: false, record: try Self.inserted(row, handedOver: handedOver.first)))
        }
        return outcomes
    }

    /// One statement for all `rows`. On PostgreSQL it answers the rows the trigger handed over to a worker.
    func insertStatement(_ rows: [PreparedJob]) -> SQLQuery {
        var query: SQLQuery = store.dialect == .postgres ? "WITH inserted AS (" : ""
        query.append("""
            INSERT INTO keel_jobs (id, queue, task, args, priority, state, run_at, attempt, max_attempts, backoff_seconds, timeout_seconds,
                                   unique_key, tags, result, errors, progress_percent, progress_message, cancel_requested, created_at, expires_at,
                                   traceparent, workflow_id, waiting_on)
            VALUES
            """)
        for (index, row) in rows.enumerated() {
            let job = row.job
            query.append(index == 0 ? " " : ", ")
            query.append("""
                (\(row.id), \(row.queue), \(job.task), \(row.args), \(job.priority ?? 0), \(row.initialState.rawValue), \(row.runAt), \(0),
                 \(job.maxAttempts ?? Self.defaultMaxAttempts), \(job.backoffSeconds), \(job.timeoutSeconds ?? Self.defaultTimeoutSeconds),
                 \(job.uniqueKey), \(job.tags.map { Self.encodeJSON($0) } ?? "[]"), \(Optional<String>.none), \("[]"), \(Optional<Int>.none),
                 \(Optional<String>.none), \(false), \(row.now), \(job.ttlSeconds.map { row.runAt.addingTimeInterval(TimeInterval($0)) }),
                 \(row.traceparent), \(row.workflowID), \(row.waitingOn))
                """)
        }
        if store.dialect == .postgres {
            query.append("""
                 RETURNING id, worker_id, lease_token, started_at, lease_expires_at)
                SELECT * FROM inserted WHERE worker_id IS NOT NULL
                """)
        }
        return query
    }

    /// The job as `insertStatement` wrote it: as prepared, or running if the insert handed it to a worker.
    static func inserted(_ row: PreparedJob, handedOver: SQLRow?) throws -> JobRecord {
        var record = JobRecord(inserting: row)
        guard let handedOver else { return record }
        record.state = .running
        record.attempt = 1
        record.workerID = try handedOver.optionalString("worker_id")
        record.startedAt = try handedOver.optionalDate("started_at")
        record.leaseExpiresAt = try handedOver.optionalDate("lease_expires_at")
        return record
    }

    /// The insert of a lone job, the statement an idle system's enqueue waits on.
    enum InsertOneJob: PreparedStatement {}

    /// Inserts `rows`; a job handed to a worker of this process starts as the insert returns.
    func writeInserts(_ rows: [PreparedJob]) async throws -> [JobRecord] {
        let ids = rows.map(\.id)
        let workers = localWorkers.withLock { $0 }
        for worker in workers.values { worker.expectHandOvers(ids) }
        defer { for worker in workers.values { worker.stopExpectingHandOvers(ids) } }
        // A lone job's statement has the same text every time; a batch's text grows with its rows.
        let handedOver = rows.count == 1
            ? try await store.execute(insertStatement(rows), as: InsertOneJob.self)
            : try await store.execute(insertStatement(rows))
        let byID = Dictionary(try handedOver.map { (try $0.string("id"), $0) }) { first, _ in first }
        return try rows.map { row in
            let record = try Self.inserted(row, handedOver: byID[row.id])
            if let token = try byID[row.id]?.optionalString("lease_token"), let worker = record.workerID.flatMap({ workers[$0] }) {
                worker.handedOverByInsert(Claim(job: record, leaseToken: token, traceparent: row.traceparent))
            }
            return record
        }
    }

    /// Channel on which PostgreSQL wakes idle workers of other processes when jobs arrive.
    static let notificationChannel = "keel_jobs"

    /// Wakes this process's idle workers and, on PostgreSQL, other processes' (after a retry or give-back).
    func wakeWorkers() async {
        wake.signal()
        if store.dialect == .postgres { _ = try? await store.query("SELECT pg_notify(\(Self.notificationChannel), '')") }
    }

    /// Sent at commit, so a woken worker finds the jobs.
    func notifyWorkers(in tx: any StoreTransaction) async throws {
        guard store.dialect == .postgres else { return }
        _ = try await tx.query("SELECT pg_notify(\(Self.notificationChannel), '')")
    }

    /// After the commit: metrics, a wake-up for this process's idle workers, and (when `fetch`) the jobs as they now
    /// stand (read back only for duplicates, whose job another enqueue made).
    @discardableResult
    func finishEnqueue(_ outcomes: [InsertOutcome], fetch: Bool) async throws -> [EnqueueOutcome] {
        let created = outcomes.filter { !$0.duplicate }.count
        if created > 0 {
            metrics.counter("keel_jobs_enqueued_total").increment(by: created)
        }
        // Jobs handed over are running already: only jobs left waiting need this process's idle workers to claim.
        if outcomes.contains(where: { !$0.duplicate && $0.record?.state != .running }) {
            wake.signal()
        }
        var result: [EnqueueOutcome] = []
        for outcome in outcomes where fetch {
            let record: JobRecord
            if let inserted = outcome.record { record = inserted } else { record = try await job(id: outcome.id) }
            result.append(EnqueueOutcome(job: record, duplicate: outcome.duplicate))
        }
        return result
    }

    /// Refuses the batch with 429 when it would push a queue past its `max_length` of waiting jobs (limits as this
    /// process last read them, at most a second ago).
    static func checkMaxLength(_ queues: [String], maxLengths: [String: Int], in tx: any StoreTransaction) async throws {
        for (name, adding) in Dictionary(queues.map { ($0, 1) }, uniquingKeysWith: +) {
            guard let limit = maxLengths[name] else { continue }
            let waiting = try await tx.query("""
                SELECT COUNT(*) AS n FROM keel_jobs WHERE queue = \(name) AND state IN ('available', 'scheduled', 'retrying')
                """).first?.int("n") ?? 0
            if waiting + adding > limit {
                throw Problem.tooManyRequests("Queue \(name) holds \(waiting) waiting jobs, its limit is \(limit); retry when it has drained.",
                                              retryAfterSeconds: 5)
            }
        }
    }

    /// - Parameter externalQueue: the job's queue is worked over HTTP, so any well-formed task name goes.
    func validate(_ job: NewJob, now: Date, externalQueue: Bool = false) -> [FieldError] {
        var errors: [FieldError] = []
        if !Self.isValidName(job.task, maxLength: 200) {
            errors.append(FieldError(field: "task", message: "must be 1-200 characters of letters, digits, '.', '_', ':' or '-'"))
        } else if !externalQueue && !tasks.knows(job.task) {
            errors.append(FieldError(field: "task", message: "\"\(job.task)\" is not a task any worker handles (mark the queue external for HTTP workers)"))
        }
        if let queue = job.queue, !Self.isValidName(queue, maxLength: 100) {
            errors.append(FieldError(field: "queue", message: "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'"))
        }
        if let priority = job.priority, !(-1000...1000).contains(priority) { errors.append(FieldError(field: "priority", message: "must be from -1000 to 1000")) }
        if job.runAt != nil, job.delaySeconds != nil { errors.append(FieldError(field: "delay_seconds", message: "must not be given with run_at")) }
        if let delay = job.delaySeconds, !(0...31_536_000).contains(delay) { errors.append(FieldError(field: "delay_seconds", message: "must be from 0 to 31536000")) }
        if let attempts = job.maxAttempts, !(1...100).contains(attempts) { errors.append(FieldError(field: "max_attempts", message: "must be from 1 to 100")) }
        if let backoff = job.backoffSeconds, !(1...86_400).contains(backoff) { errors.append(FieldError(field: "backoff_seconds", message: "must be from 1 to 86400")) }
        if let timeout = job.timeoutSeconds, !(1...86_400).contains(timeout) { errors.append(FieldError(field: "timeout_seconds", message: "must be from 1 to 86400")) }
        if let key = job.uniqueKey, key.isEmpty || key.count > 200 { errors.append(FieldError(field: "unique_key", message: "must be 1-200 characters")) }
        if let ttl = job.ttlSeconds, !(1...31_536_000).contains(ttl) { errors.append(FieldError(field: "ttl_seconds", message: "must be from 1 to 31536000")) }
        if let window = job.uniqueForSeconds, !(1...31_536_000).contains(window) { errors.append(FieldError(field: "unique_for_seconds", message: "must be from 1 to 31536000")) }
        if let tags = job.tags, tags.count > 20 || tags.contains(where: { $0.isEmpty || $0.count > 64 }) {
            errors.append(FieldError(field: "tags", message: "must be at most 20 tags of 1-64 characters"))
        }
        return errors
    }

    static func isValidName(_ name: String, maxLength: Int) -> Bool {
        (1...maxLength).contains(name.utf8.count) && name.utf8.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-")].contains($0)
        }
    }

    static func encodeJSON(_ value: some Encodable) -> String {
        String(decoding: (try? JSONEncoder.keel().encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    // MARK: - Reading

    public func job(id: String) async throws -> JobRecord {
        guard let row = try await store.query("SELECT \(unsafeRaw: JobRecord.columns) FROM keel_jobs WHERE id = \(id)").first else {
            throw Problem.notFound("No job has the id \(id).")
        }
        return try JobRecord(row: row)
    }

    public struct Filter: Sendable {
        public var queue: String?
        public var state: JobState?
        public var task: String?
        public var tag: String?
        public var since: Date?
        public var until: Date?
        /// Newest first (the console); the API lists oldest first.
        public var newestFirst = false
        public init() {}
    }

    /// By id (creation time), oldest first unless `newestFirst`, keyset-paginated: `after` is the last id of the
    /// previous page.
    public func list(_ filter: Filter, limit: Int, after: String?) async throws -> Page<JobRecord> {
        var query: SQLQuery = "SELECT \(unsafeRaw: JobRecord.columns) FROM keel_jobs WHERE 1 = 1"
        if let queue = filter.queue { query.append(" AND queue = \(queue)") }
        if let state = filter.state { query.append(" AND state = \(state.rawValue)") }
        if let task = filter.task { query.append(" AND task = \(task)") }
        if let tag = filter.tag { query.append(" AND tags LIKE \("%" + Self.encodeJSON(tag).likeEscaped + "%") ESCAPE '\\'") }
        if let since = filter.since { query.append(" AND created_at >= \(since)") }
        if let until = filter.until { query.append(" AND created_at < \(until)") }
        if let after { query.append(filter.newestFirst ? " AND id < \(after)" : " AND id > \(after)") }
        query.append(filter.newestFirst ? " ORDER BY id DESC LIMIT \(limit + 1)" : " ORDER BY id LIMIT \(limit + 1)")
        let rows = try await store.query(query)
        let jobs = try rows.prefix(limit).map(JobRecord.init(row:))
        return Page(items: jobs, nextAfter: rows.count > limit ? jobs.last?.id : nil)
    }

    // MARK: - Operator actions

    /// Cancels a job that has not run yet at once; a running one is asked to stop (its worker sees the
    /// request at its next heartbeat, through the store, so a missed notification cannot lose it).
    public func cancel(id: String) async throws -> JobRecord {
        let now = clock.now()
        let workflowID = try await store.query("SELECT workflow_id FROM keel_jobs WHERE id = \(id)").first?.optionalString("workflow_id")
        let cancelledWaiting = try await store.transaction { tx in
            if let workflowID { try await self.lockWorkflow(workflowID, in: tx) }
            let waiting = try await tx.execute("""
                UPDATE keel_jobs SET state = 'cancelled', finished_at = \(now)
                WHERE id = \(id) AND state IN ('pending', 'available', 'scheduled', 'retrying') RETURNING id
                """)
            if let workflowID, !waiting.isEmpty {
                try await self.workflowStepFailed(jobID: id, workflowID: workflowID, now: now, in: tx)
            }
            return !waiting.isEmpty
        }
        if !cancelledWaiting {
            let running = try await store.execute("UPDATE keel_jobs SET cancel_requested = \(true) WHERE id = \(id) AND state = 'running' RETURNING id")
            if running.isEmpty {
                let job = try await job(id: id)
                throw Problem.conflict("The job is \(job.state.rawValue); only pending, waiting or running jobs can be cancelled.")
            }
        }
        return try await job(id: id)
    }

    /// Runs a dead or cancelled job again, with one more attempt allowed.
    public func retry(id: String) async throws -> JobRecord {
        let updated = try await store.execute(runAgain(where: "id = \(id) AND state IN ('dead', 'cancelled', 'expired')"))
        if updated.isEmpty {
            let job = try await job(id: id)
            throw Problem.conflict("The job is \(job.state.rawValue); only dead, cancelled or expired jobs can be retried.")
        }
        await wakeWorkers()
        return try await job(id: id)
    }

    /// Runs every dead job again (of one queue, or of all), each with one more attempt allowed; returns how many.
    public func retryDead(queue: String?) async throws -> Int {
        var condition: SQLQuery = "state = 'dead'"
        if let queue { condition.append(" AND queue = \(queue)") }
        let count = try await store.execute(runAgain(where: condition)).count
        if count > 0 { await wakeWorkers() }
        return count
    }

    /// The statement that makes the jobs matching `condition` available now, each with one more attempt allowed.
    private func runAgain(where condition: SQLQuery) -> SQLQuery {
        var query: SQLQuery = """
            UPDATE keel_jobs SET state = 'available', run_at = \(clock.now()), finished_at = NULL, cancel_requested = \(false), expires_at = NULL,
                max_attempts = CASE WHEN max_attempts > attempt THEN max_attempts ELSE attempt + 1 END
            WHERE
            """
        query.append(" ")
        query.append(condition)
        query.append(" RETURNING id")
        return query
    }

    // MARK: - Worker side

    /// A job a worker owns until `leaseExpiresAt`, proven by `leaseToken`.
    public struct Claim: Sendable {
        public var job: JobRecord
        public var leaseToken: String
        /// The enqueuer's W3C trace context, if it had one.
        public var traceparent: String? = nil
    }

    /// Claims up to `limit` runnable jobs of `queue` (or of any queue for ``anyQueue``), highest priority and earliest due first. On
    /// PostgreSQL `SKIP LOCKED` lets many workers claim side by side; SQLite's single writer serializes. Rate-limited queues
    /// are claimed first, each under its own lock, within what their limit leaves.
    /// - Parameter tasks: only jobs of these tasks (a built-in worker claims what it can run); `nil` for
    ///   any task (an HTTP worker names its own queues).
    func claim(queue: String, limit: Int, workerID: String, leaseSeconds: Int, tasks: [String]? = nil) async throws -> [Claim] {
        if let tasks, tasks.isEmpty { return [] }
        let now = clock.now()
        let lease = Lease(workerID: workerID, token: KeelID.make(prefix: "lease", now: now), seconds: leaseSeconds, claimedAt: now)
        var claims: [Claim] = []
        for limited in try await queueLimits().rateLimited where queue == Self.anyQueue || limited == queue {
            guard claims.count < limit else { break }
            claims += try await claimRateLimited(queue: limited, limit: limit - claims.count, lease: lease, tasks: tasks)
        }
        let named = queue == Self.anyQueue ? nil : queue
        // SQLite has one writer, which enqueues need too: look on a reader first, and take the writer only for work.
        var worthClaiming = claims.count < limit
        if worthClaiming, store.dialect == .sqlite {
            var probe = claimCandidates(queue: named, now: now, tasks: tasks, underRateLimit: false)
            probe.append(" LIMIT 1")
            worthClaiming = !(try await store.query(probe).isEmpty)
        }
        if worthClaiming {
            let rows = try await store.execute(claimStatement(queue: named, limit: limit - claims.count, lease: lease, tasks: tasks))
            claims += try rows.map { Claim(job: try JobRecord(row: $0), leaseToken: lease.token, traceparent: try $0.optionalString("traceparent")) }
        }
        return claims.sorted { ($0.job.priority, $1.job.id) > ($1.job.priority, $0.job.id) }
    }

    struct Lease {
        let workerID: String
        let token: String
        let seconds: Int
        /// The start time written on the jobs (and in a rate limit's log of starts).
        let claimedAt: Date
    }

    /// The claim as one statement: from `queue` (or any queue), never a paused one, and a rate-limited one only
    /// `underRateLimit` (under its lock, after counting).
    func claimStatement(queue: String?, limit: Int, lease: Lease, tasks: [String]?, underRateLimit: Bool = false) -> SQLQuery {
        let expires = lease.claimedAt.addingTimeInterval(TimeInterval(lease.seconds))
        var query: SQLQuery = """
            UPDATE keel_jobs SET state = 'running', attempt = attempt + 1, worker_id = \(lease.workerID), lease_token = \(lease.token),
                lease_expires_at = \(expires), started_at = \(lease.claimedAt), progress_percent = NULL, progress_message = NULL
            WHERE id IN (
            """
        query.append(claimCandidates(queue: queue, now: lease.claimedAt, tasks: tasks, underRateLimit: underRateLimit))
        query.append(" ORDER BY priority DESC, run_at, id LIMIT \(limit)")
        query.append(store.dialect == .postgres ? " FOR UPDATE SKIP LOCKED)" : ")")
        query.append(" RETURNING \(unsafeRaw: JobRecord.columns), traceparent")
        return query
    }

    /// The jobs a claim may take, as `SELECT id FROM keel_jobs WHERE …`.
    func claimCandidates(queue: String?, now: Date, tasks: [String]?, underRateLimit: Bool) -> SQLQuery {
        var query: SQLQuery = """
            SELECT id FROM keel_jobs WHERE state IN ('available', 'scheduled', 'retrying') AND run_at <= \(now)
                AND (expires_at IS NULL OR expires_at > \(now))
            """
        if let queue { query.append(" AND queue = \(queue)") }
        query.append(underRateLimit
            ? " AND queue NOT IN (SELECT name FROM keel_queues WHERE paused = \(true))"
            : " AND queue NOT IN (SELECT name FROM keel_queues WHERE paused = \(true) OR rate_limit IS NOT NULL)")
        if let tasks {
            query.append(" AND task IN (")
            for (index, task) in tasks.enumerated() { query.append(index == 0 ? "\(task)" : ", \(task)") }
            query.append(")")
        }
        return query
    }

    /// Records success; `false` when the lease was lost (the job was rescued or cancelled meanwhile). Plain jobs are
    /// written in batches with other completions; a workflow step releases the steps waiting for it in the same
    /// transaction.
    @discardableResult
    func complete(_ claim: Claim, result: JSONValue) async throws -> Bool {
        guard let workflowID = claim.job.workflowID else {
            return try await completions.submit((claim, Self.encodeJSON(result))) { try await self.writeCompletions($0) }
        }
        let now = clock.now()
        let completed = try await store.transaction { tx in
            try await self.lockWorkflow(workflowID, in: tx)
            let updated = try await tx.execute("""
                UPDATE keel_jobs SET state = 'succeeded', result = \(Self.encodeJSON(result)), finished_at = \(now), lease_token = NULL, lease_expires_at = NULL
                WHERE id = \(claim.job.id) AND lease_token = \(claim.leaseToken) AND state = 'running' RETURNING id
                """)
            guard !updated.isEmpty else { return false }
            try await self.workflowStepSucceeded(claim.job, workflowID: workflowID, now: now, in: tx)
            return true
        }
        if completed {
            wake.signal()
            record(claim, outcome: "succeeded", now: now)
        }
        return completed
    }

    /// Records a failed attempt: back to `retrying` after an exponential, jittered backoff while
    /// attempts remain (and the failure is not permanent), else `dead`; a cancelled run ends `cancelled`.
    @discardableResult
    func fail(_ claim: Claim, error: String, permanent: Bool = false, cancelled: Bool = false, workerID: String?) async throws -> Bool {
        let now = clock.now()
        let job = claim.job
        let errors = job.errors + [JobAttemptError(attempt: job.attempt, at: now, error: String(error.prefix(2000)), workerID: workerID)]
        let state: JobState = cancelled ? .cancelled : (permanent || job.attempt >= job.maxAttempts) ? .dead : .retrying
        let runAt = state == .retrying ? now.addingTimeInterval(backoff(for: job)) : job.runAt
        let update: SQLQuery = """
            UPDATE keel_jobs SET state = \(state.rawValue), errors = \(Self.encodeJSON(errors)), run_at = \(runAt),
                finished_at = \(state.isFinal ? now : nil), lease_token = NULL, lease_expires_at = NULL
            WHERE id = \(job.id) AND lease_token = \(claim.leaseToken) AND state = 'running' RETURNING id
            """
        let updated: Bool
        if let workflowID = job.workflowID, state.isFinal {
            updated = try await store.transaction { tx in
                try await self.lockWorkflow(workflowID, in: tx)
                guard !(try await tx.execute(update).isEmpty) else { return false }
                try await self.workflowStepFailed(jobID: job.id, workflowID: workflowID, now: now, in: tx)
                return true
            }
        } else {
            updated = !(try await store.execute(update).isEmpty)
        }
        if updated { record(claim, outcome: state == .retrying ? "retried" : state.rawValue, now: now) }
        return updated
    }

    /// `base × 2^(attempt−1)`, at most a day, with ±25% jitter so failed batches do not retry in step.
    func backoff(for job: JobRecord) -> TimeInterval {
        let base = Double(job.backoffSeconds ?? tasks.backoffSeconds(for: job.task) ?? Self.defaultBackoffSeconds)
        let delay = min(base * pow(2, Double(max(0, job.attempt - 1))), 86_400)
        return delay * Double.random(in: 0.75...1.25)
    }

    /// Whether `token` is the current lease of job `id` (compared in the store by the query, never in Swift).
    func holdsLease(id: String, token: String) async throws -> Bool {
        !(try await store.query("SELECT id FROM keel_jobs WHERE id = \(id) AND lease_token = \(token) AND state = 'running'").isEmpty)
    }

    /// Extends the leases of running jobs; returns the ids whose cancellation was requested.
    func heartbeat(_ claims: [Claim], leaseSeconds: Int) async throws -> Set<String> {
        var cancelled = Set<String>()
        let expires = clock.now().addingTimeInterval(TimeInterval(leaseSeconds))
        for claim in claims {
            let rows = try await store.execute("""
                UPDATE keel_jobs SET lease_expires_at = \(expires) WHERE id = \(claim.job.id) AND lease_token = \(claim.leaseToken) AND state = 'running'
                RETURNING cancel_requested
                """)
            if try rows.first?.bool("cancel_requested") == true { cancelled.insert(claim.job.id) }
        }
        return cancelled
    }

    func progress(_ claim: Claim, percent: Int, message: String?) async throws {
        try await store.execute("""
            UPDATE keel_jobs SET progress_percent = \(percent), progress_message = \(message)
            WHERE id = \(claim.job.id) AND lease_token = \(claim.leaseToken) AND state = 'running'
            """)
    }

    /// Gives a claimed job back untouched (shutdown): not an attempt, so the count goes back down.
    func release(_ claim: Claim) async throws {
        try await store.execute("""
            UPDATE keel_jobs SET state = 'available', attempt = attempt - 1, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL
            WHERE id = \(claim.job.id) AND lease_token = \(claim.leaseToken) AND state = 'running'
            """)
        await wakeWorkers()
    }

    /// Unstarted jobs past their TTL end `expired`. Any process may run this.
    @discardableResult
    func expireStaleJobs() async throws -> Int {
        let now = clock.now()
        // Every scheduler and worker runs this twice a second or more: look on a reader before taking the writer.
        let due = try await store.query("""
            SELECT id FROM keel_jobs WHERE state IN ('available', 'scheduled', 'retrying') AND expires_at IS NOT NULL AND expires_at <= \(now) LIMIT 1
            """)
        guard !due.isEmpty else { return 0 }
        let expired = try await store.transaction { tx in
            let expired = try await tx.execute("""
                UPDATE keel_jobs SET state = 'expired', finished_at = \(now)
                WHERE state IN ('available', 'scheduled', 'retrying') AND expires_at IS NOT NULL AND expires_at <= \(now) RETURNING id, queue, task, workflow_id
                """)
            for row in expired {
                guard let workflowID = try row.optionalString("workflow_id") else { continue }
                try await self.workflowStepFailed(jobID: try row.string("id"), workflowID: workflowID, now: now, in: tx)
            }
            return expired
        }
        for row in expired {
            metrics.counter("keel_jobs_finished_total", [("queue", try row.string("queue")), ("task", try row.string("task")), ("outcome", "expired")]).increment()
        }
        return expired.count
    }

    /// Jobs whose worker stopped renewing the lease: the attempt counts as failed ("worker lost").
    /// Any process may run this; the conditional update makes each rescue happen once.
    @discardableResult
    func rescueExpiredLeases() async throws -> Int {
        let now = clock.now()
        let rows = try await store.query("""
            SELECT \(unsafeRaw: JobRecord.columns), lease_token FROM keel_jobs WHERE state = 'running' AND lease_expires_at < \(now) LIMIT 500
            """)
        var rescued = 0
        for row in rows {
            let claim = Claim(job: try JobRecord(row: row), leaseToken: try row.string("lease_token"))
            if try await fail(claim, error: "worker \(claim.job.workerID ?? "?") lost its lease (stopped or crashed)", workerID: claim.job.workerID) {
                rescued += 1
            }
        }
        if rescued > 0 {
            logger.warning("rescued jobs of lost workers", metadata: ["jobs": "\(rescued)"])
            wake.signal()
        }
        return rescued
    }

    func record(_ claim: Claim, outcome: String, now: Date) {
        let dimensions = [("queue", claim.job.queue), ("task", claim.job.task)]
        metrics.counter("keel_jobs_finished_total", dimensions + [("outcome", outcome)]).increment()
        if let started = claim.job.startedAt {
            metrics.timer("keel_job_run_seconds", dimensions).recordInterval(started, now)
        }
    }
}

/// Metric handles made once per label and dimensions: looking one up in the registry for every job costs more than
/// running a no-op job. Made on first use, after the metrics system is bootstrapped.
final class MetricHandles: Sendable {
    private let counters = Mutex<[String: Counter]>([:])
    private let timers = Mutex<[String: Timer]>([:])

    private static func key(_ label: String, _ dimensions: [(String, String)]) -> String {
        dimensions.reduce(label) { $0 + "\u{0}" + $1.0 + "=" + $1.1 }
    }

    func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
        Self.cached(counters, Self.key(label, dimensions)) { Counter(label: label, dimensions: dimensions) }
    }

    func timer(_ label: String, _ dimensions: [(String, String)]) -> Timer {
        Self.cached(timers, Self.key(label, dimensions)) { Timer(label: label, dimensions: dimensions, preferredDisplayUnit: .seconds) }
    }

    private static func cached<Handle>(_ cache: borrowing Mutex<[String: Handle]>, _ key: String, make: () -> Handle) -> Handle {
        cache.withLock { handles in
            if let handle = handles[key] { return handle }
            let handle = make()
            handles[key] = handle
            return handle
        }
    }
}

extension Timer {
    func recordInterval(_ start: Date, _ end: Date) {
        recordNanoseconds(Int64(max(0, end.timeIntervalSince(start)) * 1_000_000_000))
    }
}


/// Wakes idle claim loops in this process when work arrives, so idle workers sleep instead of polling.
/// Timeouts share one timer task: a sleeping task per wait, cancelled when work arrives, would stay allocated
/// until its deadline, and busy workers wait thousands of times a second.
final class WakeSignal: Sendable {
    private struct Waiter {
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var generation: UInt64 = 0
        var nextWaiter = 0
        var waiters: [Int: Waiter] = [:]
        /// Waiters cancelled before they registered.
        var cancelled: Set<Int> = []
        /// When the current timer task wakes next (`nil`: none runs), and which one is current.
        var timerWakesAt: ContinuousClock.Instant?
        var timer = 0
    }

    private let state = Mutex(State())

    func signal() {
        let waiters = state.withLock { state in
            state.generation &+= 1
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.continuation.resume() }
    }

    var current: UInt64 { state.withLock { $0.generation } }

    /// Returns when `signal()` was called after `seen` was read, after `timeout`, or when the task is cancelled.
    func wait(after seen: UInt64, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let (resumeNow, newTimer) = state.withLock { state -> (Bool, Int?) in
                    if state.generation != seen || state.cancelled.remove(id) != nil { return (true, nil) }
                    state.waiters[id] = Waiter(deadline: deadline, continuation: continuation)
                    // Timeouts differ (rate limits, HTTP claims): a deadline before the timer's takes a new timer.
                    guard state.timerWakesAt.map({ deadline < $0 }) ?? true else { return (false, nil) }
                    state.timerWakesAt = deadline
                    state.timer += 1
                    return (false, state.timer)
                }
                if resumeNow { continuation.resume() }
                if let newTimer { Task { await self.expireWaiters(timer: newTimer, firstWake: deadline) } }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
                state.cancelled.insert(id)
                return nil
            }
            waiter?.continuation.resume()
        }
        state.withLock { _ = $0.cancelled.remove(id) }
    }

    /// Resumes waiters whose deadline passed, sleeping until the earliest one; ends when none are left or a newer
    /// timer (for an earlier deadline) took over.
    private func expireWaiters(timer: Int, firstWake: ContinuousClock.Instant) async {
        var wake = firstWake
        while true {
            try? await Task.sleep(until: wake, clock: .continuous)
            let now = ContinuousClock.now
            let (expired, next) = state.withLock { state -> ([Waiter], ContinuousClock.Instant?) in
                guard state.timer == timer else { return ([], nil) }
                let expired = state.waiters.filter { $0.value.deadline <= now }
                for id in expired.keys { state.waiters.removeValue(forKey: id) }
                state.timerWakesAt = state.waiters.values.map(\.deadline).min()
                return (Array(expired.values), state.timerWakesAt)
            }
            for waiter in expired { waiter.continuation.resume() }
            guard let next else { return }
            wake = next
        }
    }
}

extension JobQueue {
    /// Marks the batch's jobs succeeded where their lease still holds; answers, per job, whether it did.
    func writeCompletions(_ batch: [(claim: Claim, result: String)]) async throws -> [Bool] {
        let now = clock.now()
        var query: SQLQuery = "WITH done(id, token, result) AS (VALUES "
        for (index, completion) in batch.enumerated() {
            query.append(index == 0 ? "(" : ", (")
            query.append("\(completion.claim.job.id), \(completion.claim.leaseToken), \(completion.result))")
        }
        query.append("""
            ) UPDATE keel_jobs SET state = 'succeeded', result = done.result, finished_at = \(now), lease_token = NULL, lease_expires_at = NULL
            FROM done WHERE keel_jobs.id = done.id AND keel_jobs.lease_token = done.token AND keel_jobs.state = 'running'
            RETURNING keel_jobs.id
            """)
        let completed = Set(try await store.execute(query).map { try $0.string("id") })
        return batch.map { completion in
            let held = completed.contains(completion.claim.job.id)
            if held { record(completion.claim, outcome: "succeeded", now: now) }
            return held
        }
    }
}
