import Foundation
import JWTKit
import KeelCore
import Synchronization

/// The claims of a Keel access token. Other services read `sub`, `roles` and `scope` the way they
/// read any OIDC provider's tokens.
struct AccessClaims: JWTPayload, Equatable {
    var iss: String
    var aud: String
    var sub: String
    var iat: Int
    var nbf: Int
    var exp: Int
    var jti: String
    var roles: [String]
    /// The refresh-token family (session) this token belongs to; logout revokes it.
    var sid: String
    var email: String?
    var name: String?

    /// Claims are checked by ``AccessTokens`` against Keel's clock; jwt-kit only checks the signature.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why a bearer token was refused. The detail goes to the client; nothing here contains the token.
struct TokenRejection: Error, Sendable {
    let reason: String
}

/// Signs and verifies Keel access tokens. Verified tokens are cached (bounded, until their `exp`), so
/// a busy client costs a dictionary lookup per request rather than a signature check.
final class AccessTokens: Sendable {
    let issuer: String
    let audience: String
    let ttl: TimeInterval
    private let keys: SigningKeys
    private let clock: any KeelClock
    /// Tolerated clock difference between replicas for `nbf`/`iat`.
    private let skew: TimeInterval = 30
    private let cache = Mutex<[String: AccessClaims]>([:])
    static let cacheCapacity = 10_000
    static let maximumTokenBytes = 8192

    init(issuer: String, audience: String, ttl: TimeInterval, keys: SigningKeys, clock: any KeelClock) {
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.keys = keys
        self.clock = clock
    }

    func claims(subject: String, roles: [String], session: String, email: String?, name: String?) -> AccessClaims {
        let now = Int(clock.now().timeIntervalSince1970)
        return AccessClaims(iss: issuer, aud: audience, sub: subject, iat: now, nbf: now, exp: now + Int(ttl),
                            jti: Credential.random(bytes: 16), roles: roles, sid: session, email: email, name: name)
    }

    func sign(_ claims: AccessClaims) async throws -> String {
        guard let loaded = keys.current, let kid = loaded.activeKid else { throw TokenRejection(reason: "no signing key is loaded") }
        return try await loaded.collection.sign(claims, kid: JWKIdentifier(string: kid))
    }

    /// The token's claims when its signature, algorithm, key, issuer, audience and times all check out.
    func verify(_ token: String) async throws(TokenRejection) -> AccessClaims {
        let now = clock.now().timeIntervalSince1970
        if let cached = cache.withLock({ $0[token] }) {
            guard Double(cached.exp) > now else { throw TokenRejection(reason: "the token has expired") }
            return cached
        }
        guard token.utf8.count <= Self.maximumTokenBytes else { throw TokenRejection(reason: "the token is too long") }
        let header = try JWTHeaderPeek(token)
        guard header.alg == "ES256" || header.alg == "EdDSA" else {
            throw TokenRejection(reason: "the token's algorithm \(header.alg ?? "(none)") is not accepted")
        }
        guard let kid = header.kid else { throw TokenRejection(reason: "the token names no key (kid)") }
        var loaded = keys.current
        if loaded?.kids.contains(kid) != true {
            _ = try? await keys.reloadForUnknownKid()
            loaded = keys.current
        }
        guard let loaded, loaded.kids.contains(kid) else { throw TokenRejection(reason: "the token was signed with an unknown key") }
        guard let expected = loaded.jwks.first(where: { $0.kid == kid }), expected.algorithm.rawValue == header.alg else {
            throw TokenRejection(reason: "the token's algorithm does not match its key")
        }
        let claims: AccessClaims
        do {
            claims = try await loaded.collection.verify(token, as: AccessClaims.self)
        } catch {
            throw TokenRejection(reason: "the token's signature or claims are invalid")
        }
        guard claims.iss == issuer else { throw TokenRejection(reason: "the token was issued by \(claims.iss), not this Keel") }
        guard claims.aud == audience else { throw TokenRejection(reason: "the token is for another audience") }
        guard Double(claims.exp) > now else { throw TokenRejection(reason: "the token has expired") }
        guard Double(claims.nbf) <= now + skew, Double(claims.iat) <= now + skew else {
            throw TokenRejection(reason: "the token is not valid yet")
        }
        remember(token, claims, now: now)
        return claims
    }

    /// The claims of a token verified before (still to be checked for expiry), or `nil`.
    func cachedClaims(_ token: String) -> AccessClaims? {
        cache.withLock { $0[token] }
    }

    /// Drops every cached verification, so revocations apply to the very next request.
    func forgetAll() {
        cache.withLock { $0.removeAll() }
    }

    private func remember(_ token: String, _ claims: AccessClaims, now: TimeInterval) {
        cache.withLock { cache in
            if cache.count >= Self.cacheCapacity {
                cache = cache.filter { Double($0.value.exp) > now }
                if cache.count >= Self.cacheCapacity { cache.removeAll(keepingCapacity: true) }
            }
            cache[token] = claims
        }
    }
}

/// The unverified header and issuer of a compact JWS, to pick the verifier; nothing read here is trusted.
struct JWTHeaderPeek {
    let alg: String?
    let kid: String?
    let issuer: String?

    init(_ token: String) throws(TokenRejection) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty || $0 == parts[2] }),
              let headerData = Data(base64URLEncoded: parts[0]),
              let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
              let payloadData = Data(base64URLEncoded: parts[1]),
              let payload = try? JSONSerialization.jsonObject(with: payloadData) as? [String: Any]
        else { throw TokenRejection(reason: "the token is not a well-formed JWT") }
        alg = header["alg"] as? String
        kid = header["kid"] as? String
        issuer = payload["iss"] as? String
    }
}
