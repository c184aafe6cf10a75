import Foundation
import KeelStore
import KeelTestSupport
import Testing

/// The behaviour every store driver must have; each test runs against SQLite and PostgreSQL.
@Suite struct StoreContractTests {
    static let table = Migration(
        module: "test", version: 1, name: "create items",
        sqlite: ["CREATE TABLE items (id TEXT PRIMARY KEY, n INTEGER, x REAL, label TEXT, flag INTEGER, data BLOB, at INTEGER)"],
        postgres: ["CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT, x DOUBLE PRECISION, label TEXT, flag BOOLEAN, data BYTEA, at TIMESTAMPTZ)"])

    @Test(arguments: StoreKind.allCases)
    func valuesRoundTrip(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            let at = Date(timeIntervalSince1970: 1_795_630_150.123456)
            let label = "quote ' and \"; DROP TABLE items; --"
            let inserted = try await store.execute("""
                INSERT INTO items (id, n, x, label, flag, data, at)
                VALUES (\("a"), \(Int64.max), \(2.5), \(label), \(true), \(SQLValue.blob([0, 1, 255])), \(at))
                RETURNING id
                """)
            #expect(try inserted.first?.string("id") == "a")
            try await store.execute("INSERT INTO items (id, n, label) VALUES (\("b"), \(Int?.none as Int?), \(String?.none as String?))")

            let rows = try await store.query("SELECT * FROM items ORDER BY id")
            #expect(rows.count == 2)
            let a = try #require(rows.first)
            #expect(try a.int("n") == Int.max)
            #expect(try a.double("x") == 2.5)
            #expect(try a.string("label") == label)
            #expect(try a.bool("flag"))
            #expect(try a.bytes("data") == [0, 1, 255])
            #expect(abs(try a.date("at").timeIntervalSince(at)) < 0.000001)
            let b = rows[1]
            #expect(try b.optionalInt("n") == nil)
            #expect(try b.optionalString("label") == nil)
            #expect(try b.optionalDate("at") == nil)
            #expect(throws: StoreError.self) { try a.string("n") }
            #expect(throws: StoreError.self) { try a.int("missing") }
        }
    }

    /// A statement run as prepared takes new values at every call, `NULL`s of typed Swift values included, and a text
    /// that differs from the first one under the same name still runs (unprepared).
    @Test(arguments: StoreKind.allCases)
    func preparedStatementsTakeNewValuesAtEveryCall(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            func insert(_ id: String, n: Int?, label: String?, at: Date?) async throws {
                try await store.execute("INSERT INTO items (id, n, label, at) VALUES (\(id), \(n), \(label), \(at))", as: InsertItem.self)
            }
            let at = Date(timeIntervalSince1970: 1_795_630_150.123456)
            try await insert("a", n: nil, label: nil, at: nil)
            try await insert("b", n: 7, label: "seven", at: at)
            try await insert("c", n: nil, label: "no number", at: nil)
            try await store.execute("INSERT INTO items (id, flag) VALUES (\("d"), \(true))", as: InsertItem.self)

            let rows = try await store.query("SELECT * FROM items ORDER BY id")
            #expect(try rows.map { try $0.string("id") } == ["a", "b", "c", "d"])
            #expect(try rows[0].optionalInt("n") == nil && rows[0].optionalString("label") == nil)
            #expect(try rows[1].int("n") == 7 && rows[1].string("label") == "seven")
            #expect(abs(try rows[1].date("at").timeIntervalSince(at)) < 0.000001)
            #expect(try rows[2].optionalInt("n") == nil && rows[2].string("label") == "no number")
            #expect(try rows[3].bool("flag"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func transactionsCommitOrRollBackWhole(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            try await store.transaction { tx in
                try await tx.execute("INSERT INTO items (id) VALUES (\("one"))")
                try await tx.execute("INSERT INTO items (id) VALUES (\("two"))")
                let inside = try await tx.query("SELECT count(*) AS c FROM items")
                #expect(try inside.first?.int("c") == 2)
            }
            struct Abort: Error {}
            await #expect(throws: Abort.self) {
                try await store.transaction { tx in
                    try await tx.execute("INSERT INTO items (id) VALUES (\("three"))")
                    throw Abort()
                }
            }
            let afterRollback = try await store.query("SELECT count(*) AS c FROM items")
            #expect(try afterRollback.first?.int("c") == 2)
        }
    }

    /// A transaction whose task is cancelled half-way is rolled back, and the store goes on committing later writes
    /// (the rollback must run although its caller was cancelled).
    @Test(arguments: StoreKind.allCases)
    func aCancelledTransactionRollsBackAndLaterWritesCommit(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.execute("CREATE TABLE notes (body TEXT NOT NULL)")
            let started = RunCounter()
            let abandoned = Task {
                try await store.transaction { tx in
                    try await tx.execute("INSERT INTO notes (body) VALUES ('abandoned')")
                    started.count.withLock { $0 += 1 }
                    try await Task.sleep(for: .seconds(30))
                }
            }
            while started.count.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
            abandoned.cancel()
            _ = try? await abandoned.value
            try await store.execute("INSERT INTO notes (body) VALUES ('kept')")
            let notes = try await store.query("SELECT body FROM notes").map { try $0.string("body") }
            #expect(notes == ["kept"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func constraintViolationsAreReportedAsSuch(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            try await store.execute("INSERT INTO items (id) VALUES (\("dup"))")
            await #expect { try await store.execute("INSERT INTO items (id) VALUES (\("dup"))") } throws: { error in
                if case .constraintViolation = error as? StoreError { true } else { false }
            }
            await #expect { try await store.query("SELECT * FROM no_such_table") } throws: { error in
                if case .query = error as? StoreError { true } else { false }
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func readsInsideAWriteTransactionDoNotDeadlock(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            try await store.execute("INSERT INTO items (id) VALUES (\("committed"))")
            try await store.transaction { tx in
                try await tx.execute("INSERT INTO items (id) VALUES (\("uncommitted"))")
                // A plain read from outside the transaction sees only committed rows, and is not queued behind the writer.
                let outside = try await store.query("SELECT id FROM items ORDER BY id")
                let ids = try outside.map { try $0.string("id") }
                #expect(ids == ["committed"])
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func hundredConcurrentWritersAllSucceed(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.migrate([Self.table])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        if index.isMultiple(of: 2) {
                            try await store.execute("INSERT INTO items (id, n) VALUES (\("w\(index)"), \(index))")
                        } else {
                            try await store.transaction { tx in
                                try await tx.execute("INSERT INTO items (id, n) VALUES (\("w\(index)"), \(index))")
                                try await tx.execute("UPDATE items SET n = n + 1 WHERE id = \("w\(index)")")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let row = try #require(try await store.query("SELECT count(*) AS c, sum(n) AS s FROM items").first)
            #expect(try row.int("c") == 100)
            #expect(try row.double("s") == Double((0..<100).reduce(0, +) + 50))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func pingAndPoolStatistics(kind: StoreKind) async throws {
        try await withScratchStore(kind) { store in
            try await store.ping()
            #expect(store.poolStatistics().maximumConnections >= 1)
            #expect(store.poolStatistics().inFlight == 0)
            #expect(store.dialect.rawValue == kind.rawValue)
        }
    }
}

private enum InsertItem: PreparedStatement {}
