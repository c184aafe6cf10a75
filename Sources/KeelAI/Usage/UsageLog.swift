import Foundation
import KeelCore
import KeelServer
import KeelStore
import Metrics
import Synchronization

/// One AI request as recorded: who, which model and deployment, tokens, cost, latency.
struct UsageRecord: Sendable {
    var at: Date
    var credentialID: String?
    var subject: String
    var model: String
    var provider: String?
    var deploymentModel: String?
    var endpoint: String
    var status: Int
    var tokensIn: Int
    var tokensOut: Int
    var cost: Double
    var latency: Duration
    var timeToFirstToken: Duration?
    var streamed: Bool
    /// The budget reservation this request holds, settled with `cost` when it is recorded.
    var settlement: Settlement?
    /// The key's minute this request counts in, for its tokens.
    var minute: (limits: MinuteLimits, minute: Int64)?
}

/// Records every AI request in the store (a row per request, kept `retentionDays`, and a daily rollup
/// per model and key, kept) and in metrics. Rows are written in batches off the request's path (see
/// ``flush()``): the answer does not wait for its usage row.
final class UsageLog: Sendable {
    let store: any Store
    private let handles = Mutex<[String: ModelMetrics]>([:])
    /// `keel_ai_requests_total` by model, provider and status, kept for reuse on the request path.
    private let requests = Mutex<[String: Counter]>([:])
    private let pending = Mutex<[UsageRecord]>([])
    private let dropped = Counter(label: "keel_ai_usage_rows_dropped_total")
    /// Rows held while the store cannot take them.
    static let maximumPending = 200_000

    struct ModelMetrics {
        let tokensIn: Counter
        let tokensOut: Counter
        let cost: FloatingPointCounter
        let duration: Metrics.Timer
        let timeToFirstToken: Metrics.Timer
    }

    init(store: any Store) { self.store = store }

    /// Days a request's own row is kept.
    static let retentionDays = 30

    /// Usage per day, model and key (any of them summed away), from the daily rollup.
    func summary(since: String, until: String, groupBy: Set<String>) async throws -> [[String: JSONValue]] {
        let rows = try await store.query("""
            SELECT day, model, credential_id, requests, errors, tokens_in, tokens_out, cost FROM keel_ai_usage_daily
            WHERE day >= \(since) AND day <= \(until) ORDER BY day, model, credential_id
            """)
        var groups: [[String]: [String: Double]] = [:]
        var order: [[String]] = []
        for row in rows {
            var key: [String] = []
            if groupBy.contains("day") { key.append(try row.string("day")) }
            if groupBy.contains("model") { key.append(try row.string("model")) }
            if groupBy.contains("key") { key.append(try row.string("credential_id")) }
            if groups[key] == nil { order.append(key) }
            for column in ["requests", "errors", "tokens_in", "tokens_out"] { groups[key, default: [:]][column, default: 0] += Double(try row.int(column)) }
            groups[key, default: [:]]["cost", default: 0] += try row.double("cost")
        }
        return order.map { key in
            var item: [String: JSONValue] = [:]
            var parts = key.makeIterator()
            if groupBy.contains("day") { item["day"] = .string(parts.next()!) }
            if groupBy.contains("model") { item["model"] = .string(parts.next()!) }
            if groupBy.contains("key") { let id = parts.next()!; item["credential_id"] = id.isEmpty ? .null : .string(id) }
            for (column, value) in groups[key]! { item[column] = .number(value) }
            return item
        }
    }

