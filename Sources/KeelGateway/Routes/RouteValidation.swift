import Foundation
import KeelServer

extension GatewayRoute {
    /// The route with its prefixes and methods in canonical form (`/api/` → `/api`, methods upper-cased),
    /// or every mistake in it, each naming its field. `reserved` are the paths Keel serves itself, which
    /// no route may take over.
    public func validated(reserved: ReservedPaths) throws(ValidationFailure) -> GatewayRoute {
        var route = self
        var errors: [FieldError] = []
        func check(_ condition: Bool, _ field: String, _ message: String) {
            if !condition { errors.append(FieldError(field: field, message: message)) }
        }

        check(Self.isValidName(name), "name", "must be 1-100 characters of letters, digits, '.', '_' or '-'")
        if let prefix = Self.canonicalPath(match.prefix) {
            route.match.prefix = prefix
            if let owner = reserved.conflict(withPrefix: prefix) {
                errors.append(FieldError(field: "match.prefix", message: "\(prefix) is Keel's own path \(owner); choose a prefix outside it"))
            }
        } else {
            errors.append(FieldError(field: "match.prefix", message: Self.pathRule))
        }
        if let host = match.host {
            check(Self.isValidHostPattern(host), "match.host", "must be a host name like api.example.com, or *.example.com")
            route.match.host = host.lowercased()
        }
        if let methods = match.methods {
            check(!methods.isEmpty && methods.count <= 16, "match.methods", "must list 1-16 methods, or be left out for any method")
            for (index, method) in methods.enumerated() {
                check(HeaderRules.isToken(method), "match.methods[\(index)]", "must be an HTTP method such as GET")
            }
            route.match.methods = methods.map { $0.uppercased() }
        }
        for (name, value) in match.headers ?? [:] {
            check(HeaderRules.isToken(name) && !HeaderRules.isIdentityHeader(name), "match.headers.\(name)",
                  "must be a header name (not X-Keel-*, which the gateway sets itself)")
            check(HeaderRules.isSafeValue(value), "match.headers.\(name)", "must not contain line breaks or control characters")
        }

        check(upstreams.count <= 64, "upstreams", "must list at most 64 instances")
        for (index, upstream) in upstreams.enumerated() {
            errors += Self.upstreamErrors(upstream, field: "upstreams[\(index)]")
        }
        if let service {
            check(Self.isValidName(service), "service", "must be a registered service name: 1-100 characters of letters, digits, '.', '_' or '-'")
        } else {
            check(!upstreams.isEmpty, "upstreams", "must list at least one instance, or name a registered service")
            check(upstreams.isEmpty || upstreams.contains { $0.weight > 0 }, "upstreams", "at least one instance needs a weight above 0")
        }
        if let rewrite = rewritePrefix {
            if let canonical = Self.canonicalPath(rewrite) { route.rewritePrefix = canonical } else {
                errors.append(FieldError(field: "rewrite_prefix", message: Self.pathRule))
            }
        }
        check(Self.isValidAuth(auth), "auth", "must be public, authenticated, a Keel permission such as jobs:read, or an application permission such as orders:read")
        check((0.1...3600).contains(timeoutSeconds), "timeout_seconds", "must be from 0.1 to 3600")
        check((0...5).contains(retries), "retries", "must be from 0 to 5")
        check((0...(1 << 30)).contains(maxBodyBytes), "max_body_bytes", "must be from 0 to 1073741824 (1 GiB)")
        if let limit = rateLimit {
            check((1...1_000_000).contains(limit.requests), "rate_limit.requests", "must be from 1 to 1000000")
            check((0.001...86_400).contains(limit.perSeconds), "rate_limit.per_seconds", "must be from 0.001 to 86400")
            check((0...1_000_000).contains(limit.burst), "rate_limit.burst", "must be from 0 to 1000000")
        }
        if let cors {
            check(!cors.allowedOrigins.isEmpty && cors.allowedOrigins.count <= 100, "cors.allowed_origins", "must list 1-100 origins")
            for (index, origin) in cors.allowedOrigins.enumerated() {
                check(origin == "*" || Self.isValidOrigin(origin), "cors.allowed_origins[\(index)]", "must be * or an origin like https://app.example.com")
            }
            check(!(cors.allowedOrigins.contains("*") && cors.allowCredentials == true), "cors.allow_credentials",
                  "cannot be true when any origin (*) is allowed; list the origins")
            for (field, names) in [("allowed_methods", cors.allowedMethods), ("allowed_headers", cors.allowedHeaders), ("exposed_headers", cors.exposedHeaders)] {
                for (index, name) in (names ?? []).enumerated() {
                    check(HeaderRules.isToken(name), "cors.\(field)[\(index)]", "must be a method or header name")
                }
            }
            check((0...86_400).contains(cors.maxAgeSeconds ?? 0), "cors.max_age_seconds", "must be from 0 to 86400")
        }
        if let health = healthCheck {
            check(Self.canonicalPath(health.path) != nil || health.path.contains("?"), "health_check.path", Self.pathRule)
            check((0.1...3600).contains(health.intervalSeconds), "health_check.interval_seconds", "must be from 0.1 to 3600")
            check((0.1...60).contains(health.timeoutSeconds), "health_check.timeout_seconds", "must be from 0.1 to 60")
            check((1...100).contains(health.healthyThreshold), "health_check.healthy_threshold", "must be from 1 to 100")
            check((1...100).contains(health.unhealthyThreshold), "health_check.unhealthy_threshold", "must be from 1 to 100")
        }
        let breaker = circuitBreaker
        check((1...1000).contains(breaker.consecutiveFailures), "circuit_breaker.consecutive_failures", "must be from 1 to 1000")
        check(breaker.errorRate > 0 && breaker.errorRate <= 1, "circuit_breaker.error_rate", "must be above 0 and at most 1")
        check((1...100_000).contains(breaker.minRequests), "circuit_breaker.min_requests", "must be from 1 to 100000")
        check((1...3600).contains(breaker.windowSeconds), "circuit_breaker.window_seconds", "must be from 1 to 3600")
        check((0.1...3600).contains(breaker.openSeconds), "circuit_breaker.open_seconds", "must be from 0.1 to 3600")
        if let fallback {
            check((1...64).contains(fallback.upstreams.count), "fallback.upstreams", "must list 1-64 instances")
            for (index, upstream) in fallback.upstreams.enumerated() {
                errors += Self.upstreamErrors(upstream, field: "fallback.upstreams[\(index)]")
            }
            for (index, status) in fallback.onStatus.enumerated() {
                check((400...599).contains(status), "fallback.on_status[\(index)]", "must be an error status from 400 to 599")
            }
        }
        if let sticky {
            check((sticky.header == nil) != (sticky.cookie == nil), "sticky", "must name either a header or a cookie")
            check((sticky.header ?? sticky.cookie).map(HeaderRules.isToken) ?? true, "sticky", "must be a header or cookie name")
        }
        guard errors.isEmpty else { throw ValidationFailure(errors: errors) }
        return route
    }

