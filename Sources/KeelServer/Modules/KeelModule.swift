import Hummingbird
import KeelCore
import KeelStore
import ServiceLifecycle

/// A capability (identity, jobs, ...) plugged into the server: its schema, its routes, and the work it
/// does once the schema is in place. The server composes modules; modules never know of each other.
public protocol KeelModule: Sendable {
    var migrations: [Migration] { get }
    /// Adds the module's routes for the roles this process runs.
    func register(on routes: inout RouteRegistrar, context: ModuleContext)
    /// Runs once after every migration is applied and before the process reports ready.
    func prepare(context: ModuleContext) async throws
    /// Long-running work that lives as long as the process.
    func services(context: ModuleContext) -> [any Service]
    /// Middleware that sees every request before Keel's router (the gateway's proxy), inside tracing.
    func middlewares(context: ModuleContext) -> [any MiddlewareProtocol<Request, Response, KeelRequestContext>]
    /// Takes WebSocket upgrades (the gateway's, on its role); the server offers upgrades only when a module does.
    func webSocketForwarder(context: ModuleContext) -> (any WebSocketForwarder)?
    /// Routes outside the JSON API (the console's HTML pages), with their own authentication; they are not
    /// part of the route table, the OpenAPI document or the access matrix.
    func installPages(on router: Router<KeelRequestContext>, context: ModuleContext)
}

extension KeelModule {
    public func prepare(context: ModuleContext) async throws {}
    public func services(context: ModuleContext) -> [any Service] { [] }
    public func middlewares(context: ModuleContext) -> [any MiddlewareProtocol<Request, Response, KeelRequestContext>] { [] }
    public func webSocketForwarder(context: ModuleContext) -> (any WebSocketForwarder)? { nil }
    public func installPages(on router: Router<KeelRequestContext>, context: ModuleContext) {}
}

/// What a module may use from the process hosting it.
public struct ModuleContext: Sendable {
    public let config: KeelConfig
    public let store: any Store
    public let limits: RequestLimits
    public let clock: any KeelClock
    /// Services wait on it before touching the schema.
    public let readiness: Readiness

    public init(config: KeelConfig, store: any Store, limits: RequestLimits, clock: any KeelClock, readiness: Readiness) {
        self.config = config
        self.store = store
        self.limits = limits
        self.clock = clock
        self.readiness = readiness
    }
}

/// A module cannot start with this configuration (for example a weak `KEEL_ADMIN_PASSWORD`): the
/// process stops with the message instead of retrying.
public struct FatalStartupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
