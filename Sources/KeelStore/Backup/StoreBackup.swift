import Foundation
import KeelCore
import Logging
import SQLiteNIO

/// Copies of a store that restore elsewhere, checked after they are written:
/// - SQLite: the database's own consistent online copy (`VACUUM INTO`), which writers never wait for, verified with
///   `PRAGMA integrity_check` and its migration records.
/// - PostgreSQL: `pg_dump`'s custom format (PostgreSQL's client tools, at least the server's version, on the PATH),
///   verified by reading its table of contents back with `pg_restore --list`.
public enum StoreBackup {
    public enum Format: String, Sendable {
        case sqlite
        case postgres
    }

    public struct Summary: Sendable {
        public var format: Format
        public var bytes: Int
        /// Schema migrations recorded in the copy: a copy of a Keel store has at least one.
        public var migrations: Int
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Writes a backup of `database` to `path` (a new file) and verifies it.
    public static func backup(_ database: DatabaseLocation, tls: DatabaseTLS, to path: String) async throws -> Summary {
        guard !FileManager.default.fileExists(atPath: path) else { throw Failure("\(path) already exists; a backup never overwrites a file") }
        switch database {
        case .sqlite(let source):
            guard FileManager.default.fileExists(atPath: source) else { throw Failure("there is no SQLite store at \(source)") }
            try await withSQLite(source) { connection in
                _ = try await connection.query("VACUUM INTO ?", [.text(path)])
            }
        case .postgres(let url):
            try await run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", "--file", path], url: url, tls: tls)
        }
        return try await verify(path)
    }

    /// Reads the backup at `path` back: which store it is for, and that it is whole.
    public static func verify(_ path: String) async throws -> Summary {
        let format = try format(of: path)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        switch format {
        case .sqlite:
            return try await withSQLite(path) { connection in
                let check = try await connection.query("PRAGMA integrity_check").first?.column("integrity_check")?.string
                guard check == "ok" else { throw Failure("\(path) is damaged: \(check ?? "no answer to the integrity check")") }
                let migrations = try await connection.query("SELECT COUNT(*) AS n FROM keel_schema_migrations").first?.column("n")?.integer ?? 0
                guard migrations > 0 else { throw Failure("\(path) is a SQLite database but not a Keel store") }
                return Summary(format: .sqlite, bytes: bytes, migrations: migrations)
            }
        case .postgres:
            let listing = try await run("pg_restore", ["--list", path], url: nil, tls: .disable)
            let migrations = listing.split(separator: "\n").filter { $0.contains("TABLE DATA") && $0.contains("keel_schema_migrations") }.count
            guard migrations > 0 else { throw Failure("\(path) is a pg_dump archive but holds no Keel store") }
            return Summary(format: .postgres, bytes: bytes, migrations: migrations)
        }
    }

