import Foundation
import NIOCore

// One event loop per CPU this process may run on (NIO counts cgroup quotas, not the affinity mask),
// so `taskset` or a cpuset pins Keel without oversubscribing the cores it has.
if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
   let mask = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })?.split(separator: "\t").last {
    let allowed = mask.compactMap { $0.hexDigitValue?.nonzeroBitCount }.reduce(0, +)
    if allowed > 0 { NIOSingletons.groupLoopCountSuggestion = min(allowed, System.coreCount) }
}

await Keel.runMain()
