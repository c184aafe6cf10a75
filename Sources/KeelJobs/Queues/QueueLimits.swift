import Foundation
import KeelServer
import KeelStore
import Synchronization

/// At most `limit` jobs of a queue start in any `per_seconds` window, counted across every worker and process.
public struct QueueRateLimit: Codable, Sendable, Equatable {
    public var limit: Int
    public var perSeconds: Int

    public init(limit: Int, perSeconds: Int) {
        self.limit = limit
        self.perSeconds = perSeconds
    }

    enum CodingKeys: String, CodingKey {
        case limit
        case perSeconds = "per_seconds"
    }
}

/// What this process knows about queue limits: which queues are rate-limited and the max lengths (re-read once a
/// second, so a change made through another replica applies within a second or two), and when the next rate-limited
/// start becomes allowed. A rate limit's numbers are read under the queue's lock when claiming, never from here.
struct QueueLimitsCache {
    var limits = QueueLimits()
    var fetchedAt: ContinuousClock.Instant?
    var refreshing = false
    var nextSlot: Date?
}

struct QueueLimits: Sendable {
    var rateLimited: [String] = []
    var maxLengths: [String: Int] = [:]
}

extension JobQueue {
    static let queueLimitsRefresh: Duration = .seconds(1)

    /// The queues with a rate limit or a max length. A stale answer is returned while it is refreshed in the background,
    /// so no claim or enqueue waits for the re-read.
    func queueLimits() async throws -> QueueLimits {
        let (cached, refresh) = limitsCache.withLock { cache -> (QueueLimits?, Bool) in
            guard let fetchedAt = cache.fetchedAt else { return (nil, false) }
            let stale = ContinuousClock.now - fetchedAt >= Self.queueLimitsRefresh && !cache.refreshing
            if stale { cache.refreshing = true }
            return (cache.limits, stale)
        }
        if refresh { Task { _ = try? await self.readQueueLimits() } }
        if let cached { return cached }
        return try await readQueueLimits()
    }

    private func readQueueLimits() async throws -> QueueLimits {
        defer { limitsCache.withLock { $0.refreshing = false } }
        var limits = QueueLimits()
        for row in try await store.query("""
            SELECT name, max_length, rate_limit FROM keel_queues WHERE max_length IS NOT NULL OR rate_limit IS NOT NULL ORDER BY name
            """) {
            let name = try row.string("name")
            if try row.optionalInt("rate_limit") != nil { limits.rateLimited.append(name) }
            if let length = try row.optionalInt("max_length") { limits.maxLengths[name] = length }
        }
        limitsCache.withLock { ($0.limits, $0.fetchedAt) = (limits, .now) }
        return limits
    }

    func forgetQueueLimits() {
        limitsCache.withLock { $0.fetchedAt = nil }
    }

    /// Claims from a rate-limited queue under a lock on its row: the starts of the last window are counted from a log
    /// of starts (so a job's retry counts again), and only what the limit leaves is claimed and logged.
    func claimRateLimited(queue: String, limit: Int, lease: Lease, tasks: [String]?) async throws -> [Claim] {
        let now = lease.claimedAt
        let (claims, nextSlot) = try await store.transaction { tx -> ([Claim], Date?) in
            // PostgreSQL: one claimer per queue at a time; SQLite's write transaction already is.
            let lock: SQLQuery = store.dialect == .postgres
                ? "SELECT rate_limit, rate_per_seconds FROM keel_queues WHERE name = \(queue) AND paused = \(false) FOR UPDATE"
                : "SELECT rate_limit, rate_per_seconds FROM keel_queues WHERE name = \(queue) AND paused = \(false)"
            guard let row = try await tx.query(lock).first, let current = try row.optionalInt("rate_limit") else { return ([], nil) }
            let perSeconds = TimeInterval(try row.int("rate_per_seconds"))
            let windowStart = now.addingTimeInterval(-perSeconds)
            try await tx.execute("DELETE FROM keel_queue_starts WHERE queue = \(queue) AND started_at <= \(windowStart)")
            let window = try await tx.query("SELECT COUNT(*) AS n, MIN(started_at) AS oldest FROM keel_queue_starts WHERE queue = \(queue)")
            let allowance = min(limit, current - (try window.first?.int("n") ?? 0))
            guard allowance > 0 else {
                return ([], try window.first?.optionalDate("oldest").map { $0.addingTimeInterval(perSeconds) })
            }
            let rows = try await tx.execute(self.claimStatement(queue: queue, limit: allowance, lease: lease, tasks: tasks, underRateLimit: true))
            for _ in rows { try await tx.execute("INSERT INTO keel_queue_starts (queue, started_at) VALUES (\(queue), \(now))") }
            let claims = try rows.map { Claim(job: try JobRecord(row: $0), leaseToken: lease.token, traceparent: try $0.optionalString("traceparent")) }
            return (claims, nil)
        }
        if let nextSlot { limitsCache.withLock { $0.nextSlot = min($0.nextSlot ?? nextSlot, nextSlot) } }
        return claims
    }

    /// How long an idle worker sleeps: its poll interval, or less when a rate-limited queue allows a start sooner.
    func idleWait(poll: Duration) -> Duration {
        let now = clock.now()
        let next = limitsCache.withLock { cache -> Date? in
            if let slot = cache.nextSlot, slot <= now { cache.nextSlot = nil }
            return cache.nextSlot
        }
        guard let next else { return poll }
        return min(poll, .milliseconds(Int(next.timeIntervalSince(now) * 1000) + 5))
    }
}