    /// Writes the rows recorded since the last flush: one multi-row insert per 400 rows and one upsert per
    /// day, model and key, in one transaction. On failure the rows stay pending for the next flush.
    func flush() async throws {
        let batch = pending.withLock { pending in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        guard !batch.isEmpty else { return }
        struct DailyKey: Hashable { let day: String, model: String, credential: String }
        var daily: [DailyKey: (requests: Int, errors: Int, tokensIn: Int, tokensOut: Int, cost: Double)] = [:]
        for record in batch {
            let key = DailyKey(day: String(SpendLedger.periods(at: record.at).day.dropFirst(2)), model: record.model, credential: record.credentialID ?? "")
            var sums = daily[key] ?? (0, 0, 0, 0, 0)
            sums.requests += 1
            sums.errors += record.status >= 400 ? 1 : 0
            sums.tokensIn += record.tokensIn
            sums.tokensOut += record.tokensOut
            sums.cost += record.cost
            daily[key] = sums
        }
        let sums = daily
        do {
            try await store.transaction { tx in
                for start in stride(from: 0, to: batch.count, by: 400) {
                    var insert: SQLQuery = """
                        INSERT INTO keel_ai_usage (id, at, credential_id, subject, model, provider, deployment_model, endpoint, status,
                            tokens_in, tokens_out, cost, latency_ms, ttft_ms, streamed) VALUES
                        """
                    for (offset, record) in batch[start..<min(start + 400, batch.count)].enumerated() {
                        let latencyMs = Double(record.latency / .microseconds(1)) / 1000
                        let ttftMs = record.timeToFirstToken.map { Double($0 / .microseconds(1)) / 1000 }
                        if offset > 0 { insert.append(",") }
                        insert.append("""
                            (\(KeelID.make(prefix: "aiu", now: record.at)), \(record.at), \(record.credentialID), \(record.subject), \(record.model),
                             \(record.provider), \(record.deploymentModel), \(record.endpoint), \(record.status), \(record.tokensIn), \(record.tokensOut),
                             \(record.cost), \(latencyMs), \(ttftMs), \(record.streamed))
                            """)
                    }
                    try await tx.execute(insert)
                }
                for (key, sums) in sums {
                    try await tx.execute("""
                        INSERT INTO keel_ai_usage_daily (day, model, credential_id, requests, errors, tokens_in, tokens_out, cost)
                        VALUES (\(key.day), \(key.model), \(key.credential), \(sums.requests), \(sums.errors), \(sums.tokensIn), \(sums.tokensOut), \(sums.cost))
                        ON CONFLICT (day, model, credential_id) DO UPDATE SET requests = keel_ai_usage_daily.requests + \(sums.requests),
                            errors = keel_ai_usage_daily.errors + \(sums.errors), tokens_in = keel_ai_usage_daily.tokens_in + \(sums.tokensIn),
                            tokens_out = keel_ai_usage_daily.tokens_out + \(sums.tokensOut), cost = keel_ai_usage_daily.cost + \(sums.cost)
                        """)
                }
            }
        } catch {
            pending.withLock { $0.insert(contentsOf: batch, at: 0) }
            throw error
        }
    }

    /// Drops request rows older than `days`; the daily rollup keeps their sums.
    func prune(olderThanDays days: Int, now: Date) async throws {
        try await store.execute("DELETE FROM keel_ai_usage WHERE at < \(now.addingTimeInterval(-Double(days) * 86_400))")
    }

    func record(_ record: UsageRecord) {
        let metrics = handles.withLock { handles in
            if let existing = handles[record.model] { return existing }
            let model = [("model", record.model)]
            let created = ModelMetrics(
                tokensIn: Counter(label: "keel_ai_tokens_total", dimensions: model + [("direction", "input")]),
                tokensOut: Counter(label: "keel_ai_tokens_total", dimensions: model + [("direction", "output")]),
                cost: FloatingPointCounter(label: "keel_ai_cost_total", dimensions: model),
                duration: Metrics.Timer(label: "keel_ai_request_duration_seconds", dimensions: model),
                timeToFirstToken: Metrics.Timer(label: "keel_ai_time_to_first_token_seconds", dimensions: model))
            handles[record.model] = created
            return created
        }
        let requestsKey = record.model + "|" + (record.provider ?? "-") + "|" + String(record.status)
        requests.withLock { counters in
            if let counter = counters[requestsKey] { return counter }
            let counter = Counter(label: "keel_ai_requests_total", dimensions: [
                ("model", record.model), ("provider", record.provider ?? "-"), ("status", String(record.status)),
            ])
            counters[requestsKey] = counter
            return counter
        }.increment()
        metrics.tokensIn.increment(by: record.tokensIn)
        metrics.tokensOut.increment(by: record.tokensOut)
        if record.cost > 0 { metrics.cost.increment(by: record.cost) }
        metrics.duration.record(duration: record.latency)
        if let ttft = record.timeToFirstToken { metrics.timeToFirstToken.record(duration: ttft) }

        if record.settlement != nil || record.minute != nil {
            // Budgets and minute counts must learn of the request at once; the rows can wait for the next batch.
            Task {
                await record.settlement?.settle(cost: record.cost)
                if let (limits, minute) = record.minute, let credential = record.credentialID {
                    try? await limits.addTokens(record.tokensIn + record.tokensOut, for: credential, minute: minute)
                }
            }
        }
        pending.withLock { pending in
            pending.append(record)
            // A store that stays away may not grow the batch without bound; the oldest rows go first.
            if pending.count > Self.maximumPending {
                pending.removeFirst(pending.count - Self.maximumPending)
                dropped.increment()
            }
        }
    }
}
