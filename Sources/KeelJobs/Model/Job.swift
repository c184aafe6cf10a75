import Foundation
import KeelServer
import KeelStore

/// Where a job is in its life. `pending` waits for earlier steps of its workflow, `scheduled` for `run_at`,
/// `available` may be claimed now, `retrying` waits for its backoff after a failed attempt; the last four are final.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case pending, scheduled, available, running, succeeded, retrying, dead, cancelled, expired

    public var isFinal: Bool { [.succeeded, .dead, .cancelled, .expired].contains(self) }
    /// States a worker may claim from once `run_at` has passed.
    static let claimable: [JobState] = [.available, .scheduled, .retrying]
}

/// One failed attempt.
public struct JobAttemptError: Codable, Sendable, Equatable {
    public var attempt: Int
    public var at: Date
    public var error: String
    public var workerID: String?

    enum CodingKeys: String, CodingKey {
        case attempt, at, error
        case workerID = "worker_id"
    }
}

public struct JobProgress: Codable, Sendable, Equatable {
    public var percent: Int
    public var message: String?
}

/// A job as the API shows it.
public struct JobRecord: Codable, Sendable, Equatable {
    public var id: String
    public var queue: String
    public var task: String
    public var args: JSONValue
    public var priority: Int
    public var state: JobState
    public var runAt: Date
    public var attempt: Int
    public var maxAttempts: Int
    public var backoffSeconds: Int?
    public var timeoutSeconds: Int
    public var uniqueKey: String?
    public var tags: [String]
    public var result: JSONValue?
    public var errors: [JobAttemptError]
    public var progress: JobProgress?
    public var cancelRequested: Bool
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var workerID: String?
    public var leaseExpiresAt: Date?
    /// An unstarted job becomes `expired` at this time (its TTL).
    public var expiresAt: Date?
    public var workflowID: String?

    enum CodingKeys: String, CodingKey {
        case id, queue, task, args, priority, state, attempt, tags, result, errors, progress
        case runAt = "run_at"
        case maxAttempts = "max_attempts"
        case backoffSeconds = "backoff_seconds"
        case timeoutSeconds = "timeout_seconds"
        case uniqueKey = "unique_key"
        case cancelRequested = "cancel_requested"
        case createdAt = "created_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case workerID = "worker_id"
        case leaseExpiresAt = "lease_expires_at"
        case expiresAt = "expires_at"
        case workflowID = "workflow_id"
    }

    static let columns: StaticString = """
        id, queue, task, args, priority, state, run_at, attempt, max_attempts, backoff_seconds, timeout_seconds, unique_key, \
        tags, result, errors, progress_percent, progress_message, cancel_requested, created_at, started_at, finished_at, \
        worker_id, lease_expires_at, expires_at, workflow_id
        """

    /// The job as `insert` writes it, without reading it back.
    init(inserting row: JobQueue.PreparedJob) {
        let job = row.job
        id = row.id
        queue = row.queue
        task = job.task
        args = job.args ?? .object([:])
        priority = job.priority ?? 0
        state = row.initialState
        runAt = row.runAt
        attempt = 0
        maxAttempts = job.maxAttempts ?? JobQueue.defaultMaxAttempts
        backoffSeconds = job.backoffSeconds
        timeoutSeconds = job.timeoutSeconds ?? JobQueue.defaultTimeoutSeconds
        uniqueKey = job.uniqueKey
        tags = job.tags ?? []
        errors = []
        cancelRequested = false
        createdAt = row.now
        expiresAt = job.ttlSeconds.map { row.runAt.addingTimeInterval(TimeInterval($0)) }
        workflowID = row.workflowID
    }

