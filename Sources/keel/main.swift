import Foundation
import NIOCore
import NIOPosix

// One event loop per CPU this process may run on (NIO counts cgroup quotas, not the affinity mask),
// so `taskset` or a cpuset pins Keel without oversubscribing the cores it has.
if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
   let mask = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })?.split(separator: "\t").last {
    let allowed = mask.compactMap { $0.hexDigitValue?.nonzeroBitCount }.reduce(0, +)
    if allowed > 0 { NIOSingletons.groupLoopCountSuggestion = min(allowed, System.coreCount) }
}

// Tasks run on the event loops themselves: a request's handler, its store calls and the gateway's
// upstream exchange then stay on one thread instead of hopping to a separate executor pool and back.
// CPU-heavy work (password hashing) runs on NIO's thread pool, never on the loops.
_ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()

await Keel.runMain()
