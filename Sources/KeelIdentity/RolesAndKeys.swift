import Foundation
import HummingbirdOTP
import KeelCore
import KeelServer
import KeelStore

public struct NewRole: Decodable, Sendable {
    public var name: String
    public var description: String?
    public var permissions: [String]
    public var requireTOTP: Bool?

    enum CodingKeys: String, CodingKey {
        case name, description, permissions
        case requireTOTP = "require_totp"
    }
}

public struct RoleChange: Decodable, Sendable {
    public var description: String?
    public var permissions: [String]?
    public var requireTOTP: Bool?

    enum CodingKeys: String, CodingKey {
        case description, permissions
        case requireTOTP = "require_totp"
    }
}

public struct NewAPIKey: Decodable, Sendable {
    public var name: String
    public var permissions: [String]
    public var expiresAt: Date?
    /// A service account (or another user) to own the key; needs `users:write`. Defaults to the caller.
    public var ownerID: String?

    public init(name: String, permissions: [String], expiresAt: Date? = nil, ownerID: String? = nil) {
        self.name = name
        self.permissions = permissions
        self.expiresAt = expiresAt
        self.ownerID = ownerID
    }

    enum CodingKeys: String, CodingKey {
        case name, permissions
        case expiresAt = "expires_at"
        case ownerID = "owner_id"
    }
}

public struct TOTPEnrollment: Encodable, Sendable {
    public var secret: String
    public var provisioningURI: String

    enum CodingKeys: String, CodingKey {
        case secret
        case provisioningURI = "provisioning_uri"
    }
}

public struct RecoveryCodes: Encodable, Sendable {
    public var recoveryCodes: [String]

    enum CodingKeys: String, CodingKey {
        case recoveryCodes = "recovery_codes"
    }
}

