import Foundation
import KeelCore
import KeelServer
import KeelStore

/// `POST /api/v1/users`: a person (email, optional password) or a service account (name only).
public struct NewUser: Decodable, Sendable {
    public var kind: String?
    public var email: String?
    public var name: String?
    public var password: String?
    public var roles: [String]?

    public init(kind: String? = nil, email: String? = nil, name: String? = nil, password: String? = nil, roles: [String]? = nil) {
        self.kind = kind
        self.email = email
        self.name = name
        self.password = password
        self.roles = roles
    }
}

/// `PATCH /api/v1/users/{id}`.
public struct UserChange: Decodable, Sendable {
    public var name: String?
    public var roles: [String]?
    public var disabled: Bool?

    public init(name: String? = nil, roles: [String]? = nil, disabled: Bool? = nil) {
        self.name = name
        self.roles = roles
        self.disabled = disabled
    }
}

/// A single-use token that sets a password, for invitations and resets.
public struct PasswordSetupToken: Codable, Sendable {
    public var token: String
    public var expiresAt: Date

    enum CodingKeys: String, CodingKey {
        case token
        case expiresAt = "expires_at"
    }
}

public struct CreatedUser: Encodable, Sendable {
    public var user: UserRecord
    /// Present when no password was given: hand it to the person to choose one.
    public var passwordSetup: PasswordSetupToken?

    enum CodingKeys: String, CodingKey {
        case user
        case passwordSetup = "password_setup"
    }
}

extension IdentityService {
    static let passwordTokenTTL: TimeInterval = 3600
    /// 1–64 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
    static func isValidServiceAccountName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        guard (1...64).contains(bytes.count), isAlphanumeric(bytes[0]) else { return false }
        return bytes.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    // MARK: - Users

    /// - Parameter caller: `nil` for the local command line, which may do anything.
    public func createUser(_ input: NewUser, caller: Principal?, actor: AuditActor) async throws -> CreatedUser {
        let kind = input.kind ?? UserState.userKind
        var errors: [FieldError] = []
        var email: String?
        var name = input.name?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        switch kind {
        case UserState.userKind:
            let candidate = (input.email ?? "").trimmingCharacters(in: .whitespaces).lowercased()
            if isPlausibleEmail(candidate) { email = candidate } else {
                errors.append(FieldError(field: "email", message: input.email == nil ? "is required" : "must be an email address such as ada@example.com"))
            }
            if name.isEmpty { name = candidate.split(separator: "@").first.map(String.init) ?? candidate }
            if let password = input.password, let violation = policy.violation(password, email: candidate) {
                errors.append(FieldError(field: "password", message: violation))
            }
        case UserState.serviceAccountKind:
            if !Self.isValidServiceAccountName(name) {
                errors.append(FieldError(field: "name", message: "must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"))
            }
            if input.email != nil { errors.append(FieldError(field: "email", message: "must be absent for a service account")) }
            if input.password != nil { errors.append(FieldError(field: "password", message: "must be absent: service accounts sign in with API keys")) }
        default:
            errors.append(FieldError(field: "kind", message: "must be \"user\" or \"service_account\""))
        }
        if name.count > 200 { errors.append(FieldError(field: "name", message: "must be at most 200 characters")) }
        if name.containsControlCharacters { errors.append(FieldError(field: "name", message: "must not contain control characters")) }
        let roles = input.roles ?? (kind == UserState.userKind ? [BuiltInRoles.viewer] : [])
        errors += try await roleErrors(roles)
        guard errors.isEmpty else { throw Problem.validation("The user is invalid.", errors: errors) }
        try await checkGrant(roles: roles, caller: caller)

        let now = clock.now()
        let id = KeelID.make(prefix: kind == UserState.userKind ? "usr" : "svc", now: now)
        let hash = try await input.password.asyncMap { try await hasher.hash($0) }
        do {
            try await store.execute("""
                INSERT INTO keel_users (id, kind, email, name, password_hash, roles, disabled, totp_secret, totp_enabled, totp_last_step,
                                        tokens_valid_after, created_at, updated_at, last_login_at)
                VALUES (\(id), \(kind), \(email), \(name), \(hash), \(encodeList(roles)), \(false), \(Optional<String>.none), \(false), \(0),
                        \(now), \(now), \(now), \(Optional<Date>.none))
                """)
        } catch {
            guard error.isConstraintViolation else { throw error }
            throw Problem.conflict(kind == UserState.userKind ? "A user with the email \(email ?? "") already exists."
                                                                : "A service account named \(name) already exists.")
        }
        let setup = (kind == UserState.userKind && input.password == nil) ? try await issuePasswordToken(userID: id) : nil
        try await audit.record("user.create", actor: actor, target: id, detail: ["kind": kind, "roles": roles.joined(separator: ",")])
        guard let user = try await freshUser(id) else { throw Problem.notFound("The user vanished while being created.") }
        return CreatedUser(user: user.record, passwordSetup: setup)
    }

