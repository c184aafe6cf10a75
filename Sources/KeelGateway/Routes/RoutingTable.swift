import HTTPTypes
import Hummingbird
import KeelServer

/// A request path as the gateway matches and forwards it. Repeated slashes collapse (`//admin` is
/// `/admin`, so it cannot slip past a route's prefix); dot segments, encoded slashes or dots and
/// backslashes are refused, since an upstream may resolve them into a path no route allowed.
enum RequestPath {
    enum Rejection: Error { case unsafe }

    static func normalize(_ raw: String) throws(Rejection) -> String {
        var output = ""
        output.reserveCapacity(raw.utf8.count)
        var segment: [UInt8] = []
        func flush() throws(Rejection) {
            defer { segment.removeAll(keepingCapacity: true) }
            if segment.isEmpty { return }
            if segment == [UInt8(ascii: ".")] || segment == [UInt8(ascii: "."), UInt8(ascii: ".")] { throw .unsafe }
            output += "/" + String(decoding: segment, as: UTF8.self)
        }
        var bytes = raw.utf8.makeIterator()
        while let byte = bytes.next() {
            switch byte {
            case UInt8(ascii: "/"):
                try flush()
            case UInt8(ascii: "\\"), 0..<0x21, 0x7f:
                throw .unsafe
            case UInt8(ascii: "%"):
                // %2e (.), %2f (/) and %5c (\) are how traversal hides from a prefix check.
                guard let high = bytes.next(), let low = bytes.next() else { throw .unsafe }
                let code = (high | 0x20, low | 0x20)
                if code == (UInt8(ascii: "2"), UInt8(ascii: "e")) || code == (UInt8(ascii: "2"), UInt8(ascii: "f"))
                    || code == (UInt8(ascii: "5"), UInt8(ascii: "c")) || code == (UInt8(ascii: "0"), UInt8(ascii: "0")) {
                    throw .unsafe
                }
                segment += [byte, high, low]
            default:
                segment.append(byte)
            }
        }
        try flush()
        if raw.utf8.last == UInt8(ascii: "/") || output.isEmpty { output += "/" }
        return output
    }
}

/// The routes in force, compiled for matching: the longest prefix wins; among routes with the same
/// prefix, the ones with more conditions (host, methods, headers) are tried first.
struct RoutingTable: Sendable {
    let routes: [ActiveRoute]

    init(routes: [ActiveRoute]) {
        self.routes = routes.sorted { lhs, rhs in
            let (left, right) = (lhs.route.match, rhs.route.match)
            if left.prefix.utf8.count != right.prefix.utf8.count { return left.prefix.utf8.count > right.prefix.utf8.count }
            if lhs.conditionCount != rhs.conditionCount { return lhs.conditionCount > rhs.conditionCount }
            return lhs.route.name < rhs.route.name
        }
    }

    /// The route for a request whose path is already normalized.
    func match(path: String, request: Request) -> ActiveRoute? {
        routes.first { $0.matches(path: path, request: request) }
    }
}

/// A route as the proxy uses it: its definition with the parts it checks per request prepared, and
/// the upstream instances (with their health and breaker state) it balances across.
final class ActiveRoute: Sendable {
    let route: GatewayRoute
    let access: Access
    let pool: UpstreamPool
    let fallbackPool: UpstreamPool?
    let methods: Set<HTTPRequest.Method>?
    let headers: [(name: HTTPField.Name, value: String)]
    let stickyHeader: HTTPField.Name?
    let metrics: RouteMetrics

    init(route: GatewayRoute, pool: UpstreamPool, fallbackPool: UpstreamPool?) {
        self.route = route
        self.pool = pool
        self.fallbackPool = fallbackPool
        switch route.auth {
        case "public": access = .public
        case "authenticated": access = .authenticated
        default: access = .permission(route.auth)
        }
        methods = route.match.methods.map { Set($0.compactMap { HTTPRequest.Method($0) }) }
        headers = (route.match.headers ?? [:]).sorted { $0.key < $1.key }.compactMap { name, value in
            HTTPField.Name(name).map { ($0, value) }
        }
        stickyHeader = route.sticky?.header.flatMap { HTTPField.Name($0) }
        metrics = RouteMetrics(route: route.name)
    }

    var conditionCount: Int {
        (route.match.host == nil ? 0 : 1) + (methods == nil ? 0 : 1) + headers.count
    }

    func matches(path: String, request: Request) -> Bool {
        guard ReservedPaths.path(path, isWithin: route.match.prefix) || route.match.prefix == "/" else { return false }
        if let methods, !methods.contains(request.method) { return false }
        if let host = route.match.host {
            guard let requestHost = request.head.authority else { return false }
            let name = Self.hostWithoutPort(requestHost).lowercased()
            if host.hasPrefix("*.") {
                guard name.hasSuffix(host.dropFirst(1)), name.utf8.count > host.utf8.count - 1 else { return false }
            } else if name != host {
                return false
            }
        }
        for (name, value) in headers where request.headers[name] != value { return false }
        return true
    }

    /// Whose rate-limit bucket a request draws on: its API key, else its user, else its IP address.
    static func rateLimitCaller(_ principal: Principal?, clientIP: String) -> String {
        principal.map { $0.credentialID.map { "key:" + $0 } ?? "user:" + $0.subject } ?? "ip:" + clientIP
    }

    /// The value that keeps a client on one instance, from the route's sticky header or cookie.
    func stickyKey(for request: Request) -> String? {
        stickyHeader.flatMap { request.headers[$0] } ?? route.sticky?.cookie.flatMap { request.cookies[$0]?.value }
    }

    /// The path the upstream gets: the prefix stripped or rewritten as the route says.
    func upstreamPath(for path: String) -> String {
        let prefix = route.match.prefix
        let remainder = prefix == "/" ? path : String(path.dropFirst(prefix.utf8.count))
        if let rewrite = route.rewritePrefix {
            return Self.join(rewrite, remainder)
        }
        if route.stripPrefix {
            return remainder.isEmpty ? "/" : (remainder.hasPrefix("/") ? remainder : "/" + remainder)
        }
        return path
    }

    static func join(_ base: String, _ remainder: String) -> String {
        if base == "/" { return remainder.isEmpty ? "/" : remainder }
        return base + remainder
    }

    static func hostWithoutPort(_ host: String) -> Substring {
        if host.hasPrefix("["), let end = host.firstIndex(of: "]") { return host[host.index(after: host.startIndex)..<end] }
        return host.split(separator: ":", maxSplits: 1).first ?? Substring(host)
    }
}
