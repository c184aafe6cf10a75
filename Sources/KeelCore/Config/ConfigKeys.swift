import Foundation

/// One configuration key: its name in the config file (`port`, or nested `database: {url: ...}` for
/// `database_url`), its environment variable (`KEEL_` + upper-cased name) and its flag (`--` + dashed name).
public struct ConfigKey: Sendable {
    public let name: String
    public let summary: String
    public let isSecret: Bool
    /// Takes a tree (a YAML mapping, or JSON text in the environment or a flag) rather than one value.
    public var isStructured = false
    let apply: @Sendable (String, inout KeelConfig) throws(ConfigExpectation) -> Void
    let display: @Sendable (KeelConfig) -> String

    public var environmentName: String { "KEEL_" + name.uppercased() }
    public var flagName: String { "--" + name.replacingOccurrences(of: "_", with: "-") }
}

extension ConfigKey {
    /// Every key Keel understands, in the order `keel config check` prints them.
    public static let all: [ConfigKey] = [
        ConfigKey(name: "host", summary: "address to listen on", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.isEmpty, !text.contains(where: \.isWhitespace) else {
                          throw ConfigExpectation("a host name or IP address to bind, like 127.0.0.1 or 0.0.0.0")
                      }
                      config.host = text
                  }, display: { $0.host }),
        ConfigKey(name: "port", summary: "HTTP port (0 picks a free one)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.port = try parseInt(text, in: 0...65535) },
                  display: { String($0.port) }),
        ConfigKey(name: "data_dir", summary: "directory for the embedded store and local state", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.isEmpty else { throw ConfigExpectation("a directory path") }
                      config.dataDir = text
                  }, display: { $0.dataDir }),
        ConfigKey(name: "database_url", summary: "store: empty for SQLite in data_dir, sqlite:PATH, or postgres://...", isSecret: true,
                  apply: { text, config throws(ConfigExpectation) in config.database = try parseDatabase(text, dataDir: config.dataDir) },
                  display: { config in
                      switch config.database {
                      case .sqlite(let path): "sqlite:\(path)"
                      case .postgres(let url): url.description
                      }
                  }),
        ConfigKey(name: "database_max_connections", summary: "PostgreSQL pool size / SQLite readers", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.databaseMaxConnections = try parseInt(text, in: 1...1000) },
                  display: { String($0.databaseMaxConnections) }),
        ConfigKey(name: "database_tls", summary: "TLS to PostgreSQL: disable, prefer, require, verify-full", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.databaseTLS = try parseEnum(text) },
                  display: { $0.databaseTLS.rawValue }),
        ConfigKey(name: "database_tls_ca_file", summary: "PEM file of CAs trusted for verify-full", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || FileManager.default.isReadableFile(atPath: text) else {
                          throw ConfigExpectation("a readable PEM file")
                      }
                      config.databaseTLSCAFile = text.isEmpty ? nil : text
                  }, display: { $0.databaseTLSCAFile ?? "" }),
        ConfigKey(name: "log_level", summary: "trace, debug, info, notice, warning, error, critical", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.logLevel = try parseEnum(text.lowercased()) },
                  display: { $0.logLevel.rawValue }),
        ConfigKey(name: "log_format", summary: "json (one object a line) or text", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.logFormat = try parseEnum(text.lowercased()) },
                  display: { $0.logFormat.rawValue }),
        ConfigKey(name: "access_log", summary: "log every HTTP request", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.accessLog = try parseBool(text) },
                  display: { String($0.accessLog) }),
        ConfigKey(name: "console_links", summary: "monitoring links on the console's overview: Grafana=https://host/monitoring/grafana/,Prometheus=...", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.consoleLinks = try parseLinks(text) },
                  display: { $0.consoleLinks.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }),
        ConfigKey(name: "otlp_endpoint", summary: "OTLP/HTTP base URL for traces, e.g. http://collector:4318", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.isEmpty else { config.otlpEndpoint = nil; return }
                      guard let url = URLComponents(string: text), ["http", "https"].contains(url.scheme ?? ""),
                            url.host?.isEmpty == false
                      else { throw ConfigExpectation("an http:// or https:// URL such as http://127.0.0.1:4318") }
                      config.otlpEndpoint = text
                  }, display: { $0.otlpEndpoint ?? "" }),
        ConfigKey(name: "secret_key", summary: "key that encrypts stored secrets (32+ characters)", isSecret: true,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || text.utf8.count >= 32 else {
                          throw ConfigExpectation("at least 32 characters (generate one with: keel secrets generate)")
                      }
                      config.secretKey = text.isEmpty ? nil : Secret(text)
                  }, display: { $0.secretKey == nil ? "" : "****" }),
        ConfigKey(name: "roles", summary: "roles this process runs: \(Role.allCases.map(\.rawValue).joined(separator: ","))", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.roles = try parseRoles(text) },
                  display: { $0.roles.sorted().map(\.rawValue).joined(separator: ",") }),
        ConfigKey(name: "max_body_bytes", summary: "largest accepted request body (bytes, or with KB/MB/KiB/MiB)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.maxBodyBytes = try parseByteSize(text) },
                  display: { String($0.maxBodyBytes) }),
        ConfigKey(name: "store_startup_timeout_seconds", summary: "how long a starting process waits for an unreachable store before it exits", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.storeStartupTimeoutSeconds = try parseInt(text, in: 1...86_400) },
                  display: { String($0.storeStartupTimeoutSeconds) }),
        ConfigKey(name: "shutdown_timeout_seconds", summary: "how long a graceful shutdown may drain before it is forced", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.shutdownTimeoutSeconds = try parseInt(text, in: 1...3600) },
                  display: { String($0.shutdownTimeoutSeconds) }),
        ConfigKey(name: "worker_queues", summary: "queues the worker role works, with concurrency: email=4,payment=2 (* = every queue)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.workerQueues = try parseQueues(text) },
                  display: { $0.workerQueues.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }),
        ConfigKey(name: "job_lease_seconds", summary: "lease of a claimed job; a crashed worker's jobs run again after it", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.jobLeaseSeconds = try parseInt(text, in: 3...3600) },
                  display: { String($0.jobLeaseSeconds) }),
        ConfigKey(name: "job_wakeup", summary: "how idle workers hear of new jobs: notify (PostgreSQL LISTEN) or poll (behind PgBouncer in transaction mode; also no prepared statements)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.jobWakeup = try parseEnum(text.lowercased()) },
                  display: { $0.jobWakeup.rawValue }),
        ConfigKey(name: "public_url", summary: "URL clients reach Keel at; the issuer of its tokens (default http://host:port)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.isEmpty else { config.publicURL = nil; return }
                      guard let url = URLComponents(string: text), ["http", "https"].contains(url.scheme ?? ""),
                            url.host?.isEmpty == false, url.query == nil
                      else { throw ConfigExpectation("an http:// or https:// URL such as https://keel.example.com") }
                      config.publicURL = text.hasSuffix("/") ? String(text.dropLast()) : text
                  }, display: { $0.publicURL ?? "" }),
        ConfigKey(name: "auth_audience", summary: "audience (aud) of Keel's access tokens", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.isEmpty, !text.contains(where: \.isWhitespace) else { throw ConfigExpectation("a non-empty word such as keel") }
                      config.auth.audience = text
                  }, display: { $0.auth.audience }),
        ConfigKey(name: "auth_signing_algorithm", summary: "signature of access tokens: ES256 or EdDSA", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.signingAlgorithm = try parseEnum(text) },
                  display: { $0.auth.signingAlgorithm.rawValue }),
        ConfigKey(name: "auth_access_token_ttl_seconds", summary: "lifetime of access tokens", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.accessTokenTTLSeconds = try parseInt(text, in: 30...86_400) },
                  display: { String($0.auth.accessTokenTTLSeconds) }),
        ConfigKey(name: "auth_refresh_token_ttl_seconds", summary: "lifetime of refresh tokens", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.refreshTokenTTLSeconds = try parseInt(text, in: 60...31_536_000) },
                  display: { String($0.auth.refreshTokenTTLSeconds) }),
        ConfigKey(name: "auth_refresh_reuse_leeway_seconds", summary: "grace for concurrent refreshes of one token", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.refreshReuseLeewaySeconds = try parseInt(text, in: 0...60) },
                  display: { String($0.auth.refreshReuseLeewaySeconds) }),
        ConfigKey(name: "auth_bcrypt_cost", summary: "bcrypt cost of password hashes (12 or more in production)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.bcryptCost = try parseInt(text, in: 4...16) },
                  display: { String($0.auth.bcryptCost) }),
        ConfigKey(name: "auth_password_min_length", summary: "shortest accepted password", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.passwordMinLength = try parseInt(text, in: 8...72) },
                  display: { String($0.auth.passwordMinLength) }),
        ConfigKey(name: "auth_lockout_threshold", summary: "failed logins per account or IP before growing lockouts", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.auth.lockoutThreshold = try parseInt(text, in: 1...100) },
                  display: { String($0.auth.lockoutThreshold) }),
        ConfigKey(name: "admin_email", summary: "first admin created on an empty store", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || isPlausibleEmail(text) else { throw ConfigExpectation("an email address such as admin@example.com") }
                      config.auth.adminEmail = text.isEmpty ? nil : text.lowercased()
                  }, display: { $0.auth.adminEmail ?? "" }),
        ConfigKey(name: "admin_password", summary: "password of that first admin (random and printed once when unset)", isSecret: true,
                  apply: { text, config throws(ConfigExpectation) in config.auth.adminPassword = text.isEmpty ? nil : Secret(text) },
                  display: { $0.auth.adminPassword == nil ? "" : "****" }),
        ConfigKey(name: "schedules", summary: "schedules kept as declared: {name: {cron|every_seconds, timezone, queue, task, args, misfire}}",
                  isSecret: false, isStructured: true,
                  apply: { text, config throws(ConfigExpectation) in config.declaredSchedules = try parseDeclaredSchedules(text) },
                  display: { $0.declaredSchedules.isEmpty ? "" : $0.declaredSchedules.keys.sorted().joined(separator: ",") }),
        ConfigKey(name: "gateway_routes", summary: "gateway routes kept as declared: {name: {match: {prefix}, upstreams: [{url}], auth, ...}}",
                  isSecret: false, isStructured: true,
                  apply: { text, config throws(ConfigExpectation) in config.declaredGatewayRoutes = try parseDeclaredObjects(text, kind: "route") },
                  display: { $0.declaredGatewayRoutes.isEmpty ? "" : $0.declaredGatewayRoutes.keys.sorted().joined(separator: ",") }),
        ConfigKey(name: "smtp_host", summary: "mail server for the email.send task (empty: email.send fails)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard !text.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "@" }) else {
                          throw ConfigExpectation("a host name or IP address like smtp.example.com")
                      }
                      config.smtp.host = text.isEmpty ? nil : text
                  }, display: { $0.smtp.host ?? "" }),
        ConfigKey(name: "smtp_port", summary: "mail server port (587 submission with STARTTLS, 465 implicit TLS)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.smtp.port = try parseInt(text, in: 1...65535) },
                  display: { String($0.smtp.port) }),
        ConfigKey(name: "smtp_tls", summary: "starttls (required), tls (implicit, port 465) or none (loopback relays only)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.smtp.security = try parseEnum(text.lowercased()) },
                  display: { $0.smtp.security.rawValue }),
        ConfigKey(name: "smtp_ca_file", summary: "PEM file of CAs trusted for the mail server (default: the system's)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || FileManager.default.isReadableFile(atPath: text) else { throw ConfigExpectation("a readable PEM file") }
                      config.smtp.caFile = text.isEmpty ? nil : text
                  }, display: { $0.smtp.caFile ?? "" }),
        ConfigKey(name: "smtp_username", summary: "mail server login (AUTH PLAIN or LOGIN, only over TLS)", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.smtp.username = text.isEmpty ? nil : text },
                  display: { $0.smtp.username ?? "" }),
        ConfigKey(name: "smtp_password", summary: "mail server password", isSecret: true,
                  apply: { text, config throws(ConfigExpectation) in config.smtp.password = text.isEmpty ? nil : Secret(text) },
                  display: { $0.smtp.password == nil ? "" : "****" }),
        ConfigKey(name: "smtp_from", summary: "sender of email.send when a job names none", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || isPlausibleEmail(text) else { throw ConfigExpectation("an email address such as noreply@example.com") }
                      config.smtp.from = text.isEmpty ? nil : text
                  }, display: { $0.smtp.from ?? "" }),
        ConfigKey(name: "http_header_timeout_seconds", summary: "time a request's head may take from its first byte", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.httpHeaderTimeoutSeconds = try parseInt(text, in: 1...3600) },
                  display: { String($0.httpHeaderTimeoutSeconds) }),
        ConfigKey(name: "http_body_timeout_seconds", summary: "longest pause while a request body arrives", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.httpBodyTimeoutSeconds = try parseInt(text, in: 1...3600) },
                  display: { String($0.httpBodyTimeoutSeconds) }),
        ConfigKey(name: "http_idle_timeout_seconds", summary: "how long a kept-alive connection may sit idle", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in config.httpIdleTimeoutSeconds = try parseInt(text, in: 1...86400) },
                  display: { String($0.httpIdleTimeoutSeconds) }),
        ConfigKey(name: "tls_cert_file", summary: "PEM certificate chain: serve HTTPS (with tls_key_file); reloaded on SIGHUP", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || FileManager.default.isReadableFile(atPath: text) else { throw ConfigExpectation("a readable PEM file") }
                      config.tlsCertFile = text.isEmpty ? nil : text
                  }, display: { $0.tlsCertFile ?? "" }),
        ConfigKey(name: "tls_key_file", summary: "PEM private key of tls_cert_file", isSecret: false,
                  apply: { text, config throws(ConfigExpectation) in
                      guard text.isEmpty || FileManager.default.isReadableFile(atPath: text) else { throw ConfigExpectation("a readable PEM file") }
                      config.tlsKeyFile = text.isEmpty ? nil : text
                  }, display: { $0.tlsKeyFile ?? "" }),
    ]

    public static func named(_ name: String) -> ConfigKey? {
        all.first { $0.name == name }
    }
}

