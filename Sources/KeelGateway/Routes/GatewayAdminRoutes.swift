import Foundation
import Hummingbird
import KeelCore
import KeelServer

/// `/api/v1/gateway/routes` (read with `gateway:read`, change with `gateway:admin`) and the service
/// registry at `/api/v1/gateway/services` (instances register with `gateway:register`).
struct GatewayAdminRoutes {
    let routes: GatewayStore
    /// This process's gateway, when it runs the gateway role: changes apply here at once (other
    /// replicas within a second), and route views include its upstreams' health and breakers.
    let gateway: Gateway?
    let limits: RequestLimits

    func register(on registrar: inout RouteRegistrar) {
        let (routes, gateway, limits) = (self.routes, self.gateway, self.limits)
        registrar.add(.get, "/api/v1/gateway/routes", access: .permission("gateway:read")) { _, _ in
            try .json(["items": try await routes.routes().map { RouteView($0, status: gateway?.status(of: $0.route.name)) }])
        }
        registrar.add(.post, "/api/v1/gateway/routes", access: .permission("gateway:admin")) { request, _ in
            let route = try Self.validated(try await request.decodeJSON(GatewayRoute.self, limits: limits))
            let stored = try await routes.save(route, mode: .create)
            try await gateway?.reload(from: routes, force: true)
            return try .json(RouteView(stored, status: gateway?.status(of: route.name)), status: .created)
        }
        registrar.add(.get, "/api/v1/gateway/routes/{name}", access: .permission("gateway:read")) { _, context in
            let name = try context.parameters.require("name")
            guard let stored = try await routes.route(named: name) else { throw Problem.notFound("No gateway route is named \(name).") }
            return try .json(RouteView(stored, status: gateway?.status(of: name)))
        }
        registrar.add(.put, "/api/v1/gateway/routes/{name}", access: .permission("gateway:admin")) { request, context in
            let name = try context.parameters.require("name")
            var body = try await request.decodeJSON(GatewayRoute.self, limits: limits)
            if body.name.isEmpty { body.name = name }
            guard body.name == name else {
                throw Problem.validation("The route's name must match the path.", errors: [FieldError(field: "name", message: "must be \(name) or left out")])
            }
            let route = try Self.validated(body)
            let stored = try await routes.save(route, mode: .replace)
            try await gateway?.reload(from: routes, force: true)
            return try .json(RouteView(stored, status: gateway?.status(of: name)))
        }
        registrar.add(.delete, "/api/v1/gateway/routes/{name}", access: .permission("gateway:admin")) { _, context in
            try await routes.delete(named: try context.parameters.require("name"))
            try await gateway?.reload(from: routes, force: true)
            return Response(status: .noContent)
        }

        registrar.add(.get, "/api/v1/gateway/services", access: .permission("gateway:read")) { _, _ in
            let instances = try await routes.liveInstances()
            let services = Dictionary(grouping: instances, by: \.service).sorted { $0.key < $1.key }.map { name, instances in
                ServiceView(name: name, instances: instances)
            }
            return try .json(["items": services])
        }
        registrar.add(.put, "/api/v1/gateway/services/{service}/instances", access: .permission("gateway:register")) { request, context in
            let service = try context.parameters.require("service")
            let body = try await request.decodeJSON(Registration.self, limits: limits)
            var errors: [FieldError] = []
            if !GatewayRoute.isValidName(service) {
                errors.append(FieldError(field: "service", message: "must be 1-100 characters of letters, digits, '.', '_' or '-'"))
            }
            errors += GatewayRoute.upstreamErrors(GatewayRoute.Upstream(url: body.url), field: "")
                .map { FieldError(field: "url", message: $0.message) }
            let ttl = body.ttlSeconds ?? 30
            if !(5...3600).contains(ttl) { errors.append(FieldError(field: "ttl_seconds", message: "must be from 5 to 3600")) }
            guard errors.isEmpty else { throw Problem.validation("The registration is not valid.", errors: errors) }
            let instance = try await routes.register(service: service, url: body.url, ttl: ttl)
            try await gateway?.reload(from: routes, force: false)
            return try .json(instance)
        }
        registrar.add(.delete, "/api/v1/gateway/services/{service}/instances", access: .permission("gateway:register")) { request, context in
            let service = try context.parameters.require("service")
            guard let url = request.uri.queryParameters.get("url") else {
                throw Problem.invalidParameters([FieldError(field: "url", message: "is required: the instance's URL")])
            }
            guard try await routes.deregister(service: service, url: url) else {
                throw Problem.notFound("No instance \(url) is registered for \(service).")
            }
            try await gateway?.reload(from: routes, force: false)
            return Response(status: .noContent)
        }
    }

    static func validated(_ route: GatewayRoute) throws -> GatewayRoute {
        do throws(ValidationFailure) {
            return try route.validated(reserved: .keel)
        } catch {
            throw Problem.validation("The route is not valid.", errors: error.errors)
        }
    }

    struct Registration: Decodable {
        var url: String
        var ttlSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case url
            case ttlSeconds = "ttl_seconds"
        }
    }
}

/// A route in the admin API: its definition, where it came from, and (on a gateway process) the
/// live state of its instances.
struct RouteView: Encodable {
    let stored: StoredRoute
    let status: RouteStatus?

    init(_ stored: StoredRoute, status: RouteStatus?) {
        self.stored = stored
        self.status = status
    }

    func encode(to encoder: any Encoder) throws {
        try stored.route.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(stored.declared, forKey: .declared)
        try container.encode(stored.createdAt, forKey: .createdAt)
        try container.encode(stored.updatedAt, forKey: .updatedAt)
        try container.encodeIfPresent(status, forKey: .status)
    }

    enum Keys: String, CodingKey {
        case declared, status
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }
}

/// What one gateway process knows of a route's instances right now.
struct RouteStatus: Encodable {
    let upstreams: [UpstreamStatus]
    let fallback: [UpstreamStatus]?
}

struct ServiceView: Encodable {
    let name: String
    let instances: [ServiceInstance]
}

extension Gateway {
    func status(of route: String) -> RouteStatus? {
        guard let active = routes.routes.first(where: { $0.route.name == route }) else { return nil }
        return RouteStatus(upstreams: active.pool.status(), fallback: active.fallbackPool?.status())
    }
}
