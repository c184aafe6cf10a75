import AsyncHTTPClient
import Foundation
import JWTKit
import KeelCore
import KeelServer
import KeelStore
import Logging
import NIOCore
import Synchronization

/// An OIDC provider (Keycloak, Auth0, Entra, ...) whose access tokens Keel accepts.
public struct TrustedIssuer: Codable, Sendable, Equatable {
    public var name: String
    public var issuer: String
    public var jwksURL: String
    public var audience: String
    /// Dot path of the claim holding the caller's roles at the issuer (Keycloak: `realm_access.roles`).
    public var rolesClaim: String
    /// Issuer role → Keel role.
    public var roleMap: [String: String]
    /// Keel roles every caller from this issuer gets.
    public var defaultRoles: [String]
    public var createdAt: Date?
    public var updatedAt: Date?

    enum CodingKeys: String, CodingKey {
        case name, issuer, audience
        case jwksURL = "jwks_url"
        case rolesClaim = "roles_claim"
        case roleMap = "role_map"
        case defaultRoles = "default_roles"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// The caller behind a verified external token.
struct ExternalIdentity: Sendable {
    let issuerName: String
    let subject: String
    let name: String
    let roles: [String]
}

/// Every claim of an external token, for role mapping; jwt-kit checks the signature, Keel the claims.
struct ExternalClaims: JWTPayload {
    let claims: [String: JSONValue]

