import AsyncHTTPClient
import Foundation
import KeelTestSupport
import NIOCore
import Testing

/// The gateway in a real `keel up` process, in front of real upstream servers on loopback.
@Suite(.serialized) struct GatewayProxyTests {
    @Test func balancesRequestsAndForwardsIdentityAndCorrelation() async throws {
        let (a, b, c) = (try await Upstream("a"), try await Upstream("b"), try await Upstream("c"))
        let gateway = try await GatewayServer(routes: [
            "app": route("/app", [a, b, c]),
            "private": route("/private", [a], auth: "authenticated"),
            "admin": route("/ops", [a], auth: "gateway:admin", ["forward_token": true]),
            "root": route("/", [b], ["strip_prefix": false]),
        ])

        var answered: [String: Int] = [:]
        for _ in 0..<30 {
            let response = try await gateway.send("GET", "/app/echo")
            #expect(response.status == 200)
            answered[response.instance ?? "?", default: 0] += 1
        }
        #expect(answered == ["a": 10, "b": 10, "c": 10])

        // Forwarding headers are the gateway's, whatever the client sent.
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let echoed = try await gateway.send("GET", "/app/echo/deep/path?x=1&y=2", headers: [
            "X-Forwarded-For": "6.6.6.6", "X-Keel-Subject": "usr_spoofed", "X-Keel-Roles": "admin",
            "X-Request-ID": "req-123", "traceparent": traceparent, "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1",
        ])
        #expect(echoed.json["path"] as? String == "/echo/deep/path")
        #expect(echoed.json["query"] as? String == "x=1&y=2")
        let seen = echoed.upstreamHeaders
        #expect(seen["x-forwarded-for"] == ["127.0.0.1"])
        #expect(seen["x-forwarded-proto"] == ["http"])
        #expect(seen["x-forwarded-host"] == ["127.0.0.1:\(gateway.port)"])
        #expect(seen["x-keel-subject"] == nil && seen["x-keel-roles"] == nil)
        #expect(seen["x-secret-hop"] == nil)
        #expect(seen["x-request-id"] == ["req-123"])
        #expect(seen["traceparent"] == [traceparent])
        #expect(seen["host"]?.first?.hasPrefix("127.0.0.1:") == true)
        #expect(echoed.headers.first(name: "X-Request-ID") == "req-123")

        // Protected routes: no upstream sees an unauthenticated request.
        #expect(try await gateway.send("GET", "/private/secret").status == 401)
        #expect(try await gateway.send("GET", "/private/secret", headers: ["Authorization": "Bearer not-a-token"]).status == 401)
        #expect(try await a.hits()["GET /secret"] == nil)
        let token = try await gateway.adminToken()
        let authorized = try await gateway.send("GET", "/private/secret", headers: ["Authorization": "Bearer \(token)", "X-Keel-Subject": "usr_spoofed"])
        #expect(authorized.status == 200)
        #expect(authorized.upstreamHeaders["x-keel-subject"]?.count == 1)
        #expect(authorized.upstreamHeaders["x-keel-subject"]?.first?.hasPrefix("usr_") == true)
        #expect(authorized.upstreamHeaders["x-keel-subject"] != ["usr_spoofed"])
        #expect(authorized.upstreamHeaders["x-keel-roles"] == ["admin"])
        #expect(authorized.upstreamHeaders["authorization"] == nil)
        let forwarded = try await gateway.send("GET", "/ops/x", headers: ["Authorization": "Bearer \(token)"])
        #expect(forwarded.upstreamHeaders["authorization"] == ["Bearer \(token)"])

        // Keel's own paths stay Keel's, even under a route for `/`; other paths go to that route.
        let health = try await gateway.send("GET", "/healthz")
        #expect(health.status == 200 && health.instance == nil)
        #expect(try await gateway.send("GET", "/anything/else").instance == "b")

        // Traversal and its encodings are refused before matching; `//` cannot dodge a prefix.
        for path in ["/app/%2e%2e/private/secret", "/app/..%2Fprivate", "/app/./echo", "/app/..", "/app%5c..%5cprivate"] {
            let response = try RawConnection.request(port: gateway.port, method: "GET", path: path)
            #expect(response.status == 400, "\(path)")
        }
        #expect(try RawConnection.request(port: gateway.port, method: "GET", path: "//private/secret").status == 401)
        #expect(try await a.hits()["GET /secret"] == 1)
    }

