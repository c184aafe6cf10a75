import Foundation
import KeelCore
import KeelServer
import KeelStore

/// The AI gateway's schema: providers (credentials sealed), models, a revision every change bumps so
/// replicas reload with one read, and the usage log.
enum AIMigrations {
    static let all: [Migration] = [
        Migration.portable(module: "ai", version: 1, name: "providers, models and usage", statements: [
            """
            CREATE TABLE keel_ai_providers (
                name TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                base_url TEXT NOT NULL,
                api_key TEXT,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            """
            CREATE TABLE keel_ai_models (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            "CREATE TABLE keel_ai_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)",
            "INSERT INTO keel_ai_revision (id, revision) VALUES (1, 0)",
            """
            CREATE TABLE keel_ai_usage (
                id TEXT PRIMARY KEY,
                at {TS} NOT NULL,
                credential_id TEXT,
                subject TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT,
                deployment_model TEXT,
                endpoint TEXT NOT NULL,
                status INTEGER NOT NULL,
                tokens_in INTEGER NOT NULL,
                tokens_out INTEGER NOT NULL,
                cost DOUBLE PRECISION NOT NULL,
                latency_ms DOUBLE PRECISION NOT NULL,
                ttft_ms DOUBLE PRECISION,
                streamed {BOOL} NOT NULL
            )
            """,
            "CREATE INDEX keel_ai_usage_at ON keel_ai_usage (at)",
            "CREATE INDEX keel_ai_usage_credential ON keel_ai_usage (credential_id, at)",
        ]),
        Migration.portable(module: "ai", version: 2, name: "key policies and spend", statements: [
            """
            CREATE TABLE keel_ai_key_policies (
                credential_id TEXT PRIMARY KEY,
                policy TEXT NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            """
            CREATE TABLE keel_ai_spend (
                credential_id TEXT NOT NULL,
                period TEXT NOT NULL,
                spent DOUBLE PRECISION NOT NULL,
                reserved DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (credential_id, period)
            )
            """,
        ]),
        Migration.portable(module: "ai", version: 3, name: "requests and tokens per key and minute", statements: [
            """
            CREATE TABLE keel_ai_minutes (
                credential_id TEXT NOT NULL,
                minute BIGINT NOT NULL,
                requests INTEGER NOT NULL,
                tokens BIGINT NOT NULL,
                PRIMARY KEY (credential_id, minute)
            )
            """,
        ]),
        Migration.portable(module: "ai", version: 4, name: "daily usage rollup", statements: [
            """
            CREATE TABLE keel_ai_usage_daily (
                day TEXT NOT NULL,
                model TEXT NOT NULL,
                credential_id TEXT NOT NULL,
                requests BIGINT NOT NULL,
                errors BIGINT NOT NULL,
                tokens_in BIGINT NOT NULL,
                tokens_out BIGINT NOT NULL,
                cost DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (day, model, credential_id)
            )
            """,
        ]),
    ]
}

/// A provider as the admin API shows it: never its key, only whether one is set.
public struct ProviderView: Codable, Sendable, Equatable {
    public var name: String
    public var kind: AIProvider.Kind
    public var baseURL: String
    public var apiKeySet: Bool
    public var createdAt: Date
    public var updatedAt: Date
    /// This process's last probe of the provider.
    var health: HealthView?

    struct HealthView: Codable, Sendable, Equatable {
        var healthy: Bool
        var checkedAt: Date
        var latencyMs: Double
        var error: String?

        init(_ health: ProviderProbes.Health) {
            healthy = health.healthy
            checkedAt = health.checkedAt
            latencyMs = Double(health.latency / .microseconds(1)) / 1000
            error = health.error
        }

        enum CodingKeys: String, CodingKey {
            case healthy, error
            case checkedAt = "checked_at"
            case latencyMs = "latency_ms"
        }
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, health
        case baseURL = "base_url"
        case apiKeySet = "api_key_set"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// Providers and models in the store.
struct CatalogStore: Sendable {
    let store: any Store
    let clock: any KeelClock
    let box: SecretBox

    func revision() async throws -> Int {
        try await store.query("SELECT revision FROM keel_ai_revision WHERE id = 1").first?.int("revision") ?? 0
    }

    func providerViews() async throws -> [ProviderView] {
        try await store.query("SELECT name, kind, base_url, api_key, created_at, updated_at FROM keel_ai_providers ORDER BY name").map { row in
            ProviderView(name: try row.string("name"), kind: AIProvider.Kind(rawValue: try row.string("kind")) ?? .openai,
                         baseURL: try row.string("base_url"), apiKeySet: try row.optionalString("api_key") != nil,
                         createdAt: try row.date("created_at"), updatedAt: try row.date("updated_at"))
        }
    }

    /// Every provider with its key opened, for the router (never for an API answer).
    func providers() async throws -> [AIProvider] {
        try await store.query("SELECT name, kind, base_url, api_key FROM keel_ai_providers").map { row in
            let sealed = try row.optionalString("api_key")
            return AIProvider(name: try row.string("name"), kind: AIProvider.Kind(rawValue: try row.string("kind")) ?? .openai,
                              baseURL: try row.string("base_url"),
                              apiKey: try sealed.map { String(decoding: try box.open($0), as: UTF8.self) })
        }
    }

    /// Creates or replaces a provider. A replacement without `api_key` keeps the stored key.
    func saveProvider(_ provider: AIProvider, createOnly: Bool) async throws -> ProviderView {
        if provider.apiKey != nil, !box.encrypts {
            throw Problem.conflict("Set KEEL_SECRET_KEY before storing provider credentials: they are kept encrypted with it.")
        }
        let sealed = try provider.apiKey.map { try box.seal(Data($0.utf8)) }
        let now = clock.now()
        return try await store.transaction { tx in
            let existing = try await tx.query("SELECT api_key, created_at FROM keel_ai_providers WHERE name = \(provider.name)").first
            if let existing {
                if createOnly { throw Problem.conflict("A provider named \(provider.name) exists; PUT /api/v1/ai/providers/\(provider.name) replaces it.") }
                let key = try sealed ?? existing.optionalString("api_key")
                try await tx.execute("""
                    UPDATE keel_ai_providers SET kind = \(provider.kind.rawValue), base_url = \(provider.baseURL), api_key = \(key), updated_at = \(now)
                    WHERE name = \(provider.name)
                    """)
            } else {
                try await tx.execute("""
                    INSERT INTO keel_ai_providers (name, kind, base_url, api_key, created_at, updated_at)
                    VALUES (\(provider.name), \(provider.kind.rawValue), \(provider.baseURL), \(sealed), \(now), \(now))
                    """)
            }
            try await tx.execute("UPDATE keel_ai_revision SET revision = revision + 1 WHERE id = 1")
            let keySet = try sealed != nil || existing?.optionalString("api_key") != nil
            return ProviderView(name: provider.name, kind: provider.kind, baseURL: provider.baseURL, apiKeySet: keySet,
                                createdAt: try existing?.date("created_at") ?? now, updatedAt: now)
        }
    }

    func deleteProvider(named name: String) async throws {
        try await store.transaction { tx in
            guard try await !tx.query("SELECT name FROM keel_ai_providers WHERE name = \(name)").isEmpty else {
                throw Problem.notFound("No AI provider is named \(name).")
            }
            let users = try await tx.query("SELECT name, definition FROM keel_ai_models").filter { row in
                let model = try? JSONDecoder().decode(AIModel.self, from: Data(try row.string("definition").utf8))
                return model?.deployments.contains { $0.provider == name } == true
            }
            if !users.isEmpty {
                throw Problem.conflict("Models still deploy on \(name): \(try users.map { try $0.string("name") }.joined(separator: ", ")).")
            }
            try await tx.execute("DELETE FROM keel_ai_providers WHERE name = \(name)")
            try await tx.execute("UPDATE keel_ai_revision SET revision = revision + 1 WHERE id = 1")
        }
    }

    func providerNames() async throws -> Set<String> {
        Set(try await store.query("SELECT name FROM keel_ai_providers").map { try $0.string("name") })
    }

    func models() async throws -> [StoredModel] {
        try await store.query("SELECT definition, created_at, updated_at FROM keel_ai_models ORDER BY name").map(Self.decodeModel)
    }

    func model(named name: String) async throws -> StoredModel? {
        try await store.query("SELECT definition, created_at, updated_at FROM keel_ai_models WHERE name = \(name)").first.map(Self.decodeModel)
    }

    func saveModel(_ model: AIModel, createOnly: Bool) async throws -> StoredModel {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let definition = String(decoding: try encoder.encode(model), as: UTF8.self)
        let now = clock.now()
        return try await store.transaction { tx in
            let existing = try await tx.query("SELECT created_at FROM keel_ai_models WHERE name = \(model.name)").first
            if existing != nil {
                if createOnly { throw Problem.conflict("A model named \(model.name) exists; PUT /api/v1/ai/models/\(model.name) replaces it.") }
                try await tx.execute("UPDATE keel_ai_models SET definition = \(definition), updated_at = \(now) WHERE name = \(model.name)")
            } else {
                try await tx.execute("""
                    INSERT INTO keel_ai_models (name, definition, created_at, updated_at) VALUES (\(model.name), \(definition), \(now), \(now))
                    """)
            }
            try await tx.execute("UPDATE keel_ai_revision SET revision = revision + 1 WHERE id = 1")
            return StoredModel(model: model, createdAt: try existing?.date("created_at") ?? now, updatedAt: now)
        }
    }

    func deleteModel(named name: String) async throws {
        try await store.transaction { tx in
            guard try await !tx.query("SELECT name FROM keel_ai_models WHERE name = \(name)").isEmpty else {
                throw Problem.notFound("No AI model is named \(name).")
            }
            try await tx.execute("DELETE FROM keel_ai_models WHERE name = \(name)")
            try await tx.execute("UPDATE keel_ai_revision SET revision = revision + 1 WHERE id = 1")
        }
    }

    static func decodeModel(_ row: SQLRow) throws -> StoredModel {
        StoredModel(model: try JSONDecoder().decode(AIModel.self, from: Data(try row.string("definition").utf8)),
                    createdAt: try row.date("created_at"), updatedAt: try row.date("updated_at"))
    }
}

/// A model as the admin API shows it.
public struct StoredModel: Sendable, Equatable, Encodable {
    public var model: AIModel
    public var createdAt: Date
    public var updatedAt: Date
    /// Each deployment as this process sees it (in `GET /api/v1/ai/models/{name}`).
    var status: [JSONValue]?

    public func encode(to encoder: any Encoder) throws {
        try model.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encodeIfPresent(status, forKey: .status)
    }

    enum Keys: String, CodingKey {
        case status
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}
