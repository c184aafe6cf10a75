import KeelAI
import KeelConsole
import KeelCore
import KeelGateway
import KeelIdentity
import KeelJobs
import KeelServer
import KeelStore
import KeelTelemetry

/// The capabilities this binary hosts, composed in one place for `up`, `serve`, `migrate` and the
/// tests that hold the whole API to its documentation and access matrix.
public enum Platform {
    public static var migrations: [Migration] { KeelMigrations.all + IdentityModule.migrations + JobsModule.migrations + GatewayModule.migrations + AIModule.migrations }

    /// The job handlers compiled into this binary: Keel's built-in tasks, set up from `config` (the mail server, the store).
    public static func tasks(_ config: KeelConfig) -> JobRegistry {
        var registry = JobRegistry()
        BuiltInTasks.register(in: &registry, mail: config.smtp, store: (config.database, config.databaseTLS))
        return registry
    }

    /// Every module, and the identity service that authenticates their routes.
    public static func modules(config: KeelConfig, store: any Store, tasks: JobRegistry? = nil, jwksRefetchInterval: Double = 30,
                               printFirstAdminPassword: @escaping @Sendable (String, String) -> Void = IdentityService.printOnce)
        -> (modules: [any KeelModule], identity: IdentityService) {
        let identity = IdentityService(config: config, store: store, jwksRefetchInterval: jwksRefetchInterval)
        let jobs = JobQueue(store: store, tasks: tasks ?? Platform.tasks(config))
        let gateway = GatewayModule(config: config, store: store, authenticator: identity)
        let ai = AIModule(config: config, store: store)
        return ([IdentityModule(service: identity, printFirstAdminPassword: printFirstAdminPassword),
                 JobsModule(queue: jobs, concurrency: config.workerQueues), gateway, ai,
                 ConsoleModule(identity: identity, jobs: jobs, gateway: gateway, ai: ai)], identity)
    }

    /// - Parameter tasks: the job handlers, if not only ``tasks(_:)``'s built-in ones.
    public static func server(config: KeelConfig, store: any Store, telemetry: Telemetry, tasks: JobRegistry? = nil) -> KeelServer {
        let (modules, identity) = modules(config: config, store: store, tasks: tasks)
        return KeelServer(config: config, store: store, telemetry: telemetry, modules: modules, authenticator: identity)
    }
}
