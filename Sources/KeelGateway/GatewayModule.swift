import Foundation
import Hummingbird
import KeelCore
import KeelServer
import KeelStore
import Logging
import ServiceLifecycle

/// The gateway as a Keel module: its schema, `/api/v1/gateway/...` on the api role, and on the
/// gateway role the proxy in front of Keel's router, with route reloading and health checks.
public struct GatewayModule: KeelModule {
    let gateway: Gateway
    let routes: GatewayStore

    public init(config: KeelConfig, store: any Store, authenticator: any RequestAuthenticator, clock: any KeelClock = SystemClock()) {
        routes = GatewayStore(store: store, clock: clock)
        gateway = Gateway(authenticator: authenticator, limiter: RateLimiter(store: store, clock: clock), accessLog: config.accessLog,
                          tracing: config.otlpEndpoint != nil, scheme: config.tlsCertFile == nil ? "http" : "https")
    }

    public static let migrations = GatewayMigrations.all

    public var migrations: [Migration] { Self.migrations }

    public func register(on registrar: inout RouteRegistrar, context: ModuleContext) {
        guard context.config.roles.contains(.api) else { return }
        GatewayAdminRoutes(routes: routes, gateway: context.config.roles.contains(.gateway) ? gateway : nil, limits: context.limits)
            .register(on: &registrar)
    }

    public func prepare(context: ModuleContext) async throws {
        let declared = try Self.declaredRoutes(context.config.declaredGatewayRoutes)
        if context.config.roles.contains(.api) || context.config.roles.contains(.gateway) {
            try await routes.syncDeclared(declared)
        }
        if context.config.roles.contains(.gateway) {
            try await gateway.reload(from: routes, force: true)
        }
    }

    public func services(context: ModuleContext) -> [any Service] {
        guard context.config.roles.contains(.gateway) else { return [] }
        return [GatewayRefresher(gateway: gateway, routes: routes, readiness: context.readiness),
                HealthChecker(gateway: gateway, readiness: context.readiness)]
    }

    public func middlewares(context: ModuleContext) -> [any MiddlewareProtocol<Request, Response, KeelRequestContext>] {
        context.config.roles.contains(.gateway) ? [GatewayMiddleware(gateway: gateway)] : []
    }

    public func webSocketForwarder(context: ModuleContext) -> (any WebSocketForwarder)? {
        context.config.roles.contains(.gateway) ? GatewayWebSocketForwarder(gateway: gateway) : nil
    }

    /// Routes and live registered services as `GET /api/v1/gateway/routes` and `/services` show them, with this
    /// process's view of each route's upstream health and breakers when `withHealth` (it runs the gateway role).
    public func snapshot(withHealth: Bool) async throws -> JSONValue {
        let routeViews = try await routes.routes().map { RouteView($0, status: withHealth ? gateway.status(of: $0.route.name) : nil) }
        let services = Dictionary(grouping: try await routes.liveInstances(), by: \.service).sorted { $0.key < $1.key }
            .map { ServiceView(name: $0.key, instances: $0.value) }
        return try JSONValue.encoding(Snapshot(routes: routeViews, services: services))
    }

    private struct Snapshot: Encodable {
        let routes: [RouteView]
        let services: [ServiceView]
    }

    /// `gateway_routes` from configuration, each checked like an API request; a mistake stops the
    /// process naming the route and field.
    static func declaredRoutes(_ declared: [String: String]) throws -> [GatewayRoute] {
        try declared.keys.sorted().map { name in
            var route: GatewayRoute
            do {
                var object = try JSONSerialization.jsonObject(with: Data(declared[name]!.utf8)) as? [String: Any] ?? [:]
                object["name"] = object["name"] ?? name
                route = try JSONDecoder().decode(GatewayRoute.self, from: JSONSerialization.data(withJSONObject: object))
            } catch let error as DecodingError {
                let field = FieldError(error)
                throw FatalStartupError("gateway_routes: route \(name): \(field.field) \(field.message)")
            }
            guard route.name == name else {
                throw FatalStartupError("gateway_routes: route \(name): name must be \(name) (the key it is declared under) or left out")
            }
            do throws(ValidationFailure) {
                route = try route.validated(reserved: .keel)
            } catch {
                let detail = error.errors.map { "\($0.field) \($0.message)" }.joined(separator: "; ")
                throw FatalStartupError("gateway_routes: route \(name): \(detail)")
            }
            return route
        }
    }
}

extension Gateway {
    /// Loads the routes and registered instances when either changed since the last load (or always, with `force`).
    func reload(from store: GatewayStore, force: Bool) async throws {
        let revision = try await store.revision()
        let instances = try await store.liveInstances()
        let registered = Dictionary(grouping: instances, by: \.service).mapValues { $0.map(\.url) }
        guard force || loaded.withLock({ $0.revision != revision || $0.services != registered }) else { return }
        var definitions: [GatewayRoute] = []
        for stored in try await store.routes() {
            do throws(ValidationFailure) {
                definitions.append(try stored.route.validated(reserved: .keel))
            } catch {
                logger.warning("skipping a stored route that is no longer valid", metadata: [
                    "route": .string(stored.route.name), "errors": .string(error.errors.map { "\($0.field) \($0.message)" }.joined(separator: "; ")),
                ])
            }
        }
        apply(definitions, services: registered)
        loaded.withLock { $0 = (revision, registered) }
    }
}

/// Picks up route edits and registry changes made through any process, about once a second.
struct GatewayRefresher: Service {
    let gateway: Gateway
    let routes: GatewayStore
    let readiness: Readiness
    let logger = Logger(label: "keel.gateway")

    func run() async throws {
        guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        await cancelWhenGracefulShutdown {
            var lastPrune = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                do {
                    try await gateway.reload(from: routes, force: false)
                    if ContinuousClock.now - lastPrune > .seconds(3600) {
                        lastPrune = .now
                        try await routes.pruneExpiredInstances()
                        try await gateway.limiter.pruneIdleBuckets()
                    }
                } catch {
                    logger.warning("cannot reload gateway routes; keeping the current ones", metadata: ["error": "\(error)"])
                }
            }
        }
        await gateway.shutdown()
    }
}
