import ServiceLifecycle

/// Keel's database. Two drivers implement it, ``SQLiteStore`` (embedded default) and ``PostgresStore``,
/// and one shared test suite holds them to the same behaviour.
///
/// A store is a `Service`: run it (in the process's service group) for as long as anything queries it.
public protocol Store: Service {
    var dialect: SQLDialect { get }
    /// Where the store lives, with any password masked.
    var location: String { get }

    /// Runs a statement that only reads. SQLite serves it from a reader connection, beside the writer.
    func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow]
    /// Runs a statement that writes, returning the rows of any `RETURNING` clause.
    @discardableResult
    func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow]
    /// Runs `query` as the statement `Statement` names, whose SQL is the same at every call (only the values change),
    /// so the store may keep it parsed and planned: PostgreSQL does that once per connection, where a small statement
    /// sent as text each time spends about as long being parsed and planned as running. Every value needs a known
    /// type (see ``SQLQuery/kinds``). Other stores, and a query whose text or types differ, run it as `execute`.
    @discardableResult
    func execute<Statement: PreparedStatement>(_ query: SQLQuery, as statement: Statement.Type) async throws(StoreError) -> [SQLRow]
    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    func transaction<Result: Sendable>(
        _ body: @Sendable (any StoreTransaction) async throws -> Result
    ) async throws -> Result

    /// Applies the migrations not yet recorded in `keel_schema_migrations`, in order, safely against
    /// other processes doing the same. Returns the ones this call applied.
    @discardableResult
    func migrate(_ migrations: [Migration]) async throws(StoreError) -> [Migration]
    /// The migrations already recorded in the store.
    func appliedMigrations() async throws(StoreError) -> [AppliedMigration]
    /// Checks that the store answers.
    func ping() async throws(StoreError)
    /// Calls `notified` with each notification on `channels` (on one connection) until the task is cancelled:
    /// PostgreSQL's LISTEN, so other processes' changes wake this one; `listening` once every channel is heard.
    /// SQLite serves one process, which wakes itself, so there it only waits (and never calls `listening`).
    func listen(channels: [String], listening: @escaping @Sendable () -> Void,
                notified: @escaping @Sendable (_ channel: String, _ payload: String) -> Void) async throws
    /// Connection figures for `/metrics`.
    func poolStatistics() -> StorePoolStatistics
}

/// Names a statement that ``Store/execute(_:as:)`` may keep prepared; each conforming type is one statement.
public protocol PreparedStatement: Sendable {}

extension Store {
    @discardableResult
    public func execute<Statement: PreparedStatement>(_ query: SQLQuery, as statement: Statement.Type) async throws(StoreError) -> [SQLRow] {
        try await execute(query)
    }
}

/// The statements of one open transaction.
public protocol StoreTransaction: Sendable {
    func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow]
    @discardableResult
    func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow]
}

public struct StorePoolStatistics: Sendable, Equatable {
    /// Connections the driver may open at most.
    public var maximumConnections: Int
    /// Statements running right now.
    public var inFlight: Int
}

/// What went wrong in the store, sorted by what a caller can do about it.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    /// The database cannot be reached or is overloaded; worth retrying later. HTTP maps it to 503.
    case unavailable(String)
    /// A unique, foreign-key, not-null or check constraint refused the change.
    case constraintViolation(String)
    /// The statement itself failed (a bug in Keel or a schema problem).
    case query(String)
    /// The database rolled the transaction back to resolve a conflict with another (deadlock, serialization
    /// failure); running it again can succeed.
    case conflict(String)
    /// A value read from a row does not have the expected type.
    case decoding(column: String, reason: String)
    /// The schema in the database does not fit this binary.
    case migration(String)

    public var isConstraintViolation: Bool {
        if case .constraintViolation = self { true } else { false }
    }

    public var description: String {
        switch self {
        case .unavailable(let reason): "store unavailable: \(reason)"
        case .constraintViolation(let reason): "constraint violated: \(reason)"
        case .query(let reason): "query failed: \(reason)"
        case .conflict(let reason): "transaction conflict: \(reason)"
        case .decoding(let column, let reason): "cannot read column \(column): \(reason)"
        case .migration(let reason): "migration failed: \(reason)"
        }
    }
}
