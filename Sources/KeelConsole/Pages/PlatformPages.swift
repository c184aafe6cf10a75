import Foundation
import Hummingbird
import KeelAI
import KeelCore
import KeelGateway
import KeelServer

/// The gateway (routes, upstream instances with health and breaker states, registered services) and the AI
/// gateway (providers and their health, models and deployments, usage and spend by day, model and key).
struct PlatformPages {
    let console: Console

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console/gateway", "gateway", permission: "gateway:read") { _, _, session in
            let runsGateway = console.config.roles.contains(.gateway)
            guard case .object(let snapshot) = try await console.gateway.snapshot(withHealth: runsGateway) else {
                throw ConsoleError(status: .internalServerError, message: "The gateway's state could not be read.")
            }
            let routes = (snapshot["routes"]?.array ?? []).map { route -> [String: Any] in
                var view = ViewValue.of(route) as? [String: Any] ?? [:]
                if case .object(let status)? = route["status"] {
                    view["instances"] = (status["upstreams"]?.array ?? []).map(ViewValue.of)
                    view["fallback_instances"] = (status["fallback"]?.array ?? []).map(ViewValue.of)
                }
                view["methods_text"] = (route["match"]?["methods"]?.array ?? []).compactMap(\.string).joined(separator: ", ")
                view["upstream_urls"] = (route["upstreams"]?.array ?? []).compactMap { $0["url"]?.string }.joined(separator: ", ")
                return view
            }
            return console.html("gateway", title: "Gateway", session: session, section: "gateway", [
                "routes": routes, "services": (snapshot["services"]?.array ?? []).map(ViewValue.of), "runs_gateway": runsGateway,
            ])
        }
        console.page(router, "/console/ai", "ai", permission: "ai:read") { request, _, session in
            let now = console.clock.now()
            let until = Self.day(now), since = Self.day(now.addingTimeInterval(-29 * 86_400))
            guard case .object(let snapshot) = try await console.ai.snapshot(usageSince: since, until: until) else {
                throw ConsoleError(status: .internalServerError, message: "The AI gateway's state could not be read.")
            }
            let usage = (snapshot["usage"]?.array ?? []).compactMap(\.object)
            func totals(by key: String) -> [[String: Any]] {
                Dictionary(grouping: usage) { $0[key]?.string ?? "" }.sorted { $0.key < $1.key }.map { name, rows in
                    let sum = { (field: String) in rows.reduce(0.0) { $0 + ($1[field]?.number ?? 0) } }
                    return ["name": name, "requests": Int(sum("requests")), "errors": Int(sum("errors")), "tokens_in": Int(sum("tokens_in")),
                            "tokens_out": Int(sum("tokens_out")), "cost": String(format: "%.4f", sum("cost")), "cost_value": sum("cost")]
                }
            }
            let byDay = totals(by: "day")
            return console.html("ai", title: "AI gateway", session: session, section: "ai", [
                "providers": (snapshot["providers"]?.array ?? []).map(ViewValue.of),
                "models": (snapshot["models"]?.array ?? []).map(ViewValue.of),
                "by_day": byDay, "by_model": totals(by: "model"), "by_key": totals(by: "key"),
                "since": since, "until": until, "has_usage": !usage.isEmpty,
                "chart": Chart.spendPerDay(byDay.map { ($0["name"] as? String ?? "", $0["cost_value"] as? Double ?? 0) }),
            ])
        }
    }

    static func day(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash))
    }
}

/// API JSON made into what templates read: objects as dictionaries, whole numbers without a fraction.
enum ViewValue {
    static func of(_ value: JSONValue) -> Any {
        switch value {
        case .null: return ""
        case .bool(let flag): return flag
        case .number(let number): return number.rounded() == number && abs(number) < 1e15 ? Int(number) as Any : number as Any
        case .string(let text): return text
        case .array(let items): return items.map(of)
        case .object(let fields): return fields.mapValues(of)
        }
    }
}

extension Chart {
    /// Spend per day as bars, labelled with the day and amount.
    static func spendPerDay(_ days: [(day: String, cost: Double)]) -> String {
        let (width, height) = (600.0, 120.0)
        let peak = max(days.map(\.cost).max() ?? 0, 0.000001)
        let bar = width / Double(max(days.count, 1))
        var svg = "<svg class=\"chart\" viewBox=\"0 0 \(Int(width)) \(Int(height) + 16)\" role=\"img\" aria-label=\"Spend per day, at most \(String(format: "%.4f", peak)) in a day\">"
        svg += "<line class=\"axis\" x1=\"0\" y1=\"\(Int(height))\" x2=\"\(Int(width))\" y2=\"\(Int(height))\"/>"
        for (index, entry) in days.enumerated() {
            let tall = height * entry.cost / peak
            svg += "<g><title>\(entry.day): \(String(format: "%.4f", entry.cost))</title>"
                + String(format: "<rect class=\"ok\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></g>", Double(index) * bar + 1, height - tall, max(bar - 2, 1), tall)
        }
        if let first = days.first?.day, let last = days.last?.day {
            svg += "<text x=\"0\" y=\"\(Int(height) + 14)\">\(first)</text><text x=\"\(Int(width))\" y=\"\(Int(height) + 14)\" text-anchor=\"end\">\(last)</text>"
        }
        return svg + "</svg>"
    }
}
