import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KeelCore
import Logging
import Metrics
import OTel
import ServiceLifecycle
import Synchronization
import Tracing

/// Logs, metrics and traces for the whole process. swift-log, swift-metrics and swift-distributed-tracing
/// each accept one backend per process, so the first ``bootstrap(_:)`` wins and later calls (tests that
/// start several servers in one process) share it.
public final class Telemetry: Sendable {
    public let metrics: MetricsExporter
    private let tracingService: Mutex<(any Service)?>
    public let otlpEndpoint: String?

    private init(metrics: MetricsExporter, tracingService: (any Service)?, otlpEndpoint: String?) {
        self.metrics = metrics
        self.tracingService = Mutex(tracingService)
        self.otlpEndpoint = otlpEndpoint
    }

    /// The OTel tracer's background exporter, handed out once: the first server of the process runs
    /// it in its service group, so that spans flush on shutdown.
    public func claimTracingService() -> (any Service)? {
        tracingService.withLock { service in
            defer { service = nil }
            return service
        }
    }

    private static let shared = Mutex<Telemetry?>(nil)

    /// - Parameter logsToStandardError: for command-line tools, whose standard output is their result.
    public static func bootstrap(_ config: KeelConfig, logsToStandardError: Bool = false) throws -> Telemetry {
        try shared.withLock { shared in
            if let shared { return shared }
            let telemetry = try make(config, logFileDescriptor: logsToStandardError ? STDERR_FILENO : STDOUT_FILENO)
            shared = telemetry
            return telemetry
        }
    }

    private static func make(_ config: KeelConfig, logFileDescriptor: Int32) throws -> Telemetry {
        let metadataProvider = OTel.makeLoggingMetadataProvider()
        LoggingSystem.bootstrap({ label, provider in
            KeelLogHandler(label: label, level: config.logLevel.loggerLevel, format: config.logFormat, metadataProvider: provider,
                           fileDescriptor: logFileDescriptor)
        }, metadataProvider: metadataProvider)

        let metrics = MetricsExporter()
        MetricsSystem.bootstrap(metrics.factory)

        // The tracer is always installed, so spans that code starts carry IDs into logs and outgoing
        // `traceparent` headers; spans leave the process only when an OTLP endpoint is configured (and
        // the server makes a span per request only then, see KeelServer).
        var otel = OTel.Configuration.default
        otel.serviceName = "keel"
        otel.diagnosticLogger = .custom(Logger(label: "keel.otel"))
        otel.metrics.enabled = false
        otel.logs.enabled = false
        otel.propagators = [.traceContext]
        if let endpoint = config.otlpEndpoint {
            otel.traces.exporter = .otlp
            otel.traces.otlpExporter.protocol = .httpProtobuf
            otel.traces.otlpExporter.endpoint = endpoint.hasSuffix("/v1/traces")
                ? endpoint : endpoint.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/v1/traces"
            otel.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        } else {
            otel.traces.exporter = .none
            // Spans still get IDs (logs and outgoing `traceparent` carry them) but are not recorded: a recorded span
            // goes through the tracer's event stream at its start and end only to be dropped, two task wake-ups per
            // span on the path of every job a worker starts.
            otel.traces.sampler = .traceIDRatio(ratio: 0) ?? otel.traces.sampler
        }
        let tracing = try OTel.makeTracingBackend(configuration: otel)
        InstrumentationSystem.bootstrap(tracing.factory)
        return Telemetry(metrics: metrics, tracingService: tracing.service, otlpEndpoint: config.otlpEndpoint)
    }
}
