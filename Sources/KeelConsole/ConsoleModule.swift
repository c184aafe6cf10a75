import Hummingbird
import KeelAI
import KeelGateway
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
    let gateway: GatewayModule
    let ai: AIModule

    public init(identity: IdentityService, jobs: JobQueue, gateway: GatewayModule, ai: AIModule) {
        self.identity = identity
        self.jobs = jobs
        self.gateway = gateway
        self.ai = ai
    }

    public var migrations: [Migration] { [] }

    public func register(on routes: inout RouteRegistrar, context: ModuleContext) {}

    public func installPages(on router: Router<KeelRequestContext>, context: ModuleContext) {
        guard context.config.roles.contains(.console) else { return }
        do {
            try Console(identity: identity, jobs: jobs, gateway: gateway, ai: ai, store: context.store, config: context.config, clock: context.clock).install(on: router)
        } catch {
            // The templates are part of the binary and tested; a broken one is a build defect, reported here.
            Logger(label: "keel.console").critical("console templates do not parse; the console is off", metadata: ["error": "\(error)"])
        }
    }
}
