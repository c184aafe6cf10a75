import KeelCore
import Metrics
import Prometheus
import Synchronization

/// The process's Prometheus registry, with the swift-metrics API bootstrapped onto it so that every
/// `Counter`/`Timer` made anywhere in Keel (or its libraries) shows up on `/metrics`.
public final class MetricsExporter: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let process: ProcessMetrics
    private let scrapeHooks = Mutex<[@Sendable () -> Void]>([])

    init() {
        registry = PrometheusCollectorRegistry()
        process = ProcessMetrics(registry: registry)
        registry.makeGauge(name: "keel_build_info", labels: [("version", KeelVersion.current)], help: "Keel build information; always 1.").set(1.0)
    }

    var factory: PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Finer than the library's default (5 ms and up): most Keel requests take well under a millisecond.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        return factory
    }

    /// Registers work to run just before each scrape, to refresh gauges that are cheaper to read than to track.
    public func onScrape(_ hook: @escaping @Sendable () -> Void) {
        scrapeHooks.withLock { $0.append(hook) }
    }

    /// The text exposition format (version 0.0.4) of every metric.
    public func exposition() -> [UInt8] {
        process.update()
        for hook in scrapeHooks.withLock({ $0 }) { hook() }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        return buffer
    }

    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}
