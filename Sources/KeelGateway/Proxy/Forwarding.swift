import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import KeelServer
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

extension Gateway {
    /// Bodies up to this size are read before forwarding, so that a failed attempt can be retried or
    /// sent to the fallback; larger ones stream through in one attempt.
    static let replayableBodyLimit = 64 * 1024

    /// Forwards one request along `route`, with its policy (CORS, auth, rate limit, body size) applied
    /// first, retries and the fallback on failure, and the response streamed back as it arrives.
    func forward(_ request: Request, context: KeelRequestContext, route active: ActiveRoute, path: String) async -> Response {
        var context = context
        context.requestID = requestID(from: request.headers[.xRequestID])
        var exchange = Exchange(route: active, request: request, requestID: context.requestID, remote: context.clientIP,
                                start: .now, path: path)
        do {
            return try await proxy(request, context: context, route: active, path: path, exchange: &exchange)
        } catch {
            let problem = Self.problem(for: error, route: active.route)
            var response = problem.response(requestID: context.requestID, instance: path)
            exchange.headers(into: &response.headers)
            exchange.status = response.status.code
            finish(exchange, bytes: 0)
            return response
        }
    }

    private func proxy(_ request: Request, context: KeelRequestContext, route active: ActiveRoute, path: String,
                       exchange: inout Exchange) async throws -> Response {
        let route = active.route
        if let cors = route.cors, let origin = request.headers[.origin] {
            let allowed = cors.allowedOrigins.contains("*") || cors.allowedOrigins.contains(origin)
            if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
                guard allowed else { throw Problem.forbidden("The origin \(origin) may not call this route.") }
                var response = Response(status: .noContent)
                CORSHeaders.preflight(cors, origin: origin, route: route, into: &response.headers)
                exchange.status = 204
                finish(exchange, bytes: 0)
                return response
            }
            if allowed { exchange.corsOrigin = (cors, origin) }
        }

        var principal: Principal?
        if active.access != .public {
            principal = try await RouteRegistrar.authorize(request, context: context, access: active.access, authenticator: authenticator)
        }
        if let policy = route.rateLimit {
            let decision = try await limiter.take(route: route.name, caller: ActiveRoute.rateLimitCaller(principal, clientIP: context.clientIP),
                                                  policy: policy)
            exchange.rateLimit = decision
            guard decision.allowed else {
                active.metrics.rateLimited.increment()
                throw Problem.tooManyRequests("Rate limit of route \(route.name) reached (\(policy.requests) per \(Self.seconds(policy.perSeconds)) s).",
                                              retryAfterSeconds: decision.retryAfterSeconds)
            }
        }

        let declaredLength = request.headers[.contentLength].flatMap(Int.init)
        if let declaredLength, declaredLength > route.maxBodyBytes { throw Problem.contentTooLarge(limit: route.maxBodyBytes) }
        let hasBody = (declaredLength ?? 0) > 0 || (declaredLength == nil && request.headers[.transferEncoding] != nil)
        var body: ForwardedBody = .none
        if hasBody {
            if let declaredLength, declaredLength <= Self.replayableBodyLimit {
                do {
                    body = .buffered(try await request.body.collect(upTo: declaredLength))
                } catch is NIOTooManyBytesError {
                    throw Problem.contentTooLarge(limit: route.maxBodyBytes)
                }
            } else {
                body = .streamed(LimitedBody(base: request.body, limit: route.maxBodyBytes), length: declaredLength)
            }
        }

        let forwarding = ForwardingContext(
            clientIP: context.clientIP, scheme: scheme, originalHost: request.head.authority,
            requestID: context.requestID, traceparent: tracing ? nil : Self.traceparent(request.headers[.traceparent]), upstreamHost: "",
            subject: principal?.subject, roles: principal?.roles ?? [],
            dropCredentials: active.access != .public && !route.forwardToken)
        let idempotent: Set<HTTPRequest.Method> = [.get, .head, .options, .put, .delete, .trace]
        let retriesAllowed = idempotent.contains(request.method) && body.isReplayable ? route.retries : 0
        let stickyKey = active.stickyKey(for: request)
        let upstreamPath = active.upstreamPath(for: path) + (request.uri.query.map { "?" + $0 } ?? "")