    @Test func failsOverAndRetriesOnlyWhatIsSafe() async throws {
        let (a, b) = (try await Upstream("a"), try await Upstream("b"))
        let gateway = try await GatewayServer(routes: ["app": route("/app", [a, b], ["retries": 2])])

        // Both instances read the request and hang up without answering: a GET goes to the other one,
        // a POST (which the upstream may have acted on) is not repeated.
        #expect(try await gateway.send("GET", "/app/drop").status == 502)
        let getHits = try await a.hits()["GET /drop", default: 0] + b.hits()["GET /drop", default: 0]
        #expect(getHits == 2)
        #expect(try await gateway.send("POST", "/app/drop", headers: ["Content-Type": "text/plain"], body: "pay once").status == 502)
        let postHits = try await a.hits()["POST /drop", default: 0] + b.hits()["POST /drop", default: 0]
        #expect(postHits == 1)

        // A killed instance refuses connections: nothing reached it, so every request goes to the other.
        b.stop()
        for index in 0..<20 {
            let method = index.isMultiple(of: 2) ? "GET" : "POST"
            let response = try await gateway.send(method, "/app/echo", headers: ["Content-Type": "text/plain"], body: method == "POST" ? "x" : nil)
            #expect(response.status == 200)
            #expect(response.instance == "a")
        }
        let metrics = try await gateway.send("GET", "/metrics").body
        #expect(metrics.contains(#"keel_gateway_upstream_errors_total{route="app",upstream="\#(b.url)",kind="connect"}"#))
        #expect(metrics.contains(#"keel_gateway_retries_total{route="app"}"#))
    }

    @Test func circuitBreakerOpensThenRecovers() async throws {
        let (a, b) = (try await Upstream("a"), try await Upstream("b"))
        let gateway = try await GatewayServer(routes: [
            // Open long enough that a loaded machine still sees it open after the twenty requests below.
            "app": route("/app", [a, b], ["retries": 0, "circuit_breaker": ["consecutive_failures": 3, "open_seconds": 4]]),
        ])
        let token = try await gateway.adminToken()
        try await b.force(status: 500)
        var failures = 0
        for _ in 0..<20 where try await gateway.send("GET", "/app/echo").status == 500 { failures += 1 }
        #expect(failures == 3)
        let view = try await gateway.send("GET", "/api/v1/gateway/routes/app", headers: ["Authorization": "Bearer \(token)"])
        let upstreams = (view.json["status"] as? [String: Any])?["upstreams"] as? [[String: Any]] ?? []
        #expect(upstreams.first { $0["url"] as? String == b.url }?["breaker"] as? String == "open")

        try await b.force(status: 0)
        try await Task.sleep(for: .milliseconds(4200))
        var instances: [String: Int] = [:]
        for _ in 0..<10 { instances[try await gateway.send("GET", "/app/echo").instance ?? "?", default: 0] += 1 }
        #expect(instances["b", default: 0] >= 4)
    }

