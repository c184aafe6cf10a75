import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import KeelServer
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// The gateway of one process: the routes in force and the client that forwards to upstreams. The
/// routes are swapped as a whole when they change (``apply(_:services:)``); a request keeps the
/// table it started with.
public final class Gateway: Sendable {
    let authenticator: any RequestAuthenticator
    let limiter: RateLimiter
    let accessLog: Bool
    /// Spans are exported: the HTTP client makes a span per forwarded request and sends its `traceparent`.
    let tracing: Bool
    /// `https` when this process terminates TLS: the `X-Forwarded-Proto` upstreams get.
    let scheme: String
    let logger = Logger(label: "keel.gateway")
    private let table = Mutex(RoutingTable(routes: []))
    /// The store revision and registered instances the table was built from.
    let loaded = Mutex<(revision: Int, services: [String: [String]])>((-1, [:]))
    private let upstreams: UpstreamClient

    init(authenticator: any RequestAuthenticator, limiter: RateLimiter, accessLog: Bool, tracing: Bool, scheme: String) {
        self.authenticator = authenticator
        self.limiter = limiter
        self.accessLog = accessLog
        self.tracing = tracing
        self.scheme = scheme
        // Without an exporter the gateway passes the caller's `traceparent` on itself.
        upstreams = UpstreamClient(connectTimeout: .seconds(5), connectionsPerHost: 1024, http1Only: true, tracing: tracing)
    }

    var client: HTTPClient { upstreams.client }

    var routes: RoutingTable { table.withLock { $0 } }

    /// Puts `definitions` in force. Instances of routes that name a `service` come from `services`
    /// (service name → instance URLs); instances that stay keep their health and breaker state.
    func apply(_ definitions: [GatewayRoute], services: [String: [String]]) {
        let previous = Dictionary(routes.routes.map { ($0.route.name, $0) }, uniquingKeysWith: { first, _ in first })
        let active = definitions.map { route in
            let old = previous[route.name]
            var upstreams = route.upstreams
            if let service = route.service {
                upstreams += (services[service] ?? []).map { GatewayRoute.Upstream(url: $0) }
            }
            let pool = UpstreamPool(route: route.name, upstreams: upstreams, balance: route.balance,
                                    breaker: route.circuitBreaker, previous: old?.pool)
            let fallback = route.fallback.map {
                UpstreamPool(route: route.name, upstreams: $0.upstreams, balance: .roundRobin, breaker: route.circuitBreaker,
                             previous: old?.fallbackPool)
            }
            return ActiveRoute(route: route, pool: pool, fallbackPool: fallback)
        }
        table.withLock { $0 = RoutingTable(routes: active) }
    }

    func shutdown() async {
        await upstreams.shutdown()
    }
}

/// Sends every request that matches a gateway route to its upstreams; everything else (Keel's own
/// paths, and paths no route takes) goes on to Keel's router.
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext
    let gateway: Gateway

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let rawPath = request.uri.path
        if ReservedPaths.keel.owns(rawPath) { return try await next(request, context) }
        let table = gateway.routes
        if table.routes.isEmpty { return try await next(request, context) }
        let path: String
        do {
            path = try RequestPath.normalize(rawPath)
        } catch {
            var context = context
            context.requestID = requestID(from: request.headers[.xRequestID])
            return Problem(status: .badRequest, slug: "invalid-path", title: "Invalid path",
                           detail: "The path contains dot segments, encoded slashes or dots, backslashes or control characters.")
                .response(requestID: context.requestID, instance: "")
        }
        guard !ReservedPaths.keel.owns(path), let route = table.match(path: path, request: request) else {
            return try await next(request, context)
        }
        return await gateway.forward(request, context: context, route: route, path: path)
    }
}

extension HTTPField.Name {
    static let xRequestID = HTTPField.Name("X-Request-ID")!
    static let traceparent = HTTPField.Name("traceparent")!
    static let xAPIKey = HTTPField.Name("X-API-Key")!
}
