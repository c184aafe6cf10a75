import KeelCore
import Logging

extension KeelConfig {
    /// Opens the store this configuration names. PostgreSQL connects lazily, once the store runs.
    public func openStore(logger: Logger) async throws(StoreError) -> any Store {
        switch database {
        case .sqlite(let path):
            return try await SQLiteStore.open(path: path, readerCount: min(databaseMaxConnections, 4), logger: logger)
        case .postgres(let url):
            return try PostgresStore(url: url, tls: databaseTLS, caFile: databaseTLSCAFile,
                                     maximumConnections: databaseMaxConnections, preparesStatements: jobWakeup == .notify, logger: logger)
        }
    }
}