        var pool = active.pool
        var usingFallback = false
        var tried: Set<Int> = []
        var failures = 0
        var lastError: (any Error)?
        while true {
            guard let index = pool.pick(excluding: tried, stickyKey: stickyKey) else {
                if !usingFallback, let fallback = active.fallbackPool, body.isReplayable {
                    (pool, usingFallback, tried) = (fallback, true, [])
                    continue
                }
                if let lastError { throw lastError }
                throw Problem.unavailable("No instance of route \(route.name) is available: all are down, drained or failing.")
            }
            tried.insert(index)
            let instance = pool.instances[index]
            exchange.upstream = instance.label
            exchange.attempts += 1
            var outgoing = HTTPClientRequest(url: instance.url.origin + ActiveRoute.join(instance.url.basePath, upstreamPath))
            outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
            var headers = forwarding
            headers.upstreamHost = instance.url.hostHeader
            outgoing.headers = HTTPHeaders(forwarding: request.headers, headers)
            outgoing.body = body.clientBody

            let response: HTTPClientResponse
            do {
                response = try await client.execute(outgoing, deadline: NIODeadline.now() + TimeAmount.nanoseconds(Int64(route.timeoutSeconds * 1e9)), logger: nil)
            } catch {
                pool.finish(index, outcome: .failure)
                let failure = UpstreamFailure(error)
                active.metrics.upstreamError(instance.label, kind: failure.kind)
                lastError = failure.problem(route: route.name, timeout: route.timeoutSeconds, bodyTooLarge: route.maxBodyBytes)
                if failure.kind == "body_too_large" { throw lastError! }
                // Nothing reached the upstream when the connection failed, so any method may go elsewhere.
                let mayRetry = failure.kind == "connect" ? body.isReplayable : retriesAllowed > 0
                if mayRetry, failures < route.retries {
                    failures += 1
                    active.metrics.retries.increment()
                    try await Self.backoff(attempt: failures)
                    continue
                }
                if !usingFallback, let fallback = active.fallbackPool, body.isReplayable {
                    (pool, usingFallback, tried) = (fallback, true, [])
                    continue
                }
                throw lastError!
            }

            let status = Int(response.status.code)
            if [502, 503, 504].contains(status), retriesAllowed > 0, failures < route.retries {
                pool.finish(index, outcome: .failure)
                active.metrics.upstreamError(instance.label, kind: "status_\(status)")
                failures += 1
                active.metrics.retries.increment()
                try await Self.discard(response)
                try await Self.backoff(attempt: failures)
                continue
            }
            if !usingFallback, let fallback = active.fallbackPool, route.fallback?.onStatus.contains(status) == true, body.isReplayable {
                pool.finish(index, outcome: status >= 500 ? .failure : .success)
                try await Self.discard(response)
                (pool, usingFallback, tried) = (fallback, true, [])
                continue
            }
            return try await answer(with: response, from: pool, instance: index, exchange: exchange)
        }
    }

    /// The upstream's response. A small body of known length is read whole and goes out with the head in
    /// one write; any other is passed on chunk by chunk as it arrives (SSE events as they are sent).
    private func answer(with upstream: HTTPClientResponse, from pool: UpstreamPool, instance index: Int, exchange answered: Exchange) async throws -> Response {
        var answered = answered
        answered.status = Int(upstream.status.code)
        var headers = HTTPFields(returning: upstream.headers)
        answered.headers(into: &headers)
        let exchange = answered
        let length = upstream.headers.first(name: "content-length").flatMap(Int.init)
        let outcome: UpstreamPool.Outcome = exchange.status >= 500 ? .failure : .success
        let status = HTTPResponse.Status(code: exchange.status, reasonPhrase: upstream.status.reasonPhrase)
        if let length, length <= Self.replayableBodyLimit {
            let body: ByteBuffer
            do {
                body = try await upstream.body.collect(upTo: length)
            } catch {
                pool.finish(index, outcome: .failure)
                throw UpstreamFailure(error)
            }
            pool.finish(index, outcome: outcome)
            finish(exchange, bytes: body.readableBytes)
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: body))
        }
        let body = ResponseBody(contentLength: length) { [self] writer in
            var bytes = 0
            do {
                for try await chunk in upstream.body {
                    bytes += chunk.readableBytes
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            } catch {
                // The client went away, or the upstream broke off mid-body.
                pool.finish(index, outcome: outcome)
                var interrupted = exchange
                interrupted.interrupted = true
                finish(interrupted, bytes: bytes)
                throw error
            }
            pool.finish(index, outcome: outcome)
            finish(exchange, bytes: bytes)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// Metrics and the access-log line of a finished exchange.
    func finish(_ exchange: Exchange, bytes: Int) {
        let duration = ContinuousClock.now - exchange.start
        exchange.route.metrics.record(upstream: exchange.upstream ?? "-", status: exchange.status, duration: duration)
        guard accessLog else { return }
        var metadata: Logger.Metadata = [
            "request_id": .string(exchange.requestID),
            "method": .string(exchange.method),
            "path": .string(exchange.path),
            "route": .string(exchange.route.route.name),
            "upstream": .string(exchange.upstream ?? "-"),
            "status": .stringConvertible(exchange.status),
            "duration_ms": .string(accessLogMilliseconds(duration)),
            "bytes": .stringConvertible(bytes),
            "attempts": .stringConvertible(exchange.attempts),
            "remote": .string(exchange.remote),
        ]
        if exchange.interrupted { metadata["interrupted"] = "true" }
        logger.info("gateway request", metadata: metadata)
    }

    static func problem(for error: any Error, route: GatewayRoute) -> Problem {
        switch error {
        case let problem as Problem: problem
        case let failure as UpstreamFailure: failure.problem(route: route.name, timeout: route.timeoutSeconds, bodyTooLarge: route.maxBodyBytes)
        case is CancellationError: Problem(status: .badGateway, slug: "bad-gateway", title: "Bad gateway", detail: "The request was cancelled.")
        default: UpstreamFailure(error).problem(route: route.name, timeout: route.timeoutSeconds, bodyTooLarge: route.maxBodyBytes)
        }
    }

    static func discard(_ response: HTTPClientResponse) async throws {
        for try await _ in response.body {}
    }

    /// 20 ms, 40 ms, 80 ms ... up to 500 ms, with full jitter.
    static func backoff(attempt: Int) async throws {
        let ceiling = min(500, 20 << min(attempt - 1, 5))
        try await Task.sleep(for: .milliseconds(Int.random(in: ceiling / 2...ceiling)))
    }

    /// The caller's `traceparent` when well-formed, so the upstream continues its trace; otherwise a new, unsampled one.
    static func traceparent(_ header: String?) -> String {
        if let header, traceID(fromTraceparent: header) != nil { return header }
        // IDs need to be unique, not secret: a counter mixed with a per-process random seed (SplitMix64)
        // instead of a getrandom call per byte.
        let base = traceSequence.wrappingAdd(3, ordering: .relaxed).oldValue &+ traceSeed
        func hex(_ offset: UInt64) -> String {
            var z = base &+ offset &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return String(z ^ (z >> 31), radix: 16).leftPadded(16)
        }
        return "00-" + hex(0) + hex(1) + "-" + hex(2) + "-00"
    }

    private static let traceSeed = UInt64.random(in: .min ... .max)
    private static let traceSequence = Atomic<UInt64>(0)

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// One request on its way through the gateway, for the access log, metrics and response headers.
struct Exchange: Sendable {
    let route: ActiveRoute
    let method: String
    let requestID: String
    let remote: String
    let start: ContinuousClock.Instant
    let path: String
    var upstream: String?
    var attempts = 0
    var status = 0
    var interrupted = false
    var rateLimit: RateDecision?
    var corsOrigin: (GatewayRoute.CORS, String)?

    init(route: ActiveRoute, request: Request, requestID: String, remote: String, start: ContinuousClock.Instant, path: String) {
        self.route = route
        self.method = request.method.rawValue
        self.requestID = requestID
        self.remote = remote
        self.start = start
        self.path = path
    }

    /// `X-Request-ID`, the rate-limit headers and CORS headers, on every answer of the route.
    func headers(into fields: inout HTTPFields) {
        fields[.xRequestID] = requestID
        if let rateLimit { rateLimit.headers(into: &fields) }
        if let (cors, origin) = corsOrigin { CORSHeaders.response(cors, origin: origin, into: &fields) }
    }
}

/// A request body as it is sent upstream: none, read already (so attempts can repeat), or streamed once.
enum ForwardedBody {
    case none
    case buffered(ByteBuffer)
    case streamed(LimitedBody, length: Int?)

    var isReplayable: Bool {
        if case .streamed = self { return false }
        return true
    }

    var clientBody: HTTPClientRequest.Body? {
        switch self {
        case .none: nil
        case .buffered(let buffer): .bytes(buffer)
        case .streamed(let body, let length): .stream(body, length: length.map { .known(Int64($0)) } ?? .unknown)
        }
    }
}

/// The request body, failing once it passes the route's limit (for bodies sent without a length).
struct LimitedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: RequestBody
    let limit: Int

    struct TooLarge: Error {}

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: RequestBody.AsyncIterator
        let limit: Int
        var seen = 0

        mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await base.next() else { return nil }
            seen += chunk.readableBytes
            if seen > limit { throw TooLarge() }
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), limit: limit) }
}

