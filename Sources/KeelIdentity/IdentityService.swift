import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import KeelServer
import KeelStore
import Logging
import Metrics
import Synchronization
import Tracing

/// Keel's identity: users, roles, sessions, API keys, trusted external issuers and the audit log,
/// and the authenticator every protected route goes through.
public final class IdentityService: RequestAuthenticator, Sendable {
    let settings: AuthSettings
    let store: any Store
    let clock: any KeelClock
    let hasher: PasswordHasher
    let policy: PasswordPolicy
    let box: SecretBox
    let keys: SigningKeys
    let tokens: AccessTokens
    public let audit: AuditLog
    let issuers: TrustedIssuers
    let metrics = IdentityMetrics()
    let logger = Logger(label: "keel.identity")

    /// How long this replica trusts what it read about a user, role, session or key.
    static let cacheTTL: TimeInterval = 5
    let userCache = ExpiringCache<String, UserState?>(ttl: cacheTTL)
    let sessionCache = ExpiringCache<String, Bool>(ttl: cacheTTL)
    let roleCache = ExpiringCache<String, [String: RoleRecord]>(ttl: cacheTTL, capacity: 1)
    /// Permissions of a combination of roles, by the roles joined with commas.
    let permissionCache = ExpiringCache<String, (permissions: Set<String>, requiresTOTP: Bool)>(ttl: cacheTTL, capacity: 1000)
    let apiKeyCache = ExpiringCache<String, APIKeyRecord?>(ttl: cacheTTL)
    let keyLastUsedWrites = ExpiringCache<String, Bool>(ttl: 60)

    /// - Parameter jwksRefetchInterval: the least time between two fetches of a trusted issuer's JWKS.
    public init(config: KeelConfig, store: any Store, clock: any KeelClock = SystemClock(), jwksRefetchInterval: TimeInterval = 30) {
        self.settings = config.auth
        self.store = store
        self.clock = clock
        self.hasher = PasswordHasher(cost: config.auth.bcryptCost)
        self.policy = PasswordPolicy(minimumLength: config.auth.passwordMinLength)
        self.box = SecretBox(secretKey: config.secretKey, purpose: "keel identity secrets v1")
        self.keys = SigningKeys(store: store, box: box, algorithm: config.auth.signingAlgorithm, clock: clock,
                                accessTokenTTL: TimeInterval(config.auth.accessTokenTTLSeconds))
        self.tokens = AccessTokens(issuer: config.effectivePublicURL, audience: config.auth.audience,
                                   ttl: TimeInterval(config.auth.accessTokenTTLSeconds), keys: keys, clock: clock)
        self.audit = AuditLog(store: store, clock: clock)
        self.issuers = TrustedIssuers(store: store, clock: clock, logger: logger, refetchInterval: jwksRefetchInterval)
    }

    /// Built-in roles, a signing key and, on an empty store, the first admin.
    public func prepare(printFirstAdminPassword: @Sendable (String, String) -> Void = IdentityService.printOnce) async throws {
        if !box.encrypts {
            logger.warning("KEEL_SECRET_KEY is not set: token signing keys and TOTP secrets are stored unencrypted")
        }
        try await ensureBuiltInRoles()
        do {
            try await keys.prepare()
        } catch let error as SecretBoxError {
            // Retrying cannot help: the store was sealed with another KEEL_SECRET_KEY, or with one now unset.
            throw FatalStartupError("cannot open the stored token signing key: \(error)")
        }
        try await issuers.reload()
        try await bootstrapFirstAdmin(print: printFirstAdminPassword)
        // The decoy hash that unknown emails are checked against, made now rather than on the first such sign-in.
        let hasher = self.hasher
        Task { try? await hasher.warmUp() }
    }

    /// Writes the generated admin password to the terminal (stderr), never to the log stream.
    public static let printOnce: @Sendable (String, String) -> Void = { email, password in
        FileHandle.standardError.write(Data("""

            ┌─ Keel created the first admin ──────────────────────────────
            │ email:    \(email)
            │ password: \(password)
            │ Shown only this once. Sign in and change it (POST /api/v1/me/password).
            └─────────────────────────────────────────────────────────────

            """.utf8))
    }

