import Foundation
import KeelCore
import KeelServer
import KeelStore

/// The gateway's schema: routes (with a revision every change bumps, so replicas notice edits and
/// deletions with one read), the service registry, and the shared rate-limit buckets.
enum GatewayMigrations {
    static let all: [Migration] = [
        Migration.portable(module: "gateway", version: 1, name: "routes, service registry and rate-limit buckets", statements: [
            """
            CREATE TABLE keel_gateway_routes (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                declared {BOOL} NOT NULL,
                created_at {TS} NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
            "CREATE TABLE keel_gateway_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)",
            "INSERT INTO keel_gateway_revision (id, revision) VALUES (1, 0)",
            """
            CREATE TABLE keel_gateway_instances (
                service TEXT NOT NULL,
                url TEXT NOT NULL,
                registered_at {TS} NOT NULL,
                expires_at {TS} NOT NULL,
                PRIMARY KEY (service, url)
            )
            """,
            "CREATE INDEX keel_gateway_instances_expiry ON keel_gateway_instances (expires_at)",
            """
            CREATE TABLE keel_gateway_buckets (
                bucket TEXT PRIMARY KEY,
                tokens DOUBLE PRECISION NOT NULL,
                updated_at {TS} NOT NULL
            )
            """,
        ]),
    ]
}

/// A stored route as the admin API shows it.
public struct StoredRoute: Codable, Sendable, Equatable {
    public var route: GatewayRoute
    /// Declared in configuration (`gateway_routes`): changed there, not through the API.
    public var declared: Bool
    public var createdAt: Date
    public var updatedAt: Date
}

/// A registered instance of a service.
public struct ServiceInstance: Codable, Sendable, Equatable {
    public var service: String
    public var url: String
    public var registeredAt: Date
    public var expiresAt: Date

    enum CodingKeys: String, CodingKey {
        case service, url
        case registeredAt = "registered_at"
        case expiresAt = "expires_at"
    }
}

/// Routes and registered instances in the store.
struct GatewayStore: Sendable {
    let store: any Store
    let clock: any KeelClock

    func revision() async throws -> Int {
        try await store.query("SELECT revision FROM keel_gateway_revision WHERE id = 1").first?.int("revision") ?? 0
    }

    func routes() async throws -> [StoredRoute] {
        try await store.query("SELECT name, definition, declared, created_at, updated_at FROM keel_gateway_routes ORDER BY name")
            .map(Self.decode)
    }

    func route(named name: String) async throws -> StoredRoute? {
        try await store.query("SELECT name, definition, declared, created_at, updated_at FROM keel_gateway_routes WHERE name = \(name)")
            .first.map(Self.decode)
    }

    enum WriteMode { case create, replace }

    /// Creates or replaces a route changed through the API; declared routes are refused.
    @discardableResult
    func save(_ route: GatewayRoute, mode: WriteMode) async throws -> StoredRoute {
        let now = clock.now()
        let definition = try Self.encode(route)
        return try await store.transaction { tx in
            let existing = try await tx.query("SELECT declared, created_at FROM keel_gateway_routes WHERE name = \(route.name)").first
            if let existing {
                if try existing.bool("declared") {
                    throw Problem.conflict("Route \(route.name) is declared in configuration (gateway_routes); change it there.")
                }
                if mode == .create { throw Problem.conflict("A route named \(route.name) exists; PUT /api/v1/gateway/routes/\(route.name) replaces it.") }
                try await tx.execute("UPDATE keel_gateway_routes SET definition = \(definition), updated_at = \(now) WHERE name = \(route.name)")
            } else {
                try await tx.execute("""
                    INSERT INTO keel_gateway_routes (name, definition, declared, created_at, updated_at)
                    VALUES (\(route.name), \(definition), \(false), \(now), \(now))
                    """)
            }
            try await tx.execute("UPDATE keel_gateway_revision SET revision = revision + 1 WHERE id = 1")
            return StoredRoute(route: route, declared: false, createdAt: try existing?.date("created_at") ?? now, updatedAt: now)
        }
    }

    func delete(named name: String) async throws {
        try await store.transaction { tx in
            guard let existing = try await tx.query("SELECT declared FROM keel_gateway_routes WHERE name = \(name)").first else {
                throw Problem.notFound("No gateway route is named \(name).")
            }
            if try existing.bool("declared") {
                throw Problem.conflict("Route \(name) is declared in configuration (gateway_routes); remove it there.")
            }
            try await tx.execute("DELETE FROM keel_gateway_routes WHERE name = \(name)")
            try await tx.execute("UPDATE keel_gateway_revision SET revision = revision + 1 WHERE id = 1")
        }
    }

    /// Makes the declared routes exactly `declared`: new ones added, changed ones replaced, ones no
    /// longer declared removed. A route the API created under a now-declared name becomes declared.
    func syncDeclared(_ declared: [GatewayRoute]) async throws {
        let now = clock.now()
        let wanted = try Dictionary(uniqueKeysWithValues: declared.map { ($0.name, try Self.encode($0)) })
        try await store.transaction { tx in
            var changed = false
            var current: [String: (definition: String, declared: Bool)] = [:]
            for row in try await tx.query("SELECT name, definition, declared FROM keel_gateway_routes") {
                current[try row.string("name")] = (try row.string("definition"), try row.bool("declared"))
            }
            for (name, definition) in wanted {
                if let existing = current[name] {
                    guard existing.definition != definition || !existing.declared else { continue }
                    try await tx.execute("""
                        UPDATE keel_gateway_routes SET definition = \(definition), declared = \(true), updated_at = \(now) WHERE name = \(name)
                        """)
                } else {
                    try await tx.execute("""
                        INSERT INTO keel_gateway_routes (name, definition, declared, created_at, updated_at)
                        VALUES (\(name), \(definition), \(true), \(now), \(now))
                        """)
                }
                changed = true
            }
            for (name, existing) in current where existing.declared && wanted[name] == nil {
                try await tx.execute("DELETE FROM keel_gateway_routes WHERE name = \(name)")
                changed = true
            }
            if changed { try await tx.execute("UPDATE keel_gateway_revision SET revision = revision + 1 WHERE id = 1") }
        }
    }

    // MARK: - Service registry

    /// Registers an instance, or renews its registration (a heartbeat), for `ttl` seconds.
    func register(service: String, url: String, ttl: Double) async throws -> ServiceInstance {
        let now = clock.now()
        let expires = now.addingTimeInterval(ttl)
        let rows = try await store.execute("""
            INSERT INTO keel_gateway_instances (service, url, registered_at, expires_at) VALUES (\(service), \(url), \(now), \(expires))
            ON CONFLICT (service, url) DO UPDATE SET expires_at = \(expires)
            RETURNING registered_at
            """)
        return ServiceInstance(service: service, url: url, registeredAt: try rows.first?.date("registered_at") ?? now, expiresAt: expires)
    }

    func deregister(service: String, url: String) async throws -> Bool {
        !(try await store.execute("DELETE FROM keel_gateway_instances WHERE service = \(service) AND url = \(url) RETURNING url")).isEmpty
    }

    /// Instances whose registration has not expired, oldest first.
    func liveInstances() async throws -> [ServiceInstance] {
        try await store.query("""
            SELECT service, url, registered_at, expires_at FROM keel_gateway_instances
            WHERE expires_at > \(clock.now()) ORDER BY service, registered_at, url
            """).map { row in
            ServiceInstance(service: try row.string("service"), url: try row.string("url"),
                            registeredAt: try row.date("registered_at"), expiresAt: try row.date("expires_at"))
        }
    }

    func pruneExpiredInstances() async throws {
        try await store.execute("DELETE FROM keel_gateway_instances WHERE expires_at < \(clock.now().addingTimeInterval(-3600))")
    }

    static func encode(_ route: GatewayRoute) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(route), as: UTF8.self)
    }

    static func decode(_ row: SQLRow) throws -> StoredRoute {
        let route = try JSONDecoder().decode(GatewayRoute.self, from: Data(try row.string("definition").utf8))
        return StoredRoute(route: route, declared: try row.bool("declared"), createdAt: try row.date("created_at"), updatedAt: try row.date("updated_at"))
    }
}
