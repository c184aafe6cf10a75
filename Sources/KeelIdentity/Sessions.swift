import Foundation
import HummingbirdOTP
import KeelCore
import KeelServer
import KeelStore
import Tracing

/// The OAuth2-shaped answer of login and refresh.
public struct TokenResponse: Codable, Sendable {
    public var accessToken: String
    public var refreshToken: String
    public var tokenType = "Bearer"
    public var expiresIn: Int

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token"
        case refreshToken = "refresh_token"
        case tokenType = "token_type"
        case expiresIn = "expires_in"
    }
}

/// Refresh tokens are `kr_` and 256 random bits; only their SHA-256 is stored.
enum RefreshTokenFormat {
    static let prefix = "kr_"
    static func make() -> String { Credential.random(prefix: prefix, bytes: 32) }
    static func isWellFormed(_ token: String) -> Bool {
        token.hasPrefix(prefix) && token.utf8.count == prefix.utf8.count + 43 && token.utf8.dropFirst(3).allSatisfy(\.isBase64URL)
    }
}

extension IdentityService {
    static let invalidCredentials = "Invalid email or password."

    // MARK: - Login

    public func login(email rawEmail: String, password: String, totp: String?, actor: AuditActor) async throws -> TokenResponse {
        try await withSpan("auth.login") { span in
            let email = rawEmail.trimmingCharacters(in: .whitespaces).lowercased()
            let throttleKeys = ["account:" + email, "ip:" + actor.clientIP]
            if let wait = try await lockoutRemaining(throttleKeys) {
                metrics.login("locked")
                span.attributes["keel.auth.outcome"] = "locked"
                try await audit.record("auth.login", outcome: "locked", actor: actor, target: email)
                throw Problem.tooManyRequests("Too many failed sign-ins; retry in \(wait) seconds.", retryAfterSeconds: wait)
            }
            let user = try await store.query("SELECT \(unsafeRaw: UserState.columns) FROM keel_users WHERE email = \(email) AND kind = 'user'")
                .first.map(UserState.init(row:))
            // Unknown accounts cost the same bcrypt check as wrong passwords and get the same answer.
            let passwordMatches = try await hasher.verify(password, hash: user?.passwordHash)
            guard let user, passwordMatches, !user.record.disabled else {
                try await recordFailure(throttleKeys)
                let reason = user == nil ? "unknown_account" : passwordMatches ? "disabled" : "wrong_password"
                metrics.login("failure")
                span.attributes["keel.auth.outcome"] = "failure"
                try await audit.record("auth.login", outcome: "failure", actor: actor, target: user?.id ?? email, detail: ["reason": reason])
                throw Problem.unauthorized(Self.invalidCredentials)
            }
            if user.record.totpEnabled {
                guard let totp, !totp.isEmpty else {
                    metrics.login("totp_required")
                    throw Problem(status: .unauthorized, slug: "totp-required", title: "Second factor required",
                                  detail: "Enter the code from your authenticator app (or a recovery code) as \"totp\".",
                                  headers: [.wwwAuthenticate: "Bearer realm=\"keel\""])
                }
                guard try await verifySecondFactor(user: user, code: totp) else {
                    try await recordFailure(throttleKeys)
                    metrics.login("failure")
                    try await audit.record("auth.login", outcome: "failure", actor: actor, target: user.id, detail: ["reason": "wrong_totp"])
                    throw Problem.unauthorized("The two-factor code is wrong or was already used.")
                }
            }
            try await store.execute("DELETE FROM keel_login_throttle WHERE key = \(throttleKeys[0])")
            let now = clock.now()
            try await store.execute("UPDATE keel_users SET last_login_at = \(now) WHERE id = \(user.id)")
            let response = try await startSession(for: user, family: nil, clientIP: actor.clientIP)
            metrics.login("success")
            span.attributes["keel.auth.outcome"] = "success"
            try await audit.record("auth.login", actor: actor, target: user.id)
            return response
        }
    }

    /// Signs an access token and stores a new refresh token, in `family` or a new session.
    func startSession(for user: UserState, family: String?, clientIP: String, in tx: (any StoreTransaction)? = nil) async throws -> TokenResponse {
        let now = clock.now()
        let session = family ?? KeelID.make(prefix: "ses", now: now)
        let refresh = RefreshTokenFormat.make()
        let insert: SQLQuery = """
            INSERT INTO keel_refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at, client_ip)
            VALUES (\(KeelID.make(prefix: "rt", now: now)), \(session), \(user.id), \(Credential.digest(refresh)), \(now),
                    \(now.addingTimeInterval(TimeInterval(settings.refreshTokenTTLSeconds))), \(clientIP))
            """
        if let tx { try await tx.execute(insert) } else { try await store.execute(insert) }
        let claims = tokens.claims(subject: user.id, roles: user.record.roles, session: session, email: user.record.email, name: user.record.name)
        return TokenResponse(accessToken: try await tokens.sign(claims), refreshToken: refresh, expiresIn: Int(tokens.ttl))
    }