extension IdentityService {
    /// 1–64 characters of `a-z 0-9 _ -`, starting with a letter: role and issuer names.
    static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[0]) else { return false }
        return bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
            || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    // MARK: - Roles

    func ensureBuiltInRoles() async throws {
        let now = clock.now()
        for role in BuiltInRoles.definitions {
            // Built-ins follow the binary's definition; only `require_totp` is the installation's choice.
            try await store.execute("""
                INSERT INTO keel_roles (name, description, permissions, builtin, require_totp, created_at, updated_at)
                VALUES (\(role.name), \(role.description), \(encodeList(role.permissions)), \(true), \(false), \(now), \(now))
                ON CONFLICT (name) DO UPDATE SET description = excluded.description, permissions = excluded.permissions, builtin = excluded.builtin
                """)
        }
        forgetRoles()
    }

    public func listRoles() async throws -> [RoleRecord] {
        try await freshRoles().values.sorted { ($0.builtin ? 0 : 1, $0.name) < ($1.builtin ? 0 : 1, $1.name) }
    }

    public func role(named name: String) async throws -> RoleRecord {
        guard let role = try await freshRoles()[name] else { throw Problem.notFound("No role is named \(name).") }
        return role
    }

    public func createRole(_ input: NewRole, caller: Principal?, actor: AuditActor) async throws -> RoleRecord {
        var errors: [FieldError] = []
        if !Self.isValidName(input.name) {
            errors.append(FieldError(field: "name", message: "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter"))
        }
        errors += permissionErrors(input.permissions)
        if let description = input.description, description.count > 500 || description.containsControlCharacters {
            errors.append(FieldError(field: "description", message: "must be at most 500 characters, without control characters"))
        }
        guard errors.isEmpty else { throw Problem.validation("The role is invalid.", errors: errors) }
        try checkHolds(input.permissions, caller: caller)
        let now = clock.now()
        do {
            try await store.execute("""
                INSERT INTO keel_roles (name, description, permissions, builtin, require_totp, created_at, updated_at)
                VALUES (\(input.name), \(input.description ?? ""), \(encodeList(Set(input.permissions))), \(false), \(input.requireTOTP ?? false), \(now), \(now))
                """)
        } catch {
            guard error.isConstraintViolation else { throw error }
            throw Problem.conflict("A role named \(input.name) already exists.")
        }
        try await audit.record("role.create", actor: actor, target: input.name, detail: ["permissions": input.permissions.sorted().joined(separator: ",")])
        return try await role(named: input.name)
    }

    public func updateRole(named name: String, _ change: RoleChange, caller: Principal?, actor: AuditActor) async throws -> RoleRecord {
        let current = try await role(named: name)
        if current.builtin, change.permissions != nil || change.description != nil {
            throw Problem.conflict("Built-in roles keep their permissions; create a custom role instead. Only require_totp can change.")
        }
        if let permissions = change.permissions {
            let errors = permissionErrors(permissions)
            guard errors.isEmpty else { throw Problem.validation("The role is invalid.", errors: errors) }
            try checkHolds(permissions, caller: caller)
        }
        try checkHolds(current.permissions, caller: caller)
        let permissions = change.permissions.map { encodeList(Set($0)) } ?? encodeList(current.permissions)
        try await store.execute("""
            UPDATE keel_roles SET description = \(change.description ?? current.description), permissions = \(permissions),
                require_totp = \(change.requireTOTP ?? current.requireTOTP), updated_at = \(clock.now()) WHERE name = \(name)
            """)
        forgetRoles()
        try await audit.record("role.update", actor: actor, target: name, detail: [
            "permissions_before": current.permissions.joined(separator: ","),
            "permissions_after": (change.permissions ?? current.permissions).sorted().joined(separator: ","),
            "require_totp": String(change.requireTOTP ?? current.requireTOTP),
        ])
        return try await role(named: name)
    }

    public func deleteRole(named name: String, caller: Principal?, actor: AuditActor) async throws {
        let current = try await role(named: name)
        if current.builtin { throw Problem.conflict("Built-in roles cannot be deleted.") }
        try checkHolds(current.permissions, caller: caller)
        let holders = try await store.query("SELECT roles FROM keel_users").filter { (try? decodeList(try $0.string("roles")).contains(name)) == true }
        if !holders.isEmpty { throw Problem.conflict("\(holders.count) account(s) still hold the role \(name); take it away from them first.") }
        try await store.execute("DELETE FROM keel_roles WHERE name = \(name)")
        forgetRoles()
        try await audit.record("role.delete", actor: actor, target: name)
    }

    func permissionErrors(_ permissions: [String]) -> [FieldError] {
        if permissions.count > 100 { return [FieldError(field: "permissions", message: "must list at most 100 permissions")] }
        return permissions.enumerated().compactMap { index, permission in
            Permissions.isGrantable(permission) ? nil
                : FieldError(field: "permissions[\(index)]",
                             message: "\"\(permission)\" is neither a Keel permission (see GET /api/v1/permissions) nor an application permission such as orders:read")
        }
    }

    /// Keel's own permissions can only be handed on by someone holding them. Application permissions are
    /// the vocabulary of the services behind the gateway: whoever may write roles may grant them (an API
    /// key still only gets what its owner holds).
    func checkHolds(_ permissions: some Sequence<String>, caller: Principal?) throws {
        guard let caller else { return }
        let missing = Set(permissions.filter(Permissions.isKnown)).subtracting(caller.permissions)
        guard missing.isEmpty else {
            throw Problem.forbidden("You cannot grant permissions you do not hold: \(missing.sorted().joined(separator: ", ")).")
        }
    }

    // MARK: - API keys

    public func createAPIKey(_ input: NewAPIKey, caller: Principal?, actor: AuditActor) async throws -> APIKeyRecord {
        var errors: [FieldError] = []
        let name = input.name.trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty || name.count > 100 || name.containsControlCharacters {
            errors.append(FieldError(field: "name", message: "must be 1-100 characters, without control characters"))
        }
        if input.permissions.isEmpty { errors.append(FieldError(field: "permissions", message: "must list at least one permission")) }
        errors += permissionErrors(input.permissions)
        let now = clock.now()
        if let expiresAt = input.expiresAt, expiresAt <= now { errors.append(FieldError(field: "expires_at", message: "must be in the future")) }
        guard errors.isEmpty else { throw Problem.validation("The API key is invalid.", errors: errors) }
        try checkHolds(input.permissions, caller: caller)

        let ownerID: String
        if let requested = input.ownerID, requested != caller?.subject {
            if let caller, !caller.has("users:write") {
                throw Problem.forbidden("Creating keys for other accounts needs the permission users:write.")
            }
            guard let owner = try await freshUser(requested) else {
                throw Problem.validation("The API key is invalid.", errors: [FieldError(field: "owner_id", message: "is not a user or service account")])
            }
            try await checkMayManage(owner, caller: caller)
            ownerID = requested
        } else if let caller, caller.kind != .external {
            ownerID = caller.subject
        } else {
            throw Problem.validation("The API key is invalid.", errors: [FieldError(field: "owner_id", message: "is required here")])
        }

        let key = APIKeyFormat.make()
        let id = KeelID.make(prefix: "key", now: now)
        let prefix = String(key.prefix(APIKeyFormat.prefix.count + 6))
        let createdBy = caller?.subject ?? actor.name
        try await store.execute("""
            INSERT INTO keel_api_keys (id, owner_id, name, prefix, key_hash, permissions, expires_at, last_used_at, revoked_at, created_at, created_by)
            VALUES (\(id), \(ownerID), \(name), \(prefix), \(Credential.digest(key)), \(encodeList(Set(input.permissions))), \(input.expiresAt),
                    \(Optional<Date>.none), \(Optional<Date>.none), \(now), \(createdBy))
            """)
        try await audit.record("apikey.create", actor: actor, target: id, detail: [
            "owner_id": ownerID, "name": name, "permissions": input.permissions.sorted().joined(separator: ","),
        ])
        var record = try await apiKey(id: id)
        record.key = key
        return record
    }

    func apiKey(id: String) async throws -> APIKeyRecord {
        guard let row = try await store.query("SELECT \(unsafeRaw: APIKeyRecord.columns) FROM keel_api_keys WHERE id = \(id)").first else {
            throw Problem.notFound("No API key has the id \(id).")
        }
        return try APIKeyRecord(row: row)
    }

    /// The caller's own keys; every key (or one owner's) with `users:read`.
    public func listAPIKeys(ownerID: String?, caller: Principal?, limit: Int, after: String?) async throws -> Page<APIKeyRecord> {
        var query: SQLQuery = "SELECT \(unsafeRaw: APIKeyRecord.columns) FROM keel_api_keys WHERE 1 = 1"
        let owner = ownerID ?? caller?.subject
        if let caller, owner != caller.subject, !caller.has("users:read") {
            throw Problem.forbidden("Listing other accounts' keys needs the permission users:read.")
        }
        if let owner, owner != "all" { query.append(" AND owner_id = \(owner)") }
        if let after { query.append(" AND id > \(after)") }
        query.append(" ORDER BY id LIMIT \(limit + 1)")
        let rows = try await store.query(query)
        let keys = try rows.prefix(limit).map(APIKeyRecord.init(row:))
        return Page(items: keys, nextAfter: rows.count > limit ? keys.last?.id : nil)
    }

    public func revokeAPIKey(id: String, caller: Principal?, actor: AuditActor) async throws {
        let key = try await apiKey(id: id)
        if let caller, key.ownerID != caller.subject, !caller.has("users:write") {
            throw Problem.notFound("No API key has the id \(id).")
        }
        try await store.execute("UPDATE keel_api_keys SET revoked_at = \(clock.now()) WHERE id = \(id) AND revoked_at IS NULL")
        apiKeyCache.removeAll()
        try await audit.record("apikey.revoke", actor: actor, target: id, detail: ["owner_id": key.ownerID, "name": key.name])
    }

    // MARK: - TOTP enrolment

    public func beginTOTPEnrollment(caller: Principal, actor: AuditActor) async throws -> TOTPEnrollment {
        let user = try await humanUser(caller)
        if user.record.totpEnabled { throw Problem.conflict("Two-factor authentication is already on; turn it off first to re-enrol.") }
        // HummingbirdOTP keys HMAC with the secret's UTF-8 bytes; authenticator apps get their base32.
        let secret = Credential.random(bytes: 20)
        try await store.execute("UPDATE keel_users SET totp_secret = \(try box.seal(Data(secret.utf8))), updated_at = \(clock.now()) WHERE id = \(user.id)")
        userCache.remove(user.id)
        let uri = TOTP(secret: secret).createAuthenticatorURL(label: "Keel:\(user.displayName)", issuer: "Keel")
        let base32 = URLComponents(string: uri)?.queryItems?.first { $0.name == "secret" }?.value ?? ""
        try await audit.record("user.totp.begin", actor: actor, target: user.id)
        return TOTPEnrollment(secret: base32, provisioningURI: uri)
    }

    public func confirmTOTPEnrollment(caller: Principal, code: String, actor: AuditActor) async throws -> RecoveryCodes {
        let user = try await humanUser(caller)
        if user.record.totpEnabled { throw Problem.conflict("Two-factor authentication is already on.") }
        guard user.totpSecret != nil else { throw Problem.conflict("Start enrolment first: POST /api/v1/me/totp.") }
        guard try await verifySecondFactor(user: user, code: code) else {
            try await audit.record("user.totp.enable", outcome: "failure", actor: actor, target: user.id)
            throw Problem.validation("The code does not match.", errors: [FieldError(field: "code", message: "must be the current 6-digit code")])
        }
        let codes = (0..<10).map { _ in Self.recoveryCode() }
        try await store.transaction { tx in
            try await tx.execute("DELETE FROM keel_recovery_codes WHERE user_id = \(user.id)")
            for code in codes {
                try await tx.execute("INSERT INTO keel_recovery_codes (code_hash, user_id) VALUES (\(Credential.digest(code)), \(user.id))")
            }
            try await tx.execute("UPDATE keel_users SET totp_enabled = \(true), updated_at = \(self.clock.now()) WHERE id = \(user.id)")
        }
        invalidate(user: user.id)
        try await audit.record("user.totp.enable", actor: actor, target: user.id)
        return RecoveryCodes(recoveryCodes: codes.map(Self.grouped))
    }

    public func disableTOTP(caller: Principal, code: String, actor: AuditActor) async throws {
        let user = try await humanUser(caller)
        guard user.record.totpEnabled else { throw Problem.conflict("Two-factor authentication is not on.") }
        guard try await verifySecondFactor(user: user, code: code) else {
            throw Problem.forbidden("The two-factor code is wrong or was already used.")
        }
        try await store.transaction { tx in
            try await tx.execute("DELETE FROM keel_recovery_codes WHERE user_id = \(user.id)")
            try await tx.execute("""
                UPDATE keel_users SET totp_enabled = \(false), totp_secret = \(Optional<String>.none), updated_at = \(self.clock.now()) WHERE id = \(user.id)
                """)
        }
        invalidate(user: user.id)
        try await audit.record("user.totp.disable", actor: actor, target: user.id)
    }

    func humanUser(_ caller: Principal) async throws -> UserState {
        guard caller.kind == .user, let user = try await freshUser(caller.subject) else {
            throw Problem.forbidden("Only users signed in with a password have a second factor.")
        }
        return user
    }

    /// 20 Crockford base32 characters: 100 bits.
    static func recoveryCode() -> String {
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet[Int.random(in: 0..<32, using: &generator)] })
    }

    static func grouped(_ code: String) -> String {
        stride(from: 0, to: code.count, by: 5).map { start in
            String(code.dropFirst(start).prefix(5))
        }.joined(separator: "-")
    }
}
