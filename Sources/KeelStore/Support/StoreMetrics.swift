import Metrics
import Synchronization

/// Query durations and errors by driver and kind (`read`, `write`, `transaction`), statements in
/// flight, and how long writers queue for SQLite's single writer; exported as `keel_store_*`.
final class StoreMetrics: Sendable {
    private let driver: String
    private let running = Atomic<Int>(0)
    private let timers = Mutex<[String: Metrics.Timer]>([:])
    private let counters = Mutex<[String: Counter]>([:])
    let writeWait: Metrics.Timer

    init(driver: String) {
        self.driver = driver
        self.writeWait = Metrics.Timer(label: "keel_store_write_wait_seconds", dimensions: [("driver", driver)])
        // Error counters exist from the start at zero, so that rates and alerts over them have a series before the first error.
        for kind in ["read", "write", "transaction"] { _ = errors(kind) }
    }

    var inFlight: Int { running.load(ordering: .relaxed) }

    /// Runs `body`, counting it in flight and recording its duration, and its error if it throws.
    func measure<T>(_ kind: String, _ body: () async throws -> T) async throws -> T {
        running.add(1, ordering: .relaxed)
        let start = ContinuousClock.now
        defer {
            running.subtract(1, ordering: .relaxed)
            duration(kind).record(duration: ContinuousClock.now - start)
        }
        do {
            return try await body()
        } catch {
            errors(kind).increment()
            throw error
        }
    }

    private func duration(_ kind: String) -> Metrics.Timer {
        timers.withLock { timers in
            if let timer = timers[kind] { return timer }
            let timer = Metrics.Timer(label: "keel_store_query_duration_seconds", dimensions: [("driver", driver), ("kind", kind)])
            timers[kind] = timer
            return timer
        }
    }

    private func errors(_ kind: String) -> Counter {
        counters.withLock { counters in
            if let counter = counters[kind] { return counter }
            let counter = Counter(label: "keel_store_errors_total", dimensions: [("driver", driver), ("kind", kind)])
            counters[kind] = counter
            return counter
        }
    }
}
