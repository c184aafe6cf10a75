import Foundation
import KeelServer

/// One gateway route, as the admin API and `gateway_routes` configuration take it: which requests it
/// matches, where it sends them and under which policy. Everything but `name`, `match` and the
/// upstreams (or a registered `service`) has a default; `auth` defaults to `authenticated`, so a
/// route is only open to anonymous callers when it says `public`.
public struct GatewayRoute: Codable, Sendable, Equatable {
    public var name: String
    public var match: Match
    public var upstreams: [Upstream]
    /// Instances registered under this service name (``ServiceRegistry``), instead of or beside `upstreams`.
    public var service: String?
    public var balance: Balance
    public var stripPrefix: Bool
    /// Replaces the matched prefix (after `strip_prefix` would remove it): `/v2` turns `/api/users` into `/v2/users`.
    public var rewritePrefix: String?
    /// `public`, `authenticated`, or a permission such as `orders:read`.
    public var auth: String
    /// Time until the upstream's response head arrives; a streamed body may take longer.
    public var timeoutSeconds: Double
    /// Further attempts, on another instance, for idempotent requests that failed to connect or got 502/503/504.
    public var retries: Int
    public var maxBodyBytes: Int
    public var rateLimit: RateLimit?
    public var cors: CORS?
    /// Forwards the caller's `Authorization` (or `X-API-Key`) to the upstream; otherwise a credential Keel checked stays at the edge.
    public var forwardToken: Bool
    public var healthCheck: HealthCheck?
    public var circuitBreaker: CircuitBreakerPolicy
    public var fallback: Fallback?
    public var sticky: Stickiness?

    public struct Match: Codable, Sendable, Equatable {
        public var prefix: String
        /// Exact host, or `*.example.com` for any subdomain; compared without the port, ignoring case.
        public var host: String?
        public var methods: [String]?
        /// Header name → exact value the request must carry.
        public var headers: [String: String]?

        public init(prefix: String, host: String? = nil, methods: [String]? = nil, headers: [String: String]? = nil) {
            self.prefix = prefix
            self.host = host
            self.methods = methods
            self.headers = headers
        }
    }

    public struct Upstream: Codable, Sendable, Equatable {
        public var url: String
        public var weight: Int

        public init(url: String, weight: Int = 1) {
            self.url = url
            self.weight = weight
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            url = try container.decode(String.self, forKey: .url)
            weight = try container.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        }
    }

    public enum Balance: String, Codable, Sendable, CaseIterable {
        case roundRobin = "round_robin"
        case leastOutstanding = "least_outstanding"
    }

    /// A token bucket of `requests` per `per_seconds` for each caller: its API key, else its user, else its IP address.
    public struct RateLimit: Codable, Sendable, Equatable {
        public var requests: Int
        public var perSeconds: Double
        /// Extra requests allowed at once above the steady rate (the bucket's size is `requests` + `burst`).
        public var burst: Int

        public init(requests: Int, perSeconds: Double, burst: Int = 0) {
            self.requests = requests
            self.perSeconds = perSeconds
            self.burst = burst
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            requests = try container.decode(Int.self, forKey: .requests)
            perSeconds = try container.decode(Double.self, forKey: .perSeconds)
            burst = try container.decodeIfPresent(Int.self, forKey: .burst) ?? 0
        }

        enum CodingKeys: String, CodingKey {
            case requests, burst
            case perSeconds = "per_seconds"
        }
    }

    public struct CORS: Codable, Sendable, Equatable {
        /// Exact origins (`https://app.example.com`), or `*` for any origin without credentials.
        public var allowedOrigins: [String]
        public var allowedMethods: [String]?
        public var allowedHeaders: [String]?
        public var exposedHeaders: [String]?
        public var allowCredentials: Bool?
        public var maxAgeSeconds: Int?

        enum CodingKeys: String, CodingKey {
            case allowedOrigins = "allowed_origins"
            case allowedMethods = "allowed_methods"
            case allowedHeaders = "allowed_headers"
            case exposedHeaders = "exposed_headers"
            case allowCredentials = "allow_credentials"
            case maxAgeSeconds = "max_age_seconds"
        }
    }