    @Test func canaryWeightsHoldAndFallbackCatchesMissesAndOutages() async throws {
        let (stable, canary, legacy, modern) = (try await Upstream("stable"), try await Upstream("canary"), try await Upstream("legacy"), try await Upstream("modern"))
        let gateway = try await GatewayServer(routes: [
            "app": ["match": ["prefix": "/app"], "auth": "public", "strip_prefix": true,
                    "upstreams": [["url": stable.url, "weight": 90], ["url": canary.url, "weight": 10]]],
            "shop": ["match": ["prefix": "/shop"], "auth": "public", "upstreams": [["url": modern.url]],
                     "fallback": ["upstreams": [["url": legacy.url]]]],
        ])
        var counts: [String: Int] = [:]
        for _ in 0..<1000 { counts[try await gateway.send("GET", "/app/echo").instance ?? "?", default: 0] += 1 }
        #expect((870...930).contains(counts["stable", default: 0]), "\(counts)")
        #expect((70...130).contains(counts["canary", default: 0]), "\(counts)")

        #expect(try await gateway.send("GET", "/shop/echo").instance == "modern")
        try await modern.force(status: 404)
        let missing = try await gateway.send("GET", "/shop/old-page")
        #expect(missing.status == 200 && missing.instance == "legacy")
        #expect(missing.json["path"] as? String == "/shop/old-page")
        modern.stop()
        let down = try await gateway.send("POST", "/shop/orders", headers: ["Content-Type": "application/json"], body: #"{"id": 1}"#)
        #expect(down.status == 200 && down.instance == "legacy")
        #expect(down.json["body"] as? String == #"{"id": 1}"#)
    }

    @Test func streamsServerSentEventsAsTheyAreSent() async throws {
        let upstream = try await Upstream("sse")
        let gateway = try await GatewayServer(routes: ["events": route("/events", [upstream])])
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(gateway.port)/events/sse?events=4&interval_ms=400")
        request.headers.add(name: "Accept", value: "text/event-stream")
        let started = ContinuousClock.now
        let response = try await Client.shared.execute(request, timeout: .seconds(30))
        #expect(response.headers.first(name: "Content-Type") == "text/event-stream")
        var arrivals: [(Duration, String)] = []
        for try await chunk in response.body { arrivals.append((ContinuousClock.now - started, String(buffer: chunk))) }
        let text = arrivals.map(\.1).joined()
        #expect(text.components(separatedBy: "data: ").count == 5)
        let firstEvent = try #require(arrivals.first { $0.1.contains("id: 0") })
        #expect(firstEvent.0 < .milliseconds(800), "the first event waited for the rest: \(arrivals.map(\.0))")
        #expect(arrivals.last!.0 > .milliseconds(1100))
    }

    @Test func healthChecksTakeInstancesOutAndBringThemBack() async throws {
        let (a, b) = (try await Upstream("a"), try await Upstream("b"))
        let gateway = try await GatewayServer(routes: [
            "app": route("/app", [a, b], ["health_check": ["path": "/health", "interval_seconds": 0.2, "healthy_threshold": 2, "unhealthy_threshold": 2]]),
        ])
        let token = try await gateway.adminToken()
        func healthy(_ upstream: Upstream) async throws -> Bool? {
            let view = try await gateway.send("GET", "/api/v1/gateway/routes/app", headers: ["Authorization": "Bearer \(token)"])
            let upstreams = (view.json["status"] as? [String: Any])?["upstreams"] as? [[String: Any]] ?? []
            return upstreams.first { $0["url"] as? String == upstream.url }?["healthy"] as? Bool
        }
        func waitUntil(_ upstream: Upstream, healthy wanted: Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while try await healthy(upstream) != wanted {
                guard ContinuousClock.now < deadline else { throw TestSetupError("\(upstream.name) never became healthy=\(wanted)") }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try await b.setHealthy(false)
        try await waitUntil(b, healthy: false)
        for _ in 0..<10 { #expect(try await gateway.send("GET", "/app/echo").instance == "a") }
        try await b.setHealthy(true)
        try await waitUntil(b, healthy: true)
        var instances: Set<String> = []
        for _ in 0..<4 { instances.insert(try await gateway.send("GET", "/app/echo").instance ?? "?") }
        #expect(instances == ["a", "b"])
        let metrics = try await gateway.send("GET", "/metrics").body
        #expect(metrics.contains(#"keel_gateway_upstream_healthy{route="app",upstream="\#(b.url)"} 1"#))
    }

    @Test func refusesOversizedAndSmuggledRequests() async throws {
        let upstream = try await Upstream("a")
        let gateway = try await GatewayServer(routes: ["app": route("/app", [upstream], ["max_body_bytes": 1000])])
        let large = String(repeating: "x", count: 5000)
        #expect(try await gateway.send("POST", "/app/echo", headers: ["Content-Type": "text/plain"], body: large).status == 413)
        // Without a length the limit holds as the body streams.
        let chunked = try RawConnection(port: gateway.port)
        try chunked.send("POST /app/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         + "7d0\r\n" + String(repeating: "y", count: 2000) + "\r\n0\r\n\r\n")
        #expect(chunked.readAll().hasPrefix("HTTP/1.1 413"))
        // Content-Length and Transfer-Encoding together is how requests are smuggled past proxies: refused
        // and the connection closed, nothing forwarded.
        let smuggled = try RawConnection(port: gateway.port)
        try smuggled.send("POST /app/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /app/admin HTTP/1.1\r\nHost: x\r\n\r\n")
        let started = ContinuousClock.now
        #expect(smuggled.readAll().hasPrefix("HTTP/1.1 400"))
        #expect(ContinuousClock.now - started < .seconds(2))
        // Heads over the limits are refused as such; a line break inside a header value is malformed.
        let oversized = try RawConnection(port: gateway.port)
        try oversized.send("GET /app/echo HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "b", count: 100_000))\r\n\r\n")
        #expect(oversized.readAll().hasPrefix("HTTP/1.1 431"))
        let injected = try RawConnection(port: gateway.port)
        try injected.send("GET /app/echo HTTP/1.1\r\nHost: x\r\nX-Note: a\rX-Keel-Subject: usr_admin\r\n\r\n")
        #expect(injected.readAll().hasPrefix("HTTP/1.1 400"))
        let hits = try await upstream.hits()
        #expect(hits["POST /echo"] == nil && hits["GET /admin"] == nil && hits["GET /echo"] == nil)
    }
}
