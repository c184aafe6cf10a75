import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import KeelCore
import KeelStore
import KeelTelemetry
import Logging
import Metrics
import NIOCore
import ServiceLifecycle

/// One Keel process: the HTTP server with the routes of its roles, and the background services
/// (store, tracing export, migrations, node heartbeat) that run beside it.
public struct KeelServer: Sendable {
    public let config: KeelConfig
    public let store: any Store
    public let telemetry: Telemetry
    public let readiness = Readiness()
    public let nodes: NodeRegistry
    public let routes: RouteTable
    private let registrar: RouteRegistrar
    private let authenticator: any RequestAuthenticator
    private let modules: [any KeelModule]
    private let moduleContext: ModuleContext
    private let logger: Logger

    /// - Parameters:
    ///   - modules: the capabilities this process hosts, each with its schema, routes and services.
    ///   - authenticator: establishes callers of protected routes (the identity module's).
    public init(config: KeelConfig, store: any Store, telemetry: Telemetry, modules: [any KeelModule] = [],
                authenticator: any RequestAuthenticator = NoIdentityAuthenticator(), clock: any KeelClock = SystemClock()) {
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.authenticator = authenticator
        self.modules = modules
        let limits = RequestLimits(maxBodyBytes: config.maxBodyBytes)
        self.moduleContext = ModuleContext(config: config, store: store, limits: limits, clock: clock, readiness: readiness)
        self.logger = Logger(label: "keel")
        self.nodes = NodeRegistry(store: store, readiness: readiness, roles: config.roles,
                                  address: "\(config.host):\(config.port)", clock: clock, logger: Logger(label: "keel.nodes"))

        var registrar = RouteRegistrar()
        SystemRoutes(store: store, readiness: readiness, telemetry: telemetry, node: nodes.node, clock: clock,
                     storeCheckTimeout: .seconds(2)).register(on: &registrar)
        if config.roles.contains(.api) {
            APIRoutes(nodes: nodes, limits: limits).register(on: &registrar)
        }
        for module in modules { module.register(on: &registrar, context: moduleContext) }
        self.registrar = registrar
        self.routes = registrar.table

        let store = self.store
        let driver = [("driver", store.dialect.rawValue)]
        let maximumConnections = Gauge(label: "keel_store_connections_max", dimensions: driver)
        let inFlight = Gauge(label: "keel_store_queries_in_flight", dimensions: driver)
        telemetry.metrics.onScrape {
            let statistics = store.poolStatistics()
            maximumConnections.record(statistics.maximumConnections)
            inFlight.record(statistics.inFlight)
        }
        for role in Role.allCases {
            Gauge(label: "keel_role_enabled", dimensions: [("role", role.rawValue)]).record(config.roles.contains(role) ? 1 : 0)
        }
    }

    /// The HTTP application with every service of this process attached; run it with
    /// ``run(processStart:)`` or, in tests, with HummingbirdTesting.
    ///
    /// - Parameter onListening: called with the bound port once the server accepts connections.
    /// - Parameter tls: serve HTTPS with this certificate (see ``ServerTLS``).
    public func makeApplication(tls: ServerTLS? = nil, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router(context: KeelRequestContext.self)
        // A server span per request halves throughput; make them only when they are exported.
        let tracing = telemetry.otlpEndpoint != nil
        if tracing { router.add(middleware: TracingMiddleware(recordingHeaders: [.userAgent])) }
        for module in modules {
            for middleware in module.middlewares(context: moduleContext) { router.add(middleware: middleware) }
        }
        router.add(middleware: ObservabilityMiddleware(routes: routes, accessLog: config.accessLog, logsCallerTrace: !tracing))
        registrar.install(on: router, authenticator: authenticator)
        for module in modules { module.installPages(on: router, context: moduleContext) }

        // Shutdown runs in reverse: the server drains first, the store closes last.
        var services: [any Service] = [store]
        if let tracing = telemetry.claimTracingService() { services.append(tracing) }
        services.append(MigrationService(store: store, migrations: KeelMigrations.all + modules.flatMap(\.migrations),
                                         readiness: readiness, prepare: { [modules, moduleContext] in
                                             for module in modules { try await module.prepare(context: moduleContext) }
                                         }, startupTimeout: .seconds(config.storeStartupTimeoutSeconds), logger: Logger(label: "keel.migrations")))
        services.append(nodes)
        for module in modules { services += module.services(context: moduleContext) }

        let logger = self.logger
        let forwarder = modules.lazy.compactMap({ $0.webSocketForwarder(context: self.moduleContext) }).first
        // Slow clients (slowloris) may not hold connections: deadlines for a request's head, pauses in its body, and idleness.
        let deadlines = ReadDeadlines(head: .seconds(Int64(config.httpHeaderTimeoutSeconds)), bodyIdle: .seconds(Int64(config.httpBodyTimeoutSeconds)),
                                      idle: .seconds(Int64(config.httpIdleTimeoutSeconds)))
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [ReadDeadlines.progressWatcher()])
        let server = HTTPServerBuilder { responder -> any ServerChildChannel in
            if let forwarder {
                let channel = WebSocketUpgradeChannel(base: HTTP1WebSocketUpgradeChannel(responder: responder, configuration: .init(http1: http1)) { head, channel, logger in
                    try await forwarder.shouldUpgrade(head, channel: channel, logger: logger)
                })
                return tls.map { DeadlineWatchingChannel(base: TLSTerminatingChannel(base: channel, tls: $0), deadlines: deadlines) }
                    ?? DeadlineWatchingChannel(base: channel, deadlines: deadlines)
            }
            let channel = HTTP1Channel(responder: responder, configuration: http1)
            return tls.map { DeadlineWatchingChannel(base: TLSTerminatingChannel(base: channel, tls: $0), deadlines: deadlines) }
                ?? DeadlineWatchingChannel(base: channel, deadlines: deadlines)
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: nil),
            services: services,
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("listening", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
                await onListening(port)
            },
            logger: Logger(label: "keel.http")
        )
    }
}
