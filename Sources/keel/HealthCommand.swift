import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelGateway
import KeelMail
import KeelServer
import KeelStore
import NIOCore

/// The seed stacks' health-check script as a command: every configured dependency and role, one line each.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Check the store, every role, gateway upstreams, the OTLP endpoint, monitoring links and the mail server; exit 1 if any fails.")

    @Flag(help: "Only ask this host's Keel for /healthz (for container health checks).")
    var live = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var options: ServerOptions

    struct Check: Encodable {
        enum Status: String, Encodable { case ok, fail, skip }
        var name: String
        var target: String
        var status: Status
        var detail: String
        var milliseconds: Int?
    }

    func run() async throws {
        let config = try options.load().config
        if live {
            let host = ["0.0.0.0", "::", ""].contains(config.host) ? "127.0.0.1" : config.host
            let (ok, detail) = await Self.probe("http://\(host):\(config.port)/healthz", expectOK: true)
            guard ok else { throw CommandFailure(message: "not healthy: \(detail)") }
            return
        }
        var checks: [Check] = []
        let started = ContinuousClock.now
        do {
            checks += try await withRunningStore(config) { store in
                try await withDeadline(.seconds(5), orThrow: StoreError.unavailable("no answer within 5 s")) { try await store.ping() }
                var found = [Check(name: "store", target: config.database.displayName, status: .ok, detail: "answers", milliseconds: Self.since(started))]
                found += try await Self.roleChecks(store: store, roles: config.roles)
                found += await Self.upstreamChecks(config: config, store: store)
                return found
            }
        } catch let failure as CommandFailure {
            checks.append(Check(name: "store", target: config.database.displayName, status: .fail, detail: failure.message, milliseconds: Self.since(started)))
        } catch {
            checks.append(Check(name: "store", target: config.database.displayName, status: .fail, detail: "\(error)", milliseconds: Self.since(started)))
        }
        if let endpoint = config.otlpEndpoint {
            checks.append(await Self.reachability("otlp", endpoint + "/v1/traces"))
        } else {
            checks.append(Check(name: "otlp", target: "-", status: .skip, detail: "otlp_endpoint is not set"))
        }
        for (label, url) in config.consoleLinks.sorted(by: { $0.key < $1.key }) where url.hasPrefix("http") {
            checks.append(await Self.reachability(label.lowercased(), url))
        }
        if config.smtp.host != nil {
            let began = ContinuousClock.now
            do {
                let detail = try await SMTPClient(settings: config.smtp).check()
                checks.append(Check(name: "smtp", target: "\(config.smtp.host ?? ""):\(config.smtp.port)", status: .ok, detail: detail, milliseconds: Self.since(began)))
            } catch {
                checks.append(Check(name: "smtp", target: "\(config.smtp.host ?? ""):\(config.smtp.port)", status: .fail, detail: "\(error)", milliseconds: Self.since(began)))
            }
        } else {
            checks.append(Check(name: "smtp", target: "-", status: .skip, detail: "smtp_host is not set"))
        }
        print(json ? Self.json(checks) : Self.table(checks))
        if checks.contains(where: { $0.status == .fail }) { throw ExitCode(1) }
    }

    /// Each role of this configuration needs at least one live process somewhere (a heartbeat within 30 s).
    static func roleChecks(store: any Store, roles: Set<Role>) async throws -> [Check] {
        let now = Date()
        let live = try await NodeRegistry.recent(in: store).filter { now.timeIntervalSince($0.heartbeatAt) <= 30 }
        return roles.sorted().map { role in
            let running = live.filter { $0.roles.contains(role.rawValue) }
            return running.isEmpty
                ? Check(name: "role \(role.rawValue)", target: "-", status: .fail, detail: "no live process runs it")
                : Check(name: "role \(role.rawValue)", target: running.map { "\($0.hostname):\($0.pid)" }.joined(separator: ", "), status: .ok,
                        detail: "\(running.count) process\(running.count == 1 ? "" : "es"), version \(Set(running.map(\.version)).sorted().joined(separator: "/"))")
        }
    }

    /// Every upstream instance of the gateway's routes answers HTTP (at its health-check path when the route has one).
    static func upstreamChecks(config: KeelConfig, store: any Store) async -> [Check] {
        let gateway = GatewayModule(config: config, store: store, authenticator: NoIdentityAuthenticator())
        guard case .object(let snapshot)? = try? await gateway.snapshot(withHealth: false) else {
            return [Check(name: "upstreams", target: "-", status: .fail, detail: "cannot read the gateway's routes")]
        }
        var targets: Set<String> = []
        for route in snapshot["routes"]?.array ?? [] {
            let fields = route.object ?? [:]
            let path = fields["health_check"]?["path"]?.string ?? ""
            let upstreams = (fields["upstreams"]?.array ?? []) + (fields["fallback"]?["upstreams"]?.array ?? [])
            for url in upstreams.compactMap({ $0["url"]?.string }) {
                targets.insert(url.hasSuffix("/") && path.hasPrefix("/") ? url + path.dropFirst() : url + path)
            }
        }
        if targets.isEmpty { return [Check(name: "upstreams", target: "-", status: .skip, detail: "no gateway routes")] }
        var checks: [Check] = []
        for target in targets.sorted() { checks.append(await reachability("upstream", target)) }
        return checks
    }

    /// Reachable means an HTTP answer below 500 within 3 s.
    static func reachability(_ name: String, _ url: String) async -> Check {
        let began = ContinuousClock.now
        let (ok, detail) = await probe(url, expectOK: false)
        return Check(name: name, target: url, status: ok ? .ok : .fail, detail: detail, milliseconds: since(began))
    }

    static func probe(_ url: String, expectOK: Bool) async -> (Bool, String) {
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(3))
            let code = Int(response.status.code)
            _ = try? await response.body.collect(upTo: 1 << 16)
            return (expectOK ? code == 200 : code < 500, "HTTP \(code)")
        } catch {
            return (false, "\(error)")
        }
    }

    static func since(_ start: ContinuousClock.Instant) -> Int {
        let elapsed = (ContinuousClock.now - start).components
        return Int(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000)
    }

    static func json(_ checks: [Check]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(checks)) ?? Data(), as: UTF8.self)
    }

    /// Coloured on a terminal (unless NO_COLOR is set), plain otherwise.
    static func table(_ checks: [Check]) -> String {
        let colour = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        let paint: [Check.Status: String] = [.ok: "\u{1B}[32m", .fail: "\u{1B}[31m", .skip: "\u{1B}[33m"]
        let nameWidth = max(5, checks.map(\.name.count).max() ?? 0)
        let targetWidth = min(50, max(6, checks.map(\.target.count).max() ?? 0))
        var lines = ["CHECK".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  " + "TARGET".padding(toLength: targetWidth, withPad: " ", startingAt: 0) + "  STATUS  DETAIL"]
        for check in checks {
            let status = check.status.rawValue.uppercased().padding(toLength: 6, withPad: " ", startingAt: 0)
            let shown = colour ? (paint[check.status] ?? "") + status + "\u{1B}[0m" : status
            let target = check.target.count > targetWidth ? String(check.target.prefix(targetWidth - 1)) + "…" : check.target.padding(toLength: targetWidth, withPad: " ", startingAt: 0)
            let timing = check.milliseconds.map { " (\($0) ms)" } ?? ""
            lines.append(check.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  " + target + "  " + shown + "  " + check.detail + timing)
        }
        let failed = checks.filter { $0.status == .fail }.count
        lines.append(failed == 0 ? "all checks passed" : "\(failed) check\(failed == 1 ? "" : "s") failed")
        return lines.joined(separator: "\n")
    }
}