// MARK: - Value parsers

/// `{"name": {...}, ...}` as JSON: each schedule a JSON object with a task; the jobs module checks the rest (cron,
/// time zone, task) when the scheduler starts.
func parseDeclaredSchedules(_ text: String) throws(ConfigExpectation) -> [String: String] {
    let expectation = ConfigExpectation(#"a mapping of schedule names to {cron or every_seconds, task, ...} (JSON: {"nightly": {"cron": "0 2 * * *", "task": "report.build"}})"#)
    guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { return [:] }
    guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { throw expectation }
    var schedules: [String: String] = [:]
    for (name, definition) in object {
        guard let definition = definition as? [String: Any], definition["task"] is String,
              let data = try? JSONSerialization.data(withJSONObject: definition, options: [.sortedKeys]) else {
            throw ConfigExpectation("schedule \(name): an object with at least a task, like {\"cron\": \"0 2 * * *\", \"task\": \"report.build\"}")
        }
        schedules[name] = String(decoding: data, as: UTF8.self)
    }
    return schedules
}

/// `{"name": {...}, ...}` as JSON: each entry an object, kept as sorted JSON text for its module to check.
func parseDeclaredObjects(_ text: String, kind: String) throws(ConfigExpectation) -> [String: String] {
    guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { return [:] }
    guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw ConfigExpectation("a mapping of \(kind) names to objects (JSON: {\"name\": {...}})")
    }
    var entries: [String: String] = [:]
    for (name, definition) in object {
        guard let definition = definition as? [String: Any],
              let data = try? JSONSerialization.data(withJSONObject: definition, options: [.sortedKeys]) else {
            throw ConfigExpectation("\(kind) \(name): an object")
        }
        entries[name] = String(decoding: data, as: UTF8.self)
    }
    return entries
}

