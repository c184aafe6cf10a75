import Foundation
import Hummingbird
import KeelCore
import KeelJobs
import KeelServer

/// The front page: every process with its roles and health, queue depths, the last hour of jobs as a
/// chart, and links to the monitoring tools when configured.
struct OverviewPage {
    let console: Console
    /// A node that has not reported for this long counts as down (three missed heartbeats).
    static let staleAfter: TimeInterval = 30

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console", "overview", permission: nil) { _, _, session in
            let now = console.clock.now()
            var data: [String: Any] = [:]
            if session.may("nodes:read") {
                data["nodes"] = try await NodeRegistry.recent(in: console.store).map { node -> [String: Any] in
                    ["hostname": node.hostname, "pid": node.pid, "address": node.address, "roles": node.roles.joined(separator: ", "),
                     "version": node.version, "started": Display.time(node.startedAt), "heartbeat": Display.time(node.heartbeatAt),
                     "health": now.timeIntervalSince(node.heartbeatAt) <= Self.staleAfter ? "up" : "down"]
                }
            }
            if session.may("jobs:read") {
                // Both read every job: side by side they take as long as the slower one.
                async let queuesRead = console.jobs.queues()
                async let minutesRead = console.jobs.finishedPerMinute(since: now.addingTimeInterval(-3600))
                let (queues, minutes) = try await (queuesRead, minutesRead)
                let succeeded = minutes.reduce(0) { $0 + $1.succeeded }, failed = minutes.reduce(0) { $0 + $1.failed }
                data["jobs"] = [
                    "queues": queues.map { queue -> [String: Any] in
                        ["name": queue.name, "paused": queue.paused,
                         "waiting": ["available", "scheduled", "pending"].reduce(0) { $0 + (queue.counts[$1] ?? 0) },
                         "running": queue.counts["running"] ?? 0, "retrying": queue.counts["retrying"] ?? 0, "dead": queue.counts["dead"] ?? 0]
                    },
                    "finished_total": succeeded + failed, "failed_total": failed,
                    "failure_rate": succeeded + failed == 0 ? "0%" : String(format: "%.1f%%", 100 * Double(failed) / Double(succeeded + failed)),
                    "chart": Chart.perMinute(minutes, endingAt: now),
                ] as [String: Any]
            }
            if session.may("ai:read"), case .object(let snapshot) = try await console.ai.snapshot(usageSince: PlatformPages.day(now), until: PlatformPages.day(now)) {
                let usage = (snapshot["usage"]?.array ?? []).compactMap(\.object)
                let sum = { (field: String) in usage.reduce(0.0) { $0 + ($1[field]?.number ?? 0) } }
                data["ai"] = ["requests": Int(sum("requests")), "tokens": Int(sum("tokens_in") + sum("tokens_out")),
                              "spend": String(format: "%.4f", sum("cost"))]
            }
            if session.may("gateway:read"), console.config.roles.contains(.gateway),
               case .object(let snapshot) = try await console.gateway.snapshot(withHealth: true) {
                // Every upstream instance once, with its health as this gateway sees it.
                var upstreams: [String: Bool] = [:]
                for route in snapshot["routes"]?.array ?? [] {
                    let status = route["status"]?.object
                    for instance in (status?["upstreams"]?.array ?? []) + (status?["fallback"]?.array ?? []) {
                        guard let url = instance["url"]?.string else { continue }
                        upstreams[url] = (upstreams[url] ?? true) && instance["healthy"] == .bool(true)
                    }
                }
                data["show_upstreams"] = true
                data["upstreams"] = upstreams.sorted { $0.key < $1.key }.map { ["url": $0.key, "health": $0.value ? "up" : "down"] }
            }
            let links = console.config.consoleLinks.sorted { $0.key < $1.key }.map { ["label": $0.key, "url": $0.value] }
            data["links"] = links
            data["has_links"] = !links.isEmpty
            return console.html("overview", title: "Overview", session: session, section: "overview", data)
        }
    }
}

/// Charts drawn on the server as SVG: no script needed to read them, and nothing from users goes in.
enum Chart {
    /// Bars per minute for the hour before `end`: succeeded stacked under failed.
    static func perMinute(_ minutes: [FinishedMinute], endingAt end: Date) -> String {
        let (width, height, bar) = (600.0, 120.0, 10.0)
        let lastMinute = Int(end.timeIntervalSince1970 / 60)
        var byOffset: [Int: FinishedMinute] = [:]
        for minute in minutes {
            let offset = lastMinute - Int(minute.minute.timeIntervalSince1970 / 60)
            if (0..<60).contains(offset) { byOffset[offset] = minute }
        }
        let peak = max(1, byOffset.values.map { $0.succeeded + $0.failed }.max() ?? 1)
        var svg = "<svg class=\"chart\" viewBox=\"0 0 \(Int(width)) \(Int(height) + 16)\" role=\"img\" aria-label=\"Jobs finished per minute over the last hour, at most \(peak) in a minute\">"
        svg += "<line class=\"axis\" x1=\"0\" y1=\"\(Int(height))\" x2=\"\(Int(width))\" y2=\"\(Int(height))\"/>"
        for offset in 0..<60 {
            guard let minute = byOffset[offset] else { continue }
            let x = width - Double(offset + 1) * bar
            let good = height * Double(minute.succeeded) / Double(peak), bad = height * Double(minute.failed) / Double(peak)
            let label = "\(Display.time(minute.minute)): \(minute.succeeded) succeeded, \(minute.failed) failed"
            svg += "<g><title>\(label)</title>"
            if minute.succeeded > 0 {
                svg += String(format: "<rect class=\"ok\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", x + 1, height - good, bar - 2, good)
            }
            if minute.failed > 0 {
                svg += String(format: "<rect class=\"bad\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", x + 1, height - good - bad, bar - 2, bad)
            }
            svg += "</g>"
        }
        svg += "<text x=\"0\" y=\"\(Int(height) + 14)\">−60 min</text><text x=\"\(Int(width))\" y=\"\(Int(height) + 14)\" text-anchor=\"end\">now</text></svg>"
        return svg
    }
}
