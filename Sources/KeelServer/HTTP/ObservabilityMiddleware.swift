import Foundation
import HTTPTypes
import Hummingbird
import KeelStore
import Logging
import Metrics
import NIOCore
import Synchronization

/// Wraps every request (inside the tracing middleware, when there is one, so logs carry the trace ID):
/// - honours a well-formed `X-Request-ID` or makes one, and echoes it;
/// - turns every error into an RFC 9457 problem (405 for known paths with another method, 503 when
///   the store is away, 500 without internals for anything unexpected);
/// - records `http_server_requests_total` and `http_server_request_duration_seconds` by route
///   template, method and status, and writes one access-log line.
struct ObservabilityMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext

    let routes: RouteTable
    let accessLog: Bool
    /// Without a tracer, log the trace ID of the caller's `traceparent` so logs still correlate.
    let logsCallerTrace: Bool
    private let metrics = HTTPMetrics()

    init(routes: RouteTable, accessLog: Bool, logsCallerTrace: Bool) {
        self.routes = routes
        self.accessLog = accessLog
        self.logsCallerTrace = logsCallerTrace
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        context.requestID = Self.requestID(from: request.headers[.xRequestID])
        context.logger[metadataKey: "hb.request.id"] = nil
        context.logger[metadataKey: "request_id"] = .string(context.requestID)
        if logsCallerTrace, let traceID = Self.traceID(fromTraceparent: request.headers[.traceparent]) {
            context.logger[metadataKey: "trace_id"] = .string(traceID)
        }
        metrics.active.increment()
        defer { metrics.active.decrement() }

        var response: Response
        do {
            // No store keeps NUL characters (PostgreSQL refuses them, SQLite cuts text at them), so
            // they are refused at the edge rather than half-stored.
            if request.uri.description.utf8.containsPercentEncodedNUL {
                throw Problem(status: .badRequest, slug: "invalid-characters", title: "Invalid characters",
                              detail: "The request URI contains a NUL character (%00).")
            }
            response = try await next(request, context)
        } catch {
            response = problem(for: error, request: request, context: context)
                .response(requestID: context.requestID, instance: request.uri.path)
        }
        response.headers[.xRequestID] = context.requestID

        // Unmatched paths share one label, so scanners cannot blow up the metric's cardinality.
        let route = context.endpointPath.flatMap { $0 == Self.unmatchedRoute ? nil : $0 } ?? "unmatched"
        let status = response.status.code
        metrics.record(route: route, method: request.method, status: status, duration: ContinuousClock.now - start)
        if accessLog {
            let micros = (ContinuousClock.now - start) / .microseconds(1)
            context.logger.info("request", metadata: [
                "method": .string(request.method.rawValue),
                "path": .string(request.uri.path),
                "route": .string(route),
                "status": .stringConvertible(status),
                "duration_ms": .string(Self.milliseconds(fromMicroseconds: Int(micros))),
                "remote": .string(context.remoteAddress?.ipAddress ?? "-"),
            ])
        }
        return response
    }

    private func problem(for error: any Error, request: Request, context: Context) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case let error as StoreError:
            if case .unavailable(let reason) = error {
                context.logger.warning("store unavailable", metadata: ["error": .string(reason)])
                return .unavailable("The store is not reachable right now; retry shortly.")
            }
            context.logger.error("store error", metadata: ["error": .string(error.description)])
            return .internalError()
        case let error as HTTPError where error.status == .notFound && context.endpointPath == Self.unmatchedRoute:
            let allowed = routes.methods(matching: request.uri.path)
            return allowed.isEmpty
                ? .notFound("No route matches \(request.uri.path).")
                : .methodNotAllowed(request.method, allowed: allowed)
        case let error as any HTTPResponseError where error.status.code < 500:
            return .from(status: error.status, detail: (error as? HTTPError)?.body)
        default:
            context.logger.error("unhandled error", metadata: ["error": .string(String(reflecting: error))])
            return .internalError()
        }
    }

    /// `1234` µs as `"1.234"`, without `String(format:)`, which is slow on Linux and this runs per request.
    static func milliseconds(fromMicroseconds micros: Int) -> String {
        let fraction = String(micros % 1000)
        return String(micros / 1000) + "." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// The trace ID of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed and not all zeros.
    static func traceID(fromTraceparent header: String?) -> String? {
        guard let header, header.utf8.count == 55 else { return nil }
        let parts = header.split(separator: "-")
        guard parts.count == 4, parts[1].count == 32, parts[2].count == 16,
              parts.allSatisfy({ $0.allSatisfy { $0.isHexDigit && !$0.isUppercase } }),
              parts[1].contains(where: { $0 != "0" })
        else { return nil }
        return String(parts[1])
    }

    /// What Hummingbird's router records as the endpoint of a request no route matched.
    static let unmatchedRoute = "NotFound"

    /// Accepts 1–128 characters of `[A-Za-z0-9._:-]`, so IDs can be logged and echoed safely; otherwise
    /// makes one: a random per-process prefix and a counter, unique without a random draw per request.
    static func requestID(from header: String?) -> String {
        if let header, (1...128).contains(header.utf8.count),
           header.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") }) {
            return header
        }
        let sequence = requestSequence.wrappingAdd(1, ordering: .relaxed).newValue
        return requestIDPrefix + String(sequence, radix: 16).leftPadded(16)
    }

    private static let requestIDPrefix = String(UInt64.random(in: .min ... .max), radix: 16).leftPadded(16)
    private static let requestSequence = Atomic<UInt64>(0)
}

