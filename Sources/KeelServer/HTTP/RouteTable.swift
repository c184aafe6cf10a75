import HTTPTypes
import Hummingbird

/// Who may call a route. Every route declares one; anything not `.public` needs an authenticated
/// caller with the permission, and without an identity provider such calls are refused.
public enum Access: Sendable, Equatable {
    case `public`
    case permission(String)
}

/// Decides whether a request may use a route that needs a permission. The identity module supplies
/// the real one; until then ``DenyAllAuthorizer`` refuses every protected route.
public protocol RequestAuthorizer: Sendable {
    func authorize(_ request: Request, context: KeelRequestContext, permission: String) async throws
}

public struct DenyAllAuthorizer: RequestAuthorizer {
    public init() {}
    public func authorize(_ request: Request, context: KeelRequestContext, permission: String) async throws {
        throw Problem.unauthorized("This route needs the permission \(permission); no identity provider is configured to grant it.")
    }
}

/// One registered route, as documented in the OpenAPI document.
public struct RouteDescriptor: Sendable, Hashable {
    public let method: HTTPRequest.Method
    /// The path in OpenAPI form: `/api/v1/nodes/{id}`.
    public let path: String
    public let access: Access

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.method == rhs.method && lhs.path == rhs.path }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(method.rawValue)
        hasher.combine(path)
    }
}

/// Every route the server registered; it answers 405 for known paths with another method, and lets
/// a test hold the OpenAPI document to the routes that exist.
public struct RouteTable: Sendable {
    public private(set) var routes: [RouteDescriptor] = []

    mutating func add(_ route: RouteDescriptor) { routes.append(route) }

    /// Methods registered for a concrete request path; empty when no route has that path.
    func methods(matching path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        return routes.filter { route in
            let template = route.path.split(separator: "/", omittingEmptySubsequences: true)
            guard template.count == segments.count else { return false }
            return zip(template, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }.map(\.method)
    }
}

/// Collects routes with their access rules; the server installs them on the Hummingbird router
/// after its middleware, wrapping each handler with its access check.
public struct RouteRegistrar: Sendable {
    typealias Handler = @Sendable (Request, KeelRequestContext) async throws -> Response

    private var entries: [(route: RouteDescriptor, handler: Handler)] = []

    public var table: RouteTable {
        var table = RouteTable()
        for entry in entries { table.add(entry.route) }
        return table
    }

    /// - Parameter path: OpenAPI-style template (`/api/v1/nodes/{id}`).
    public mutating func add(
        _ method: HTTPRequest.Method, _ path: String, access: Access,
        handler: @escaping @Sendable (Request, KeelRequestContext) async throws -> Response
    ) {
        entries.append((RouteDescriptor(method: method, path: path, access: access), handler))
    }

    func install(on router: Router<KeelRequestContext>, authorizer: any RequestAuthorizer) {
        for (route, handler) in entries {
            let access = route.access
            router.on(RouterPath(stringLiteral: route.path), method: route.method) { request, context in
                if case .permission(let permission) = access {
                    try await authorizer.authorize(request, context: context, permission: permission)
                }
                return try await handler(request, context)
            }
        }
    }
}
