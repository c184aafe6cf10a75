import Crypto
import Foundation
@testable import KeelIdentity
import KeelCore
import KeelServer
import KeelStore
import KeelTestSupport
import Testing

/// Forged, altered and out-of-date tokens are refused; good ones verify in other services' libraries.
@Suite struct TokenSecurityTests {
    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func segment(_ json: [String: Any]) throws -> String {
        base64URL(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
    }

    static func decodeSegment(_ text: Substring) throws -> [String: Any] {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        let data = try #require(Data(base64Encoded: base64))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A viewer's valid token, its claims and header, to forge variants of.
    static func viewerToken(_ keel: IdentityHarness) async throws -> (token: String, header: [String: Any], claims: [String: Any]) {
        let token = try await keel.user(roles: ["viewer"]).token
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return (token, try decodeSegment(parts[0]), try decodeSegment(parts[1]))
    }

    func expectRefused(_ keel: IdentityHarness, _ token: String, _ because: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let reply = try await keel.call(.get, "/api/v1/me", as: .bearer(token))
        #expect(reply.status == .unauthorized, "\(because): \(reply.text)", sourceLocation: sourceLocation)
        #expect(reply.headers[.wwwAuthenticate]?.contains("invalid_token") == true, sourceLocation: sourceLocation)
    }

    @Test func unsignedAndAlgorithmConfusionTokensAreRefused() async throws {
        try await withIdentityServer { keel in
            let (_, header, claims) = try await Self.viewerToken(keel)
            var escalated = claims
            escalated["roles"] = ["admin"]

            var none = header
            none["alg"] = "none"
            try await expectRefused(keel, try Self.segment(none) + "." + Self.segment(escalated) + ".", "alg none")
            none["alg"] = "None"
            try await expectRefused(keel, try Self.segment(none) + "." + Self.segment(escalated) + ".", "alg None")

            // HS256 "signed" with the public key, the classic confusion attack, with the key as PEM and as JWK.
            let jwks = try await keel.call(.get, "/.well-known/jwks.json")
            let jwk = try #require((jwks["keys"] as? [[String: Any]])?.first)
            func coordinate(_ name: String) throws -> Data {
                var text = try #require(jwk[name] as? String).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
                text += String(repeating: "=", count: (4 - text.count % 4) % 4)
                return try #require(Data(base64Encoded: text))
            }
            let publicKey = try P256.Signing.PublicKey(rawRepresentation: try coordinate("x") + coordinate("y"))
            var hs256 = header
            hs256["alg"] = "HS256"
            let signingInput = try Self.segment(hs256) + "." + Self.segment(escalated)
            for secret in [Data(publicKey.pemRepresentation.utf8), try JSONSerialization.data(withJSONObject: jwk), publicKey.rawRepresentation] {
                let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: secret))
                try await expectRefused(keel, signingInput + "." + Self.base64URL(Data(mac)), "HS256 with the public key")
            }
        }
    }