    // MARK: - Authentication

    public func authenticate(_ request: Request, context: KeelRequestContext) async throws -> Principal? {
        let credential: String
        let viaAPIKeyHeader: Bool
        if let header = request.headers[.authorization] {
            guard let token = Self.bearerToken(header) else {
                metrics.verification(kind: "unknown", outcome: "malformed")
                throw Problem.unauthorized("The Authorization header must be \"Bearer <token>\".", error: "invalid_request")
            }
            credential = token
            viaAPIKeyHeader = false
        } else if let key = request.headers[.xAPIKey] {
            credential = String(key.trimmingSpaces)
            viaAPIKeyHeader = true
        } else {
            return nil
        }
        guard !credential.isEmpty else {
            throw Problem.unauthorized("The credential is empty.", error: "invalid_request")
        }
        if viaAPIKeyHeader || credential.hasPrefix(APIKeyFormat.prefix) {
            return try await authenticateAPIKey(credential)
        }
        return try await authenticateBearer(credential)
    }

    /// The token of `Bearer <token>` (scheme in any case), without Foundation's slow string paths:
    /// this runs on every protected request.
    static func bearerToken(_ header: String) -> String? {
        let trimmed = header.trimmingSpaces
        guard trimmed.utf8.count > 7 else { return nil }
        let scheme = trimmed.utf8.prefix(6)
        guard zip(scheme, "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }), trimmed.utf8.dropFirst(6).first == UInt8(ascii: " ") else { return nil }
        let token = trimmed.dropFirst(7).trimmingSpaces
        return token.isEmpty || token.utf8.contains(UInt8(ascii: " ")) ? nil : String(token)
    }

    func authenticateBearer(_ token: String) async throws -> Principal {
        // A token this replica verified before is Keel's own: skip parsing it to find its issuer.
        if let claims = tokens.cachedClaims(token) { return try await principal(for: claims) }
        let peek: JWTHeaderPeek
        do {
            peek = try JWTHeaderPeek(token)
        } catch {
            metrics.verification(kind: "jwt", outcome: "malformed")
            throw Problem.unauthorized("The bearer token is neither a Keel API key nor a well-formed JWT.", error: "invalid_token")
        }
        if peek.issuer == tokens.issuer {
            return try await authenticateAccessToken(token)
        }
        if let issuer = peek.issuer, issuers.trusts(issuer) {
            do {
                let external = try await issuers.verify(token, issuer: issuer)
                let (permissions, _) = try await permissions(for: external.roles)
                metrics.verification(kind: "external", outcome: "valid")
                return Principal(kind: .external, subject: external.subject, name: external.name, roles: external.roles,
                                 permissions: permissions, credentialID: external.issuerName)
            } catch let rejection as TokenRejection {
                metrics.verification(kind: "external", outcome: "invalid")
                throw Problem.unauthorized("The token was refused: \(rejection.reason).", error: "invalid_token")
            }
        }
        metrics.verification(kind: "jwt", outcome: "untrusted_issuer")
        throw Problem.unauthorized("The token's issuer is neither this Keel nor a trusted issuer.", error: "invalid_token")
    }

    func authenticateAccessToken(_ token: String) async throws -> Principal {
        // Only tokens not seen before get here (then they are cached), so a span per verification is cheap.
        try await withSpan("auth.verify_token") { span in
            let claims: AccessClaims
            do {
                claims = try await tokens.verify(token)
            } catch {
                span.attributes["keel.auth.outcome"] = "invalid"
                metrics.verification(kind: "access_token", outcome: "invalid")
                let reason = (error as? TokenRejection)?.reason ?? "it is invalid"
                throw Problem.unauthorized("The access token was refused: \(reason).", error: "invalid_token")
            }
            span.attributes["keel.auth.outcome"] = "valid"
            return try await principal(for: claims)
        }
    }

    /// The caller behind verified claims, if the account and the session still stand.
    func principal(for claims: AccessClaims) async throws -> Principal {
        guard Double(claims.exp) > clock.now().timeIntervalSince1970 else {
            metrics.verification(kind: "access_token", outcome: "invalid")
            throw Problem.unauthorized("The access token was refused: the token has expired.", error: "invalid_token")
        }
        guard let user = try await userState(id: claims.sub), !user.record.disabled else {
            metrics.verification(kind: "access_token", outcome: "revoked")
            throw Problem.unauthorized("The account of this token is disabled or deleted.", error: "invalid_token")
        }
        guard Double(claims.iat) + 1 > user.tokensValidAfter.timeIntervalSince1970, try await !isSessionRevoked(claims.sid) else {
            metrics.verification(kind: "access_token", outcome: "revoked")
            throw Problem.unauthorized("The session of this token has ended; sign in again.", error: "invalid_token")
        }
        let (permissions, requiresTOTP) = try await permissions(for: user.record.roles)
        metrics.validAccessToken.increment()
        return Principal(kind: user.isServiceAccount ? .serviceAccount : .user, subject: user.id, name: user.displayName,
                         roles: user.record.roles, permissions: permissions, credentialID: claims.sid,
                         mustEnrollSecondFactor: requiresTOTP && !user.record.totpEnabled)
    }

    func authenticateAPIKey(_ key: String) async throws -> Principal {
        guard APIKeyFormat.isWellFormed(key) else {
            metrics.verification(kind: "api_key", outcome: "malformed")
            throw Problem.unauthorized("The API key is malformed; Keel API keys start with \(APIKeyFormat.prefix).", error: "invalid_token")
        }
        let now = clock.now()
        let digest = Credential.digest(key)
        let record: APIKeyRecord?
        if let cached = apiKeyCache.value(for: digest, now: now) {
            record = cached
        } else {
            record = try await store.query("SELECT \(unsafeRaw: APIKeyRecord.columns) FROM keel_api_keys WHERE key_hash = \(digest)")
                .first.map(APIKeyRecord.init(row:))
            apiKeyCache.store(record, for: digest, now: now)
        }
        guard let record, record.revokedAt == nil else {
            metrics.verification(kind: "api_key", outcome: "invalid")
            throw Problem.unauthorized("The API key is unknown or revoked.", error: "invalid_token")
        }
        if let expiresAt = record.expiresAt, expiresAt <= now {
            metrics.verification(kind: "api_key", outcome: "expired")
            throw Problem.unauthorized("The API key expired at \(Timestamp.format(expiresAt)).", error: "invalid_token")
        }
        guard let owner = try await userState(id: record.ownerID), !owner.record.disabled else {
            metrics.verification(kind: "api_key", outcome: "revoked")
            throw Problem.unauthorized("The owner of this API key is disabled or deleted.", error: "invalid_token")
        }
        // A key never grants more than its owner currently holds.
        let (ownerPermissions, _) = try await permissions(for: owner.record.roles)
        noteKeyUse(record.id, now: now)
        metrics.validAPIKey.increment()
        return Principal(kind: .apiKey, subject: owner.id, name: record.name, roles: owner.record.roles,
                         permissions: Set(record.permissions).intersection(ownerPermissions), credentialID: record.id)
    }

    /// Records `last_used_at` at most once a minute per key per replica, off the request path.
    private func noteKeyUse(_ id: String, now: Date) {
        guard keyLastUsedWrites.value(for: id, now: now) == nil else { return }
        keyLastUsedWrites.store(true, for: id, now: now)
        let store = self.store
        Task { try? await store.execute("UPDATE keel_api_keys SET last_used_at = \(now) WHERE id = \(id)") }
    }

    // MARK: - Cached state

    func userState(id: String) async throws -> UserState? {
        let now = clock.now()
        if let cached = userCache.value(for: id, now: now) { return cached }
        let user = try await store.query("SELECT \(unsafeRaw: UserState.columns) FROM keel_users WHERE id = \(id)").first.map(UserState.init(row:))
        userCache.store(user, for: id, now: now)
        return user
    }

    func isSessionRevoked(_ family: String) async throws -> Bool {
        let now = clock.now()
        if let cached = sessionCache.value(for: family, now: now) { return cached }
        let revoked = !(try await store.query(
            "SELECT id FROM keel_refresh_tokens WHERE family_id = \(family) AND revoked_at IS NOT NULL LIMIT 1").isEmpty)
        sessionCache.store(revoked, for: family, now: now)
        return revoked
    }

    func allRoles() async throws -> [String: RoleRecord] {
        let now = clock.now()
        if let cached = roleCache.value(for: "all", now: now) { return cached }
        let rows = try await store.query("SELECT * FROM keel_roles")
        let roles = Dictionary(uniqueKeysWithValues: try rows.map { row in let role = try RoleRecord(row: row); return (role.name, role) })
        roleCache.store(roles, for: "all", now: now)
        return roles
    }

    /// The union of the roles' permissions, and whether any of them requires TOTP.
    func permissions(for roleNames: [String]) async throws -> (Set<String>, requiresTOTP: Bool) {
        let key = roleNames.joined(separator: ",")
        let now = clock.now()
        if let cached = permissionCache.value(for: key, now: now) { return cached }
        let roles = try await allRoles()
        var permissions = Set<String>()
        var requiresTOTP = false
        for name in roleNames {
            guard let role = roles[name] else { continue }
            permissions.formUnion(role.permissions)
            requiresTOTP = requiresTOTP || role.requireTOTP
        }
        permissionCache.store((permissions, requiresTOTP), for: key, now: now)
        return (permissions, requiresTOTP)
    }

    /// Forgets roles and the permissions derived from them after a role changed.
    func forgetRoles() {
        roleCache.removeAll()
        permissionCache.removeAll()
    }

    /// Forgets what this replica cached about a user and its sessions after a change.
    func invalidate(user id: String) {
        userCache.remove(id)
        sessionCache.removeAll()
        apiKeyCache.removeAll()
        tokens.forgetAll()
    }
}

extension HTTPField.Name {
    static let xAPIKey = HTTPField.Name("X-API-Key")!
}

/// `keel_` and 43 base64url characters: 256 random bits.
enum APIKeyFormat {
    static let prefix = "keel_"

