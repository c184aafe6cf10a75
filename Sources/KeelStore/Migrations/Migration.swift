import Foundation
import Logging

/// One forward-only schema change of one module. Versions count up from 1 within a module; the
/// statements are given for each dialect. Once released a migration is never edited: its checksum is
/// recorded and a changed migration stops the start with a clear error.
public struct Migration: Sendable, Equatable {
    public let module: String
    public let version: Int
    public let name: String
    public let sqlite: [String]
    public let postgres: [String]

    public init(module: String, version: Int, name: String, sqlite: [String], postgres: [String]) {
        self.module = module
        self.version = version
        self.name = name
        self.sqlite = sqlite
        self.postgres = postgres
    }

    public func statements(for dialect: SQLDialect) -> [String] {
        dialect == .sqlite ? sqlite : postgres
    }

    /// FNV-1a over the statements of both dialects: enough to notice an edited migration.
    public var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (sqlite + ["\u{0}"] + postgres).joined(separator: "\u{1}").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}

/// A migration as recorded in `keel_schema_migrations`.
public struct AppliedMigration: Sendable, Equatable {
    public let module: String
    public let version: Int
    public let name: String
    public let checksum: String
    public let appliedAt: Date
}

/// Shared migration logic; the drivers supply locking and the transaction.
enum MigrationPlanner {
    static let tableName = "keel_schema_migrations"

    static func createTable(_ dialect: SQLDialect) -> String {
        let timestamp = dialect == .postgres ? "TIMESTAMPTZ" : "INTEGER"
        return """
            CREATE TABLE IF NOT EXISTS \(tableName) (
                module TEXT NOT NULL,
                version INTEGER NOT NULL,
                name TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_at \(timestamp) NOT NULL,
                PRIMARY KEY (module, version)
            )
            """
    }

    static let selectApplied: SQLQuery = "SELECT module, version, name, checksum, applied_at FROM keel_schema_migrations ORDER BY module, version"

    static func decode(_ rows: [SQLRow]) throws(StoreError) -> [AppliedMigration] {
        var applied: [AppliedMigration] = []
        for row in rows {
            applied.append(AppliedMigration(
                module: try row.string("module"), version: try row.int("version"), name: try row.string("name"),
                checksum: try row.string("checksum"), appliedAt: try row.date("applied_at")))
        }
        return applied
    }

    /// The migrations still to apply, after checking the known ones against what the store recorded.
    static func pending(_ migrations: [Migration], applied: [AppliedMigration]) throws(StoreError) -> [Migration] {
        try validate(migrations)
        var recorded: [String: [Int: AppliedMigration]] = [:]
        for migration in applied { recorded[migration.module, default: [:]][migration.version] = migration }
        for (module, versions) in recorded {
            let known = migrations.filter { $0.module == module }
            guard let newest = versions.keys.max(), !known.isEmpty else { continue }
            if newest > known.map(\.version).max()! {
                throw .migration("the database has \(module) schema version \(newest), newer than this keel binary knows; upgrade keel")
            }
        }
        for migration in migrations {
            if let record = recorded[migration.module]?[migration.version], record.checksum != migration.checksum {
                throw .migration("\(migration.module) migration \(migration.version) (\(migration.name)) differs from the one applied to the database; released migrations must not change")
            }
        }
        return migrations.filter { recorded[$0.module]?[$0.version] == nil }
    }

    private static func validate(_ migrations: [Migration]) throws(StoreError) {
        var seen = Set<String>()
        for migration in migrations {
            guard seen.insert("\(migration.module)#\(migration.version)").inserted else {
                throw .migration("\(migration.module) migration \(migration.version) is declared twice")
            }
        }
    }

    /// Creates the version table if needed and applies what is pending, inside the caller's transaction
    /// (which holds whatever lock keeps other processes out).
    static func apply(_ migrations: [Migration], in transaction: any StoreTransaction, dialect: SQLDialect, logger: Logger) async throws -> [Migration] {
        try await transaction.execute(SQLQuery(stringLiteral: createTable(dialect)))
        let pending = try pending(migrations, applied: try decode(try await transaction.query(selectApplied)))
        for migration in pending {
            for statement in migration.statements(for: dialect) {
                try await transaction.execute(SQLQuery(stringLiteral: statement))
            }
            try await transaction.execute(record(migration, at: Date()))
            logger.info("applied migration", metadata: ["module": "\(migration.module)", "version": "\(migration.version)", "name": "\(migration.name)"])
        }
        return pending
    }

    private static func record(_ migration: Migration, at date: Date) -> SQLQuery {
        "INSERT INTO keel_schema_migrations (module, version, name, checksum, applied_at) VALUES (\(migration.module), \(migration.version), \(migration.name), \(migration.checksum), \(date))"
    }
}

extension Migration {
    /// One statement list for both dialects, with `{TS}` standing for the timestamp column type
    /// (`TIMESTAMPTZ` / INTEGER microseconds) and `{BOOL}` for the flag type (`BOOLEAN` / INTEGER).
    public static func portable(module: String, version: Int, name: String, statements: [String],
                                sqliteOnly: [String] = [], postgresOnly: [String] = []) -> Migration {
        func render(_ statement: String, timestamp: String, bool: String) -> String {
            statement.replacingOccurrences(of: "{TS}", with: timestamp).replacingOccurrences(of: "{BOOL}", with: bool)
        }
        return Migration(module: module, version: version, name: name,
                         sqlite: statements.map { render($0, timestamp: "INTEGER", bool: "INTEGER") } + sqliteOnly,
                         postgres: statements.map { render($0, timestamp: "TIMESTAMPTZ", bool: "BOOLEAN") } + postgresOnly)
    }
}
