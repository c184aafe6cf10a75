import AsyncHTTPClient
import Foundation
import KeelTestSupport
import NIOCore
import Testing

/// Tokens of a trusted OIDC issuer (a Keycloak stand-in that the test runs on loopback) are accepted,
/// mapped to Keel roles, and refused when anything about them is off.
@Suite struct ExternalIssuerTests {
    struct Issuer {
        let port: Int
        var base: String { "http://127.0.0.1:\(port)" }
        var issuer: String { base + "/realms/keel" }

        func post(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
            var request = HTTPClientRequest(url: base + path)
            request.method = .POST
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let data = try await response.body.collect(upTo: 1 << 20)
            return try JSONSerialization.jsonObject(with: Data(buffer: data)) as? [String: Any] ?? [:]
        }

        func mint(_ claims: [String: Any], extra: [String: Any] = [:]) async throws -> String {
            try await post("/mint", ["claims": claims].merging(extra) { a, _ in a })["token"] as? String ?? ""
        }

        func fetches() async throws -> Int {
            let response = try await HTTP.get(port: port, path: "/fetches")
            return (try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])?["count"] as? Int ?? -1
        }
    }

    @Test func keycloakStyleTokensAreVerifiedAndMappedToRoles() async throws {
        let helper = try PythonHelper("oidc_issuer.py", arguments: ["0"])
        defer { helper.stop() }
        let port = try await helper.listeningPort()
        let issuer = Issuer(port: port)

        try await withIdentityServer(jwksRefetchInterval: 0.5) { keel in
            let admin = try await keel.adminToken()
            let invalid = try await keel.call(.put, "/api/v1/auth/issuers/keycloak", as: .bearer(admin),
                                              json: ["issuer": "not a url", "jwks_url": issuer.issuer, "audience": "keel-api", "role_map": ["x": "emperor"]])
            #expect(invalid.status == .unprocessableContent)
            #expect(invalid.text.contains("issuer") && invalid.text.contains("emperor"))
            let saved = try await keel.call(.put, "/api/v1/auth/issuers/keycloak", as: .bearer(admin), json: [
                "issuer": issuer.issuer, "jwks_url": issuer.issuer + "/protocol/openid-connect/certs", "audience": "keel-api",
                "roles_claim": "realm_access.roles", "role_map": ["keel-developers": "developer", "keel-admins": "admin"],
            ])
            #expect(saved.status == .ok, "\(saved.text)")

            let claims: [String: Any] = ["sub": "f3c1-ada", "aud": ["keel-api", "account"], "preferred_username": "ada",
                                         "realm_access": ["roles": ["keel-developers", "offline_access"]]]
            let token = try await issuer.mint(claims)
            let me = try await keel.call(.get, "/api/v1/me", as: .bearer(token))
            #expect(me.status == .ok, "\(me.text)")
            #expect(me["kind"] as? String == "external")
            #expect(me["subject"] as? String == "keycloak:f3c1-ada")
            #expect(me["name"] as? String == "ada")
            #expect(me["roles"] as? [String] == ["developer"])
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .bearer(token)).status == .ok)
            #expect(try await keel.call(.get, "/api/v1/users", as: .bearer(token)).status == .forbidden)

            func refused(_ token: String, _ because: String) async throws {
                let reply = try await keel.call(.get, "/api/v1/me", as: .bearer(token))
                #expect(reply.status == .unauthorized, "\(because): \(reply.text)")
            }
            var wrongAudience = claims
            wrongAudience["aud"] = "another-client"
            try await refused(try await issuer.mint(wrongAudience), "wrong audience")
            var expired = claims
            expired["exp"] = Int(Date().timeIntervalSince1970) - 3600
            try await refused(try await issuer.mint(expired), "expired")
            var untrusted = claims
            untrusted["iss"] = "http://127.0.0.1:\(port)/realms/other"
            try await refused(try await issuer.mint(untrusted), "untrusted issuer")
            try await refused(try await issuer.mint(claims, extra: ["alg": "HS256", "secret": "guessable"]), "HS256 from a trusted issuer")
            try await refused(String(token.dropLast(3)) + "AAA", "bad signature")

            // The issuer rotates its key: Keel refetches the JWKS for the new kid.
            let before = try await issuer.fetches()
            _ = try await issuer.post("/rotate", [:])
            try await Task.sleep(for: .milliseconds(600))
            let rotated = try await issuer.mint(claims)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(rotated)).status == .ok)
            #expect(try await issuer.fetches() == before + 1)
            // Made-up kids do not turn into a fetch per request.
            try await Task.sleep(for: .milliseconds(600))
            var forged: [String] = []
            for index in 0..<5 { forged.append(try await issuer.mint(claims, extra: ["kid": "forged-\(index)"])) }
            let spamStart = try await issuer.fetches()
            let spamBegan = ContinuousClock.now
            for token in forged { try await refused(token, "unknown kid") }
            // At most one refetch per 0.5 s interval, however slow a loaded machine makes the five calls.
            let intervals = Int((ContinuousClock.now - spamBegan) / .milliseconds(500))
            #expect(try await issuer.fetches() <= spamStart + 1 + intervals)

            let listed = try await keel.call(.get, "/api/v1/auth/issuers", as: .bearer(admin))
            #expect(listed.items.first?["name"] as? String == "keycloak")
            #expect(try await keel.call(.delete, "/api/v1/auth/issuers/keycloak", as: .bearer(admin)).status == .noContent)
            try await refused(rotated, "issuer no longer trusted")
            #expect(try await keel.auditActions(target: "keycloak").count == 2)
        }
    }
}