    /// Replaces the store's contents with the backup at `path`. The backup is verified first and must be of the
    /// store's kind. SQLite: no Keel process may have the store open. PostgreSQL: one transaction, so a failure
    /// leaves the database as it was.
    public static func restore(_ database: DatabaseLocation, tls: DatabaseTLS, from path: String) async throws -> Summary {
        let summary = try await verify(path)
        switch (database, summary.format) {
        case (.sqlite(let target), .sqlite):
            let directory = (target as NSString).deletingLastPathComponent
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            let staging = target + ".restoring"
            try? FileManager.default.removeItem(atPath: staging)
            try FileManager.default.copyItem(atPath: path, toPath: staging)
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: target + suffix) }
            guard rename(staging, target) == 0 else { throw Failure("cannot move the restored store into place at \(target): errno \(errno)") }
        case (.postgres(let url), .postgres):
            // The connection comes from libpq's environment; pg_restore still wants the database named.
            try await run("pg_restore", ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
                                         "--exit-on-error", "--dbname", url.database, path], url: url, tls: tls)
        case (_, let format):
            throw Failure("\(path) is a \(format.rawValue) backup; the configured store is \(database.kind)")
        }
        return summary
    }

    public static func format(of path: String) throws -> Format {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure("cannot read \(path)") }
        defer { try? handle.close() }
        let head = handle.readData(ofLength: 16)
        if head.starts(with: Data("SQLite format 3\0".utf8)) { return .sqlite }
        if head.starts(with: Data("PGDMP".utf8)) { return .postgres }
        throw Failure("\(path) is neither a SQLite store nor a pg_dump archive")
    }

    private static func withSQLite<Result: Sendable>(_ path: String, _ body: @Sendable (SQLiteConnection) async throws -> Result) async throws -> Result {
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: Logger(label: "keel.backup"))
        do {
            let result = try await body(connection)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// Runs a PostgreSQL client tool with the connection in libpq's environment (the password never on a command
    /// line) and returns its standard output; a failure carries its standard error.
    @discardableResult
    private static func run(_ tool: String, _ arguments: [String], url: PostgresURL?, tls: DatabaseTLS) async throws -> String {
        guard let executable = locate(tool) else {
            throw Failure("\(tool) is not installed: install PostgreSQL's client tools (Debian: postgresql-client) at least as new as the server")
        }
        var environment = ProcessInfo.processInfo.environment
        if let url {
            environment["PGHOST"] = url.unixSocketPath.map { ($0 as NSString).deletingLastPathComponent } ?? url.host
            environment["PGPORT"] = String(url.port)
            environment["PGUSER"] = url.username
            environment["PGDATABASE"] = url.database
            environment["PGSSLMODE"] = (url.sslmode ?? tls).rawValue
            if let password = url.password { environment["PGPASSWORD"] = password.value }
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read both pipes while the tool runs, so a large listing cannot fill a pipe and stall it.
        async let outputData = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
        async let errorData = Task.detached { errors.fileHandleForReading.readDataToEndOfFile() }.value
        let (stdout, stderr) = await (outputData, errorData)
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        guard process.terminationStatus == 0 else {
            let message = String(decoding: stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Failure("\(tool) failed (exit \(process.terminationStatus)): \(message)")
        }
        return String(decoding: stdout, as: UTF8.self)
    }

    /// On the PATH, or in Debian's versioned directories (the newest first) when only the server package is installed.
    static func locate(_ tool: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        let versioned = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
        return (path + versioned).map { $0 + "/" + tool }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

extension DatabaseLocation {
    var kind: String {
        switch self {
        case .sqlite: "SQLite"
        case .postgres: "PostgreSQL"
        }
    }
}

extension StoreBackup {
    /// `keel-20261126T053812Z.sqlite` or `.dump`: names that sort by time.
    public static func fileName(for database: DatabaseLocation, at date: Date) -> String {
        let stamp = date.formatted(.iso8601.year().month().day().dateSeparator(.omitted).time(includingFractionalSeconds: false)
            .timeSeparator(.omitted).timeZone(separator: .omitted))
        switch database {
        case .sqlite: return "keel-\(stamp).sqlite"
        case .postgres: return "keel-\(stamp).dump"
        }
    }

    /// A timestamped, verified backup in `directory`; with `keep`, the oldest of Keel's backups there beyond it are removed.
    public static func backupIntoDirectory(_ database: DatabaseLocation, tls: DatabaseTLS, directory: String, keep: Int?,
                                           now: Date = Date()) async throws -> (path: String, summary: Summary, removed: [String]) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = (directory as NSString).appendingPathComponent(fileName(for: database, at: now))
        let summary = try await backup(database, tls: tls, to: path)
        var removed: [String] = []
        if let keep {
            let ours = try FileManager.default.contentsOfDirectory(atPath: directory)
                .filter { $0.hasPrefix("keel-") && ($0.hasSuffix(".sqlite") || $0.hasSuffix(".dump")) }.sorted()
            for name in ours.dropLast(keep) {
                try FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(name))
                removed.append(name)
            }
        }
        return (path, summary, removed)
    }
}