    static func make() -> String { Credential.random(prefix: prefix, bytes: 32) }

    static func isWellFormed(_ key: String) -> Bool {
        key.hasPrefix(prefix) && key.utf8.count == prefix.utf8.count + 43
            && key.utf8.dropFirst(prefix.utf8.count).allSatisfy { $0.isBase64URL }
    }
}

extension UInt8 {
    var isBase64URL: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || self == UInt8(ascii: "-") || self == UInt8(ascii: "_")
    }
}

/// Counters for `/metrics`, with handles kept so the per-request verification count costs no lookup
/// in the metrics registry.
final class IdentityMetrics: Sendable {
    private let counters = Mutex<[String: Counter]>([:])
    /// The outcomes of almost every request, kept apart from the lookup above.
    let validAccessToken = Counter(label: "keel_auth_token_verifications_total", dimensions: [("kind", "access_token"), ("outcome", "valid")])
    let validAPIKey = Counter(label: "keel_auth_token_verifications_total", dimensions: [("kind", "api_key"), ("outcome", "valid")])

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        let key = label + dimensions.map { "|" + $0.1 }.joined()
        return counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: label, dimensions: dimensions)
            counters[key] = counter
            return counter
        }
    }

    func login(_ outcome: String) {
        counter("keel_auth_logins_total", [("outcome", outcome)]).increment()
    }

    func verification(kind: String, outcome: String) {
        counter("keel_auth_token_verifications_total", [("kind", kind), ("outcome", outcome)]).increment()
    }

    func refresh(_ outcome: String) {
        counter("keel_auth_refreshes_total", [("outcome", outcome)]).increment()
    }

    func activeSessions(_ count: Int) {
        Gauge(label: "keel_auth_active_sessions").record(count)
    }
}

extension IdentityService {
    /// What the command line needs before managing identities: built-in roles and signing keys. It
    /// never creates the first admin; `keel up` does that.
    public func prepareForCommandLine() async throws {
        try await ensureBuiltInRoles()
        try await keys.prepare()
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    var trimmingSpaces: SubSequence {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else { return self[endIndex...] }
        return self[start...end]
    }
}
