import HTTPTypes
import Hummingbird

/// Who may call a route. Every route declares one (deny by default): `.public` routes are open,
/// `.authenticated` ones need any caller with valid credentials, `.permission` ones a caller holding it.
public enum Access: Sendable, Equatable, CustomStringConvertible {
    case `public`
    case authenticated
    case permission(String)

    public var description: String {
        switch self {
        case .public: "public"
        case .authenticated: "authenticated"
        case .permission(let permission): permission
        }
    }
}

/// Establishes who made a request. The identity module supplies the real one; without it
/// ``NoIdentityAuthenticator`` refuses every protected route.
public protocol RequestAuthenticator: Sendable {
    /// The caller, `nil` when the request carries no credentials; throws a 401 problem for bad ones.
    func authenticate(_ request: Request, context: KeelRequestContext) async throws -> Principal?
}

public struct NoIdentityAuthenticator: RequestAuthenticator {
    public init() {}
    public func authenticate(_ request: Request, context: KeelRequestContext) async throws -> Principal? {
        throw Problem.unauthorized("This route needs credentials; no identity provider is configured to check them.")
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

    func install(on router: Router<KeelRequestContext>, authenticator: any RequestAuthenticator) {
        for (route, handler) in entries {
            let access = route.access
            router.on(RouterPath(stringLiteral: route.path), method: route.method) { request, context in
                guard access != .public else { return try await handler(request, context) }
                var context = context
                context.principal = try await Self.authorize(request, context: context, access: access, authenticator: authenticator)
                return try await handler(request, context)
            }
        }
    }

    /// The access rule of a route applied to a request: 401 without valid credentials, 403 without
    /// the permission (or while a required second factor is not enrolled).
    public static func authorize(_ request: Request, context: KeelRequestContext, access: Access,
                          authenticator: any RequestAuthenticator) async throws -> Principal {
        guard let principal = try await authenticator.authenticate(request, context: context) else {
            throw Problem.unauthorized("This route needs credentials: send Authorization: Bearer <token> or X-API-Key.")
        }
        if case .permission(let permission) = access {
            if principal.mustEnrollSecondFactor {
                throw Problem.forbidden("Your role requires two-factor authentication; enrol TOTP at /api/v1/me/totp first.")
            }
            guard principal.has(permission) else {
                throw Problem.forbidden("This route needs the permission \(permission), which \(principal.name) does not have.")
            }
        }
        return principal
    }
}
