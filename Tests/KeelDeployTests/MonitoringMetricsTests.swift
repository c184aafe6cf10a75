import AsyncHTTPClient
import Foundation
import KeelTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// Every metric the Grafana dashboards and the Prometheus alert rules query is one a running Keel exports: a `keel up`
/// is put through jobs (one dying), gateway traffic (an upstream refusing, a rate limit), sign-ins, the console and AI
/// requests (one streamed, one over budget), then its `/metrics` is read.
@Suite struct MonitoringMetricsTests {
    struct Reply {
        let status: Int
        let body: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
    }

    static func call(_ method: HTTPMethod, _ url: String, _ headers: [String: String] = [:], _ body: String? = nil,
                     timeout: TimeAmount = .seconds(30)) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        return Reply(status: Int(response.status.code), body: String(buffer: try await response.body.collect(upTo: 1 << 22)))
    }

    /// Metric names in PromQL: Keel's own (`keel_*`, `http_server_*`), with histogram suffixes taken off.
    static func metricNames(in expression: String) -> Set<String> {
        let pattern = try! NSRegularExpression(pattern: "\\b(keel_[a-z0-9_]+|http_server_[a-z0-9_]+)")
        let range = NSRange(expression.startIndex..., in: expression)
        return Set(pattern.matches(in: expression, range: range).map { match in
            var name = String(expression[Range(match.range, in: expression)!])
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
            return name
        })
    }

    static func queriedMetrics() throws -> [String: Set<String>] {
        var queried: [String: Set<String>] = [:]
        let dashboards = KeelProcess.repositoryRoot.appendingPathComponent("deploy/compose/grafana/dashboards")
        for file in try FileManager.default.contentsOfDirectory(atPath: dashboards.path) where file.hasSuffix(".json") {
            let board = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dashboards.appendingPathComponent(file))) as? [String: Any],
                                     "\(file) is not a JSON object")
            #expect(board["uid"] is String && board["title"] is String, "\(file) lacks uid or title")
            for panel in board["panels"] as? [[String: Any]] ?? [] {
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    for name in metricNames(in: target["expr"] as? String ?? "") { queried[name, default: []].insert(file) }
                }
            }
        }
        let rules = try String(contentsOf: KeelProcess.repositoryRoot.appendingPathComponent("deploy/compose/prometheus/alerts.yml"), encoding: .utf8)
        for name in metricNames(in: rules) { queried[name, default: []].insert("alerts.yml") }
        return queried
    }

    @Test func dashboardsAndAlertsQueryOnlyMetricsKeelExports() async throws {
        let queried = try Self.queriedMetrics()
        #expect(queried.count >= 25, "the dashboards query too little: \(queried.keys.sorted())")
        let environment = ["KEEL_ADMIN_EMAIL": "ops@example.com", "KEEL_ADMIN_PASSWORD": "ops-passphrase-for-metrics-9", "KEEL_AUTH_BCRYPT_COST": "4",
                           "KEEL_SECRET_KEY": "metrics-test-secret-key-0123456789abcdef"]
        let llm = try PythonHelper("fake_llm.py", arguments: ["0", "metrics"])
        let llmPort = try await llm.listeningPort()
        let first = try KeelProcess(["up", "--port", "0"], environment: environment)
        var base = "http://127.0.0.1:\(try await first.waitUntilReady())"
        let login = try await Self.call(.POST, base + "/api/v1/auth/login", [:], #"{"email": "ops@example.com", "password": "ops-passphrase-for-metrics-9"}"#)
        var admin = ["Authorization": "Bearer \(try #require(login.json["access_token"] as? String))"]
        // Providers are probed when a process starts: create one, then start again on the same store.
        #expect(try await Self.call(.POST, base + "/api/v1/ai/providers", admin, #"{"name": "fake", "kind": "openai", "base_url": "http://127.0.0.1:\#(llmPort)/v1"}"#).status == 201)
        #expect(try await Self.call(.POST, base + "/api/v1/ai/models", admin, #"{"name": "chat", "deployments": [{"provider": "fake", "model": "m"}], "price": {"input_per_million": 1000, "output_per_million": 1000}}"#).status == 201)
        first.signal(SIGTERM)
        _ = try await first.waitForExit()
        let keel = try KeelProcess(["up", "--port", "0"], environment: environment, directory: first.directory)
        base = "http://127.0.0.1:\(try await keel.waitUntilReady())"
        let again = try await Self.call(.POST, base + "/api/v1/auth/login", [:], #"{"email": "ops@example.com", "password": "ops-passphrase-for-metrics-9"}"#)
        admin = ["Authorization": "Bearer \(try #require(again.json["access_token"] as? String))"]
        _ = try await Self.call(.POST, base + "/api/v1/auth/refresh", [:], #"{"refresh_token": "\#(try #require(again.json["refresh_token"] as? String))"}"#)

        // Jobs: one succeeds, one dies.
        _ = try await Self.call(.POST, base + "/api/v1/jobs", admin, #"{"task": "keel.noop"}"#)
        _ = try await Self.call(.POST, base + "/api/v1/jobs", admin, #"{"task": "http.request", "args": {"url": "\#(base)/nowhere"}, "max_attempts": 1}"#)
        // The gateway: a healthy upstream behind a rate limit, and one that refuses connections (a retry, an error).
        let closedPort = try ClosedPort()
        defer { withExtendedLifetime(closedPort) {} }
        let closed = closedPort.port
        _ = try await Self.call(.POST, base + "/api/v1/gateway/routes", admin, #"{"name": "ok", "match": {"prefix": "/ok"}, "upstreams": [{"url": "\#(base)/healthz"}], "auth": "public", "strip_prefix": true, "rate_limit": {"requests": 1, "per_seconds": 60}}"#)
        _ = try await Self.call(.POST, base + "/api/v1/gateway/routes", admin, #"{"name": "down", "match": {"prefix": "/down"}, "upstreams": [{"url": "http://127.0.0.1:\#(closed)"}, {"url": "http://127.0.0.1:\#(closed)/again"}], "auth": "public", "retries": 1}"#)
        _ = try await Self.call(.GET, base + "/ok")
        _ = try await Self.call(.GET, base + "/ok")
        _ = try await Self.call(.GET, base + "/down")
        // The console.
        _ = try await Self.call(.GET, base + "/console/jobs")
        // AI: a key whose daily budget one request spends; a streamed request; then a refusal.
        let key = try await Self.call(.POST, base + "/api/v1/apikeys", admin, #"{"name": "ai", "permissions": ["ai:use"]}"#)
        let keyID = try #require(key.json["id"] as? String), secret = try #require(key.json["key"] as? String)
        #expect(try await Self.call(.PUT, base + "/api/v1/ai/keys/\(keyID)", admin, #"{"daily_budget": 0.05}"#).status == 200)
        let caller = ["Authorization": "Bearer \(secret)"]
        let chat = #"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#
        _ = try await Self.call(.POST, base + "/v1/chat/completions", caller, #"{"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#)
        for _ in 0..<4 { _ = try await Self.call(.POST, base + "/v1/chat/completions", caller, chat) }
        _ = try await Self.call(.POST, "http://127.0.0.1:\(llmPort)/control/mode?status=500")
        _ = try await Self.call(.POST, base + "/v1/chat/completions", admin, chat)

        // Gauges that are read from the store every few seconds.
        var exported: Set<String> = []
        let deadline = ContinuousClock.now + .seconds(30)
        repeat {
            try await Task.sleep(for: .milliseconds(500))
            let metrics = try await Self.call(.GET, base + "/metrics").body
            exported = Set(metrics.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        } while !Set(queried.keys).isSubset(of: exported) && ContinuousClock.now < deadline
        let missing = queried.filter { !exported.contains($0.key) }.map { "\($0.key) (\($0.value.sorted().joined(separator: ", ")))" }.sorted()
        #expect(missing.isEmpty, "queried but not exported: \(missing)")
        withExtendedLifetime((llm, keel)) {}
    }
}