    @Test func alteredTokensAreRefused() async throws {
        try await withIdentityServer { keel in
            let (token, header, claims) = try await Self.viewerToken(keel)
            let parts = token.split(separator: ".")
            var escalated = claims
            escalated["roles"] = ["admin"]
            try await expectRefused(keel, "\(parts[0]).\(try Self.segment(escalated)).\(parts[2])", "tampered payload")

            var otherKid = header
            otherKid["kid"] = "key_01aaaaaaaaaaaaaaaaaaaaaaaa"
            try await expectRefused(keel, "\(try Self.segment(otherKid)).\(parts[1]).\(parts[2])", "unknown kid")

            // A well-formed ES256 token signed by a key Keel never published.
            let stranger = P256.Signing.PrivateKey()
            var strangerHeader = header
            strangerHeader["kid"] = "key_01bbbbbbbbbbbbbbbbbbbbbbbb"
            let input = try Self.segment(strangerHeader) + "." + Self.segment(claims)
            let signature = try stranger.signature(for: Data(input.utf8)).rawRepresentation
            try await expectRefused(keel, input + "." + Self.base64URL(signature), "foreign key")

            var truncated = token
            truncated.removeLast(4)
            try await expectRefused(keel, truncated, "truncated signature")
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(token)).status == .ok)
        }
    }

    @Test func tokensOutsideTheirValidityOrForAnotherPartyAreRefused() async throws {
        try await withIdentityServer { keel in
            let user = try await keel.user(roles: ["viewer"])
            let tokens = keel.identity.tokens
            let valid = tokens.claims(subject: user.id, roles: ["viewer"], session: "ses_01cccccccccccccccccccccccc", email: user.email, name: nil)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(try await tokens.sign(valid))).status == .ok)

            var expired = valid
            expired.exp = expired.iat - 1
            try await expectRefused(keel, try await tokens.sign(expired), "expired")
            var early = valid
            early.nbf = valid.iat + 3600
            try await expectRefused(keel, try await tokens.sign(early), "not yet valid")
            var futureIssued = valid
            futureIssued.iat = valid.iat + 3600
            try await expectRefused(keel, try await tokens.sign(futureIssued), "issued in the future")
            var otherIssuer = valid
            otherIssuer.iss = "http://evil.example"
            try await expectRefused(keel, try await tokens.sign(otherIssuer), "wrong issuer")
            var otherAudience = valid
            otherAudience.aud = "billing-service"
            try await expectRefused(keel, try await tokens.sign(otherAudience), "wrong audience")
            var ghost = valid
            ghost.sub = "usr_01dddddddddddddddddddddddd"
            try await expectRefused(keel, try await tokens.sign(ghost), "deleted subject")
        }
    }

    @Test func privateKeysAreSealedWithTheSecretKey() async throws {
        try await withIdentityServer { keel in
            let rows = try await keel.identity.store.query("SELECT private_key FROM keel_signing_keys")
            #expect(!rows.isEmpty)
            for row in rows {
                #expect(try row.string("private_key").hasPrefix("aesgcm:"))
            }
            // Another secret key cannot open them: the process refuses to start rather than mint new ones.
            var other = keel.config
            other.secretKey = Secret("a-different-secret-key-of-enough-length")
            let stranger = IdentityService(config: other, store: keel.identity.store)
            await #expect(throws: FatalStartupError.self) { try await stranger.prepare(printFirstAdminPassword: { _, _ in }) }
        }
    }

    @Test func rotationKeepsOldTokensValidAndPublishesBothKeys() async throws {
        try await withIdentityServer { keel in
            let admin = try await keel.adminToken()
            let oldKid = try #require((try Self.decodeSegment(admin.split(separator: ".")[0]))["kid"] as? String)
            let rotated = try await keel.call(.post, "/api/v1/auth/keys/rotate", as: .bearer(admin))
            #expect(rotated.status == .created)
            let newKid = try #require(rotated["kid"] as? String)
            #expect(newKid != oldKid)
            let kids = ((try await keel.call(.get, "/.well-known/jwks.json"))["keys"] as? [[String: Any]] ?? []).compactMap { $0["kid"] as? String }
            #expect(Set(kids) == [oldKid, newKid])
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(admin)).status == .ok)
            let fresh = try await keel.adminToken()
            #expect((try Self.decodeSegment(fresh.split(separator: ".")[0]))["kid"] as? String == newKid)
            #expect(try await keel.auditActions().contains { $0["action"] as? String == "signing_key.rotate" })
        }
    }

    @Test(arguments: ["ES256", "EdDSA"])
    func pyJWTVerifiesKeelTokensAgainstTheJWKSEndpoint(_ algorithm: String) async throws {
        try await withIdentityServer(configure: { $0.auth.signingAlgorithm = .init(rawValue: algorithm)! }) { keel in
            let port = try #require(keel.client.port)
            let token = try await keel.adminToken()
            let discovery = try await keel.call(.get, "/.well-known/openid-configuration")
            #expect(discovery["issuer"] as? String == "http://keel.test")
            #expect(discovery["jwks_uri"] as? String == "http://keel.test/.well-known/jwks.json")
            let verifier = try PythonHelper("verify_jwt.py", arguments: ["http://127.0.0.1:\(port)/.well-known/jwks.json", token, "http://keel.test", "keel"])
            #expect(try await verifier.waitForExit() == 0, "PyJWT refused the token: \(verifier.output)")
            let claims = try #require(try JSONSerialization.jsonObject(with: Data(verifier.output.utf8)) as? [String: Any])
            #expect(claims["roles"] as? [String] == ["admin"])
            #expect((claims["sub"] as? String)?.hasPrefix("usr_") == true)

            // The same library refuses a token for another audience.
            let wrongAudience = try PythonHelper("verify_jwt.py", arguments: ["http://127.0.0.1:\(port)/.well-known/jwks.json", token, "http://keel.test", "other"])
            #expect(try await wrongAudience.waitForExit() == 1)
            #expect(wrongAudience.output.contains("InvalidAudience"))
        }
    }
}
