import Foundation
import KeelCore
import KeelStore
import Synchronization

/// A user or service account as the API shows it: no password hash, no TOTP secret.
public struct UserRecord: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var email: String?
    public var name: String
    public var roles: [String]
    public var disabled: Bool
    public var totpEnabled: Bool
    public var createdAt: Date
    public var updatedAt: Date
    public var lastLoginAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, kind, email, name, roles, disabled
        case totpEnabled = "totp_enabled"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
        case lastLoginAt = "last_login_at"
    }
}

/// A user row with what authentication needs; never encoded.
struct UserState: Sendable {
    static let userKind = "user"
    static let serviceAccountKind = "service_account"

    var record: UserRecord
    var passwordHash: String?
    var totpSecret: String?
    var totpLastStep: Int
    var tokensValidAfter: Date

    var id: String { record.id }
    var isServiceAccount: Bool { record.kind == Self.serviceAccountKind }
    /// How the user appears in logs and the audit log.
    var displayName: String { record.email ?? record.name }

    static let columns: StaticString = """
        id, kind, email, name, password_hash, roles, disabled, totp_secret, totp_enabled, totp_last_step, \
        tokens_valid_after, created_at, updated_at, last_login_at
        """

    init(row: SQLRow) throws {
        record = UserRecord(
            id: try row.string("id"), kind: try row.string("kind"), email: try row.optionalString("email"),
            name: try row.string("name"), roles: try decodeList(try row.string("roles")), disabled: try row.bool("disabled"),
            totpEnabled: try row.bool("totp_enabled"), createdAt: try row.date("created_at"),
            updatedAt: try row.date("updated_at"), lastLoginAt: try row.optionalDate("last_login_at"))
        passwordHash = try row.optionalString("password_hash")
        totpSecret = try row.optionalString("totp_secret")
        totpLastStep = try row.int("totp_last_step")
        tokensValidAfter = try row.date("tokens_valid_after")
    }
}

/// A role as the API shows it.
public struct RoleRecord: Codable, Sendable, Equatable {
    public var name: String
    public var description: String
    public var permissions: [String]
    public var builtin: Bool
    public var requireTOTP: Bool
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case name, description, permissions, builtin
        case requireTOTP = "require_totp"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    init(row: SQLRow) throws {
        name = try row.string("name")
        description = try row.string("description")
        permissions = try decodeList(try row.string("permissions")).sorted()
        builtin = try row.bool("builtin")
        requireTOTP = try row.bool("require_totp")
        createdAt = try row.date("created_at")
        updatedAt = try row.date("updated_at")
    }
}

/// An API key as the API shows it; `key` only in the response that created it.
public struct APIKeyRecord: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var ownerID: String
    public var prefix: String
    public var permissions: [String]
    public var expiresAt: Date?
    public var lastUsedAt: Date?
    public var revokedAt: Date?
    public var createdAt: Date
    public var createdBy: String
    public var key: String?

    enum CodingKeys: String, CodingKey {
        case id, name, prefix, permissions, key
        case ownerID = "owner_id"
        case expiresAt = "expires_at"
        case lastUsedAt = "last_used_at"
        case revokedAt = "revoked_at"
        case createdAt = "created_at"
        case createdBy = "created_by"
    }

    static let columns: StaticString = "id, owner_id, name, prefix, permissions, expires_at, last_used_at, revoked_at, created_at, created_by"

    init(row: SQLRow) throws {
        id = try row.string("id")
        name = try row.string("name")
        ownerID = try row.string("owner_id")
        prefix = try row.string("prefix")
        permissions = try decodeList(try row.string("permissions")).sorted()
        expiresAt = try row.optionalDate("expires_at")
        lastUsedAt = try row.optionalDate("last_used_at")
        revokedAt = try row.optionalDate("revoked_at")
        createdAt = try row.date("created_at")
        createdBy = try row.string("created_by")
    }
}

/// Lists are stored as JSON arrays of strings.
func encodeList(_ values: some Sequence<String>) -> String {
    String(decoding: (try? JSONEncoder().encode(Array(values).sorted())) ?? Data("[]".utf8), as: UTF8.self)
}

func decodeList(_ text: String) throws -> [String] {
    do {
        return try JSONDecoder().decode([String].self, from: Data(text.utf8))
    } catch {
        throw StoreError.decoding(column: "list", reason: "not a JSON array of strings")
    }
}

/// A small map whose entries expire, so state other replicas change (a disabled user, a revoked key)
/// is re-read within `ttl`; this replica's own changes evict entries at once.
final class ExpiringCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let entries = Mutex<[Key: (value: Value, storedAt: Date)]>([:])
    private let ttl: TimeInterval
    private let capacity: Int

    init(ttl: TimeInterval, capacity: Int = 10_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func value(for key: Key, now: Date) -> Value? {
        entries.withLock { entries in
            guard let entry = entries[key], now.timeIntervalSince(entry.storedAt) < ttl else { return nil }
            return entry.value
        }
    }

    func store(_ value: Value, for key: Key, now: Date) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = (value, now)
        }
    }

    func remove(_ key: Key) { _ = entries.withLock { $0.removeValue(forKey: key) } }
    func removeAll() { entries.withLock { $0.removeAll() } }
}
