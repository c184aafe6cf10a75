import Foundation
import KeelStore
import KeelTestSupport
import Testing

/// What only the embedded driver has to show: WAL, and many writers from several connections
/// (as from several processes) never surfacing "database is locked".
@Suite struct SQLiteStoreTests {
    @Test func usesWriteAheadLogging() async throws {
        try await withScratchStore(.sqlite) { store in
            let mode = try await store.query("PRAGMA journal_mode")
            #expect(try mode.first?.string("journal_mode") == "wal")
        }
    }

    @Test func readerConnectionsCannotWrite() async throws {
        try await withScratchStore(.sqlite) { store in
            try await store.execute("CREATE TABLE t (id INTEGER)")
            await #expect(throws: StoreError.self) { try await store.query("INSERT INTO t (id) VALUES (1)") }
        }
    }

    @Test func twoStoresOnOneFileWriteConcurrentlyWithoutLockErrors() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/shared.db"
            let first = try await SQLiteStore.open(path: path, logger: quietLogger)
            let second = try await SQLiteStore.open(path: path, logger: quietLogger)
            try await first.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, origin TEXT)")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    let store = index.isMultiple(of: 2) ? first : second
                    let origin = index.isMultiple(of: 2) ? "first" : "second"
                    group.addTask {
                        _ = try await store.transaction { tx in
                            try await tx.execute("INSERT INTO t (id, origin) VALUES (\(index), \(origin))")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let rows = try await first.query("SELECT count(*) AS c FROM t")
            #expect(try rows.first?.int("c") == 200)
            await first.close()
            await second.close()
        }
    }

    /// While the store runs, commits never checkpoint (SQLite's threshold is off on the writer) and a connection of the
    /// store's own keeps the WAL from growing: 24 MB written in small transactions leave a WAL of a few MB.
    @Test func aRunningStoreCheckpointsBesideTheWriter() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/keel.db"
            let store = try await SQLiteStore.open(path: path, logger: quietLogger)
            let running = Task { try await store.run() }
            try await store.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
            var threshold: Int?
            for _ in 0..<100 where threshold != 0 {
                threshold = try await store.execute("PRAGMA wal_autocheckpoint").first?.int("wal_autocheckpoint")
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(threshold == 0)
            for batch in 0..<24 {
                for row in 0..<16 {
                    try await store.execute("INSERT INTO t (id, payload) VALUES (\(batch * 16 + row), \(SQLValue.blob(Array(repeating: UInt8(row), count: 65_536))))")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let wal = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
            #expect(wal < 8 << 20, "the WAL holds \(wal) bytes")
            #expect(try await store.query("SELECT count(*) AS c FROM t").first?.int("c") == 384)
            running.cancel()
            _ = await running.result
        }
    }

    @Test func createsItsDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let store = try await SQLiteStore.open(path: directory + "/nested/deeper/keel.db", logger: quietLogger)
            try await store.ping()
            #expect(FileManager.default.fileExists(atPath: directory + "/nested/deeper/keel.db"))
            await store.close()
        }
    }
}
