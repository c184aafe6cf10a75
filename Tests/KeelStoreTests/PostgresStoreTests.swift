import Foundation
import Synchronization
import KeelCore
import KeelStore
import KeelTestSupport
import Testing

@Suite struct PostgresStoreTests {
    @Test func unreachableServerIsUnavailableNotAHang() async throws {
        let closed = try ClosedPort()
        defer { withExtendedLifetime(closed) {} }
        let url = try PostgresURL(parsing: "postgres://keel:pw@127.0.0.1:\(closed.port)/keel")
        let store = try PostgresStore(url: url, tls: .disable, maximumConnections: 2, operationTimeout: .seconds(2), logger: quietLogger)
        try await withRunningStore(store) { store in
            await #expect { try await store.ping() } throws: { error in
                if case .unavailable = error as? StoreError { true } else { false }
            }
        }
    }

    @Test func wrongPasswordIsReported() async throws {
        var url = try TestPostgres.adminURL()
        url.password = Secret("definitely-wrong")
        let store = try PostgresStore(url: url, tls: .disable, maximumConnections: 1, operationTimeout: .seconds(5), logger: quietLogger)
        try await withRunningStore(store) { store in
            await #expect(throws: StoreError.self) { try await store.ping() }
        }
    }

    /// A prepared statement is parsed once on a connection and stays there; with `job_wakeup: poll` (behind a pooler in
    /// transaction mode, where the next call may run on another server connection) nothing is prepared.
    @Test(arguments: [JobWakeup.notify, .poll])
    func preparedStatementsStayOnTheirConnection(wakeup: JobWakeup) async throws {
        try await TestPostgres.withDatabase { url in
            var config = KeelConfig()
            config.database = .postgres(url)
            config.databaseTLS = .disable
            config.databaseMaxConnections = 1  // so the statements below all run on one connection
            config.jobWakeup = wakeup
            try await withRunningStore(try await config.openStore(logger: quietLogger)) { store in
                try await store.execute("CREATE TABLE numbers (n INTEGER, label TEXT)")
                for n in 1...3 {
                    try await store.execute("INSERT INTO numbers (n, label) VALUES (\(n), \(n == 2 ? nil : String(n)))", as: InsertNumber.self)
                }
                let prepared = try await store.query("SELECT name, parameter_types::text AS types FROM pg_prepared_statements")
                let count = try await store.query("SELECT count(*) AS c FROM numbers").first?.int("c")
                #expect(count == 3)
                if wakeup == .notify {
                    #expect(prepared.count == 1)
                    #expect(try prepared.first?.string("name").hasPrefix("keel_") == true)
                    #expect(try prepared.first?.string("types") == "{bigint,text}")
                } else {
                    #expect(prepared.isEmpty)
                }
            }
        }
    }

    @Test func locationMasksThePassword() throws {
        let url = try PostgresURL(parsing: "postgres://keel:s3cret@db:5432/keel")
        let store = try PostgresStore(url: url, tls: .prefer, maximumConnections: 1, logger: quietLogger)
        #expect(store.location == "postgres://keel:****@db:5432/keel")
    }

    /// Two transactions taking the same rows in opposite order deadlock; PostgreSQL aborts one, the store runs it
    /// again, and both changes land.
    @Test func aDeadlockVictimIsRunAgain() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.execute("CREATE TABLE pair (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            try await store.execute("INSERT INTO pair (name, n) VALUES ('a', 0), ('b', 0)")
            let runs = RunCounter()
            let firstUpdates = RunCounter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (first, second) in [("a", "b"), ("b", "a")] {
                    group.addTask {
                        try await store.transaction { tx in
                            runs.count.withLock { $0 += 1 }
                            try await tx.execute("UPDATE pair SET n = n + 1 WHERE name = \(first)")
                            // Both hold their first row before either asks for its second: a certain deadlock.
                            firstUpdates.count.withLock { $0 += 1 }
                            while firstUpdates.count.withLock({ $0 }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
                            try await tx.execute("UPDATE pair SET n = n + 1 WHERE name = \(second)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let rows = try await store.query("SELECT SUM(n) AS total FROM pair")
            #expect(try rows.first?.int("total") == 4)
            #expect(runs.count.withLock { $0 } == 3)
        }
    }
}

final class RunCounter: Sendable {
    let count = Mutex(0)
}

private enum InsertNumber: PreparedStatement {}
