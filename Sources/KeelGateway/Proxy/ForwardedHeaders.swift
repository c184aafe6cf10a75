import HTTPTypes
import NIOHTTP1

/// Header rules the gateway applies in both directions.
enum HeaderRules {
    /// Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are never forwarded.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    /// Headers through which the gateway tells upstreams who the caller is; a client's own are dropped.
    static func isIdentityHeader(_ name: String) -> Bool {
        name.utf8.count >= 7 && name.lowercased().hasPrefix("x-keel-")
    }

    /// An RFC 9110 token: a method or header name.
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 256 && text.utf8.allSatisfy { byte in
            (0x21...0x7e).contains(byte) && !"\"(),/:;<=>?@[\\]{}".utf8.contains(byte)
        }
    }

    /// No line breaks or other control characters (no header injection through configured values).
    static func isSafeValue(_ text: String) -> Bool {
        text.utf8.count <= 4096 && text.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }
    }

    /// Names a `Connection` header lists are hop-by-hop for that message too.
    static func connectionListed(_ fields: HTTPFields) -> Set<String> {
        Set(fields[values: .connection].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
    }
}

/// What the gateway tells an upstream about a request it forwards.
struct ForwardingContext {
    var clientIP: String
    var scheme: String
    var originalHost: String?
    var requestID: String
    /// `nil` when the HTTP client's span sets it.
    var traceparent: String?
    var upstreamHost: String
    /// `X-Keel-Subject` and `X-Keel-Roles`, when the route authenticated the caller.
    var subject: String?
    var roles: [String]
    /// Drop `Authorization` and `X-API-Key`: the route checked them and does not forward credentials.
    var dropCredentials: Bool
}

extension HTTPHeaders {
    /// The request's headers as the upstream gets them: hop-by-hop and client-supplied identity headers
    /// removed, `Host` set for the upstream, forwarding and correlation headers set, and the caller's
    /// identity added by the gateway.
    init(forwarding fields: HTTPFields, _ context: ForwardingContext) {
        self.init()
        let listed = HeaderRules.connectionListed(fields)
        for field in fields {
            let name = field.name.canonicalName
            if HeaderRules.hopByHop.contains(name) || listed.contains(name) || HeaderRules.isIdentityHeader(name) { continue }
            switch name {
            case "host", "content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
                 "x-request-id", "traceparent":
                continue
            case "authorization" where context.dropCredentials, "x-api-key" where context.dropCredentials:
                continue
            default:
                add(name: field.name.rawName, value: field.value)
            }
        }
        add(name: "Host", value: context.upstreamHost)
        // Keel is the edge: the address it saw is the client's, whatever the request claimed.
        add(name: "X-Forwarded-For", value: context.clientIP)
        add(name: "X-Forwarded-Proto", value: context.scheme)
        if let host = context.originalHost { add(name: "X-Forwarded-Host", value: host) }
        add(name: "X-Request-ID", value: context.requestID)
        if let traceparent = context.traceparent { add(name: "traceparent", value: traceparent) }
        if let subject = context.subject {
            add(name: "X-Keel-Subject", value: subject)
            add(name: "X-Keel-Roles", value: context.roles.joined(separator: ","))
        }
    }
}

extension HTTPFields {
    /// An upstream's response headers as the client gets them: hop-by-hop ones removed.
    init(returning headers: HTTPHeaders) {
        self.init()
        let listed = Set(headers["connection"].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        for (name, value) in headers {
            let lowered = name.lowercased()
            guard !HeaderRules.hopByHop.contains(lowered), !listed.contains(lowered), let fieldName = HTTPField.Name(name) else { continue }
            append(HTTPField(name: fieldName, value: value))
        }
    }
}
