import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeelCore
import KeelMail
import KeelServer
import KeelStore

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back the store up and verify the copy: SQLite's online copy, or pg_dump's custom format for PostgreSQL.")

    @Option(help: "File to write (\"-\": standard output). Default: keel-<UTC time>.<sqlite|dump> in --dir or here.")
    var output: String?

    @Option(help: "Directory for timestamped backups (with --keep, the oldest beyond it are removed).")
    var dir: String?

    @Option(help: "With --dir: how many backups to keep (the newest).")
    var keep: Int?

    @OptionGroup var options: ServerOptions

    func validate() throws {
        if let keep, keep < 1 { throw ValidationError("--keep must be at least 1") }
        if keep != nil, dir == nil { throw ValidationError("--keep needs --dir: it prunes the backups in that directory") }
        if output != nil, dir != nil { throw ValidationError("give --output or --dir, not both") }
    }

    func run() async throws {
        let config = try options.load().config
        do {
            if let dir {
                let made = try await StoreBackup.backupIntoDirectory(config.database, tls: config.databaseTLS, directory: dir, keep: keep)
                print("\(made.path): \(made.summary.format.rawValue) backup, \(made.summary.bytes) bytes, verified"
                      + (made.removed.isEmpty ? "" : "; removed \(made.removed.count) older"))
                return
            }
            if output == "-" {
                let temporary = NSTemporaryDirectory() + "keel-backup-" + UUID().uuidString
                defer { try? FileManager.default.removeItem(atPath: temporary) }
                let summary = try await StoreBackup.backup(config.database, tls: config.databaseTLS, to: temporary)
                FileHandle.standardOutput.write(try Data(contentsOf: URL(fileURLWithPath: temporary)))
                FileHandle.standardError.write(Data("keel: \(summary.format.rawValue) backup, \(summary.bytes) bytes, verified\n".utf8))
                return
            }
            let path = output ?? StoreBackup.fileName(for: config.database, at: Date())
            let summary = try await StoreBackup.backup(config.database, tls: config.databaseTLS, to: path)
            print("\(path): \(summary.format.rawValue) backup, \(summary.bytes) bytes, \(summary.migrations) migrations recorded, verified")
        } catch let failure as StoreBackup.Failure {
            throw CommandFailure(message: "backup failed: \(failure.description)")
        }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Replace the store's contents with a verified backup. Stop Keel first when the store is SQLite.")

    @Option(help: "Backup file (\"-\": standard input).")
    var input: String

    @Flag(help: "Confirm that the store's current contents are replaced.")
    var yes = false

    @OptionGroup var options: ServerOptions

    func validate() throws {
        guard yes else { throw ValidationError("restore replaces everything in the configured store; pass --yes to confirm") }
    }

    func run() async throws {
        let config = try options.load().config
        var path = input
        let temporary = NSTemporaryDirectory() + "keel-restore-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        if input == "-" {
            try FileHandle.standardInput.readDataToEndOfFile().write(to: URL(fileURLWithPath: temporary))
            path = temporary
        }
        guard FileManager.default.fileExists(atPath: path) else { throw CommandFailure(message: "no backup at \(path)", exitCode: 2) }
        do {
            let summary = try await StoreBackup.restore(config.database, tls: config.databaseTLS, from: path)
            print("restored a \(summary.format.rawValue) backup (\(summary.bytes) bytes) into \(config.database.displayName)")
        } catch let failure as StoreBackup.Failure {
            throw CommandFailure(message: "restore failed: \(failure.description)", exitCode: 2)
        }
    }
}

struct SecretsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets", abstract: "Make secrets for a deployment.", subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print strong random values for .env (compose) or a Secret: the store's password, KEEL_SECRET_KEY, the first admin's and Grafana's passwords.")

        func run() {
            // 32 random bytes each (256 bits), base64url: no characters that need quoting in .env, URLs or YAML.
            for name in ["POSTGRES_PASSWORD", "KEEL_SECRET_KEY", "KEEL_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"] {
                print("\(name)=\(Credential.random(bytes: 32))")
            }
        }
    }
}

extension DatabaseLocation {
    var displayName: String {
        switch self {
        case .sqlite(let path): "SQLite at \(path)"
        case .postgres(let url): "PostgreSQL at \(url)"
        }
    }
}