/// `local@domain.tld`, at most 254 characters, no spaces or control characters; deliverability is
/// the mail server's business.
public func isPlausibleEmail(_ text: String) -> Bool {
    guard text.utf8.count <= 254, !text.contains(where: { $0.isWhitespace || $0.isNewline || $0.asciiValue.map { $0 < 32 } == true }) else { return false }
    let parts = text.split(separator: "@", omittingEmptySubsequences: false)
    guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64 else { return false }
    let labels = parts[1].split(separator: ".", omittingEmptySubsequences: false)
    return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty && !$0.hasPrefix("-") && !$0.hasSuffix("-") }
}

func parseInt(_ text: String, in range: ClosedRange<Int>) throws(ConfigExpectation) -> Int {
    guard let value = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(value) else {
        throw ConfigExpectation("an integer between \(range.lowerBound) and \(range.upperBound)")
    }
    return value
}

func parseBool(_ text: String) throws(ConfigExpectation) -> Bool {
    switch text.lowercased() {
    case "true", "yes", "on", "1": return true
    case "false", "no", "off", "0": return false
    default: throw ConfigExpectation("true or false")
    }
}

func parseEnum<E: RawRepresentable & CaseIterable>(_ text: String) throws(ConfigExpectation) -> E where E.RawValue == String {
    guard let value = E(rawValue: text) else {
        throw ConfigExpectation("one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return value
}

func parseRoles(_ text: String) throws(ConfigExpectation) -> Set<Role> {
    let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    let all = Role.allCases.map(\.rawValue).joined(separator: ", ")
    guard !names.isEmpty else { throw ConfigExpectation("a comma-separated list of roles from: \(all)") }
    if names == ["all"] { return Set(Role.allCases) }
    var roles = Set<Role>()
    for name in names {
        guard let role = Role(rawValue: name) else {
            throw ConfigExpectation("a comma-separated list of roles from: \(all) (or \"all\"); \"\(name)\" is not a role")
        }
        roles.insert(role)
    }
    return roles
}

func parseQueues(_ text: String) throws(ConfigExpectation) -> [String: Int] {
    let expectation = ConfigExpectation("comma-separated queue=concurrency pairs such as email=4,payment=2 (* for every queue), concurrency 1-1000")
    var queues: [String: Int] = [:]
    for pair in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
        let parts = pair.split(separator: "=", omittingEmptySubsequences: false)
        guard parts.count == 2, let slots = Int(parts[1]), (1...1000).contains(slots), !parts[0].isEmpty,
              parts[0] == "*" || parts[0].utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "*") })
        else { throw expectation }
        queues[String(parts[0])] = slots
    }
    guard !queues.isEmpty else { throw expectation }
    return queues
}

