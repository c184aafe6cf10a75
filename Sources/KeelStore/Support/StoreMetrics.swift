import Metrics
import Synchronization

/// Query durations and errors by driver and kind (`read`, `write`, `transaction`), and how long writers
/// queue for SQLite's single writer; exported as `keel_store_*`.
final class StoreMetrics: Sendable {
    private let driver: String
    private let timers = Mutex<[String: Metrics.Timer]>([:])
    private let counters = Mutex<[String: Counter]>([:])
    let writeWait: Metrics.Timer

    init(driver: String) {
        self.driver = driver
        self.writeWait = Metrics.Timer(label: "keel_store_write_wait_seconds", dimensions: [("driver", driver)])
    }

    func duration(_ kind: String) -> Metrics.Timer {
        timers.withLock { timers in
            if let timer = timers[kind] { return timer }
            let timer = Metrics.Timer(label: "keel_store_query_duration_seconds", dimensions: [("driver", driver), ("kind", kind)])
            timers[kind] = timer
            return timer
        }
    }

    func errors(_ kind: String) -> Counter {
        counters.withLock { counters in
            if let counter = counters[kind] { return counter }
            let counter = Counter(label: "keel_store_errors_total", dimensions: [("driver", driver), ("kind", kind)])
            counters[kind] = counter
            return counter
        }
    }
}