/// The caller's `X-Request-ID` when well-formed, else a new one: what Keel's own routes use, for the
/// gateway's requests that bypass them.
public func requestID(from header: String?) -> String {
    ObservabilityMiddleware.requestID(from: header)
}

/// The trace ID of a well-formed W3C `traceparent`, or `nil`.
public func traceID(fromTraceparent header: String?) -> String? {
    ObservabilityMiddleware.traceID(fromTraceparent: header)
}

/// `1234` µs as `"1.234"`, the access log's `duration_ms`.
public func accessLogMilliseconds(_ duration: Duration) -> String {
    ObservabilityMiddleware.milliseconds(fromMicroseconds: Int(duration / .microseconds(1)))
}

extension HTTPField.Name {
    static let xRequestID = HTTPField.Name("X-Request-ID")!
    static let traceparent = HTTPField.Name("traceparent")!
}

extension String.UTF8View {
    /// `%00` anywhere, in either case.
    var containsPercentEncodedNUL: Bool {
        var iterator = makeIterator()
        var state = 0
        while let byte = iterator.next() {
            switch (state, byte) {
            case (_, UInt8(ascii: "%")): state = 1
            case (1, UInt8(ascii: "0")): state = 2
            case (2, UInt8(ascii: "0")): return true
            default: state = 0
            }
        }
        return false
    }
}

private extension UInt8 {
    var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}

private extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// The HTTP server's metrics, with one handle per (route, method, status) kept for reuse.
private final class HTTPMetrics: Sendable {
    struct Key: Hashable {
        let route: String
        let method: String
        let status: Int
    }

    let active = Meter(label: "http_server_active_requests")
    private let handles = Mutex<[Key: (Counter, Metrics.Timer)]>([:])

    func record(route: String, method: HTTPRequest.Method, status: Int, duration: Duration) {
        let key = Key(route: route, method: method.rawValue, status: status)
        let (counter, timer) = handles.withLock { handles in
            if let existing = handles[key] { return existing }
            let dimensions = [("route", route), ("method", key.method), ("status", String(status))]
            let created = (Counter(label: "http_server_requests_total", dimensions: dimensions),
                           Metrics.Timer(label: "http_server_request_duration_seconds", dimensions: dimensions))
            handles[key] = created
            return created
        }
        counter.increment()
        timer.record(duration: duration)
    }
}
