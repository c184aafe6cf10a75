import Foundation
import KeelCore
import KeelStore
import Logging
import Testing

/// The store drivers every shared store test runs against.
public enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite
    case postgres
    public var description: String { rawValue }
}

public enum TestPostgres {
    /// The server `scripts/test` started (or the one `KEEL_TEST_DATABASE_URL` names).
    public static func adminURL() throws -> PostgresURL {
        guard let text = ProcessInfo.processInfo.environment["KEEL_TEST_DATABASE_URL"], !text.isEmpty else {
            throw TestSetupError("KEEL_TEST_DATABASE_URL is not set: run the suite with ./scripts/test, which starts a PostgreSQL")
        }
        return try PostgresURL(parsing: text)
    }

    /// Runs `body` with a fresh, empty database that is dropped afterwards.
    public static func withDatabase<T: Sendable>(_ body: (PostgresURL) async throws -> T) async throws -> T {
        let admin = try adminURL()
        let name = "keel_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        try await withRunningStore(try PostgresStore(url: admin, tls: .disable, maximumConnections: 1, logger: quietLogger)) { store in
            try await store.execute(SQLQuery(stringLiteral: "CREATE DATABASE \(name)"))
        }
        var url = admin
        url.database = String(name)
        do {
            let result = try await body(url)
            try await drop(name, admin: admin)
            return result
        } catch {
            try? await drop(name, admin: admin)
            throw error
        }
    }

    private static func drop(_ name: String, admin: PostgresURL) async throws {
        try await withRunningStore(try PostgresStore(url: admin, tls: .disable, maximumConnections: 1, logger: quietLogger)) { store in
            try await store.execute(SQLQuery(stringLiteral: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"))
        }
    }
}

extension PostgresURL {
    /// The URL with its password, for a `keel` child process's `KEEL_DATABASE_URL` (optionally via another port).
    public func connectionString(port: Int? = nil) -> String {
        "postgres://\(username):\(password?.value ?? "")@\(host):\(port ?? self.port)/\(database)"
    }
}

public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public let quietLogger: Logger = {
    var logger = Logger(label: "keel.test")
    logger.logLevel = .critical
    return logger
}()

/// Runs the store's service (PostgreSQL needs its pool running) around `body`.
@discardableResult
public func withRunningStore<T: Sendable>(_ store: any Store, _ body: (any Store) async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await store.run() }
        defer { group.cancelAll() }
        return try await body(store)
    }
}

/// A scratch directory removed afterwards.
public func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "keel-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// The configuration's database for a scratch store of `kind`: a new SQLite file or a new PostgreSQL database.
public func withScratchDatabase<T: Sendable>(_ kind: StoreKind, _ body: (DatabaseLocation) async throws -> T) async throws -> T {
    switch kind {
    case .sqlite:
        try await withTemporaryDirectory { directory in try await body(.sqlite(path: directory + "/keel.db")) }
    case .postgres:
        try await TestPostgres.withDatabase { url in try await body(.postgres(url)) }
    }
}

/// Opens a store on `location`; the caller runs it.
public func openStore(_ location: DatabaseLocation, maximumConnections: Int = 10) async throws -> any Store {
    var config = KeelConfig()
    config.database = location
    config.databaseTLS = .disable
    config.databaseMaxConnections = maximumConnections
    return try await config.openStore(logger: quietLogger)
}

/// A scratch store of `kind`, running for the duration of `body`.
public func withScratchStore<T: Sendable>(_ kind: StoreKind, _ body: (any Store) async throws -> T) async throws -> T {
    try await withScratchDatabase(kind) { location in
        let store = try await openStore(location)
        return try await withRunningStore(store) { try await body($0) }
    }
}

extension Sequence {
    /// `map` with an async transform, one element after the other.
    public func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// A server configuration for tests on `location`: a free port, quiet logs, cheap password hashing.
public func quietTestConfig(_ location: DatabaseLocation) -> KeelConfig {
    var config = KeelConfig()
    config.port = 0
    config.database = location
    config.databaseTLS = .disable
    config.accessLog = false
    config.logLevel = .critical
    config.auth.bcryptCost = 4
    return config
}