/// Why an attempt got no response, and how the client hears of it.
struct UpstreamFailure: Error {
    let kind: String
    let error: any Error

    init(_ error: any Error) {
        self.error = error
        switch error {
        case is LimitedBody.TooLarge: kind = "body_too_large"
        case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout: kind = "timeout"
        case let error as HTTPClientError where error == .connectTimeout: kind = "connect"
        case is NIOConnectionError, is ChannelError: kind = "connect"
        case let error as IOError where [ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode): kind = "connect"
        default: kind = "protocol"
        }
    }

    func problem(route: String, timeout: Double, bodyTooLarge limit: Int) -> Problem {
        switch kind {
        case "body_too_large": .contentTooLarge(limit: limit)
        case "timeout": Problem(status: .gatewayTimeout, slug: "gateway-timeout", title: "Gateway timeout",
                                detail: "The upstream of route \(route) did not answer within \(Gateway.seconds(timeout)) s.")
        default: Problem(status: .badGateway, slug: "bad-gateway", title: "Bad gateway",
                         detail: "The upstream of route \(route) could not be reached or broke off the exchange.")
        }
    }
}

extension HTTPField.Name {
    static let origin = HTTPField.Name("Origin")!
    static let accessControlRequestMethod = HTTPField.Name("Access-Control-Request-Method")!
}

private extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
