import Foundation
import Testing
@testable import KeelCore

@Suite struct ConfigLoaderTests {
    @Test func defaultsGiveTheEmbeddedLaptopSetup() throws {
        let loaded = try ConfigLoader.load(environment: [:])
        #expect(loaded.config.host == "127.0.0.1")
        #expect(loaded.config.port == 8080)
        #expect(loaded.config.database == .sqlite(path: "./.keel/keel.db"))
        #expect(loaded.config.roles == Set(Role.allCases))
        #expect(loaded.entries.allSatisfy { $0.source == .defaultValue })
    }

    @Test func laterLayersOverrideEarlierOnes() throws {
        try withConfigFile("""
            port: 9000
            host: 0.0.0.0
            log_level: debug
            """) { path in
            let loaded = try ConfigLoader.load(
                environment: ["KEEL_PORT": "9100", "KEEL_LOG_LEVEL": "warning"], flags: ["port": "9200"], configFile: path)
            #expect(loaded.config.port == 9200)
            #expect(loaded.config.host == "0.0.0.0")
            #expect(loaded.config.logLevel == .warning)
            let sources = Dictionary(uniqueKeysWithValues: loaded.entries.map { ($0.key, $0.source) })
            #expect(sources["port"] == .flag("--port"))
            #expect(sources["host"] == .file(path))
            #expect(sources["log_level"] == .environment("KEEL_LOG_LEVEL"))
        }
    }

    @Test func nestedFileKeysJoinWithUnderscore() throws {
        try withConfigFile("""
            database:
              url: postgres://keel:pw@db.internal:6543/keel?sslmode=require
              max_connections: 40
            roles: [api, worker]
            """) { path in
            let config = try ConfigLoader.load(environment: [:], configFile: path).config
            guard case .postgres(let url) = config.database else { Issue.record("expected postgres"); return }
            #expect(url.host == "db.internal")
            #expect(url.port == 6543)
            #expect(url.password == Secret("pw"))
            #expect(url.sslmode == .require)
            #expect(config.databaseMaxConnections == 40)
            #expect(config.roles == [.api, .worker])
        }
    }

