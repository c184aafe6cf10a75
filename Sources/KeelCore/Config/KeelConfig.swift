import Foundation

/// The one typed configuration of a Keel process, resolved by ``ConfigLoader`` from (lowest to highest)
/// defaults, the config file, `KEEL_*` environment variables and command-line flags.
public struct KeelConfig: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDir = "./.keel"
    public var database = DatabaseLocation.sqlite(path: "./.keel/keel.db")
    public var databaseMaxConnections = 10
    public var databaseTLS = DatabaseTLS.prefer
    public var databaseTLSCAFile: String?
    public var logLevel = LogLevel.info
    public var logFormat = LogFormat.json
    public var accessLog = true
    /// Label → URL of the monitoring tools (Grafana, Prometheus, the trace UI) the console links to.
    public var consoleLinks: [String: String] = [:]
    /// PEM certificate chain and private key: the HTTP server speaks TLS when both are set, and reloads
    /// them on SIGHUP.
    public var tlsCertFile: String?
    /// Time a request's head may take from its first byte, the longest pause inside a body, and how long
    /// a kept-alive connection may sit idle (seconds).
    public var httpHeaderTimeoutSeconds = 30
    public var httpBodyTimeoutSeconds = 60
    public var httpIdleTimeoutSeconds = 75
    public var tlsKeyFile: String?
    public var otlpEndpoint: String?
    public var secretKey: Secret?
    public var roles = Set(Role.allCases)
    public var maxBodyBytes = 1 << 20
    public var shutdownTimeoutSeconds = 30
    /// A store still unreachable this long after start stops the process (with what to check), rather than leaving it
    /// unready forever; orchestrators restart it. Outages after start are ridden out.
    public var storeStartupTimeoutSeconds = 60
    /// The URL clients use to reach Keel; the issuer (`iss`) of its tokens. Defaults to `http://host:port`.
    public var publicURL: String?
    public var auth = AuthSettings()
    /// Queue name → jobs the worker role runs at once; `*` stands for every queue.
    public var workerQueues: [String: Int] = ["*": 4]
    /// How long a claimed job stays a worker's without a heartbeat; a crashed worker's jobs return after it.
    public var jobLeaseSeconds = 30
    /// How idle workers learn of new jobs from other processes: PostgreSQL LISTEN/NOTIFY, or polling only
    /// (for connection poolers in transaction mode, which break LISTEN).
    public var jobWakeup = JobWakeup.notify
    /// The mail server of the `email.send` task.
    public var smtp = MailSettings()
    /// Schedules declared in configuration: name → the schedule as JSON (`ScheduleInput`'s fields).
    public var declaredSchedules: [String: String] = [:]
    /// Gateway routes kept as declared: route name → its definition as JSON (checked by the gateway module).
    public var declaredGatewayRoutes: [String: String] = [:]

    public init() {}

    /// ``publicURL`` or, when unset, the listening address.
    public var effectivePublicURL: String {
        publicURL ?? "http://\(host):\(port)"
    }
}

/// Identity settings: token lifetimes, password hashing and policy, the first admin.
public struct AuthSettings: Sendable, Equatable {
    public var audience = "keel"
    public var signingAlgorithm = SigningAlgorithm.es256
    public var accessTokenTTLSeconds = 900
    public var refreshTokenTTLSeconds = 604_800
    /// A refresh token used again within this many seconds of its rotation is a concurrent refresh
    /// (two tabs), not a theft, and gets the same successor family.
    public var refreshReuseLeewaySeconds = 5
    public var bcryptCost = 12
    public var passwordMinLength = 12
    /// Failed logins for one account or client IP before the lockout delays start.
    public var lockoutThreshold = 5
    public var adminEmail: String?
    public var adminPassword: Secret?

    public init() {}
}

/// How Keel reaches its mail server.
public struct MailSettings: Sendable, Equatable {
    public var host: String?
    public var port = 587
    public var security = MailSecurity.starttls
    public var caFile: String?
    public var username: String?
    public var password: Secret?
    public var from: String?
    /// The whole conversation with the server, connect to QUIT.
    public var timeoutSeconds = 30

    public init() {}
}

public enum MailSecurity: String, Sendable, CaseIterable {
    /// Plain connect, then `STARTTLS` before anything else; refused if the server does not offer it.
    case starttls
    /// TLS from the first byte (SMTPS, port 465).
    case tls
    /// No encryption: only for a relay on the same host; credentials are never sent this way.
    case none
}

public enum JobWakeup: String, Sendable, CaseIterable {
    case notify, poll
}

public enum SigningAlgorithm: String, Sendable, CaseIterable {
    case es256 = "ES256"
    case eddsa = "EdDSA"
}

/// Where the store lives: an embedded SQLite file, or a PostgreSQL server.
public enum DatabaseLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresURL)
}

/// TLS to PostgreSQL, with libpq's meanings: `prefer` and `require` encrypt without checking the
/// certificate; `verify-full` also checks the chain and host name.
public enum DatabaseTLS: String, Sendable, CaseIterable {
    case disable
    case prefer
    case require
    case verifyFull = "verify-full"
}

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

public enum LogFormat: String, Sendable, CaseIterable {
    case json, text
}

/// A value that must never be printed or logged; its description is masked.
public struct Secret: Sendable, Equatable, CustomStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "****" }
}

/// A parsed `postgres://user:password@host:port/database?sslmode=...` URL.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var unixSocketPath: String?
    public var username: String
    public var password: Secret?
    public var database: String
    public var sslmode: DatabaseTLS?

    public init(parsing text: String) throws(ConfigExpectation) {
        guard let components = URLComponents(string: text),
              let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme)
        else {
            throw ConfigExpectation("a postgres://user:password@host:port/database URL")
        }
        let query = components.queryItems ?? []
        let socketDirectory = query.first { $0.name == "host" }?.value
        guard let host = components.host.flatMap({ $0.isEmpty ? nil : $0 }) ?? socketDirectory else {
            throw ConfigExpectation("a postgres:// URL with a host (postgres://user@host:5432/database)")
        }
        guard let user = components.user, !user.isEmpty else {
            throw ConfigExpectation("a postgres:// URL with a user name (postgres://user@host/database)")
        }
        self.host = host
        self.port = components.port ?? 5432
        guard (1...65535).contains(self.port) else { throw ConfigExpectation("a port between 1 and 65535 in the URL") }
        self.unixSocketPath = socketDirectory.map { "\($0)/.s.PGSQL.\(components.port ?? 5432)" }
        self.username = user.removingPercentEncoding ?? user
        self.password = components.password.map { Secret($0.removingPercentEncoding ?? $0) }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        self.database = path.isEmpty ? self.username : path
        if let mode = query.first(where: { $0.name == "sslmode" })?.value {
            guard let tls = DatabaseTLS(rawValue: mode) else {
                throw ConfigExpectation("sslmode one of \(DatabaseTLS.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.sslmode = tls
        }
    }

    /// The URL with its password masked.
    public var description: String {
        var text = "postgres://\(username)\(password == nil ? "" : ":****")@"
        text += unixSocketPath == nil ? "\(host):\(port)" : ""
        text += "/\(database)"
        var query: [String] = []
        if unixSocketPath != nil { query.append("host=\(host)") }
        if let sslmode { query.append("sslmode=\(sslmode.rawValue)") }
        return query.isEmpty ? text : text + "?" + query.joined(separator: "&")
    }
}
