import Foundation
import KeelTestSupport
import Testing

/// Routes and registered instances managed through the API, applied without a restart; and limits
/// and edits shared by gateway replicas on one PostgreSQL.
@Suite(.serialized) struct GatewayAdminTests {
    @Test func routesChangeThroughTheAPIWithoutRestart() async throws {
        let (one, two) = (try await Upstream("one"), try await Upstream("two"))
        let gateway = try await GatewayServer(routes: ["declared": route("/declared", [one])])
        let admin = ["Authorization": "Bearer \(try await gateway.adminToken())", "Content-Type": "application/json"]

        let invalid = try await gateway.send("POST", "/api/v1/gateway/routes", headers: admin,
                                             body: #"{"name": "x", "match": {"prefix": "/api/v1/jobs"}, "upstreams": [{"url": "gopher://x"}]}"#)
        #expect(invalid.status == 422)
        let fields = (invalid.json["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
        #expect(Set(fields) == ["match.prefix", "upstreams[0].url"])

        let created = try await gateway.send("POST", "/api/v1/gateway/routes", headers: admin,
                                             body: #"{"name": "shop", "match": {"prefix": "/shop"}, "upstreams": [{"url": "\#(one.url)"}], "auth": "public"}"#)
        #expect(created.status == 201)
        #expect(created.json["declared"] as? Bool == false)
        #expect(try await gateway.send("GET", "/shop/x").instance == "one")
        #expect(try await gateway.send("POST", "/api/v1/gateway/routes", headers: admin,
                                       body: #"{"name": "shop", "match": {"prefix": "/shop"}, "upstreams": [{"url": "\#(one.url)"}]}"#).status == 409)

        let replaced = try await gateway.send("PUT", "/api/v1/gateway/routes/shop", headers: admin,
                                              body: #"{"match": {"prefix": "/shop"}, "upstreams": [{"url": "\#(two.url)"}], "auth": "public"}"#)
        #expect(replaced.status == 200)
        #expect(try await gateway.send("GET", "/shop/x").instance == "two")

        let listed = try await gateway.send("GET", "/api/v1/gateway/routes", headers: admin)
        let items = listed.json["items"] as? [[String: Any]] ?? []
        #expect(items.map { $0["name"] as? String } == ["declared", "shop"])
        #expect(items.first?["declared"] as? Bool == true)
        #expect(try await gateway.send("PUT", "/api/v1/gateway/routes/declared", headers: admin,
                                       body: #"{"match": {"prefix": "/d"}, "upstreams": [{"url": "\#(two.url)"}]}"#).status == 409)
        #expect(try await gateway.send("DELETE", "/api/v1/gateway/routes/declared", headers: admin).status == 409)

        #expect(try await gateway.send("DELETE", "/api/v1/gateway/routes/shop", headers: admin).status == 204)
        #expect(try await gateway.send("GET", "/shop/x").status == 404)
        #expect(try await gateway.send("DELETE", "/api/v1/gateway/routes/shop", headers: admin).status == 404)
    }

    @Test func registeredInstancesBecomeRoutableAndExpire() async throws {
        let upstream = try await Upstream("registered")
        let gateway = try await GatewayServer(routes: [
            "svc": ["match": ["prefix": "/svc"], "service": "orders", "auth": "public", "strip_prefix": true],
        ])
        let admin = ["Authorization": "Bearer \(try await gateway.adminToken())", "Content-Type": "application/json"]
        #expect(try await gateway.send("GET", "/svc/x").status == 503)

        let registered = try await gateway.send("PUT", "/api/v1/gateway/services/orders/instances", headers: admin,
                                                body: #"{"url": "\#(upstream.url)", "ttl_seconds": 5}"#)
        #expect(registered.status == 200)
        #expect(try await gateway.send("GET", "/svc/x").instance == "registered")
        let services = try await gateway.send("GET", "/api/v1/gateway/services", headers: admin).json["items"] as? [[String: Any]] ?? []
        #expect(services.first?["name"] as? String == "orders")
        #expect((services.first?["instances"] as? [[String: Any]])?.first?["url"] as? String == upstream.url)

        #expect(try await gateway.send("PUT", "/api/v1/gateway/services/orders/instances", headers: admin,
                                       body: #"{"url": "http://x\r\nEvil: 1", "ttl_seconds": 1}"#).status == 422)

        // No heartbeat: the registration runs out and the instance drops out of the route.
        try await Task.sleep(for: .seconds(6.5))
        #expect(try await gateway.send("GET", "/svc/x").status == 503)

        _ = try await gateway.send("PUT", "/api/v1/gateway/services/orders/instances", headers: admin, body: #"{"url": "\#(upstream.url)"}"#)
        #expect(try await gateway.send("GET", "/svc/x").status == 200)
        let removed = try await gateway.send("DELETE", "/api/v1/gateway/services/orders/instances?url=\(upstream.url)", headers: admin)
        #expect(removed.status == 204)
        #expect(try await gateway.send("GET", "/svc/x").status == 503)
    }

    @Test func replicasOnPostgreSQLShareRateLimitsAndRouteEdits() async throws {
        let upstream = try await Upstream("limited")
        try await TestPostgres.withDatabase { url in
            let environment = ["KEEL_DATABASE_URL": url.connectionString(), "KEEL_DATABASE_TLS": "disable"]
            let routes: [String: Any] = [
                "strict": route("/strict", [upstream], ["rate_limit": ["requests": 20, "per_seconds": 3600]]),
                "roomy": route("/roomy", [upstream], ["rate_limit": ["requests": 200, "per_seconds": 3600]]),
            ]
            let first = try await GatewayServer(routes: routes, roles: ["api", "gateway"], environment: environment)
            let second = try await GatewayServer(routes: routes, roles: ["api", "gateway"], environment: environment)
            let replicas = [first, second]

            var admitted = 0
            for attempt in 0..<40 {
                let response = try await replicas[attempt % 2].send("GET", "/strict/echo")
                if response.status == 200 {
                    admitted += 1
                    #expect(response.headers.first(name: "RateLimit-Limit") == "20")
                } else {
                    #expect(response.status == 429)
                    #expect(Int(response.headers.first(name: "Retry-After") ?? "") ?? 0 >= 1)
                    #expect(response.headers.first(name: "RateLimit-Remaining") == "0")
                }
            }
            #expect(admitted == 20)

            // Larger buckets are taken in chunks; together the replicas still never pass the limit.
            admitted = 0
            for attempt in 0..<300 where try await replicas[attempt % 2].send("GET", "/roomy/echo").status == 200 { admitted += 1 }
            #expect((180...200).contains(admitted), "\(admitted)")
            let hits = try await upstream.hits()["GET /echo", default: 0]
            #expect(hits == 20 + admitted)

            // A route created through one replica is served by the other within about a second.
            let admin = ["Authorization": "Bearer \(try await first.adminToken())", "Content-Type": "application/json"]
            let created = try await first.send("POST", "/api/v1/gateway/routes", headers: admin,
                                               body: #"{"name": "late", "match": {"prefix": "/late"}, "upstreams": [{"url": "\#(upstream.url)"}], "auth": "public"}"#)
            #expect(created.status == 201)
            let deadline = ContinuousClock.now + .seconds(5)
            var status = 0
            while ContinuousClock.now < deadline {
                status = try await second.send("GET", "/late/x").status
                if status == 200 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(status == 200)
        }
    }
}

/// Routes guarded by an application's own permission, granted through a custom role.
@Suite struct ApplicationPermissionTests {
    @Test func aRouteNeedingAnApplicationPermissionAdmitsOnlyItsHolders() async throws {
        let upstream = try await Upstream("orders")
        let gateway = try await GatewayServer(routes: ["orders": route("/orders", [upstream], auth: "orders:read")])
        let admin = ["Authorization": "Bearer \(try await gateway.adminToken())", "Content-Type": "application/json"]

        // Keel's own namespaces hold only Keel's permissions; application permissions are lower-case namespace:action.
        let bad = try await gateway.send("POST", "/api/v1/roles", headers: admin,
                                         body: #"{"name": "bad", "permissions": ["jobs:fly", "Orders:Read", "orders:read"]}"#)
        #expect(bad.status == 422)
        let badFields = (bad.json["errors"] as? [[String: Any]] ?? []).compactMap { $0["field"] as? String }
        #expect(badFields == ["permissions[0]", "permissions[1]"])
        #expect(try await gateway.send("POST", "/api/v1/roles", headers: admin,
                                       body: #"{"name": "orders-reader", "permissions": ["orders:read"]}"#).status == 201)
        let created = try await gateway.send("POST", "/api/v1/users", headers: admin,
                                             body: #"{"email": "clerk@example.com", "password": "clerk-passphrase-123", "roles": ["orders-reader"]}"#)
        #expect(created.status == 201, "\(created.body)")
        let login = try await gateway.send("POST", "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                           body: #"{"email": "clerk@example.com", "password": "clerk-passphrase-123"}"#)
        let clerk = try #require(login.json["access_token"] as? String)

        let allowed = try await gateway.send("GET", "/orders/42", headers: ["Authorization": "Bearer \(clerk)"])
        #expect(allowed.status == 200)
        #expect(allowed.upstreamHeaders["x-keel-roles"] == ["orders-reader"])
        // Deny by default: even an admin needs the permission granted.
        #expect(try await gateway.send("GET", "/orders/42", headers: ["Authorization": admin["Authorization"]!]).status == 403)
        #expect(try await upstream.hits()["GET /42"] == 1)

        let unknown = try await gateway.send("POST", "/api/v1/gateway/routes", headers: admin,
                                             body: #"{"name": "x", "match": {"prefix": "/x"}, "upstreams": [{"url": "\#(upstream.url)"}], "auth": "jobs:fly"}"#)
        #expect(unknown.status == 422)
    }
}