    /// Active checks of every instance: `GET path` each interval; `unhealthy_threshold` failures in a row
    /// take an instance out, `healthy_threshold` successes in a row bring it back.
    public struct HealthCheck: Codable, Sendable, Equatable {
        public var path: String
        public var intervalSeconds: Double
        public var timeoutSeconds: Double
        public var healthyThreshold: Int
        public var unhealthyThreshold: Int

        public init(path: String, intervalSeconds: Double = 5, timeoutSeconds: Double = 2, healthyThreshold: Int = 2, unhealthyThreshold: Int = 3) {
            self.path = path
            self.intervalSeconds = intervalSeconds
            self.timeoutSeconds = timeoutSeconds
            self.healthyThreshold = healthyThreshold
            self.unhealthyThreshold = unhealthyThreshold
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let defaults = HealthCheck(path: "/")
            path = try container.decode(String.self, forKey: .path)
            intervalSeconds = try container.decodeIfPresent(Double.self, forKey: .intervalSeconds) ?? defaults.intervalSeconds
            timeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .timeoutSeconds) ?? defaults.timeoutSeconds
            healthyThreshold = try container.decodeIfPresent(Int.self, forKey: .healthyThreshold) ?? defaults.healthyThreshold
            unhealthyThreshold = try container.decodeIfPresent(Int.self, forKey: .unhealthyThreshold) ?? defaults.unhealthyThreshold
        }