    // MARK: - Refresh

    private enum RefreshOutcome: Sendable {
        case rotated(TokenResponse)
        case refused(String)
        case reused(family: String, user: String)
    }

    public func refresh(token: String, actor: AuditActor) async throws -> TokenResponse {
        try await withSpan("auth.refresh") { span in
            guard RefreshTokenFormat.isWellFormed(token) else {
                metrics.refresh("invalid")
                throw Problem.unauthorized("The refresh token is malformed.", error: "invalid_token")
            }
            let digest = Credential.digest(token)
            let now = clock.now()
            let leeway = TimeInterval(settings.refreshReuseLeewaySeconds)
            let outcome: RefreshOutcome = try await store.transaction { tx in
                guard let row = try await tx.query("""
                    SELECT id, family_id, user_id, created_at, expires_at, used_at, revoked_at FROM keel_refresh_tokens WHERE token_hash = \(digest)
                    """).first else { return .refused("The refresh token is unknown.") }
                let family = try row.string("family_id"), userID = try row.string("user_id")
                if try row.optionalDate("revoked_at") != nil { return .refused("The session was ended; sign in again.") }
                if try row.date("expires_at") <= now { return .refused("The refresh token has expired; sign in again.") }
                if let usedAt = try row.optionalDate("used_at") {
                    guard now.timeIntervalSince(usedAt) <= leeway else {
                        // A rotated token came back: someone holds a copy. End the whole session.
                        try await tx.execute("UPDATE keel_refresh_tokens SET revoked_at = \(now) WHERE family_id = \(family) AND revoked_at IS NULL")
                        return .reused(family: family, user: userID)
                    }
                } else {
                    try await tx.execute("UPDATE keel_refresh_tokens SET used_at = \(now) WHERE id = \(try row.string("id")) AND used_at IS NULL")
                }
                guard let user = try await tx.query("SELECT \(unsafeRaw: UserState.columns) FROM keel_users WHERE id = \(userID)")
                    .first.map(UserState.init(row:)), !user.record.disabled
                else { return .refused("The account is disabled or deleted.") }
                guard user.tokensValidAfter <= (try row.date("created_at")) else { return .refused("The session was ended; sign in again.") }
                return .rotated(try await self.startSession(for: user, family: family, clientIP: actor.clientIP, in: tx))
            }
            switch outcome {
            case .rotated(let response):
                metrics.refresh("rotated")
                span.attributes["keel.auth.outcome"] = "rotated"
                return response
            case .refused(let reason):
                metrics.refresh("refused")
                span.attributes["keel.auth.outcome"] = "refused"
                throw Problem.unauthorized(reason, error: "invalid_token")
            case .reused(let family, let user):
                metrics.refresh("reuse_detected")
                span.attributes["keel.auth.outcome"] = "reuse_detected"
                sessionCache.remove(family)
                tokens.forgetAll()
                logger.warning("refresh token reuse; session revoked", metadata: ["session": .string(family), "user_id": .string(user)])
                try await audit.record("auth.refresh.reuse", outcome: "revoked", actor: actor, target: user, detail: ["session": family])
                throw Problem.unauthorized("This refresh token was already used, so the session has been revoked; sign in again.",
                                           error: "invalid_token")
            }
        }
    }

    /// Ends the session of `token`. Unknown tokens are not an error (RFC 7009), so logout is idempotent.
    public func logout(token: String, actor: AuditActor) async throws {
        guard RefreshTokenFormat.isWellFormed(token) else {
            throw Problem.validation("The refresh token is malformed.", errors: [FieldError(field: "refresh_token", message: "must be a refresh token")])
        }
        let now = clock.now()
        guard let row = try await store.query(
            "SELECT family_id, user_id FROM keel_refresh_tokens WHERE token_hash = \(Credential.digest(token))").first else { return }
        let family = try row.string("family_id")
        try await store.execute("UPDATE keel_refresh_tokens SET revoked_at = \(now) WHERE family_id = \(family) AND revoked_at IS NULL")
        sessionCache.remove(family)
        tokens.forgetAll()
        try await audit.record("auth.logout", actor: actor, target: try row.string("user_id"), detail: ["session": family])
    }

