import Foundation
import KeelCore
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The store at scale: PostgreSQL through postgres-nio's connection pool. Migrations take a
/// transaction-scoped advisory lock, so many replicas can start at once against one database.
public final class PostgresStore: Store {
    public let dialect = SQLDialect.postgres
    public let location: String

    private let client: PostgresClient
    private let maximumConnections: Int
    private let operationTimeout: Duration
    /// Off behind a connection pooler in transaction mode, where a statement prepared on one server connection is
    /// missing on the next.
    private let preparesStatements: Bool
    private let metrics = StoreMetrics(driver: "postgres")
    private let logger: Logger

    /// Arbitrary but fixed: every Keel process contends for this advisory lock key while migrating.
    static let migrationLockKey: Int64 = 0x6B65_656C_6D69_67  // "keelmig"

    /// - Parameter operationTimeout: how long a statement may wait (for a connection included) before
    ///   it fails as ``StoreError/unavailable(_:)``, so callers answer 503 instead of hanging while the
    ///   database is away.
    public init(url: PostgresURL, tls: DatabaseTLS, caFile: String? = nil, maximumConnections: Int,
                operationTimeout: Duration = .seconds(10), preparesStatements: Bool = true, logger: Logger) throws(StoreError) {
        var configuration: PostgresClient.Configuration
        if let socket = url.unixSocketPath {
            configuration = .init(unixSocketPath: socket, username: url.username, password: url.password?.value, database: url.database)
        } else {
            configuration = .init(host: url.host, port: url.port, username: url.username, password: url.password?.value,
                                  database: url.database, tls: try Self.tls(url.sslmode ?? tls, caFile: caFile))
        }
        // No keep-alive queries: postgres-nio arms a keep-alive timer each time a connection goes idle, and a cancelled
        // timer task stays allocated until it would have fired (30 s), which at thousands of queries a second held
        // tens of MB. A connection that died while idle fails its next query and is replaced. (A minimum pool would
        // avoid the idle-timeout timers too, but postgres-nio 1.x traps when a lease arrives while the minimum is being
        // re-established after an outage.)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.keepAliveBehavior = nil
        configuration.options.connectTimeout = .seconds(5)
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.location = url.description
        self.maximumConnections = maximumConnections
        self.operationTimeout = operationTimeout
        self.preparesStatements = preparesStatements
        self.logger = logger
    }

