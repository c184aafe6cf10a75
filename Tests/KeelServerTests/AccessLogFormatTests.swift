import Testing
@testable import KeelServer

@Suite struct AccessLogFormatTests {
    @Test(arguments: [(0, "0.000"), (7, "0.007"), (1234, "1.234"), (1_000_000, "1000.000"), (45_010, "45.010")])
    func durationsPrintAsMilliseconds(micros: Int, expected: String) {
        #expect(ObservabilityMiddleware.milliseconds(fromMicroseconds: micros) == expected)
    }

    @Test func callerTraceIDsComeFromWellFormedTraceparents() {
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01") == nil)
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == nil)
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7") == nil)
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: "\"};DROP-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01") == nil)
        #expect(ObservabilityMiddleware.traceID(fromTraceparent: nil) == nil)
    }

    @Test func requestIDsAreValidatedBeforeTheyAreEchoed() {
        #expect(ObservabilityMiddleware.requestID(from: "abc-123_x.y:z") == "abc-123_x.y:z")
        #expect(ObservabilityMiddleware.requestID(from: String(repeating: "a", count: 129)).count == 32)
        #expect(ObservabilityMiddleware.requestID(from: "line\r\nbreak") != "line\r\nbreak")
        #expect(ObservabilityMiddleware.requestID(from: nil).count == 32)
        #expect(ObservabilityMiddleware.requestID(from: nil) != ObservabilityMiddleware.requestID(from: nil))
    }
}