    /// The user behind a browser session. The console keeps the refresh token of a `login` in an `HttpOnly`
    /// cookie and never rotates it, so the session lives as long as the refresh token and ends with it: on
    /// logout, when the account is disabled or deleted, or when all its sessions are revoked. `nil` when the
    /// token is unknown, expired or revoked.
    public func principal(forSessionToken token: String) async throws -> Principal? {
        guard RefreshTokenFormat.isWellFormed(token) else { return nil }
        guard let row = try await store.query("""
            SELECT family_id, user_id, expires_at, revoked_at, created_at FROM keel_refresh_tokens WHERE token_hash = \(Credential.digest(token))
            """).first else { return nil }
        let now = clock.now()
        guard try row.optionalDate("revoked_at") == nil, try row.date("expires_at") > now,
              let user = try await userState(id: try row.string("user_id")), !user.record.disabled, !user.isServiceAccount,
              try row.date("created_at").timeIntervalSince1970 + 1 > user.tokensValidAfter.timeIntervalSince1970 else { return nil }
        let (permissions, requiresTOTP) = try await permissions(for: user.record.roles)
        return Principal(kind: .user, subject: user.id, name: user.displayName, roles: user.record.roles, permissions: permissions,
                         credentialID: try row.string("family_id"), mustEnrollSecondFactor: requiresTOTP && !user.record.totpEnabled)
    }

    /// Ends every session of a user and every access token issued before now.
    func revokeAllSessions(userID: String, in tx: any StoreTransaction) async throws {
        let now = clock.now()
        try await tx.execute("UPDATE keel_refresh_tokens SET revoked_at = \(now) WHERE user_id = \(userID) AND revoked_at IS NULL")
        try await tx.execute("UPDATE keel_users SET tokens_valid_after = \(now), updated_at = \(now) WHERE id = \(userID)")
    }

    // MARK: - Throttling

    static let lockoutCeiling = 900
    static let failureMemory: TimeInterval = 900

    /// Seconds until the first of `keys` unlocks, or `nil` when none is locked.
    func lockoutRemaining(_ keys: [String]) async throws -> Int? {
        let now = clock.now()
        let rows = try await store.query("SELECT locked_until FROM keel_login_throttle WHERE key = \(keys[0]) OR key = \(keys[1])")
        let waits = try rows.compactMap { try $0.optionalDate("locked_until") }.filter { $0 > now }.map { Int($0.timeIntervalSince(now).rounded(.up)) }
        return waits.max()
    }

    /// Counts a failure against each key; from the threshold on, each further failure locks the key for
    /// twice as long as the last (1 s, 2 s, 4 s, ... up to 15 minutes). A client IP may fail four times
    /// as often as one account, as many people can share an address.
    func recordFailure(_ keys: [String]) async throws {
        let now = clock.now()
        let accountThreshold = settings.lockoutThreshold
        try await store.transaction { tx in
            for key in keys {
                let threshold = key.hasPrefix("ip:") ? accountThreshold * 4 : accountThreshold
                let row = try await tx.query("SELECT failures, updated_at FROM keel_login_throttle WHERE key = \(key)").first
                var failures = try row.map { try $0.int("failures") } ?? 0
                if let updated = try row?.date("updated_at"), now.timeIntervalSince(updated) > Self.failureMemory { failures = 0 }
                failures += 1
                let lockedUntil: Date? = failures >= threshold
                    ? now.addingTimeInterval(TimeInterval(min(1 << min(failures - threshold, 20), Self.lockoutCeiling))) : nil
                try await tx.execute("""
                    INSERT INTO keel_login_throttle (key, failures, locked_until, updated_at) VALUES (\(key), \(failures), \(lockedUntil), \(now))
                    ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, locked_until = excluded.locked_until, updated_at = excluded.updated_at
                    """)
            }
        }
    }

    // MARK: - Second factor

    /// A current TOTP code (one step of drift either way, each step usable once) or an unused recovery code.
    func verifySecondFactor(user: UserState, code rawCode: String) async throws -> Bool {
        let code = rawCode.trimmingCharacters(in: .whitespaces)
        if code.count == 6, code.allSatisfy(\.isASCIIDigit) {
            guard let sealed = user.totpSecret, let secret = try? String(decoding: box.open(sealed), as: UTF8.self) else { return false }
            let totp = TOTP(secret: secret)
            let step = Int(clock.now().timeIntervalSince1970) / 30
            for candidate in [step - 1, step, step + 1] where candidate > user.totpLastStep {
                let expected = String(totp.compute(date: Date(timeIntervalSince1970: TimeInterval(candidate * 30))))
                let padded = String(repeating: "0", count: 6 - expected.count) + expected
                guard Credential.constantTimeEquals(padded, code) else { continue }
                let claimed = try await store.execute(
                    "UPDATE keel_users SET totp_last_step = \(candidate) WHERE id = \(user.id) AND totp_last_step < \(candidate) RETURNING id")
                userCache.remove(user.id)
                return !claimed.isEmpty
            }
            return false
        }
        let normalized = code.lowercased().replacingOccurrences(of: "-", with: "")
        guard normalized.count == 20 else { return false }
        let used = try await store.execute("""
            UPDATE keel_recovery_codes SET used_at = \(clock.now())
            WHERE code_hash = \(Credential.digest(normalized)) AND user_id = \(user.id) AND used_at IS NULL RETURNING code_hash
            """)
        return !used.isEmpty
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
