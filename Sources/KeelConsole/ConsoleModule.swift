import Hummingbird
import KeelCore
import KeelIdentity
import KeelJobs
import KeelServer
import KeelStore
import Logging

/// The web console at `/console` (and `/` when no gateway route claims it): server-rendered pages over the
/// identity, jobs, gateway and AI capabilities, signed in with Keel identity. It installs its pages
/// beside the API rather than in it: they answer HTML, authenticate with a session cookie and protect
/// forms with CSRF tokens, and every action is checked against the user's permissions on the server.
public struct ConsoleModule: KeelModule {
    let identity: IdentityService
    let jobs: JobQueue

    public init(identity: IdentityService, jobs: JobQueue) {
        self.identity = identity
        self.jobs = jobs
    }

    public var migrations: [Migration] { [] }

    public func register(on routes: inout RouteRegistrar, context: ModuleContext) {}

    public func installPages(on router: Router<KeelRequestContext>, context: ModuleContext) {
        guard context.config.roles.contains(.console) else { return }
        do {
            try Console(identity: identity, jobs: jobs, store: context.store, config: context.config, clock: context.clock).install(on: router)
        } catch {
            // The templates are part of the binary and tested; a broken one is a build defect, reported here.
            Logger(label: "keel.console").critical("console templates do not parse; the console is off", metadata: ["error": "\(error)"])
        }
    }
}
