import Foundation
import KeelCore
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
}

/// Records every AI request in the store and in metrics. Writes happen off the request's path: the
/// answer does not wait for the usage row.
final class UsageLog: Sendable {
    let store: any Store
    private let handles = Mutex<[String: ModelMetrics]>([:])

    struct ModelMetrics {
        let tokensIn: Counter
        let tokensOut: Counter
        let cost: FloatingPointCounter
        let duration: Metrics.Timer
        let timeToFirstToken: Metrics.Timer
    }

    init(store: any Store) { self.store = store }

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
        Counter(label: "keel_ai_requests_total", dimensions: [
            ("model", record.model), ("provider", record.provider ?? "-"), ("status", String(record.status)),
        ]).increment()
        metrics.tokensIn.increment(by: record.tokensIn)
        metrics.tokensOut.increment(by: record.tokensOut)
        if record.cost > 0 { metrics.cost.increment(by: record.cost) }
        metrics.duration.record(duration: record.latency)
        if let ttft = record.timeToFirstToken { metrics.timeToFirstToken.record(duration: ttft) }

        let id = KeelID.make(prefix: "aiu", now: record.at)
        let latencyMs = Double(record.latency / .microseconds(1)) / 1000
        let ttftMs = record.timeToFirstToken.map { Double($0 / .microseconds(1)) / 1000 }
        let store = self.store
        Task {
            await record.settlement?.settle(cost: record.cost)
            try? await store.execute("""
                INSERT INTO keel_ai_usage (id, at, credential_id, subject, model, provider, deployment_model, endpoint, status,
                    tokens_in, tokens_out, cost, latency_ms, ttft_ms, streamed)
                VALUES (\(id), \(record.at), \(record.credentialID), \(record.subject), \(record.model), \(record.provider),
                    \(record.deploymentModel), \(record.endpoint), \(record.status), \(record.tokensIn), \(record.tokensOut),
                    \(record.cost), \(latencyMs), \(ttftMs), \(record.streamed))
                """)
        }
    }
}
