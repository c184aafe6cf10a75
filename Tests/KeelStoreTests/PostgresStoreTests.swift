import Foundation
import KeelCore
import KeelStore
import KeelTestSupport
import Testing

@Suite struct PostgresStoreTests {
    @Test func unreachableServerIsUnavailableNotAHang() async throws {
        let url = try PostgresURL(parsing: "postgres://keel:pw@127.0.0.1:\(try freePort())/keel")
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

    @Test func locationMasksThePassword() throws {
        let url = try PostgresURL(parsing: "postgres://keel:s3cret@db:5432/keel")
        let store = try PostgresStore(url: url, tls: .prefer, maximumConnections: 1, logger: quietLogger)
        #expect(store.location == "postgres://keel:****@db:5432/keel")
    }
}
