import Foundation
import Hummingbird
import KeelCore
import KeelStore
import KeelTelemetry
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

extension KeelServer {
    /// Runs this process until SIGTERM or SIGINT, then drains in-flight requests and stops every
    /// service within `shutdown_timeout_seconds`. A second signal exits at once.
    ///
    /// - Parameter processStart: when the process started, to report how long it took to be ready.
    public func run(processStart: ContinuousClock.Instant) async throws {
        let logger = Logger(label: "keel")
        let readiness = self.readiness
        let roles = config.roles.sorted().map(\.rawValue).joined(separator: ",")
        let tls = try ServerTLS.from(config)
        let application = makeApplication(tls: tls) { port in
            Task {
                guard await readiness.waitUntilMigrated() else { return }
                let elapsed = ContinuousClock.now - processStart
                logger.info("ready", metadata: [
                    "port": "\(port)", "roles": "\(roles)", "store": "\(store.location)",
                    "startup_ms": "\(Int((elapsed / .milliseconds(1)).rounded()))",
                ])
            }
        }
        let forceExit = Task {
            var received = 0
            for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                received += 1
                if received == 1 {
                    logger.notice("shutting down: draining in-flight requests", metadata: ["signal": "\(signal)"])
                } else {
                    logger.warning("second signal: exiting without draining", metadata: ["signal": "\(signal)"])
                    exit(1)
                }
            }
        }
        defer { forceExit.cancel() }
        // SIGHUP reloads the certificate (after a renewal); a broken new pair keeps the running one.
        let reloadTLS = Task {
            guard let tls else { return }
            for await _ in await UnixSignalsSequence(trapping: .sighup) {
                do {
                    try tls.reload()
                    logger.notice("reloaded the TLS certificate", metadata: ["file": "\(tls.certificateFile)"])
                } catch {
                    logger.error("cannot reload the TLS certificate; keeping the current one", metadata: ["error": "\(error)"])
                }
            }
        }
        defer { reloadTLS.cancel() }

        var configuration = ServiceGroupConfiguration(
            services: [.init(service: application)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(config.shutdownTimeoutSeconds)
        do {
            try await ServiceGroup(configuration: configuration).run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE || error.errnoCode == EACCES {
            let what = error.errnoCode == EADDRINUSE ? "is already in use" : "needs privileges this process lacks"
            throw FatalStartupError("port \(config.port) on \(config.host) \(what): stop what holds it, or choose another with --port or port (KEEL_PORT)")
        }
        logger.info("stopped")
    }
}