    init(row: SQLRow) throws {
        func json<T: Decodable>(_ type: T.Type, _ text: String, column: String) throws -> T {
            do { return try JSONDecoder.keel().decode(type, from: Data(text.utf8)) } catch {
                throw StoreError.decoding(column: column, reason: "not the expected JSON")
            }
        }
        // Every claimed or handed-over job is read here on its way to the handler: JSON values go through the direct
        // parser, and the empty lists most jobs carry skip decoding.
        func value(_ text: String, column: String) throws -> JSONValue {
            do { return try JSONValue.parse(text.utf8) } catch { throw StoreError.decoding(column: column, reason: "not valid JSON") }
        }
        func list<T: Decodable>(_ type: [T].Type, _ text: String, column: String) throws -> [T] {
            text == "[]" ? [] : try json(type, text, column: column)
        }
        id = try row.string("id")
        queue = try row.string("queue")
        task = try row.string("task")
        args = try value(try row.string("args"), column: "args")
        priority = try row.int("priority")
        guard let state = JobState(rawValue: try row.string("state")) else { throw StoreError.decoding(column: "state", reason: "unknown state") }
        self.state = state
        runAt = try row.date("run_at")
        attempt = try row.int("attempt")
        maxAttempts = try row.int("max_attempts")
        backoffSeconds = try row.optionalInt("backoff_seconds")
        timeoutSeconds = try row.int("timeout_seconds")
        uniqueKey = try row.optionalString("unique_key")
        tags = try list([String].self, try row.string("tags"), column: "tags")
        result = try row.optionalString("result").map { try value($0, column: "result") }
        errors = try list([JobAttemptError].self, try row.string("errors"), column: "errors")
        progress = try row.optionalInt("progress_percent").map { JobProgress(percent: $0, message: try row.optionalString("progress_message")) }
        cancelRequested = try row.bool("cancel_requested")
        createdAt = try row.date("created_at")
        startedAt = try row.optionalDate("started_at")
        finishedAt = try row.optionalDate("finished_at")
        workerID = try row.optionalString("worker_id")
        leaseExpiresAt = try row.optionalDate("lease_expires_at")
        expiresAt = try row.optionalDate("expires_at")
        workflowID = try row.optionalString("workflow_id")
    }
}

/// `POST /api/v1/jobs`: what a caller may say about a new job.
public struct NewJob: Codable, Sendable {
    public var queue: String?
    public var task: String
    public var args: JSONValue?
    public var priority: Int?
    public var runAt: Date?
    public var delaySeconds: Double?
    public var maxAttempts: Int?
    public var backoffSeconds: Int?
    public var timeoutSeconds: Int?
    public var uniqueKey: String?
    /// How long the unique key holds after enqueue (default one hour).
    public var uniqueForSeconds: Int?
    public var tags: [String]?
    /// Seconds after `run_at` within which the job must start, else it ends `expired` (RabbitMQ's TTL).
    public var ttlSeconds: Int?

    public init(queue: String? = nil, task: String, args: JSONValue? = nil, priority: Int? = nil, runAt: Date? = nil,
                delaySeconds: Double? = nil, maxAttempts: Int? = nil, backoffSeconds: Int? = nil, timeoutSeconds: Int? = nil,
                uniqueKey: String? = nil, uniqueForSeconds: Int? = nil, tags: [String]? = nil, ttlSeconds: Int? = nil) {
        self.queue = queue
        self.task = task
        self.args = args
        self.priority = priority
        self.runAt = runAt
        self.delaySeconds = delaySeconds
        self.maxAttempts = maxAttempts
        self.backoffSeconds = backoffSeconds
        self.timeoutSeconds = timeoutSeconds
        self.uniqueKey = uniqueKey
        self.uniqueForSeconds = uniqueForSeconds
        self.tags = tags
        self.ttlSeconds = ttlSeconds
    }

    enum CodingKeys: String, CodingKey {
        case queue, task, args, priority, tags
        case ttlSeconds = "ttl_seconds"
        case runAt = "run_at"
        case delaySeconds = "delay_seconds"
        case maxAttempts = "max_attempts"
        case backoffSeconds = "backoff_seconds"
        case timeoutSeconds = "timeout_seconds"
        case uniqueKey = "unique_key"
        case uniqueForSeconds = "unique_for_seconds"
    }
}
