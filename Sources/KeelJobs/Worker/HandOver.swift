import Foundation
import KeelServer
import KeelStore

/// Hand-over on PostgreSQL: an idle worker process arms a reservation for one of its queue slots, and the insert of
/// a job that slot can run takes the reservation and writes the job as running under a lease for that worker (a
/// trigger, migration jobs 14). The job reaches the worker inside the notification on its own channel, so it starts
/// without the claim's round trip to the store, which is most of the wait of a job sent to idle workers.
/// A job whose notification was lost is still the worker's: its lease loop adopts it.
extension JobQueue {
    /// The channel on which `workerID` receives the jobs handed to it.
    static func handOverChannel(workerID: String) -> String { "keel_push_\(workerID)" }

    /// Offers one slot of `workerID` (a queue name, or ``anyQueue``) to the next insert of a job of `tasks`.
    ///
    /// An offer is made after every hand-over, so it is written without waiting for its flush to disk
    /// (`synchronous_commit` off for this statement's transaction): an offer lost in a database crash is only a
    /// hand-over that does not happen, and one fewer flush per job leaves the disk to the commits of enqueues.
    func armHandOver(workerID: String, slot: String, tasks: [String], leaseSeconds: Int) async throws {
        try await store.execute("""
            INSERT INTO keel_job_reservations (worker_id, slot, tasks, lease_seconds, armed, armed_at)
            SELECT \(workerID), \(slot), \(",\(tasks.joined(separator: ",")),"), \(leaseSeconds), TRUE, \(clock.now())
            FROM (SELECT set_config('synchronous_commit', 'off', true)) AS without_flush
            ON CONFLICT (worker_id, slot) DO UPDATE
            SET tasks = excluded.tasks, lease_seconds = excluded.lease_seconds, armed = TRUE, armed_at = excluded.armed_at
            """)
    }

    /// Withdraws the offer of one slot; `false` when an insert took it first (its job is on the way).
    func disarmHandOver(workerID: String, slot: String) async throws -> Bool {
        try await !store.execute("""
            UPDATE keel_job_reservations SET armed = FALSE WHERE worker_id = \(workerID) AND slot = \(slot) AND armed RETURNING slot
            """).isEmpty
    }

    /// Withdraws every offer of `workerID` while it cannot hear its channel.
    func disarmHandOvers(workerID: String) async throws {
        try await store.execute("UPDATE keel_job_reservations SET armed = FALSE WHERE worker_id = \(workerID) AND armed")
    }

    /// Removes the reservations of `workerID`, which stops.
    func removeHandOvers(workerID: String) async throws {
        try await store.execute("DELETE FROM keel_job_reservations WHERE worker_id = \(workerID)")
    }

    /// Removes the reservations of workers that stopped heartbeating, so no new job is handed to a dead process.
    func dropStaleHandOvers() async throws {
        try await store.execute("""
            DELETE FROM keel_job_reservations WHERE worker_id NOT IN (
                SELECT id FROM keel_workers WHERE stopped_at IS NULL AND heartbeat_at > \(clock.now().addingTimeInterval(-Self.workerDeadAfter)))
            """)
    }

    /// Jobs leased to `workerID` by a hand-over whose notification never arrived: running under its id, started more
    /// than `grace` ago, and none of the jobs it knows it runs.
    func unclaimedHandOvers(workerID: String, running: Set<String>, grace: TimeInterval) async throws -> [Claim] {
        let rows = try await store.query("""
            SELECT \(unsafeRaw: JobRecord.columns), lease_token, traceparent FROM keel_jobs
            WHERE state = 'running' AND worker_id = \(workerID) AND started_at < \(clock.now().addingTimeInterval(-grace))
            """)
        return try rows.compactMap { row in
            let job = try JobRecord(row: row)
            guard !running.contains(job.id) else { return nil }
            return Claim(job: job, leaseToken: try row.string("lease_token"), traceparent: try row.optionalString("traceparent"))
        }
    }

    /// The slot and job of a hand-over notification, as the trigger wrote them.
    static func handedOver(_ payload: String) -> (slot: String, claim: Claim)? {
        guard case .object(let fields)? = try? JSONValue.parse(Array(payload.utf8)),
              case .string(let slot)? = fields["slot"], case .string(let token)? = fields["lease_token"] else { return nil }
        let timestamps: Set<String> = ["run_at", "created_at", "started_at", "lease_expires_at", "expires_at"]
        var columns: [String] = ["result", "progress_percent", "progress_message", "finished_at"]
        var values: [SQLValue] = [.null, .null, .null, .null]
        for (name, value) in fields {
            columns.append(name)
            switch value {
            case .string(let text): values.append(.text(text))
            case .bool(let flag): values.append(.bool(flag))
            case .number(let number) where timestamps.contains(name): values.append(.timestamp(Date(timeIntervalSince1970: number)))
            case .number(let number): values.append(.int(Int64(number)))
            default: values.append(.null)
            }
        }
        let row = SQLRow(columns: columns, values: values)
        guard let job = try? JobRecord(row: row) else { return nil }
        return (slot, Claim(job: job, leaseToken: token, traceparent: try? row.optionalString("traceparent")))
    }
}