    public func listUsers(kind: String?, limit: Int, after: String?) async throws -> Page<UserRecord> {
        var query: SQLQuery = "SELECT \(unsafeRaw: UserState.columns) FROM keel_users WHERE 1 = 1"
        if let kind { query.append(" AND kind = \(kind)") }
        if let after { query.append(" AND id > \(after)") }
        query.append(" ORDER BY id LIMIT \(limit + 1)")
        let rows = try await store.query(query)
        let users = try rows.prefix(limit).map { try UserState(row: $0).record }
        return Page(items: users, nextAfter: rows.count > limit ? users.last?.id : nil)
    }

    public func user(id: String) async throws -> UserRecord {
        guard let user = try await freshUser(id) else { throw Problem.notFound("No user has the id \(id).") }
        return user.record
    }

    /// Finds a user by id or email, for the command line.
    public func user(idOrEmail: String) async throws -> UserRecord {
        let key = idOrEmail.lowercased()
        guard let row = try await store.query("SELECT id FROM keel_users WHERE id = \(idOrEmail) OR email = \(key)").first else {
            throw Problem.notFound("No user has the id or email \(idOrEmail).")
        }
        return try await user(id: try row.string("id"))
    }

    public func updateUser(id: String, _ change: UserChange, caller: Principal?, actor: AuditActor) async throws -> UserRecord {
        guard let target = try await freshUser(id) else { throw Problem.notFound("No user has the id \(id).") }
        if let caller, caller.subject == id, change.roles != nil || change.disabled != nil {
            throw Problem.forbidden("You cannot change your own roles or disable yourself; ask another administrator.")
        }
        try await checkMayManage(target, caller: caller)
        var errors: [FieldError] = []
        if let name = change.name, name.trimmingCharacters(in: .whitespaces).isEmpty || name.count > 200 || name.containsControlCharacters {
            errors.append(FieldError(field: "name", message: "must be 1-200 characters, without control characters"))
        }
        if let roles = change.roles { errors += try await roleErrors(roles) }
        guard errors.isEmpty else { throw Problem.validation("The change is invalid.", errors: errors) }
        if let roles = change.roles { try await checkGrant(roles: roles, caller: caller) }
        let newRoles = change.roles ?? target.record.roles
        let disabled = change.disabled ?? target.record.disabled
        if (!newRoles.contains(BuiltInRoles.admin) || disabled), try await isLastAdmin(target) {
            throw Problem.conflict("\(target.displayName) is the last enabled admin; make another admin first.")
        }
        let now = clock.now()
        try await store.transaction { tx in
            try await tx.execute("""
                UPDATE keel_users SET name = \(change.name ?? target.record.name), roles = \(encodeList(newRoles)), disabled = \(disabled),
                    updated_at = \(now) WHERE id = \(id)
                """)
            if disabled && !target.record.disabled { try await self.revokeAllSessions(userID: id, in: tx) }
        }
        invalidate(user: id)
        var detail: [String: String] = [:]
        if let roles = change.roles, roles.sorted() != target.record.roles.sorted() {
            detail["roles_before"] = target.record.roles.joined(separator: ",")
            detail["roles_after"] = roles.joined(separator: ",")
        }
        if disabled != target.record.disabled { detail["disabled"] = String(disabled) }
        let action = change.disabled == true && !target.record.disabled ? "user.disable"
            : change.disabled == false && target.record.disabled ? "user.enable"
            : detail["roles_after"] != nil ? "user.roles_change" : "user.update"
        try await audit.record(action, actor: actor, target: id, detail: detail)
        return try await user(id: id)
    }

