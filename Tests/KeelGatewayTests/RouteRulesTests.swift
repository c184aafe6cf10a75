import Foundation
@testable import KeelGateway
import KeelPlatform
import KeelServer
import KeelCore
import KeelStore
import KeelTelemetry
import KeelTestSupport
import Testing

@Suite struct RouteRulesTests {
    func decode(_ json: String) throws -> GatewayRoute {
        try JSONDecoder().decode(GatewayRoute.self, from: Data(json.utf8))
    }

    func errors(_ json: String) throws -> [String: String] {
        let route = try decode(json)
        do throws(ValidationFailure) {
            _ = try route.validated(reserved: .keel)
            return [:]
        } catch {
            return Dictionary(error.errors.map { ($0.field, $0.message) }, uniquingKeysWith: { first, _ in first })
        }
    }

    @Test func routesGetSafeDefaultsAndCanonicalPrefixes() throws {
        let route = try decode(#"{"name": "app", "match": {"prefix": "/app/", "methods": ["get"]}, "upstreams": [{"url": "http://10.0.0.1:8080/base/"}]}"#)
            .validated(reserved: .keel)
        #expect(route.match.prefix == "/app")
        #expect(route.match.methods == ["GET"])
        #expect(route.auth == "authenticated")
        #expect(route.retries == 1 && route.timeoutSeconds == 30 && route.upstreams[0].weight == 1)
        #expect(UpstreamURL(route.upstreams[0].url)?.basePath == "/base")
        #expect(UpstreamURL("https://example.com")?.port == 443)
    }

    @Test func everyMistakeIsNamedByItsField() throws {
        let found = try errors("""
            {"name": "bad name!", "match": {"prefix": "/a/../b", "host": "bad host", "headers": {"X-Keel-Subject": "x"}},
             "upstreams": [{"url": "ftp://x"}, {"url": "http://user:pw@x"}, {"url": "http://x", "weight": -1}],
             "auth": "Not A Permission", "timeout_seconds": 0, "retries": 9, "max_body_bytes": -1,
             "rate_limit": {"requests": 0, "per_seconds": 0},
             "cors": {"allowed_origins": ["*"], "allow_credentials": true},
             "health_check": {"path": "health", "interval_seconds": 0},
             "circuit_breaker": {"error_rate": 2},
             "fallback": {"upstreams": [], "on_status": [200]},
             "sticky": {"header": "A", "cookie": "b"}}
            """)
        for field in ["name", "match.prefix", "match.host", "match.headers.X-Keel-Subject", "upstreams[0].url", "upstreams[1].url",
                      "upstreams[2].weight", "auth", "timeout_seconds", "retries", "max_body_bytes", "rate_limit.requests",
                      "rate_limit.per_seconds", "cors.allow_credentials", "health_check.path", "health_check.interval_seconds",
                      "circuit_breaker.error_rate", "fallback.upstreams", "fallback.on_status[0]", "sticky"] {
            #expect(found[field] != nil, "\(field) not reported: \(found)")
        }
    }

    @Test func keelsOwnPathsCannotBeTakenOver() throws {
        for prefix in ["/api/v1", "/api/v1/jobs", "/healthz", "/metrics/x", "/.well-known", "/v1/chat/completions"] {
            let found = try errors(#"{"name": "x", "match": {"prefix": "\#(prefix)"}, "upstreams": [{"url": "http://x"}]}"#)
            #expect(found["match.prefix"]?.contains("Keel's own path") == true, "\(prefix)")
        }
        for prefix in ["/", "/api", "/api/v2", "/v10", "/metricsx"] {
            #expect(try errors(#"{"name": "x", "match": {"prefix": "\#(prefix)"}, "upstreams": [{"url": "http://x"}]}"#).isEmpty, "\(prefix)")
        }
    }

    /// Every route Keel registers lies under a reserved path, so no gateway route can shadow one.
    @Test func reservedPathsCoverEveryKeelRoute() async throws {
        try await withScratchDatabase(.sqlite) { location in
            let config = quietTestConfig(location)
            let store = try await openStore(location)
            let server = Platform.server(config: config, store: store, telemetry: try Telemetry.bootstrap(config))
            let paths = server.routes.routes.map { $0.path.replacingOccurrences(of: "{", with: "x").replacingOccurrences(of: "}", with: "x") }
            #expect(!paths.isEmpty)
            for path in paths { #expect(ReservedPaths.keel.owns(path), "\(path) is not reserved") }
        }
    }

    @Test func requestPathsAreNormalizedOrRefused() throws {
        #expect(try RequestPath.normalize("//admin///x/") == "/admin/x/")
        #expect(try RequestPath.normalize("/") == "/")
        #expect(try RequestPath.normalize("/a%20b") == "/a%20b")
        for unsafe in ["/a/../b", "/a/./b", "/..", "/a/%2e%2E/b", "/a%2fb", "/a%2Fb", "/a\\b", "/a%5cb", "/a%00", "/a%2"] {
            #expect(throws: RequestPath.Rejection.self, "\(unsafe)") { try RequestPath.normalize(unsafe) }
        }
    }
}

@Suite struct UpstreamPoolTests {
    func pool(_ weights: [Int], balance: GatewayRoute.Balance = .roundRobin,
              breaker: GatewayRoute.CircuitBreakerPolicy = .init()) -> UpstreamPool {
        UpstreamPool(route: "test", upstreams: weights.enumerated().map { .init(url: "http://10.0.0.\($0.offset + 1)", weight: $0.element) },
                     balance: balance, breaker: breaker)
    }

    @Test func weightedRoundRobinInterleavesExactly() {
        let pool = pool([9, 1])
        var picks = [0, 0]
        var longestRun = 0
        var run = 0
        for _ in 0..<1000 {
            let index = pool.pick()!
            pool.finish(index, outcome: .success)
            picks[index] += 1
            run = index == 0 ? run + 1 : 0
            longestRun = max(longestRun, run)
        }
        #expect(picks == [900, 100])
        #expect(longestRun <= 9)
    }

    @Test func drainedInstancesGetNothing() {
        let pool = pool([1, 0])
        for _ in 0..<10 { #expect(pool.pick() == 0); pool.finish(0, outcome: .success) }
    }

    @Test func leastOutstandingPrefersTheIdleInstance() {
        let pool = pool([1, 1, 1], balance: .leastOutstanding)
        let busy = (0..<3).map { _ in pool.pick()! }
        #expect(Set(busy) == [0, 1, 2])
        pool.finish(busy[1], outcome: .success)
        #expect(pool.pick() == busy[1])
    }

    @Test func breakerOpensProbesOnceAndCloses() {
        let start = ContinuousClock.now
        let pool = pool([1], breaker: .init(consecutiveFailures: 3, openSeconds: 5))
        for _ in 0..<3 {
            let index = pool.pick(now: start)!
            pool.finish(index, outcome: .failure, now: start)
        }
        #expect(pool.pick(now: start + .seconds(1)) == nil)
        #expect(pool.status(now: start + .seconds(1))[0].breaker == "open")
        // Half-open: one probe at a time.
        let probe = pool.pick(now: start + .seconds(6))
        #expect(probe == 0)
        #expect(pool.pick(now: start + .seconds(6)) == nil)
        pool.finish(0, outcome: .success, now: start + .seconds(6))
        #expect(pool.status(now: start + .seconds(6))[0].breaker == "closed")
        #expect(pool.pick(now: start + .seconds(6)) == 0)
    }

    @Test func breakerOpensOnTheErrorRateToo() {
        let start = ContinuousClock.now
        let pool = pool([1], breaker: .init(consecutiveFailures: 100, errorRate: 0.5, minRequests: 10, windowSeconds: 10, openSeconds: 5))
        for attempt in 0..<10 {
            let index = pool.pick(now: start)!
            pool.finish(index, outcome: attempt.isMultiple(of: 2) ? .failure : .success, now: start)
        }
        #expect(pool.status(now: start)[0].breaker == "open")
    }

    @Test func stickyKeysStayAndOnlyTheLostInstancesKeysMove() {
        let pool = pool([1, 1, 1])
        var assigned: [String: Int] = [:]
        for user in 0..<300 {
            let index = pool.pick(stickyKey: "user-\(user)")!
            pool.finish(index, outcome: .success)
            assigned["user-\(user)"] = index
            #expect(pool.pick(stickyKey: "user-\(user)") == index)
            pool.finish(index, outcome: .success)
        }
        #expect(Set(assigned.values).count == 3)
        for (user, index) in assigned where index != 2 {
            #expect(pool.pick(excluding: [2], stickyKey: user) == index)
            pool.finish(index, outcome: .success)
        }
    }
}
