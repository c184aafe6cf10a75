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

    @Test func createsItsDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let store = try await SQLiteStore.open(path: directory + "/nested/deeper/keel.db", logger: quietLogger)
            try await store.ping()
            #expect(FileManager.default.fileExists(atPath: directory + "/nested/deeper/keel.db"))
            await store.close()
        }
    }
}
