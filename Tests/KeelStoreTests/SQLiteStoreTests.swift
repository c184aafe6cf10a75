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

    /// While the store runs, its own connection checkpoints the WAL between bursts of writes, so the WAL starts over
    /// long before the writer's threshold would make a commit checkpoint: 6 MB written in bursts of 512 kB leave a WAL
    /// that never grew past a burst or two.
    @Test func aRunningStoreCheckpointsBesideTheWriter() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/keel.db"
            let store = try await SQLiteStore.open(path: path, logger: quietLogger)
            let running = Task { try await store.run() }
            try await store.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
            for burst in 0..<12 {
                for row in 0..<8 {
                    try await store.execute("INSERT INTO t (id, payload) VALUES (\(burst * 8 + row), \(SQLValue.blob(Array(repeating: UInt8(row), count: 65_536))))")
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            let wal = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
            #expect(wal < 2 << 20, "the WAL holds \(wal) bytes")
            #expect(try await store.query("SELECT count(*) AS c FROM t").first?.int("c") == 96)
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
