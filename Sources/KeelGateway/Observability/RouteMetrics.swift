import Metrics
import Synchronization

/// One route's metrics, with the handles per (upstream, status) kept for reuse on the hot path.
final class RouteMetrics: Sendable {
    let route: String
    let retries: Counter
    let rateLimited: Counter
    private let duration: Metrics.Timer
    private let requests = Mutex<[RequestKey: Counter]>([:])
    private let errors = Mutex<[ErrorKey: Counter]>([:])

    struct RequestKey: Hashable {
        let upstream: String
        let status: Int
    }

    struct ErrorKey: Hashable {
        let upstream: String
        let kind: String
    }

    init(route: String) {
        self.route = route
        retries = Counter(label: "keel_gateway_retries_total", dimensions: [("route", route)])
        rateLimited = Counter(label: "keel_gateway_rate_limited_total", dimensions: [("route", route)])
        duration = Metrics.Timer(label: "keel_gateway_request_duration_seconds", dimensions: [("route", route)])
    }

    func record(upstream: String, status: Int, duration elapsed: Duration) {
        let key = RequestKey(upstream: upstream, status: status)
        let counter = requests.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: "keel_gateway_requests_total",
                                  dimensions: [("route", route), ("upstream", upstream), ("status", String(status))])
            counters[key] = counter
            return counter
        }
        counter.increment()
        duration.record(duration: elapsed)
    }

    /// `kind`: connect, timeout, protocol, body_too_large, or status_5xx for an answer that was retried.
    func upstreamError(_ upstream: String, kind: String) {
        let key = ErrorKey(upstream: upstream, kind: kind)
        errors.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: "keel_gateway_upstream_errors_total",
                                  dimensions: [("route", route), ("upstream", upstream), ("kind", kind)])
            counters[key] = counter
            return counter
        }.increment()
    }
}
