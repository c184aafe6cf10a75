import Foundation
import KeelStore
import KeelTestSupport
import Testing

@Suite struct MigrationTests {
    static let first = Migration(module: "test", version: 1, name: "create a",
                                 sqlite: ["CREATE TABLE a (id INTEGER PRIMARY KEY)"], postgres: ["CREATE TABLE a (id BIGINT PRIMARY KEY)"])
    static let second = Migration(module: "test", version: 2, name: "add a.name",
                                  sqlite: ["ALTER TABLE a ADD COLUMN name TEXT"], postgres: ["ALTER TABLE a ADD COLUMN name TEXT"])
    static let other = Migration(module: "other", version: 1, name: "create b",
                                 sqlite: ["CREATE TABLE b (id INTEGER)"], postgres: ["CREATE TABLE b (id BIGINT)"])

    @Test(arguments: StoreKind.allCases)
    func appliesPendingMigrationsOnceAndRecordsThem(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            let appliedBefore = try await store.appliedMigrations()
            #expect(appliedBefore.isEmpty)
            let firstRun = try await store.migrate([Self.first])
            #expect(firstRun.map(\.version) == [1])
            let secondRun = try await store.migrate([Self.first, Self.second, Self.other])
            #expect(secondRun.map(\.name) == ["add a.name", "create b"])
            let thirdRun = try await store.migrate([Self.first, Self.second, Self.other])
            #expect(thirdRun.isEmpty)
            let applied = try await store.appliedMigrations()
            #expect(applied.map { "\($0.module)/\($0.version)" } == ["other/1", "test/1", "test/2"])
            #expect(applied.allSatisfy { abs($0.appliedAt.timeIntervalSinceNow) < 60 })
            try await store.execute("INSERT INTO a (id, name) VALUES (\(1), \("x"))")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aFailingMigrationLeavesNothingBehind(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            let broken = Migration(module: "test", version: 2, name: "broken",
                                   sqlite: ["CREATE TABLE c (id INTEGER)", "THIS IS NOT SQL"],
                                   postgres: ["CREATE TABLE c (id BIGINT)", "THIS IS NOT SQL"])
            await #expect(throws: StoreError.self) { try await store.migrate([Self.first, broken]) }
            let appliedAfterFailure = try await store.appliedMigrations()
            #expect(appliedAfterFailure.isEmpty)
            let retried = try await store.migrate([Self.first])
            #expect(retried.count == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func refusesEditedMigrationsAndNewerSchemas(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.first, Self.second])
            let edited = Migration(module: "test", version: 1, name: "create a",
                                   sqlite: ["CREATE TABLE a (id TEXT)"], postgres: ["CREATE TABLE a (id TEXT)"])
            await #expect { try await store.migrate([edited, Self.second]) } throws: { error in
                "\(error)".contains("differs from the one applied")
            }
            await #expect { try await store.migrate([Self.first]) } throws: { error in
                "\(error)".contains("newer than this keel binary")
            }
            await #expect { try await store.migrate([Self.first, Self.first]) } throws: { error in
                "\(error)".contains("declared twice")
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentMigratorsApplyEachMigrationExactlyOnce(kind: StoreKind) async throws {
        try await withScratchDatabase(kind) { location in
            // Separate stores stand for separate processes: separate connections and pools.
            let stores = try await (0..<6).asyncMap { _ in try await openStore(location, maximumConnections: 2) }
            let applied = try await withThrowingTaskGroup(of: Int.self) { group in
                for store in stores {
                    group.addTask {
                        try await withRunningStore(store) { try await $0.migrate([Self.first, Self.second, Self.other]).count }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(applied == 3)
            let check = try await openStore(location)
            try await withRunningStore(check) { store in
                let recorded = try await store.appliedMigrations()
                #expect(recorded.count == 3)
            }
        }
    }
}