    private static func tls(_ mode: DatabaseTLS, caFile: String?) throws(StoreError) -> PostgresClient.Configuration.TLS {
        var unverified = TLSConfiguration.makeClientConfiguration()
        unverified.certificateVerification = .none
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(unverified)
        case .require: return .require(unverified)
        case .verifyFull:
            var verified = TLSConfiguration.makeClientConfiguration()
            if let caFile {
                do {
                    verified.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw .unavailable("cannot read database_tls_ca_file \(caFile): \(error)")
                }
            }
            return .require(verified)
        }
    }

    /// Keeps the pool alive; cancelling it (service group shutdown) closes all connections.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.client.run() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    public func listen(channels: [String], listening: @escaping @Sendable () -> Void,
                       notified: @escaping @Sendable (_ channel: String, _ payload: String) -> Void) async throws {
        try await client.withConnection { connection in
            let heard = ListenCount()
            // The first channel to stop (the connection failed, or the task was cancelled) ends them all.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for channel in channels {
                    group.addTask {
                        try await connection.listen(on: channel) { notifications in
                            if heard.value.add(1, ordering: .relaxed).newValue == channels.count { listening() }
                            for try await notification in notifications { notified(channel, notification.payload) }
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    public func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await measured("read") { try await self.rows(of: query) }
    }

    @discardableResult
    public func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await measured("write") { try await self.rows(of: query) }
    }

    @discardableResult
    public func execute<Statement: PreparedStatement>(_ query: SQLQuery, as statement: Statement.Type) async throws(StoreError) -> [SQLRow] {
        guard preparesStatements, PreparedStatements.admit(Statement.self, query) else { return try await execute(query) }
        return try await measured("write") {
            let rows = try await self.client.execute(Prepared<Statement>(bindings: try Self.postgresBindings(query.binds)), logger: self.logger)
            return try await Self.collect(rows)
        }
    }

    public func transaction<Result: Sendable>(
        _ body: @Sendable (any StoreTransaction) async throws -> Result
    ) async throws -> Result {
        try await metrics.measure("transaction") {
            // A transaction PostgreSQL chose as a deadlock victim (or serialization failure) was rolled back whole;
            // running it again is what the other side of the conflict needed.
            for attempt in 1... {
                do {
                    return try await client.withTransaction(logger: logger) { connection in
                        try await body(PostgresTransaction(connection: connection, logger: logger))
                    }
                } catch let error as PostgresTransactionError {
                    if attempt < Self.transactionAttempts, Self.isConflict(error.closureError ?? error.commitError) {
                        logger.debug("retrying a transaction after a conflict", metadata: ["attempt": "\(attempt)"])
                        continue
                    }
                    // The caller's own error, once rolled back cleanly, is what the caller should see.
                    if let closureError = error.closureError, error.rollbackError == nil { throw closureError }
                    throw Self.storeError(error.beginError ?? error.commitError ?? error.rollbackError ?? error)
                }
            }
            fatalError("unreachable: the loop returns or throws")
        }
    }

    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws(StoreError) -> [Migration] {
        try await measured("migrate") {
            try await self.transaction { transaction in
                // Held until commit: a second process waits here, then finds the work done.
                try await transaction.execute("SELECT pg_advisory_xact_lock(\(Self.migrationLockKey))")
                return try await MigrationPlanner.apply(migrations, in: transaction, dialect: .postgres, logger: self.logger)
            }
        }
    }

    public func appliedMigrations() async throws(StoreError) -> [AppliedMigration] {
        let exists = try await query("SELECT to_regclass('keel_schema_migrations') IS NOT NULL AS present")
        guard try exists.first?.bool("present") == true else { return [] }
        return try MigrationPlanner.decode(try await query(MigrationPlanner.selectApplied))
    }

    public func ping() async throws(StoreError) {
        _ = try await query("SELECT 1 AS ok")
    }

    public func poolStatistics() -> StorePoolStatistics {
        StorePoolStatistics(maximumConnections: maximumConnections, inFlight: metrics.inFlight)
    }

    // MARK: - Helpers

    private func rows(of query: SQLQuery) async throws -> [SQLRow] {
        let postgresQuery = try Self.postgresQuery(query)
        let sequence = try await client.query(postgresQuery, logger: logger)
        return try await Self.collect(sequence)
    }

    static func postgresQuery(_ query: SQLQuery) throws -> PostgresQuery {
        PostgresQuery(unsafeSQL: query.sql(for: .postgres), binds: try postgresBindings(query.binds))
    }

    static func postgresBindings(_ binds: [SQLValue]) throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: binds.count)
        for value in binds {
            switch value {
            case .null: bindings.appendNull()
            case .int(let value): bindings.append(value)
            case .double(let value): bindings.append(value)
            case .text(let value): bindings.append(value)
            case .bool(let value): bindings.append(value)
            case .blob(let bytes): bindings.append(ByteBuffer(bytes: bytes))
            case .timestamp(let date): bindings.append(date)
            }
        }
        return bindings
    }

    static func collect<Rows: AsyncSequence>(_ sequence: Rows) async throws -> [SQLRow] where Rows.Element == PostgresRow {
        var rows: [SQLRow] = []
        for try await row in sequence {
            var columns: [String] = []
            var values: [SQLValue] = []
            for cell in row {
                columns.append(cell.columnName)
                values.append(try value(of: cell))
            }
            rows.append(SQLRow(columns: columns, values: values))
        }
        return rows
    }

    private static func value(of cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2, .int4, .int8: return .int(try cell.decode(Int64.self))
        case .float4, .float8: return .double(try cell.decode(Double.self))
        case .numeric: return .double(NSDecimalNumber(decimal: try cell.decode(Decimal.self)).doubleValue)
        case .bool: return .bool(try cell.decode(Bool.self))
        case .bytea: return .blob(Array(buffer: try cell.decode(ByteBuffer.self)))
        case .timestamptz, .timestamp: return .timestamp(try cell.decode(Date.self))
        case .uuid: return .text(try cell.decode(UUID.self).uuidString.lowercased())
        default: return .text(try cell.decode(String.self))
        }
    }

    private func measured<T: Sendable>(_ kind: String, _ body: @escaping @Sendable () async throws -> T) async throws(StoreError) -> T {
        do {
            return try await metrics.measure(kind) {
                try await withDeadline(self.operationTimeout, orThrow: Timeout(), body)
            }
        } catch {
            throw Self.storeError(error)
        }
    }

    private struct Timeout: Error {}

    static let transactionAttempts = 3

    /// A deadlock or serialization failure, whether raised by the server or already mapped to a `StoreError`.
    static func isConflict(_ error: (any Error)?) -> Bool {
        guard let error else { return false }
        if case .conflict = storeError(error) { return true }
        return false
    }

    static func storeError(_ error: any Error) -> StoreError {
        switch error {
        case let error as StoreError:
            return error
        case is Timeout:
            return .unavailable("no answer from PostgreSQL in time")
        case let error as PSQLError:
            guard let info = error.serverInfo else {
                return .unavailable("PostgreSQL connection failed (\(error.code))")
            }
            let state = info[.sqlState] ?? ""
            let message = info[.message] ?? "server error"
            switch state.prefix(2) {
            case "23": return .constraintViolation(message)
            case "40": return .conflict("\(message) (SQLSTATE \(state))")
            case "08", "53", "57": return .unavailable("\(message) (SQLSTATE \(state))")
            default: return .query("\(message) (SQLSTATE \(state))")
            }
        case is CancellationError:
            return .unavailable("cancelled")
        default:
            return .unavailable("\(error)")
        }
    }
}

private struct PostgresTransaction: StoreTransaction {
    let connection: PostgresConnection
    let logger: Logger

    func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        do {
            let sequence = try await connection.query(try PostgresStore.postgresQuery(query), logger: logger)
            return try await PostgresStore.collect(sequence)
        } catch {
            throw PostgresStore.storeError(error)
        }
    }

    @discardableResult
    func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await self.query(query)
    }
}

/// How many of a connection's channels are heard.
private final class ListenCount: Sendable {
    let value = Atomic<Int>(0)
}
