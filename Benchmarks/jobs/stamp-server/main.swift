import Foundation
import KeelCore
import KeelJobs
import KeelPlatform
import KeelServer
import KeelStore
import KeelTelemetry
import NIOCore
import NIOPosix

// `keel serve` with one more task, `bench.stamp`, whose result is the moment its handler started (seconds since the
// epoch): the jobs benchmark times enqueue → handler start from it, as Celery's peer task times itself, instead of
// from `started_at`, which the claim (or the hand-over) writes before the handler runs. Configured by `KEEL_*`
// variables alone (`KEEL_ROLES`, `KEEL_PORT`, ...); same modules, same event-loop setup as the keel binary.
_ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()

let processStart = ContinuousClock.now
let config = try ConfigLoader.load(environment: ProcessInfo.processInfo.environment).config
var tasks = Platform.tasks(config)
tasks.register("bench.stamp") { (_: JSONValue, _: JobContext) in Date().timeIntervalSince1970 }
let telemetry = try Telemetry.bootstrap(config)
let store = try await config.openStore(logger: .init(label: "keel.store"))
try await Platform.server(config: config, store: store, telemetry: telemetry, tasks: tasks).run(processStart: processStart)
