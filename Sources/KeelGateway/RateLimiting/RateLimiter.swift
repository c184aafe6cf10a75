import Foundation
import HTTPTypes
import KeelCore
import KeelStore
import Synchronization

/// Token buckets shared by every gateway replica through the store. A replica takes tokens from the
/// shared bucket in small chunks and spends them locally, so the store sees one write per chunk rather
/// than per request, and the replicas together never admit more than the bucket holds (a token is
/// taken from the store before it is spent; tokens a replica took but did not use within a second are
/// forfeited, which can only make the limit stricter).
final class RateLimiter: Sendable {
    let store: any Store
    let clock: any KeelClock
    private let leases = Mutex<[String: Lease]>([:])

    struct Lease {
        var tokens: Int
        var expires: ContinuousClock.Instant
        /// What the shared bucket held after this replica's last take.
        var sharedRemaining: Double
    }

    init(store: any Store, clock: any KeelClock) {
        self.store = store
        self.clock = clock
    }

    func take(route: String, caller: String, policy: GatewayRoute.RateLimit) async throws -> RateDecision {
        let bucket = route + "|" + caller
        let capacity = Double(policy.requests + policy.burst)
        let rate = Double(policy.requests) / policy.perSeconds
        let now = ContinuousClock.now
        let local: RateDecision? = leases.withLock { leases in
            guard var lease = leases[bucket], lease.tokens > 0, lease.expires > now else { return nil }
            lease.tokens -= 1
            leases[bucket] = lease
            return RateDecision(allowed: true, limit: policy.requests, remaining: Int(lease.sharedRemaining) + lease.tokens,
                                resetSeconds: Self.secondsUntilFull(remaining: lease.sharedRemaining, capacity: capacity, rate: rate),
                                retryAfterSeconds: 0)
        }
        if let local { return local }

        // Larger buckets take larger chunks: at most 5% of the bucket waits unspent in one replica.
        let chunk = max(1, min(50, Int(capacity / 20)))
        let (granted, remaining) = try await takeShared(bucket: bucket, count: chunk, capacity: capacity, rate: rate)
        guard granted > 0 else {
            return RateDecision(allowed: false, limit: policy.requests, remaining: 0,
                                resetSeconds: Self.secondsUntilFull(remaining: remaining, capacity: capacity, rate: rate),
                                retryAfterSeconds: max(1, Int(((1 - remaining) / rate).rounded(.up))))
        }
        leases.withLock { leases in
            if leases.count > 50_000 { leases = leases.filter { $0.value.expires > now } }
            leases[bucket] = Lease(tokens: granted - 1, expires: now + .seconds(1), sharedRemaining: remaining)
        }
        return RateDecision(allowed: true, limit: policy.requests, remaining: Int(remaining) + granted - 1,
                            resetSeconds: Self.secondsUntilFull(remaining: remaining, capacity: capacity, rate: rate),
                            retryAfterSeconds: 0)
    }

    /// Refills the shared bucket for the time since its last take and takes up to `count` whole tokens.
    private func takeShared(bucket: String, count: Int, capacity: Double, rate: Double) async throws -> (granted: Int, remaining: Double) {
        let now = clock.now()
        let dialect = store.dialect
        return try await store.transaction { tx in
            try await tx.execute("""
                INSERT INTO keel_gateway_buckets (bucket, tokens, updated_at) VALUES (\(bucket), \(capacity), \(now))
                ON CONFLICT (bucket) DO NOTHING
                """)
            let select: SQLQuery = dialect == .postgres
                ? "SELECT tokens, updated_at FROM keel_gateway_buckets WHERE bucket = \(bucket) FOR UPDATE"
                : "SELECT tokens, updated_at FROM keel_gateway_buckets WHERE bucket = \(bucket)"
            guard let row = try await tx.query(select).first else { return (0, 0) }
            let updated = try row.date("updated_at")
            // A replica whose clock runs behind neither refills nor moves the bucket's time back.
            let elapsed = max(0, now.timeIntervalSince(updated))
            let available = min(capacity, try row.double("tokens") + elapsed * rate)
            let granted = min(count, Int(available.rounded(.down)))
            try await tx.execute("""
                UPDATE keel_gateway_buckets SET tokens = \(available - Double(granted)), updated_at = \(max(now, updated))
                WHERE bucket = \(bucket)
                """)
            return (granted, available - Double(granted))
        }
    }

    /// Buckets untouched for a day are full again by any policy up to a day; dropping them loses nothing.
    func pruneIdleBuckets() async throws {
        try await store.execute("DELETE FROM keel_gateway_buckets WHERE updated_at < \(clock.now().addingTimeInterval(-86_400))")
    }

    static func secondsUntilFull(remaining: Double, capacity: Double, rate: Double) -> Int {
        max(0, Int(((capacity - remaining) / rate).rounded(.up)))
    }
}

/// A rate-limit verdict, and the `RateLimit-*` headers that tell the caller where it stands.
struct RateDecision: Sendable {
    var allowed: Bool
    var limit: Int
    var remaining: Int
    var resetSeconds: Int
    var retryAfterSeconds: Int

    func headers(into fields: inout HTTPFields) {
        fields[.rateLimitLimit] = String(limit)
        fields[.rateLimitRemaining] = String(max(0, remaining))
        fields[.rateLimitReset] = String(resetSeconds)
    }
}

extension HTTPField.Name {
    static let rateLimitLimit = HTTPField.Name("RateLimit-Limit")!
    static let rateLimitRemaining = HTTPField.Name("RateLimit-Remaining")!
    static let rateLimitReset = HTTPField.Name("RateLimit-Reset")!
}