    public func deleteUser(id: String, caller: Principal?, actor: AuditActor) async throws {
        guard let target = try await freshUser(id) else { throw Problem.notFound("No user has the id \(id).") }
        if caller?.subject == id { throw Problem.forbidden("You cannot delete yourself.") }
        try await checkMayManage(target, caller: caller)
        if try await isLastAdmin(target) { throw Problem.conflict("\(target.displayName) is the last enabled admin; make another admin first.") }
        try await store.execute("DELETE FROM keel_users WHERE id = \(id)")
        invalidate(user: id)
        try await audit.record("user.delete", actor: actor, target: id, detail: ["email": target.record.email ?? target.record.name])
    }

    // MARK: - Passwords

    public func issuePasswordReset(userID: String, caller: Principal?, actor: AuditActor) async throws -> PasswordSetupToken {
        guard let target = try await freshUser(userID), !target.isServiceAccount else { throw Problem.notFound("No user has the id \(userID).") }
        try await checkMayManage(target, caller: caller)
        let token = try await issuePasswordToken(userID: userID)
        try await audit.record("user.password_reset.issue", actor: actor, target: userID)
        return token
    }

    func issuePasswordToken(userID: String) async throws -> PasswordSetupToken {
        let now = clock.now()
        let token = Credential.random(prefix: "kp_", bytes: 32)
        let expires = now.addingTimeInterval(Self.passwordTokenTTL)
        try await store.execute("""
            INSERT INTO keel_password_resets (token_hash, user_id, created_at, expires_at) VALUES (\(Credential.digest(token)), \(userID), \(now), \(expires))
            """)
        return PasswordSetupToken(token: token, expiresAt: expires)
    }

    /// Sets a password with a reset token: single use, short-lived, and it ends every session.
    public func resetPassword(token: String, newPassword: String, actor: AuditActor) async throws {
        let now = clock.now()
        let digest = Credential.digest(token)
        guard let row = try await store.query(
            "SELECT user_id FROM keel_password_resets WHERE token_hash = \(digest) AND used_at IS NULL AND expires_at > \(now)").first,
            let user = try await freshUser(try row.string("user_id"))
        else { throw Problem.unauthorized("The reset token is invalid, used or expired.", error: "invalid_token") }
        if let violation = policy.violation(newPassword, email: user.record.email) {
            throw Problem.validation("The new password is too weak.", errors: [FieldError(field: "new_password", message: violation)])
        }
        let hash = try await hasher.hash(newPassword)
        let claimed: Bool = try await store.transaction { tx in
            let used = try await tx.execute(
                "UPDATE keel_password_resets SET used_at = \(now) WHERE token_hash = \(digest) AND used_at IS NULL RETURNING user_id")
            guard !used.isEmpty else { return false }
            try await tx.execute("UPDATE keel_users SET password_hash = \(hash) WHERE id = \(user.id)")
            try await self.revokeAllSessions(userID: user.id, in: tx)
            return true
        }
        guard claimed else { throw Problem.unauthorized("The reset token is invalid, used or expired.", error: "invalid_token") }
        invalidate(user: user.id)
        try await audit.record("user.password_reset", actor: actor, target: user.id)
    }

    public func changePassword(caller: Principal, current: String, new: String, actor: AuditActor) async throws {
        guard caller.kind == .user, let user = try await freshUser(caller.subject) else {
            throw Problem.forbidden("Only users sign in with passwords; API keys and external identities have none.")
        }
        guard try await hasher.verify(current, hash: user.passwordHash) else {
            try await audit.record("user.password_change", outcome: "failure", actor: actor, target: user.id)
            throw Problem.forbidden("The current password is wrong.")
        }
        if let violation = policy.violation(new, email: user.record.email) {
            throw Problem.validation("The new password is too weak.", errors: [FieldError(field: "new_password", message: violation)])
        }
        let hash = try await hasher.hash(new)
        try await store.transaction { tx in
            try await tx.execute("UPDATE keel_users SET password_hash = \(hash) WHERE id = \(user.id)")
            try await self.revokeAllSessions(userID: user.id, in: tx)
        }
        invalidate(user: user.id)
        try await audit.record("user.password_change", actor: actor, target: user.id)
    }

