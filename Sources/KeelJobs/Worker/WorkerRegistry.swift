import Foundation
import KeelCore
import KeelServer
import KeelStore

/// A worker process as the API shows it (Flower's worker list), kept in the store so it survives restarts.
public struct WorkerRecord: Codable, Sendable, Equatable {
    public var id: String
    public var hostname: String
    public var pid: Int
    public var queues: [String: Int]
    public var concurrency: Int
    public var running: Int
    public var startedAt: Date
    public var heartbeatAt: Date
    public var stoppedAt: Date?
    /// `alive`, `stopped` (said goodbye) or `dead` (stopped heartbeating).
    public var status: String
    public var runningJobs: [String]?

    enum CodingKeys: String, CodingKey {
        case id, hostname, pid, queues, concurrency, running, status
        case startedAt = "started_at"
        case heartbeatAt = "heartbeat_at"
        case stoppedAt = "stopped_at"
        case runningJobs = "running_jobs"
    }
}

extension JobQueue {
    /// A worker misses this many seconds of heartbeats before it counts as dead.
    static let workerDeadAfter: TimeInterval = 30

    func registerWorker(id: String, queues: [String: Int], running: Int, startedAt: Date) async throws {
        let now = clock.now()
        try await store.execute("""
            INSERT INTO keel_workers (id, hostname, pid, queues, concurrency, running, started_at, heartbeat_at, stopped_at)
            VALUES (\(id), \(ProcessInfo.processInfo.hostName), \(Int(ProcessInfo.processInfo.processIdentifier)), \(Self.encodeJSON(queues)),
                    \(queues.values.reduce(0, +)), \(running), \(startedAt), \(now), \(Optional<Date>.none))
            ON CONFLICT (id) DO UPDATE SET running = excluded.running, heartbeat_at = excluded.heartbeat_at
            """)
    }

    func deregisterWorker(id: String) async throws {
        try await store.execute("UPDATE keel_workers SET stopped_at = \(clock.now()), running = 0 WHERE id = \(id)")
    }

    /// The live workers (heartbeating, not stopped) that work exactly the queues `queues` names, sorted by id.
    func liveWorkerIDs(workingQueues queues: Set<String>) async throws -> [String] {
        let rows = try await store.query("""
            SELECT id, queues FROM keel_workers
            WHERE stopped_at IS NULL AND heartbeat_at > \(clock.now().addingTimeInterval(-Self.workerDeadAfter))
            """)
        return try rows.compactMap { row in
            let named = (try? JSONDecoder().decode([String: Int].self, from: Data(try row.string("queues").utf8))) ?? [:]
            return Set(named.keys) == queues ? try row.string("id") : nil
        }.sorted()
    }

    /// Workers seen in the last day, newest first, with the jobs each is running.
    public func workers() async throws -> [WorkerRecord] {
        let now = clock.now()
        let rows = try await store.query("""
            SELECT id, hostname, pid, queues, concurrency, running, started_at, heartbeat_at, stopped_at FROM keel_workers
            WHERE heartbeat_at > \(now.addingTimeInterval(-86_400)) ORDER BY started_at DESC
            """)
        let running = try await store.query("SELECT id, worker_id FROM keel_jobs WHERE state = 'running'")
        var jobsByWorker: [String: [String]] = [:]
        for row in running {
            if let worker = try row.optionalString("worker_id") { jobsByWorker[worker, default: []].append(try row.string("id")) }
        }
        return try rows.map { row in
            let id = try row.string("id")
            let heartbeat = try row.date("heartbeat_at")
            let stopped = try row.optionalDate("stopped_at")
            let status = stopped != nil ? "stopped" : now.timeIntervalSince(heartbeat) > Self.workerDeadAfter ? "dead" : "alive"
            return WorkerRecord(
                id: id, hostname: try row.string("hostname"), pid: try row.int("pid"),
                queues: (try? JSONDecoder().decode([String: Int].self, from: Data(try row.string("queues").utf8))) ?? [:],
                concurrency: try row.int("concurrency"), running: try row.int("running"), startedAt: try row.date("started_at"),
                heartbeatAt: heartbeat, stoppedAt: stopped, status: status, runningJobs: jobsByWorker[id]?.sorted() ?? [])
        }
    }
}
