import ArgumentParser
import Foundation
import KeelCore

/// The options every command that loads configuration shares. They override `KEEL_*` variables and
/// the config file; values are validated together with the rest of the configuration.
struct ServerOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "YAML config file (default: ./keel.yaml when present, or $KEEL_CONFIG).")
    var configFile: String?

    @Option(help: "Address to listen on (default 127.0.0.1).")
    var host: String?

    @Option(help: "HTTP port (default 8080; 0 picks a free port).")
    var port: String?

    @Option(help: "Directory for the embedded store (default ./.keel).")
    var dataDir: String?

    @Option(help: "Store: sqlite:PATH or postgres://user:password@host:port/database (default: SQLite in the data dir).")
    var databaseURL: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    var flags: [String: String] {
        var flags: [String: String] = [:]
        flags["host"] = host
        flags["port"] = port
        flags["data_dir"] = dataDir
        flags["database_url"] = databaseURL
        flags["log_level"] = logLevel
        return flags
    }

    func load(extraFlags: [String: String] = [:]) throws -> LoadedConfig {
        try ConfigLoader.load(
            environment: ProcessInfo.processInfo.environment,
            flags: flags.merging(extraFlags) { _, new in new },
            configFile: configFile)
    }
}