        enum CodingKeys: String, CodingKey {
            case path
            case intervalSeconds = "interval_seconds"
            case timeoutSeconds = "timeout_seconds"
            case healthyThreshold = "healthy_threshold"
            case unhealthyThreshold = "unhealthy_threshold"
        }
    }

    /// Per instance: opens after `consecutive_failures` failures in a row, or when at least `min_requests`
    /// in the last `window_seconds` failed at `error_rate` or more; after `open_seconds` one probe request
    /// goes through (half-open), and its success closes the breaker.
    public struct CircuitBreakerPolicy: Codable, Sendable, Equatable {
        public var consecutiveFailures: Int
        public var errorRate: Double
        public var minRequests: Int
        public var windowSeconds: Double
        public var openSeconds: Double

        public init(consecutiveFailures: Int = 5, errorRate: Double = 0.5, minRequests: Int = 20, windowSeconds: Double = 10, openSeconds: Double = 10) {
            self.consecutiveFailures = consecutiveFailures
            self.errorRate = errorRate
            self.minRequests = minRequests
            self.windowSeconds = windowSeconds
            self.openSeconds = openSeconds
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let defaults = CircuitBreakerPolicy()
            consecutiveFailures = try container.decodeIfPresent(Int.self, forKey: .consecutiveFailures) ?? defaults.consecutiveFailures
            errorRate = try container.decodeIfPresent(Double.self, forKey: .errorRate) ?? defaults.errorRate
            minRequests = try container.decodeIfPresent(Int.self, forKey: .minRequests) ?? defaults.minRequests
            windowSeconds = try container.decodeIfPresent(Double.self, forKey: .windowSeconds) ?? defaults.windowSeconds
            openSeconds = try container.decodeIfPresent(Double.self, forKey: .openSeconds) ?? defaults.openSeconds
        }

        enum CodingKeys: String, CodingKey {
            case consecutiveFailures = "consecutive_failures"
            case errorRate = "error_rate"
            case minRequests = "min_requests"
            case windowSeconds = "window_seconds"
            case openSeconds = "open_seconds"
        }
    }

    /// Where requests go when the primary instances are all down or answer one of `on_status`
    /// (seed 002's legacy fallback during a migration).
    public struct Fallback: Codable, Sendable, Equatable {
        public var upstreams: [Upstream]
        public var onStatus: [Int]

        public init(upstreams: [Upstream], onStatus: [Int] = [404, 502, 503]) {
            self.upstreams = upstreams
            self.onStatus = onStatus
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            upstreams = try container.decode([Upstream].self, forKey: .upstreams)
            onStatus = try container.decodeIfPresent([Int].self, forKey: .onStatus) ?? [404, 502, 503]
        }

        enum CodingKeys: String, CodingKey {
            case upstreams
            case onStatus = "on_status"
        }
    }

    /// Sends a client to the same instance while it stays up, keyed by a request header or a cookie.
    public struct Stickiness: Codable, Sendable, Equatable {
        public var header: String?
        public var cookie: String?
    }

    public init(name: String, match: Match, upstreams: [Upstream] = [], service: String? = nil, balance: Balance = .roundRobin,
                stripPrefix: Bool = false, rewritePrefix: String? = nil, auth: String = "authenticated", timeoutSeconds: Double = 30,
                retries: Int = 1, maxBodyBytes: Int = GatewayRoute.defaultMaxBodyBytes, rateLimit: RateLimit? = nil, cors: CORS? = nil,
                forwardToken: Bool = false, healthCheck: HealthCheck? = nil, circuitBreaker: CircuitBreakerPolicy = .init(),
                fallback: Fallback? = nil, sticky: Stickiness? = nil) {
        self.name = name
        self.match = match
        self.upstreams = upstreams
        self.service = service
        self.balance = balance
        self.stripPrefix = stripPrefix
        self.rewritePrefix = rewritePrefix
        self.auth = auth
        self.timeoutSeconds = timeoutSeconds
        self.retries = retries
        self.maxBodyBytes = maxBodyBytes
        self.rateLimit = rateLimit
        self.cors = cors
        self.forwardToken = forwardToken
        self.healthCheck = healthCheck
        self.circuitBreaker = circuitBreaker
        self.fallback = fallback
        self.sticky = sticky
    }

    public static let defaultMaxBodyBytes = 10 * 1024 * 1024

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // A missing name is left empty: `PUT /routes/{name}` takes it from the path, and validation names it otherwise.
        self.init(name: try container.decodeIfPresent(String.self, forKey: .name) ?? "", match: try container.decode(Match.self, forKey: .match))
        upstreams = try container.decodeIfPresent([Upstream].self, forKey: .upstreams) ?? []
        service = try container.decodeIfPresent(String.self, forKey: .service)
        balance = try container.decodeIfPresent(Balance.self, forKey: .balance) ?? balance
        stripPrefix = try container.decodeIfPresent(Bool.self, forKey: .stripPrefix) ?? stripPrefix
        rewritePrefix = try container.decodeIfPresent(String.self, forKey: .rewritePrefix)
        auth = try container.decodeIfPresent(String.self, forKey: .auth) ?? auth
        timeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .timeoutSeconds) ?? timeoutSeconds
        retries = try container.decodeIfPresent(Int.self, forKey: .retries) ?? retries
        maxBodyBytes = try container.decodeIfPresent(Int.self, forKey: .maxBodyBytes) ?? maxBodyBytes
        rateLimit = try container.decodeIfPresent(RateLimit.self, forKey: .rateLimit)
        cors = try container.decodeIfPresent(CORS.self, forKey: .cors)
        forwardToken = try container.decodeIfPresent(Bool.self, forKey: .forwardToken) ?? forwardToken
        healthCheck = try container.decodeIfPresent(HealthCheck.self, forKey: .healthCheck)
        circuitBreaker = try container.decodeIfPresent(CircuitBreakerPolicy.self, forKey: .circuitBreaker) ?? circuitBreaker
        fallback = try container.decodeIfPresent(Fallback.self, forKey: .fallback)
        sticky = try container.decodeIfPresent(Stickiness.self, forKey: .sticky)
    }

    enum CodingKeys: String, CodingKey {
        case name, match, upstreams, service, balance, auth, retries, cors, fallback, sticky
        case stripPrefix = "strip_prefix"
        case rewritePrefix = "rewrite_prefix"
        case timeoutSeconds = "timeout_seconds"
        case maxBodyBytes = "max_body_bytes"
        case rateLimit = "rate_limit"
        case forwardToken = "forward_token"
        case healthCheck = "health_check"
        case circuitBreaker = "circuit_breaker"
    }
}
