import Crypto
import Foundation
import JWTKit
import KeelCore
import KeelStore
import Synchronization

/// Keel's token signing keys, kept in the store so every replica signs and verifies with the same set.
/// The newest unretired key signs; retired keys still verify (and stay in the JWKS) until every token
/// they signed has expired. Private keys are sealed with `KEEL_SECRET_KEY` when it is set.
final class SigningKeys: Sendable {
    struct Loaded: Sendable {
        let collection: JWTKeyCollection
        let activeKid: String?
        let kids: Set<String>
        /// The public keys as JWKS entries, newest first.
        let jwks: [JSONWebKey]
        let loadedAt: Date
    }

    private let store: any Store
    private let box: SecretBox
    private let algorithm: SigningAlgorithm
    private let clock: any KeelClock
    /// How long a retired key keeps verifying: the access-token lifetime plus clock skew.
    private let retiredKeyGrace: TimeInterval
    private let state: Mutex<Loaded?> = Mutex(nil)
    private let lastReload = Mutex(Date.distantPast)

    init(store: any Store, box: SecretBox, algorithm: SigningAlgorithm, clock: any KeelClock, accessTokenTTL: TimeInterval) {
        self.store = store
        self.box = box
        self.algorithm = algorithm
        self.clock = clock
        self.retiredKeyGrace = accessTokenTTL + 120
    }

    /// Creates the first key on an empty store (or when every key is retired), then loads the set.
    func prepare() async throws {
        let active = try await store.query("SELECT kid FROM keel_signing_keys WHERE retired_at IS NULL")
        if active.isEmpty { try await insertNewKey(retiringOthers: false) }
        try await reload()
    }

    /// Adds a new signing key and retires the current ones; returns the new `kid`.
    @discardableResult
    func rotate() async throws -> String {
        let kid = try await insertNewKey(retiringOthers: true)
        try await reload()
        return kid
    }

    var current: Loaded? { state.withLock { $0 } }

    /// Reloads from the store: on a `kid` this replica has not seen (another replica rotated), at most
    /// once a second so forged `kid`s cannot turn into a query per request.
    func reloadForUnknownKid() async throws -> Bool {
        let now = clock.now()
        let due = lastReload.withLock { last in
            guard now.timeIntervalSince(last) >= 1 else { return false }
            last = now
            return true
        }
        if due { try await reload() }
        return due
    }

    func reload() async throws {
        let now = clock.now()
        let rows = try await store.query("""
            SELECT kid, algorithm, public_key, private_key, created_at, retired_at FROM keel_signing_keys ORDER BY created_at DESC, kid DESC
            """)
        let collection = JWTKeyCollection()
        var activeKid: String?
        var kids = Set<String>()
        var jwks: [JSONWebKey] = []
        for row in rows {
            let kid = try row.string("kid")
            let retiredAt = try row.optionalDate("retired_at")
            if let retiredAt, now.timeIntervalSince(retiredAt) > retiredKeyGrace { continue }
            guard let algorithm = SigningAlgorithm(rawValue: try row.string("algorithm")),
                  let publicKey = Data(base64Encoded: try row.string("public_key")) else { continue }
            let identifier = JWKIdentifier(string: kid)
            if retiredAt == nil, activeKid == nil {
                let privateKey = try box.open(try row.string("private_key"))
                switch algorithm {
                case .es256: await collection.add(ecdsa: try ES256PrivateKey(backing: P256.Signing.PrivateKey(rawRepresentation: privateKey)), kid: identifier)
                case .eddsa: await collection.add(eddsa: EdDSA.PrivateKey(backing: try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey)), kid: identifier)
                }
                activeKid = kid
            } else {
                switch algorithm {
                case .es256: await collection.add(ecdsa: try ES256PublicKey(backing: P256.Signing.PublicKey(rawRepresentation: publicKey)), kid: identifier)
                case .eddsa: await collection.add(eddsa: EdDSA.PublicKey(backing: try Curve25519.Signing.PublicKey(rawRepresentation: publicKey)), kid: identifier)
                }
            }
            kids.insert(kid)
            jwks.append(JSONWebKey(kid: kid, algorithm: algorithm, publicKey: publicKey))
        }
        let loaded = Loaded(collection: collection, activeKid: activeKid, kids: kids, jwks: jwks, loadedAt: now)
        state.withLock { $0 = loaded }
        lastReload.withLock { $0 = now }
    }

    @discardableResult
    private func insertNewKey(retiringOthers: Bool) async throws -> String {
        let now = clock.now()
        let kid = KeelID.make(prefix: "key", now: now)
        let (publicKey, privateKey): (Data, Data) = switch algorithm {
        case .es256:
            { let key = P256.Signing.PrivateKey(); return (key.publicKey.rawRepresentation, key.rawRepresentation) }()
        case .eddsa:
            { let key = Curve25519.Signing.PrivateKey(); return (key.publicKey.rawRepresentation, key.rawRepresentation) }()
        }
        let sealed = try box.seal(privateKey)
        let algorithmName = algorithm.rawValue
        let publicText = publicKey.base64EncodedString()
        try await store.transaction { tx in
            if retiringOthers {
                try await tx.execute("UPDATE keel_signing_keys SET retired_at = \(now) WHERE retired_at IS NULL")
            }
            try await tx.execute("""
                INSERT INTO keel_signing_keys (kid, algorithm, public_key, private_key, created_at, retired_at)
                VALUES (\(kid), \(algorithmName), \(publicText), \(sealed), \(now), \(Optional<Date>.none))
                """)
        }
        return kid
    }
}

/// One public key as RFC 7517 JWK.
struct JSONWebKey: Sendable, Encodable {
    let kid: String
    let algorithm: SigningAlgorithm
    let publicKey: Data

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: JSONKey.self)
        try container.encode(kid, forKey: "kid")
        try container.encode("sig", forKey: "use")
        try container.encode(algorithm.rawValue, forKey: "alg")
        switch algorithm {
        case .es256:
            // Raw P-256 public keys are X ‖ Y, 32 bytes each.
            try container.encode("EC", forKey: "kty")
            try container.encode("P-256", forKey: "crv")
            try container.encode(publicKey.prefix(32).base64URLEncoded(), forKey: "x")
            try container.encode(publicKey.suffix(32).base64URLEncoded(), forKey: "y")
        case .eddsa:
            try container.encode("OKP", forKey: "kty")
            try container.encode("Ed25519", forKey: "crv")
            try container.encode(publicKey.base64URLEncoded(), forKey: "x")
        }
    }
}

struct JSONKey: CodingKey, ExpressibleByStringLiteral {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
    init(stringLiteral value: String) { self.stringValue = value }
}
