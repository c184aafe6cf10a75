import Foundation
import KeelCore
import KeelTelemetry
import KeelTestSupport
import Testing
import Tracing

@Suite struct TracingTests {
    /// Outgoing calls carry the current trace as a W3C traceparent.
    @Test func propagationHeadersCarryTheCurrentTrace() throws {
        var config = KeelConfig()
        config.logLevel = .critical
        _ = try Telemetry.bootstrap(config)
        let headers = withSpan("outgoing call") { span in
            (TracePropagation.headers(), span.context)
        }
        let traceparent = try #require(headers.0.first { $0.name == "traceparent" }?.value)
        let parts = traceparent.split(separator: "-")
        #expect(parts.count == 4)
        #expect(parts[0] == "00")
        #expect(parts[1].count == 32 && parts[2].count == 16)
        #expect(TracePropagation.headers(for: nil).isEmpty)
    }

    /// A real OTLP/HTTP receiver (Python, decoding protobuf) gets the server span of a request,
    /// in the trace the caller's traceparent started.
    @Test func spansAreExportedOverOTLPHTTP() async throws {
        let receiver = try PythonHelper("otlp_receiver.py", arguments: ["0"])
        defer { receiver.stop() }
        let receiverPort = try await receiver.listeningPort()

        let keel = try KeelProcess(["up", "--port", "0"], environment: ["KEEL_OTLP_ENDPOINT": "http://127.0.0.1:\(receiverPort)"])
        let port = try await keel.waitUntilReady()
        let traceID = "0af7651916cd43dd8448eb211c80319c"
        let parentSpan = "b7ad6b7169203331"
        let response = try RawConnection.get(port: port, path: "/api/v1/status", headers: ["traceparent": "00-\(traceID)-\(parentSpan)-01"])
        #expect(response.hasPrefix("HTTP/1.1 200"))
        keel.signal(SIGTERM)  // shutdown flushes the batch
        #expect(try await keel.waitForExit() == 0)

        try await receiver.waitFor(traceID, timeout: .seconds(10), context: keel.stdout)
        let spans = receiver.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let span = try #require(spans.first { $0["trace_id"] as? String == traceID })
        #expect(span["parent_span_id"] as? String == parentSpan)
        #expect(span["name"] as? String == "/api/v1/status")
        #expect(span["service"] as? String == "keel")
        let attributes = span["attributes"] as? [String: Any]
        #expect(attributes?["http.route"] as? String == "/api/v1/status")
        #expect(attributes?["http.response.status_code"] as? Int == 200)
    }
}