    /// `schedules` keeps its tree: from YAML as from JSON in `KEEL_SCHEDULES`, numbers stay numbers, quoted text stays text.
    @Test func schedulesAreDeclaredAsATree() throws {
        try withConfigFile("""
            schedules:
              nightly-report:
                cron: "30 2 * * *"
                timezone: Europe/Berlin
                task: report.build
                args: {day: yesterday, limit: 50, dry_run: false, code: "007"}
              heartbeat:
                every_seconds: 10
                task: keel.noop
            """) { path in
            let config = try ConfigLoader.load(environment: [:], configFile: path).config
            #expect(config.declaredSchedules.keys.sorted() == ["heartbeat", "nightly-report"])
            let nightly = try #require(config.declaredSchedules["nightly-report"])
            #expect(nightly == #"{"args":{"code":"007","day":"yesterday","dry_run":false,"limit":50},"cron":"30 2 * * *","task":"report.build","timezone":"Europe\/Berlin"}"#)
            #expect(config.declaredSchedules["heartbeat"] == #"{"every_seconds":10,"task":"keel.noop"}"#)
        }
        let fromEnvironment = try ConfigLoader.load(environment: ["KEEL_SCHEDULES": #"{"tick": {"every_seconds": 1, "task": "keel.noop"}}"#]).config
        #expect(fromEnvironment.declaredSchedules["tick"] == #"{"every_seconds":1,"task":"keel.noop"}"#)
        for bad in [#"[1, 2]"#, #"{"tick": {"every_seconds": 1}}"#, "not json"] {
            #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: ["KEEL_SCHEDULES": bad]) }
        }
    }

    @Test func badValuesNameKeyValueSourceAndExpectation() {
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.load(environment: ["KEEL_PORT": "eighty", "KEEL_ROLES": "api,cron"])
        }
        let text = error?.description ?? ""
        #expect(text.contains(#"port = "eighty" (from env KEEL_PORT): expected an integer between 0 and 65535"#))
        #expect(text.contains(#"roles = "api,cron" (from env KEEL_ROLES)"#))
        #expect(text.contains(#""cron" is not a role"#))
    }

    @Test func unknownFileKeysAreRejectedWithASuggestion() throws {
        try withConfigFile("prot: 8080\n") { path in
            let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: [:], configFile: path) }
            #expect(error?.issues.first?.key == "prot")
            #expect(error?.issues.first?.expected.contains("did you mean port?") == true)
        }
    }

    @Test func invalidYAMLAndMissingFilesAreReported() throws {
        try withConfigFile("port: [1,\n") { path in
            let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: [:], configFile: path) }
            #expect(error?.issues.first?.expected.hasPrefix("valid YAML") == true)
        }
        let missing = #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: [:], configFile: "/nonexistent/keel.yaml") }
        #expect(missing?.description.contains("/nonexistent/keel.yaml") == true)
    }

    @Test func secretsNeverAppearInOutputOrErrors() throws {
        let loaded = try ConfigLoader.load(environment: [
            "KEEL_SECRET_KEY": "0123456789abcdef0123456789abcdef-topsecret",
            "KEEL_DATABASE_URL": "postgres://keel:hunter2@localhost/keel",
        ])
        let shown = loaded.entries.map(\.display).joined(separator: " ")
        #expect(!shown.contains("topsecret"))
        #expect(!shown.contains("hunter2"))
        #expect(shown.contains("postgres://keel:****@localhost:5432/keel"))

        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: ["KEEL_SECRET_KEY": "short-but-secret"]) }
        #expect(error?.description.contains("short-but-secret") == false)
        #expect(error?.description.contains("at least 32 characters") == true)
    }

    @Test func dataDirMovesTheEmbeddedStoreUnlessADatabaseIsNamed() throws {
        let moved = try ConfigLoader.load(environment: ["KEEL_DATA_DIR": "/var/lib/keel"]).config
        #expect(moved.database == .sqlite(path: "/var/lib/keel/keel.db"))
        let named = try ConfigLoader.load(environment: ["KEEL_DATA_DIR": "/var/lib/keel", "KEEL_DATABASE_URL": "sqlite:///tmp/x.db"]).config
        #expect(named.database == .sqlite(path: "/tmp/x.db"))
    }

    @Test(arguments: [
        ("KEEL_DATABASE_URL", "mysql://x@y/z"),
        ("KEEL_DATABASE_URL", "postgres://@host/db"),
        ("KEEL_DATABASE_URL", "postgres://u@host/db?sslmode=sometimes"),
        ("KEEL_OTLP_ENDPOINT", "collector:4318"),
        ("KEEL_MAX_BODY_BYTES", "lots"),
        ("KEEL_ACCESS_LOG", "maybe"),
        ("KEEL_LOG_FORMAT", "xml"),
        ("KEEL_HOST", ""),
        ("KEEL_DATABASE_TLS", "always"),
    ])
    func rejects(name: String, value: String) {
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(environment: [name: value]) }
        #expect(error?.issues.count == 1)
        #expect(error?.issues.first.map { "KEEL_" + $0.key.uppercased() } == name)
    }

    @Test func byteSizesAcceptUnits() throws {
        #expect(try ConfigLoader.load(environment: ["KEEL_MAX_BODY_BYTES": "2MiB"]).config.maxBodyBytes == 2 << 20)
        #expect(try ConfigLoader.load(environment: ["KEEL_MAX_BODY_BYTES": "512KB"]).config.maxBodyBytes == 512_000)
        #expect(try ConfigLoader.load(environment: ["KEEL_MAX_BODY_BYTES": "4096"]).config.maxBodyBytes == 4096)
    }

    @Test func validatesStandaloneDocuments() throws {
        let loaded = try ConfigLoader.validate(document: ["port": "9999", "roles": "worker"], source: "request body")
        #expect(loaded.config.port == 9999)
        #expect(loaded.config.roles == [.worker])
        let error = #expect(throws: ConfigError.self) { try ConfigLoader.validate(document: ["hots": "x"], source: "request body") }
        #expect(error?.issues.first?.expected.contains("did you mean host?") == true)
    }

    @Test func postgresUnixSocketURLs() throws {
        let url = try PostgresURL(parsing: "postgres://keel@/keel?host=/var/run/postgresql")
        #expect(url.unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
        #expect(url.description == "postgres://keel@/keel?host=/var/run/postgresql")
    }

    private func withConfigFile(_ text: String, _ body: (String) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "keel-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try body(path)
    }
}