    static func upstreamErrors(_ upstream: Upstream, field: String) -> [FieldError] {
        var errors: [FieldError] = []
        if UpstreamURL(upstream.url) == nil {
            errors.append(FieldError(field: "\(field).url", message: "must be an http:// or https:// URL with a host, without credentials, query or fragment"))
        }
        if !(0...1000).contains(upstream.weight) {
            errors.append(FieldError(field: "\(field).weight", message: "must be from 0 (no new requests) to 1000"))
        }
        return errors
    }

    static let pathRule = "must be a path starting with /, without '..', '.', empty segments, '%', '?', '#' or spaces"

    /// `/a/b/` → `/a/b`; `nil` for anything a prefix cannot safely be: dot segments, encodings, empty segments.
    static func canonicalPath(_ path: String) -> String? {
        guard path.hasPrefix("/"), path.utf8.count <= 512 else { return nil }
        if path == "/" { return path }
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        let segments = trimmed.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        for segment in segments {
            guard !segment.isEmpty, segment != ".", segment != "..",
                  segment.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7f && !"%?#\\".unicodeScalars.contains($0) })
            else { return nil }
        }
        return trimmed
    }

    static func isValidName(_ name: String) -> Bool {
        (1...100).contains(name.utf8.count)
            && name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "._-".unicodeScalars.contains($0) }
    }

    static func isValidAuth(_ auth: String) -> Bool {
        auth == "public" || auth == "authenticated" || Permissions.isGrantable(auth)
    }

    static func isValidHostPattern(_ host: String) -> Bool {
        let name = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
        return (1...253).contains(name.utf8.count) && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }
        }
    }

    static func isValidOrigin(_ origin: String) -> Bool {
        guard let url = URLComponents(string: origin), let scheme = url.scheme, ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil, url.fragment == nil, url.user == nil
        else { return false }
        return true
    }
}

/// An upstream's parsed address: scheme, host, port and base path.
struct UpstreamURL: Sendable, Hashable {
    let secure: Bool
    let host: String
    let port: Int
    /// The path requests are appended to; empty for the root.
    let basePath: String

    init?(_ text: String) {
        guard text.utf8.count <= 2048, let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty,
              components.user == nil, components.password == nil, components.query == nil, components.fragment == nil,
              !text.contains(where: { $0.isWhitespace })
        else { return nil }
        secure = scheme == "https"
        self.host = host
        port = components.port ?? (secure ? 443 : 80)
        guard (1...65535).contains(port) else { return nil }
        let path = components.percentEncodedPath
        if path.isEmpty || path == "/" {
            basePath = ""
        } else if let canonical = GatewayRoute.canonicalPath(path) {
            basePath = canonical
        } else {
            return nil
        }
    }

    /// `http://host:port`, what the HTTP client connects to.
    var origin: String { "\(secure ? "https" : "http")://\(authority)" }
    /// `host:port`, an IPv6 address in brackets.
    var authority: String { "\(host.contains(":") ? "[\(host)]" : host):\(port)" }
    /// The `Host` header for this upstream: the port only when it is not the scheme's default.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }
}
