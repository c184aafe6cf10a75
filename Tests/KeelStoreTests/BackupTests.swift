import Foundation
import KeelCore
import KeelStore
import KeelTestSupport
import Testing

/// `keel backup` and `keel restore` underneath: a verified copy of a live store restores into a fresh one with the
/// same data, on SQLite and on PostgreSQL (pg_dump and pg_restore), and damaged or foreign files are refused.
@Suite struct BackupTests {
    static let things = Migration.portable(module: "backup-test", version: 1, name: "things", statements: [
        "CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT)",
    ])

    static func contents(_ location: DatabaseLocation) async throws -> (count: Int, sum: Int, notes: Set<String>) {
        try await withRunningStore(try await openStore(location)) { store in
            let rows = try await store.query("SELECT n, note FROM things")
            return (rows.count, try rows.reduce(0) { $0 + (try $1.int("n")) }, Set(try rows.compactMap { try $0.optionalString("note") }))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aBackupOfALiveStoreRestoresIntoAFreshOneWithTheSameData(_ kind: StoreKind) async throws {
        try await withTemporaryDirectory { directory in
            try await withScratchDatabase(kind) { source in
                try await withRunningStore(try await openStore(source)) { store in
                    _ = try await store.migrate([Self.things])
                    for n in 1...200 {
                        try await store.execute("INSERT INTO things (id, n, note) VALUES (\("t\(n)"), \(n), \(n % 10 == 0 ? "note ‘\(n)’ 🚀" : nil))")
                    }
                    // Taken while the store is open and in use, as a scheduled backup is.
                    let copy = directory + "/copy"
                    let summary = try await StoreBackup.backup(source, tls: .disable, to: copy)
                    #expect(summary.format == (kind == .sqlite ? .sqlite : .postgres) && summary.migrations >= 1 && summary.bytes > 0)
                    await #expect(throws: StoreBackup.Failure.self, "a backup never overwrites a file") {
                        try await StoreBackup.backup(source, tls: .disable, to: copy)
                    }
                    try await store.execute("DELETE FROM things WHERE n > 100")
                }
                let original = (count: 200, sum: 200 * 201 / 2)
                let copy = directory + "/copy"
                try await withScratchDatabase(kind) { target in
                    _ = try await StoreBackup.restore(target, tls: .disable, from: copy)
                    let restored = try await Self.contents(target)
                    #expect(restored.count == original.count && restored.sum == original.sum && restored.notes.contains("note ‘200’ 🚀"))
                }
                // Restoring over the source brings back what was deleted since.
                _ = try await StoreBackup.restore(source, tls: .disable, from: copy)
                #expect(try await Self.contents(source).count == original.count)
            }
        }
    }

    @Test func damagedForeignAndMismatchedFilesAreRefused() async throws {
        try await withTemporaryDirectory { directory in
            let garbage = directory + "/garbage"
            try Data("not a backup at all".utf8).write(to: URL(fileURLWithPath: garbage))
            await #expect(throws: StoreBackup.Failure.self) { try await StoreBackup.verify(garbage) }
            let truncated = directory + "/truncated"
            try Data("SQLite format 3\0".utf8 + Data(repeating: 7, count: 200)).write(to: URL(fileURLWithPath: truncated))
            await #expect(throws: (any Error).self) { try await StoreBackup.verify(truncated) }
            try await withScratchDatabase(.sqlite) { source in
                try await withRunningStore(try await openStore(source)) { store in _ = try await store.migrate([Self.things]) }
                let copy = directory + "/sqlite-copy"
                _ = try await StoreBackup.backup(source, tls: .disable, to: copy)
                try await withScratchDatabase(.postgres) { postgres in
                    let refusal = await #expect(throws: StoreBackup.Failure.self) { try await StoreBackup.restore(postgres, tls: .disable, from: copy) }
                    #expect(refusal?.description.contains("is a sqlite backup; the configured store is PostgreSQL") == true)
                }
            }
        }
    }

    @Test func scheduledBackupsKeepTheNewest() async throws {
        try await withTemporaryDirectory { directory in
            try await withScratchDatabase(.sqlite) { source in
                try await withRunningStore(try await openStore(source)) { store in _ = try await store.migrate([Self.things]) }
                try Data("someone else's file".utf8).write(to: URL(fileURLWithPath: directory + "/notes.txt"))
                let start = Date(timeIntervalSince1970: 1_800_000_000)
                var removed: [String] = []
                for day in 0..<5 {
                    removed += try await StoreBackup.backupIntoDirectory(source, tls: .disable, directory: directory, keep: 3,
                                                                         now: start.addingTimeInterval(Double(day) * 86_400)).removed
                }
                let left = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                #expect(left == ["keel-20270117T080000Z.sqlite", "keel-20270118T080000Z.sqlite", "keel-20270119T080000Z.sqlite", "notes.txt"])
                #expect(removed == ["keel-20270115T080000Z.sqlite", "keel-20270116T080000Z.sqlite"])
            }
        }
    }
}
