import Foundation
import Logging
import NIOCore
import SQLiteNIO
import ServiceLifecycle
import Synchronization

/// The embedded store: one SQLite file in WAL mode. All writes go through a single writer connection,
/// queued in arrival order, so concurrent writers wait their turn instead of failing with
/// "database is locked"; reads run on separate reader connections and never wait for writes. A
/// `busy_timeout` covers other processes that open the same file.
public final class SQLiteStore: Store {
    public let dialect = SQLDialect.sqlite
    public let location: String

    private let writer: SQLiteConnection
    private let writeLock = AsyncLock()
    /// Checkpoints the WAL beside the writer while the store runs (see ``run()``).
    private let checkpointer: SQLiteConnection
    private let writesSinceCheckpoint = Atomic<Int>(0)
    private let readers: AsyncPool<SQLiteConnection>
    private let allConnections: [SQLiteConnection]
    private let threadPools: [NIOThreadPool]
    private let metrics: StoreMetrics
    private let logger: Logger

    private init(path: String, writer: SQLiteConnection, checkpointer: SQLiteConnection, readers: [SQLiteConnection],
                 threadPools: [NIOThreadPool], logger: Logger) {
        self.location = "sqlite:\(path)"
        self.writer = writer
        self.checkpointer = checkpointer
        self.readers = AsyncPool(readers)
        self.allConnections = [writer, checkpointer] + readers
        self.threadPools = threadPools
        self.metrics = StoreMetrics(driver: "sqlite")
        self.logger = logger
    }