func parseLinks(_ text: String) throws(ConfigExpectation) -> [String: String] {
    let expectation = ConfigExpectation("comma-separated Label=URL pairs with http(s) URLs, such as Grafana=https://example.com/monitoring/grafana/")
    var links: [String: String] = [:]
    for pair in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !pair.isEmpty {
        let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 40,
              parts[1].hasPrefix("http://") || parts[1].hasPrefix("https://") || parts[1].hasPrefix("/"),
              !parts[1].contains(where: { $0 == "\"" || $0 == "<" || $0 == ">" || $0.isWhitespace }) else { throw expectation }
        links[parts[0]] = parts[1]
    }
    return links
}

func parseByteSize(_ text: String) throws(ConfigExpectation) -> Int {
    let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("B", 1)]
    var number = text.trimmingCharacters(in: .whitespaces)
    var multiplier = 1
    for (suffix, factor) in units where number.hasSuffix(suffix) {
        number = String(number.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
        multiplier = factor
        break
    }
    guard let value = Int(number), value > 0, value.multipliedReportingOverflow(by: multiplier).overflow == false,
          value * multiplier <= 1 << 32
    else { throw ConfigExpectation("a size between 1 byte and 4GiB, like 1048576 or 1MiB") }
    return value * multiplier
}

func parseDatabase(_ text: String, dataDir: String) throws(ConfigExpectation) -> DatabaseLocation {
    if text.isEmpty { return .sqlite(path: (dataDir as NSString).appendingPathComponent("keel.db")) }
    if text.hasPrefix("sqlite:") {
        var path = String(text.dropFirst("sqlite:".count))
        if path.hasPrefix("//") { path = String(path.dropFirst(2)) }  // sqlite:///abs/path → /abs/path
        guard !path.isEmpty else { throw ConfigExpectation("sqlite:PATH with a file path") }
        return .sqlite(path: path)
    }
    if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
        return .postgres(try PostgresURL(parsing: text))
    }
    throw ConfigExpectation("empty (embedded SQLite), sqlite:PATH, or postgres://user:password@host:port/database")
}
