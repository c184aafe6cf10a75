import KeelCore
import KeelIdentity
import KeelServer
import KeelStore
import KeelTelemetry

/// The capabilities this binary hosts, composed once for `up`, `serve` and `migrate`.
enum Platform {
    static var migrations: [Migration] { KeelMigrations.all + IdentityModule.migrations }

    static func server(config: KeelConfig, store: any Store, telemetry: Telemetry) -> KeelServer {
        let identity = IdentityService(config: config, store: store)
        return KeelServer(config: config, store: store, telemetry: telemetry,
                          modules: [IdentityModule(service: identity)], authenticator: identity)
    }
}