    /// Opens (creating if needed) the database file and its directory.
    public static func open(path: String, readerCount: Int = 4, logger: Logger) async throws(StoreError) -> SQLiteStore {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .unavailable("cannot create directory \(directory): \(error.localizedDescription)")
            }
        }
        // The writer and the readers block in SQLite calls (fsync, busy waits for other processes) on
        // threads of their own, so neither can starve the other or the rest of the process.
        let writerThread = NIOThreadPool(numberOfThreads: 1)
        let checkpointThread = NIOThreadPool(numberOfThreads: 1)
        let readerThreads = NIOThreadPool(numberOfThreads: max(1, readerCount))
        let threadPools = [writerThread, checkpointThread, readerThreads]
        for pool in threadPools { pool.start() }
        let eventLoop = MultiThreadedEventLoopGroup.singleton.any()
        do {
            let writer = try await SQLiteConnection.open(storage: .file(path: path), threadPool: writerThread, logger: logger, on: eventLoop)
            for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 10000"] {
                _ = try await writer.query(pragma)
            }
            var readers: [SQLiteConnection] = []
            for _ in 0..<max(1, readerCount) {
                let reader = try await SQLiteConnection.open(storage: .file(path: path), threadPool: readerThreads, logger: logger, on: eventLoop)
                for pragma in ["PRAGMA query_only = ON", "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 10000"] {
                    _ = try await reader.query(pragma)
                }
                readers.append(reader)
            }
            let checkpointer = try await SQLiteConnection.open(storage: .file(path: path), threadPool: checkpointThread, logger: logger, on: eventLoop)
            _ = try await checkpointer.query("PRAGMA busy_timeout = 10000")
            return SQLiteStore(path: path, writer: writer, checkpointer: checkpointer, readers: readers, threadPools: threadPools, logger: logger)
        } catch {
            for pool in threadPools { try? await pool.shutdownGracefully() }
            throw Self.storeError(error)
        }
    }

    public func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await measured("read") {
            try await readers.withResource { connection in try await Self.run(query, on: connection) }
        }
    }

    @discardableResult
    public func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        writesSinceCheckpoint.add(1, ordering: .relaxed)
        return try await measured("write") {
            try await writeLock.withLock { try await Self.run(query, on: writer) }
        }
    }

    public func transaction<Result: Sendable>(
        _ body: @Sendable (any StoreTransaction) async throws -> Result
    ) async throws -> Result {
        let start = ContinuousClock.now
        writesSinceCheckpoint.add(1, ordering: .relaxed)
        return try await writeLock.withLock {
            metrics.writeWait.record(duration: ContinuousClock.now - start)
            return try await metrics.measure("transaction") {
                try await withTransaction(body)
            }
        }
    }

    /// Runs `body` inside BEGIN IMMEDIATE ... COMMIT on the writer; the caller holds the write lock.
    private func withTransaction<Result: Sendable>(
        _ body: @Sendable (any StoreTransaction) async throws -> Result
    ) async throws -> Result {
        // IMMEDIATE takes the file's write lock up front, so another process cannot make this
        // transaction fail half-way with SQLITE_BUSY.
        try await Self.run("BEGIN IMMEDIATE", on: writer)
        // COMMIT and ROLLBACK run even when the caller was cancelled: the thread pool skips cancelled work, and a
        // skipped ROLLBACK would leave the writer inside the transaction, so that later writes were never committed.
        let writer = self.writer
        func finish(_ statement: SQLQuery) async throws(StoreError) {
            let outcome = await Task { () async -> Swift.Result<[SQLRow], StoreError> in
                do throws(StoreError) { return .success(try await Self.run(statement, on: writer)) } catch { return .failure(error) }
            }.value
            _ = try outcome.get()
        }
        do {
            let result = try await body(SQLiteTransaction(connection: writer))
            try await finish("COMMIT")
            return result
        } catch {
            do { try await finish("ROLLBACK") } catch { logger.error("rollback failed", metadata: ["error": "\(error)"]) }
            throw error
        }
    }

    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws(StoreError) -> [Migration] {
        do {
            return try await writeLock.withLock {
                // Inside the IMMEDIATE transaction: processes starting together take turns.
                try await withTransaction { transaction in
                    try await MigrationPlanner.apply(migrations, in: transaction, dialect: .sqlite, logger: logger)
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw Self.storeError(error)
        }
    }

    public func appliedMigrations() async throws(StoreError) -> [AppliedMigration] {
        let exists = try await query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'keel_schema_migrations'")
        guard !exists.isEmpty else { return [] }
        return try MigrationPlanner.decode(try await query(MigrationPlanner.selectApplied))
    }

    public func listen(channels: [String], listening: @escaping @Sendable () -> Void,
                       notified: @escaping @Sendable (_ channel: String, _ payload: String) -> Void) async throws {
        while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
    }

    public func ping() async throws(StoreError) {
        _ = try await query("SELECT 1")
    }

    public func poolStatistics() -> StorePoolStatistics {
        StorePoolStatistics(maximumConnections: allConnections.count, inFlight: metrics.inFlight)
    }

    /// The connections stay open until the service group shuts down. Meanwhile the WAL is checkpointed here, on a
    /// connection of its own (PASSIVE: it never blocks the writer), after any writes: under the usual load the WAL is
    /// then fully copied and the next write starts it over, so no commit has to checkpoint (that commit would wait for
    /// the page copies and fsyncs: milliseconds, the slowest percent of job starts). A steady stream of writes never
    /// lets a checkpoint from beside the writer finish, so the writer still checkpoints itself, at 10,000 pages (40 MB)
    /// instead of SQLite's 1,000 while this runs: bounded, and rare enough not to cost a drain its throughput.
    public func run() async throws {
        // The store's own setting, not a caller's write: not counted in the store's metrics.
        _ = try? await writeLock.withLock { try await Self.run("PRAGMA wal_autocheckpoint = 10000", on: writer) }
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.checkpointInterval)
                guard writesSinceCheckpoint.exchange(0, ordering: .relaxed) > 0 else { continue }
                do {
                    try await Self.run("PRAGMA wal_checkpoint(PASSIVE)", on: checkpointer)
                } catch {
                    logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"])
                }
            }
        }
        await close()
    }

    static let checkpointInterval = Duration.milliseconds(200)

    /// Closes every connection after the write in progress. Runs detached because it is called from
    /// cancelled tasks at shutdown, and closing must still happen.
    public func close() async {
        let (writeLock, connections, threadPools) = (self.writeLock, allConnections, self.threadPools)
        await Task.detached {
            try? await writeLock.withLock {
                for connection in connections { try? await connection.close() }
            }
            for pool in threadPools { try? await pool.shutdownGracefully() }
        }.value
    }

    // MARK: - Helpers

    private func measured<T>(_ kind: String, _ body: () async throws -> T) async throws(StoreError) -> T {
        do {
            return try await metrics.measure(kind, body)
        } catch {
            throw Self.storeError(error)
        }
    }

    @discardableResult
    static func run(_ query: SQLQuery, on connection: SQLiteConnection) async throws(StoreError) -> [SQLRow] {
        let binds = query.binds.map(Self.sqliteData)
        do {
            let rows = try await connection.query(query.sql(for: .sqlite), binds)
            return rows.map { row in
                SQLRow(columns: row.columns.map(\.name), values: row.columns.map { Self.value($0.data) })
            }
        } catch {
            throw storeError(error)
        }
    }

    private static func sqliteData(_ value: SQLValue) -> SQLiteData {
        switch value {
        case .null: .null
        case .int(let value): .integer(Int(value))
        case .double(let value): .float(value)
        case .text(let value): .text(value)
        case .bool(let value): .integer(value ? 1 : 0)
        case .blob(let bytes): .blob(ByteBuffer(bytes: bytes))
        case .timestamp(let date): .integer(Int((date.timeIntervalSince1970 * 1_000_000).rounded()))
        }
    }

    private static func value(_ data: SQLiteData) -> SQLValue {
        switch data {
        case .integer(let value): .int(Int64(value))
        case .float(let value): .double(value)
        case .text(let value): .text(value)
        case .blob(var buffer): .blob(buffer.readBytes(length: buffer.readableBytes) ?? [])
        case .null: .null
        }
    }

    static func storeError(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        guard let error = error as? SQLiteError else { return .unavailable("\(error)") }
        switch error.reason {
        case .constraint, .constraintCheckFailed, .constraintCommitHookFailed, .constraintForeignKeyFailed,
             .constraintUserFunctionFailed, .constraintNotNullFailed, .constraintPrimaryKeyFailed,
             .constraintTriggerFailed, .constraintUniqueFailed, .constraintVirtualTableFailed,
             .constraintUniqueRowIDFailed, .constraintUpdateTriggerDeletedRow, .constraintStrictDataTypeFailed:
            return .constraintViolation(error.message)
        case .busy, .busyTimeout, .busyInRecovery, .busyInSnapshot, .locked, .cantOpen, .ioError, .full, .readOnly:
            return .unavailable(error.message)
        default:
            return .query(error.message)
        }
    }
}

private struct SQLiteTransaction: StoreTransaction {
    let connection: SQLiteConnection

    func query(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await SQLiteStore.run(query, on: connection)
    }

    @discardableResult
    func execute(_ query: SQLQuery) async throws(StoreError) -> [SQLRow] {
        try await SQLiteStore.run(query, on: connection)
    }
}