    init(from decoder: any Decoder) throws {
        claims = try decoder.singleValueContainer().decode([String: JSONValue].self)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(claims)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Trusted issuers and their key sets: fetched on first use, refetched when a token names a `kid` not
/// in the cached set (the issuer rotated), at most once per `refetchInterval` per issuer.
final class TrustedIssuers: Sendable {
    /// Only asymmetric signatures: an `HS256` token "signed" with a public key must never verify.
    static let acceptedAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
    static let clockSkew: TimeInterval = 60

    private struct KeySet: Sendable {
        let collection: JWTKeyCollection
        let kids: Set<String>
    }

    private let store: any Store
    private let clock: any KeelClock
    private let logger: Logger
    let refetchInterval: TimeInterval
    private let issuers = Mutex<[String: TrustedIssuer]>([:])
    private let keySets = Mutex<[String: KeySet]>([:])
    private let lastFetch = Mutex<[String: Date]>([:])

    init(store: any Store, clock: any KeelClock, logger: Logger, refetchInterval: TimeInterval = 30) {
        self.store = store
        self.clock = clock
        self.logger = logger
        self.refetchInterval = refetchInterval
    }

    func trusts(_ issuer: String) -> Bool { issuers.withLock { $0[issuer] != nil } }

    func list() -> [TrustedIssuer] { issuers.withLock { $0.values.sorted { $0.name < $1.name } } }

    func reload() async throws {
        let rows = try await store.query("SELECT * FROM keel_trusted_issuers")
        let loaded = try rows.map { row in
            TrustedIssuer(name: try row.string("name"), issuer: try row.string("issuer"), jwksURL: try row.string("jwks_url"),
                          audience: try row.string("audience"), rolesClaim: try row.string("roles_claim"),
                          roleMap: (try? JSONDecoder().decode([String: String].self, from: Data(try row.string("role_map").utf8))) ?? [:],
                          defaultRoles: try decodeList(try row.string("default_roles")),
                          createdAt: try row.date("created_at"), updatedAt: try row.date("updated_at"))
        }
        let byIssuer = Dictionary(loaded.map { ($0.issuer, $0) }) { first, _ in first }
        issuers.withLock { $0 = byIssuer }
        // Key sets of issuers whose JWKS URL changed or that were removed are dropped.
        keySets.withLock { sets in sets = sets.filter { name, _ in loaded.contains { $0.name == name } } }
    }

    func save(_ issuer: TrustedIssuer) async throws {
        let now = clock.now()
        let roleMap = String(decoding: try JSONEncoder().encode(issuer.roleMap), as: UTF8.self)
        let defaults = encodeList(issuer.defaultRoles)
        try await store.transaction { tx in
            try await tx.execute("DELETE FROM keel_trusted_issuers WHERE name = \(issuer.name)")
            try await tx.execute("""
                INSERT INTO keel_trusted_issuers (name, issuer, jwks_url, audience, roles_claim, role_map, default_roles, created_at, updated_at)
                VALUES (\(issuer.name), \(issuer.issuer), \(issuer.jwksURL), \(issuer.audience), \(issuer.rolesClaim), \(roleMap), \(defaults), \(issuer.createdAt ?? now), \(now))
                """)
        }
        keySets.withLock { _ = $0.removeValue(forKey: issuer.name) }
        try await reload()
    }

    func remove(name: String) async throws -> Bool {
        let removed = try await store.execute("DELETE FROM keel_trusted_issuers WHERE name = \(name) RETURNING name")
        try await reload()
        return !removed.isEmpty
    }

    func verify(_ token: String, issuer issuerURL: String) async throws(TokenRejection) -> ExternalIdentity {
        guard let issuer = issuers.withLock({ $0[issuerURL] }) else { throw TokenRejection(reason: "the issuer is not trusted") }
        let header = try JWTHeaderPeek(token)
        guard let alg = header.alg, Self.acceptedAlgorithms.contains(alg) else {
            throw TokenRejection(reason: "the token's algorithm \(header.alg ?? "(none)") is not accepted")
        }
        guard let kid = header.kid else { throw TokenRejection(reason: "the token names no key (kid)") }
        var keySet = keySets.withLock { $0[issuer.name] }
        if keySet?.kids.contains(kid) != true, mayFetch(issuer.name) {
            keySet = try await fetchKeys(issuer)
        }
        guard let keySet, keySet.kids.contains(kid) else {
            throw TokenRejection(reason: "the token was signed with a key \(issuer.name) does not publish")
        }
        let claims: [String: JSONValue]
        do {
            claims = try await keySet.collection.verify(token, as: ExternalClaims.self).claims
        } catch {
            throw TokenRejection(reason: "the token's signature is invalid")
        }
        let now = clock.now().timeIntervalSince1970
        guard case .string(let iss) = claims["iss"], iss == issuer.issuer else { throw TokenRejection(reason: "wrong issuer") }
        guard case .number(let exp) = claims["exp"], exp + Self.clockSkew > now else { throw TokenRejection(reason: "the token has expired") }
        if case .number(let nbf) = claims["nbf"], nbf - Self.clockSkew > now { throw TokenRejection(reason: "the token is not valid yet") }
        let audiences: [String] = switch claims["aud"] {
        case .string(let single): [single]
        case .array(let many): many.compactMap { if case .string(let value) = $0 { value } else { nil } }
        default: []
        }
        guard audiences.contains(issuer.audience) else { throw TokenRejection(reason: "the token is not for audience \(issuer.audience)") }
        guard case .string(let sub) = claims["sub"], !sub.isEmpty else { throw TokenRejection(reason: "the token has no subject") }

        var roles = Set(issuer.defaultRoles)
        for external in Self.strings(at: issuer.rolesClaim, in: claims) {
            if let mapped = issuer.roleMap[external] { roles.insert(mapped) }
        }
        let name = [claims["preferred_username"], claims["email"]].lazy.compactMap { value -> String? in
            if case .string(let text) = value { text } else { nil }
        }.first ?? sub
        return ExternalIdentity(issuerName: issuer.name, subject: "\(issuer.name):\(sub)", name: name, roles: roles.sorted())
    }

    /// The strings at a dot path (`realm_access.roles`); a single string counts as a list of one.
    static func strings(at path: String, in claims: [String: JSONValue]) -> [String] {
        var value: JSONValue? = .object(claims)
        for key in path.split(separator: ".") {
            guard case .object(let object) = value else { return [] }
            value = object[String(key)]
        }
        switch value {
        case .string(let text): return text.split(separator: " ").map(String.init)
        case .array(let items): return items.compactMap { if case .string(let text) = $0 { text } else { nil } }
        default: return []
        }
    }

    private func mayFetch(_ name: String) -> Bool {
        let now = clock.now()
        return lastFetch.withLock { fetches in
            if let last = fetches[name], now.timeIntervalSince(last) < refetchInterval { return false }
            fetches[name] = now
            return true
        }
    }

    private func fetchKeys(_ issuer: TrustedIssuer) async throws(TokenRejection) -> KeySet? {
        do {
            var request = HTTPClientRequest(url: issuer.jwksURL)
            request.headers.add(name: "Accept", value: "application/json")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
            guard response.status == .ok else {
                logger.warning("cannot fetch the JWKS of a trusted issuer", metadata: ["issuer": .string(issuer.name), "status": "\(response.status.code)"])
                return keySets.withLock { $0[issuer.name] }
            }
            let body = try await response.body.collect(upTo: 1 << 20)
            let document = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
            // Keep signing keys only: Keycloak also publishes encryption keys jwt-kit cannot load.
            let keys = (document?["keys"] as? [[String: Any]] ?? []).filter { key in
                (key["use"] as? String ?? "sig") == "sig" && key["kid"] is String
                    && (key["alg"].map { ($0 as? String).map(Self.acceptedAlgorithms.contains) ?? false } ?? true)
            }
            let collection = JWTKeyCollection()
            var kids = Set<String>()
            for key in keys {
                let json = String(decoding: try JSONSerialization.data(withJSONObject: ["keys": [key]]), as: UTF8.self)
                do {
                    try await collection.add(jwksJSON: json)
                    kids.insert(key["kid"] as! String)
                } catch {
                    logger.warning("skipping a key of a trusted issuer", metadata: ["issuer": .string(issuer.name), "error": "\(error)"])
                }
            }
            let keySet = KeySet(collection: collection, kids: kids)
            keySets.withLock { $0[issuer.name] = keySet }
            logger.info("fetched the JWKS of a trusted issuer", metadata: ["issuer": .string(issuer.name), "keys": "\(kids.count)"])
            return keySet
        } catch {
            logger.warning("cannot fetch the JWKS of a trusted issuer", metadata: ["issuer": .string(issuer.name), "error": "\(error)"])
            return keySets.withLock { $0[issuer.name] }
        }
    }
}
