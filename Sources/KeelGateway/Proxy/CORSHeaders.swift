import HTTPTypes

/// CORS answers for a route's `cors` policy. Only listed origins (or `*` without credentials) get
/// them; the origin is echoed rather than `*` whenever credentials are allowed, as browsers require.
enum CORSHeaders {
    static let defaultMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    static let defaultHeaders = "Authorization, Content-Type, X-API-Key, X-Request-ID"

    static func preflight(_ cors: GatewayRoute.CORS, origin: String, route: GatewayRoute, into fields: inout HTTPFields) {
        response(cors, origin: origin, into: &fields)
        fields[.accessControlAllowMethods] = (cors.allowedMethods ?? route.match.methods)?.joined(separator: ", ") ?? defaultMethods
        fields[.accessControlAllowHeaders] = cors.allowedHeaders?.joined(separator: ", ") ?? defaultHeaders
        if let maxAge = cors.maxAgeSeconds { fields[.accessControlMaxAge] = String(maxAge) }
    }

    static func response(_ cors: GatewayRoute.CORS, origin: String, into fields: inout HTTPFields) {
        let any = cors.allowedOrigins.contains("*") && cors.allowCredentials != true
        fields[.accessControlAllowOrigin] = any ? "*" : origin
        if !any { fields.append(HTTPField(name: .vary, value: "Origin")) }
        if cors.allowCredentials == true { fields[.accessControlAllowCredentials] = "true" }
        if let exposed = cors.exposedHeaders, !exposed.isEmpty { fields[.accessControlExposeHeaders] = exposed.joined(separator: ", ") }
    }
}
