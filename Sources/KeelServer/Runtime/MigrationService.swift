import KeelCore
import KeelStore
import Logging
import ServiceLifecycle

/// The schema of every Keel module, in the order they are applied.
public enum KeelMigrations {
    public static let all: [Migration] = [
        Migration(
            module: "core", version: 1, name: "create keel_nodes",
            sqlite: ["""
                CREATE TABLE keel_nodes (
                    id TEXT PRIMARY KEY,
                    hostname TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    address TEXT NOT NULL,
                    roles TEXT NOT NULL,
                    version TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    heartbeat_at INTEGER NOT NULL
                )
                """],
            postgres: ["""
                CREATE TABLE keel_nodes (
                    id TEXT PRIMARY KEY,
                    hostname TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    address TEXT NOT NULL,
                    roles TEXT NOT NULL,
                    version TEXT NOT NULL,
                    started_at TIMESTAMPTZ NOT NULL,
                    heartbeat_at TIMESTAMPTZ NOT NULL
                )
                """]),
    ]
}

/// Applies migrations at start, then lets the modules prepare (bootstrap data). While the store is
/// unreachable it retries with backoff and the process stays unready; a schema this binary cannot
/// run against stops the process.
struct MigrationService: Service {
    let store: any Store
    let migrations: [Migration]
    let readiness: Readiness
    let prepare: @Sendable () async throws -> Void
    /// How long an unreachable store may keep the process from starting before it gives up.
    let startupTimeout: Duration
    let logger: Logger

    func run() async throws {
        // Services waiting for the schema end too when this one stops without it (a failed bind, a signal).
        defer { if case .pending = readiness.migrations { readiness.update(.failed("stopped before the schema was current")) } }
        var delay = Duration.milliseconds(250)
        let giveUpAt = ContinuousClock.now + startupTimeout
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                // An unreachable store holds a statement for the store's whole operation timeout: the startup timeout
                // bounds the wait for the store's first answer (not the migrations, which may take long on a large one).
                try await withDeadline(max(giveUpAt - .now, .milliseconds(100)), orThrow: StoreError.unavailable("no answer within the startup timeout")) {
                    try await store.ping()
                }
                let applied = try await store.migrate(migrations)
                try await prepare()
                readiness.update(.applied)
                logger.info("store schema is current", metadata: ["applied_now": "\(applied.count)", "store": "\(store.location)"])
                // A service that returns would stop the whole group; this one stays until shutdown.
                try? await gracefulShutdown()
                return
            } catch let error as FatalStartupError {
                readiness.update(.failed(error.description))
                logger.critical("cannot start", metadata: ["error": "\(error.description)"])
                throw error
            } catch StoreError.migration(let reason) {
                readiness.update(.failed(reason))
                logger.critical("cannot migrate the store", metadata: ["error": "\(reason)"])
                throw StoreError.migration(reason)
            } catch {
                if Task.isCancelled { break }  // the process is stopping (a failed bind, a signal): not a store problem
                guard ContinuousClock.now < giveUpAt else {
                    let reason = "the store (\(store.location)) is still unreachable after \(startupTimeout): \(error). Check database_url "
                        + "(KEEL_DATABASE_URL), that the server runs and accepts this host, and database_tls."
                    readiness.update(.failed(reason))
                    logger.critical("cannot start", metadata: ["error": "\(reason)"])
                    throw FatalStartupError(reason)
                }
                readiness.update(.pending(String(describing: error)))
                logger.warning("store not reachable; retrying migrations", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }
}
