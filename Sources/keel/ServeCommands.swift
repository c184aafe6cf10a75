import ArgumentParser
import Foundation
import KeelCore
import KeelServer
import KeelStore
import KeelPlatform
import KeelTelemetry

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every role in one process (embedded SQLite store unless a database is configured).")

    @OptionGroup var options: ServerOptions

    func run() async throws {
        try await serve(options.load(extraFlags: ["roles": "all"]).config)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the given roles, so that each can be its own process or container.")

    @Option(help: "Comma-separated roles: \(Role.allCases.map(\.rawValue).joined(separator: ",")) (default: all, or $KEEL_ROLES).")
    var roles: String?

    @Option(name: [.customLong("queues"), .customLong("worker-queues")],
            help: "Queues the worker role works, with concurrency: email=4,payment=2 (default *=4, every queue).")
    var queues: String?

    @OptionGroup var options: ServerOptions

    func run() async throws {
        var flags: [String: String] = [:]
        flags["roles"] = roles
        flags["worker_queues"] = queues
        try await serve(options.load(extraFlags: flags).config)
    }
}

/// Starts a server process with `config` and returns when it has shut down.
func serve(_ config: KeelConfig) async throws {
    let processStart = ContinuousClock.now
    let telemetry = try Telemetry.bootstrap(config)
    let store: any Store
    do {
        store = try await config.openStore(logger: .init(label: "keel.store"))
    } catch {
        throw CommandFailure(message: "cannot open the store: \(error)")
    }
    try await Platform.server(config: config, store: store, telemetry: telemetry).run(processStart: processStart)
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations to the store and exit (safe to run from many processes at once).")

    @Flag(help: "Only list applied and pending migrations.")
    var status = false

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let config = try options.load().config
        _ = try Telemetry.bootstrap(config, logsToStandardError: true)
        let status = self.status
        try await withRunningStore(config) { store in
            do {
                if status {
                    let applied = try await store.appliedMigrations()
                    let done = Set(applied.map { "\($0.module)#\($0.version)" })
                    for migration in Platform.migrations {
                        let state = done.contains("\(migration.module)#\(migration.version)") ? "applied" : "pending"
                        print("\(migration.module)\t\(migration.version)\t\(state)\t\(migration.name)")
                    }
                } else {
                    let applied = try await store.migrate(Platform.migrations)
                    for migration in applied { print("applied \(migration.module) \(migration.version) \(migration.name)") }
                    print("\(store.location): schema is current (\(applied.count) applied now)")
                }
            } catch let error as StoreError {
                throw CommandFailure(message: error.description)
            }
        }
    }
}

/// Opens the configured store and runs its service around `body`, for commands that use the store and exit.
func withRunningStore<Result: Sendable>(_ config: KeelConfig, _ body: @escaping @Sendable (any Store) async throws -> Result) async throws -> Result {
    let store: any Store
    do {
        store = try await config.openStore(logger: .init(label: "keel.store"))
    } catch {
        throw CommandFailure(message: "cannot open the store: \(error)")
    }
    return try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await store.run(); return nil }
        defer { group.cancelAll() }
        return try await body(store)
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Inspect configuration.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate the configuration and print the effective values (secrets masked) with their sources.")

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        @Option(help: "Roles to check, as for serve.")
        var roles: String?

        @OptionGroup var options: ServerOptions

        func run() throws {
            let loaded = try options.load(extraFlags: roles.map { ["roles": $0] } ?? [:])
            if json {
                let entries = loaded.entries.map { ["key": $0.key, "value": $0.display, "source": $0.source.description] }
                let data = try JSONSerialization.data(withJSONObject: entries, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            if let file = loaded.configFile { print("config file: \(file)") }
            let width = loaded.entries.map(\.key.count).max() ?? 0
            let valueWidth = min(48, loaded.entries.map(\.display.count).max() ?? 0)
            for entry in loaded.entries {
                let key = entry.key.padding(toLength: width, withPad: " ", startingAt: 0)
                let value = (entry.display.isEmpty ? "-" : entry.display)
                print("\(key)  \(value.padding(toLength: max(valueWidth, value.count), withPad: " ", startingAt: 0))  \(entry.source)")
            }
            print("configuration is valid")
        }
    }
}
