/// The paths Keel serves itself. The gateway routes everything else; a gateway route may not claim
/// these, and requests to them never leave Keel (a test holds every registered route to this list).
public struct ReservedPaths: Sendable {
    /// Each owns itself and everything under it.
    public let prefixes: [String]

    public static let keel = ReservedPaths(prefixes: ["/api/v1", "/.well-known", "/v1", "/healthz", "/readyz", "/metrics", "/console"])

    /// Whether Keel serves `path` (a request path, without query).
    public func owns(_ path: String) -> Bool {
        prefixes.contains { Self.path(path, isWithin: $0) }
    }

    /// The reserved prefix a route prefix overlaps, if any: one inside a reserved path, or one that is
    /// exactly a reserved path. Prefixes above them (`/`, `/api`) are allowed, since Keel's paths win.
    public func conflict(withPrefix prefix: String) -> String? {
        prefixes.first { Self.path(prefix, isWithin: $0) }
    }

    /// `/api/v1` and `/api/v1/x` are within `/api/v1`; `/api/v10` is not.
    public static func path(_ path: String, isWithin prefix: String) -> Bool {
        guard path.hasPrefix(prefix) else { return false }
        let rest = path.utf8.dropFirst(prefix.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/") || rest.first == UInt8(ascii: "?")
    }
}
