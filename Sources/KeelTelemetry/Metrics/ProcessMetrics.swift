import Foundation
import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The standard `process_*` metrics Prometheus clients export, read from `/proc/self` at scrape time.
final class ProcessMetrics: Sendable {
    private let residentMemory: Gauge
    private let virtualMemory: Gauge
    private let cpuSeconds: Counter
    private let cpuSecondsReported = Mutex<Double>(0)
    private let openFileDescriptors: Gauge
    private let maxFileDescriptors: Gauge
    private let startTime: Gauge

    init(registry: PrometheusCollectorRegistry) {
        residentMemory = registry.makeGauge(name: "process_resident_memory_bytes", help: "Resident memory size in bytes.")
        virtualMemory = registry.makeGauge(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.")
        cpuSeconds = registry.makeCounter(name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.")
        openFileDescriptors = registry.makeGauge(name: "process_open_fds", help: "Number of open file descriptors.")
        maxFileDescriptors = registry.makeGauge(name: "process_max_fds", help: "Maximum number of open file descriptors.")
        startTime = registry.makeGauge(name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.")
        if let stat = Self.readStat(), let bootTime = Self.bootTime() {
            startTime.set(bootTime + stat.startTicks / Self.ticksPerSecond)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFileDescriptors.set(Double(limit.rlim_cur)) }
    }

    func update() {
        if let stat = Self.readStat() {
            // A counter only goes up: add what was spent since the last scrape.
            let total = (stat.userTicks + stat.systemTicks) / Self.ticksPerSecond
            let delta = cpuSecondsReported.withLock { reported in
                defer { reported = max(reported, total) }
                return max(0, total - reported)
            }
            cpuSeconds.increment(by: delta)
            virtualMemory.set(stat.virtualBytes)
            residentMemory.set(stat.residentPages * Double(sysconf(Int32(_SC_PAGESIZE))))
        }
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            openFileDescriptors.set(Double(descriptors.count))
        }
    }

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    private struct Stat {
        var userTicks, systemTicks, startTicks, virtualBytes, residentPages: Double
    }

    /// Fields of `/proc/self/stat` (see proc(5)); the command name in parentheses may contain spaces.
    private static func readStat() -> Stat? {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ").map(String.init)
        // fields[0] is field 3 (state); field N is fields[N - 3].
        func field(_ number: Int) -> Double { fields.count > number - 3 ? Double(fields[number - 3]) ?? 0 : 0 }
        return Stat(userTicks: field(14), systemTicks: field(15), startTicks: field(22), virtualBytes: field(23), residentPages: field(24))
    }

    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
    }
}