    // MARK: - Rules

    func freshUser(_ id: String) async throws -> UserState? {
        try await store.query("SELECT \(unsafeRaw: UserState.columns) FROM keel_users WHERE id = \(id)").first.map(UserState.init(row:))
    }

    func roleErrors(_ roles: [String]) async throws -> [FieldError] {
        let known = try await freshRoles()
        if roles.count > 50 { return [FieldError(field: "roles", message: "must list at most 50 roles")] }
        return roles.enumerated().compactMap { index, role in
            known[role] == nil ? FieldError(field: "roles[\(index)]", message: "\"\(role)\" is not a role (see GET /api/v1/roles)") : nil
        }
    }

    /// Nobody hands out Keel permissions they do not hold themselves (application permissions are for
    /// whoever manages users and roles to hand out, as in `checkHolds`).
    func checkGrant(roles: [String], caller: Principal?) async throws {
        guard let caller else { return }
        let known = try await freshRoles()
        let granted = roles.reduce(into: Set<String>()) { $0.formUnion((known[$1]?.permissions ?? []).filter(Permissions.isKnown)) }
        let missing = granted.subtracting(caller.permissions)
        guard missing.isEmpty else {
            throw Problem.forbidden("You cannot grant permissions you do not hold: \(missing.sorted().joined(separator: ", ")).")
        }
    }

    /// Nobody manages an account that holds Keel permissions they do not.
    func checkMayManage(_ target: UserState, caller: Principal?) async throws {
        guard let caller else { return }
        let known = try await freshRoles()
        let held = target.record.roles.reduce(into: Set<String>()) { $0.formUnion((known[$1]?.permissions ?? []).filter(Permissions.isKnown)) }
        guard held.isSubset(of: caller.permissions) else {
            throw Problem.forbidden("\(target.displayName) holds permissions you do not; only a peer or superior may change that account.")
        }
    }

    func isLastAdmin(_ target: UserState) async throws -> Bool {
        guard target.record.roles.contains(BuiltInRoles.admin), !target.record.disabled, !target.isServiceAccount else { return false }
        let admins = try await store.query("SELECT id, roles FROM keel_users WHERE kind = 'user' AND disabled = \(false)")
            .filter { (try? decodeList(try $0.string("roles")).contains(BuiltInRoles.admin)) == true }
        return admins.count <= 1
    }

    func freshRoles() async throws -> [String: RoleRecord] {
        forgetRoles()
        return try await allRoles()
    }

    // MARK: - Bootstrap

    func bootstrapFirstAdmin(print: @Sendable (String, String) -> Void) async throws {
        guard try await store.query("SELECT id FROM keel_users WHERE kind = 'user' LIMIT 1").isEmpty else { return }
        let email = settings.adminEmail ?? "admin@keel.local"
        let generated = settings.adminPassword == nil
        let password = settings.adminPassword?.value ?? Credential.random(bytes: 18)
        if let violation = policy.violation(password, email: email) {
            throw FatalStartupError("KEEL_ADMIN_PASSWORD \(violation)")
        }
        do {
            _ = try await createUser(NewUser(email: email, name: "admin", password: password, roles: [BuiltInRoles.admin]),
                                     caller: nil, actor: AuditActor(kind: "system", id: "", name: "bootstrap", clientIP: "local", requestID: ""))
        } catch let problem as Problem where problem.status == .conflict {
            return  // another replica bootstrapped at the same moment
        }
        logger.notice("created the first admin", metadata: ["email": .string(email), "password_source": .string(generated ? "generated" : "KEEL_ADMIN_PASSWORD")])
        if generated { print(email, password) }
    }
}


extension IdentityService {
    /// The id of a user (by id or email) or service account (by name), for the command line.
    public func accountID(_ reference: String) async throws -> String {
        let rows = try await store.query("""
            SELECT id FROM keel_users WHERE id = \(reference) OR email = \(reference.lowercased()) OR (kind = 'service_account' AND name = \(reference))
            """)
        guard let row = rows.first else { throw Problem.notFound("No user or service account is \(reference).") }
        return try row.string("id")
    }
}

extension String {
    /// Control characters other than tab and newline, which have no place in names.
    var containsControlCharacters: Bool {
        unicodeScalars.contains { $0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t" }
    }
}
