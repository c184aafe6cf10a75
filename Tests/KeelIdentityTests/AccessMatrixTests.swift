import Foundation
import HTTPTypes
import KeelIdentity
import KeelServer
import KeelTestSupport
import Testing

/// Deny by default, checked from the outside: every registered route is called anonymously and as
/// every built-in role, and the answers must match the matrix below. A route missing from the matrix
/// (one that declared nothing anyone agreed to) fails the test.
@Suite struct AccessMatrixTests {
    /// Who may call each route: "public", "authenticated", or the permission it needs.
    static let expectedAccess: [String: String] = [
        "GET /healthz": "public", "GET /readyz": "public", "GET /metrics": "public",
        "GET /api/v1/openapi.json": "public", "GET /api/v1/status": "public", "POST /api/v1/config/validate": "public",
        "GET /api/v1/nodes": "nodes:read", "GET /api/v1/nodes/{id}": "nodes:read",
        "GET /.well-known/jwks.json": "public", "GET /.well-known/openid-configuration": "public",
        "POST /api/v1/auth/login": "public", "POST /api/v1/auth/refresh": "public", "POST /api/v1/auth/logout": "public",
        "POST /api/v1/auth/password-reset": "public",
        "GET /api/v1/me": "authenticated", "POST /api/v1/me/password": "authenticated",
        "POST /api/v1/me/totp": "authenticated", "POST /api/v1/me/totp/confirm": "authenticated", "DELETE /api/v1/me/totp": "authenticated",
        "GET /api/v1/users": "users:read", "POST /api/v1/users": "users:write", "GET /api/v1/users/{id}": "users:read",
        "PATCH /api/v1/users/{id}": "users:write", "DELETE /api/v1/users/{id}": "users:write",
        "POST /api/v1/users/{id}/password-reset": "users:write",
        "GET /api/v1/permissions": "roles:read", "GET /api/v1/roles": "roles:read", "POST /api/v1/roles": "roles:write",
        "GET /api/v1/roles/{name}": "roles:read", "PATCH /api/v1/roles/{name}": "roles:write", "DELETE /api/v1/roles/{name}": "roles:write",
        "GET /api/v1/apikeys": "apikeys:read", "POST /api/v1/apikeys": "apikeys:write", "DELETE /api/v1/apikeys/{id}": "apikeys:write",
        "GET /api/v1/audit": "audit:read", "POST /api/v1/auth/keys/rotate": "identity:admin",
        "GET /api/v1/auth/issuers": "identity:admin", "PUT /api/v1/auth/issuers/{name}": "identity:admin",
        "DELETE /api/v1/auth/issuers/{name}": "identity:admin",
        "POST /api/v1/jobs": "jobs:write", "GET /api/v1/jobs": "jobs:read", "GET /api/v1/jobs/{id}": "jobs:read",
        "POST /api/v1/jobs/{id}/cancel": "jobs:write", "POST /api/v1/jobs/{id}/retry": "jobs:write",
        "GET /api/v1/queues": "jobs:read", "GET /api/v1/queues/{name}": "jobs:read", "GET /api/v1/queues/{name}/stats": "jobs:read", "PATCH /api/v1/queues/{name}": "jobs:write",
        "POST /api/v1/queues/{name}/pause": "jobs:write", "POST /api/v1/queues/{name}/resume": "jobs:write",
        "POST /api/v1/queues/{name}/purge": "jobs:write",
        "POST /api/v1/workflows": "jobs:write", "GET /api/v1/workflows": "jobs:read", "GET /api/v1/workflows/{id}": "jobs:read",
        "POST /api/v1/workflows/{id}/cancel": "jobs:write",
        "GET /api/v1/schedules": "jobs:read", "POST /api/v1/schedules": "jobs:write", "GET /api/v1/schedules/{name}": "jobs:read",
        "PUT /api/v1/schedules/{name}": "jobs:write", "DELETE /api/v1/schedules/{name}": "jobs:write",
        "POST /api/v1/schedules/{name}/pause": "jobs:write", "POST /api/v1/schedules/{name}/resume": "jobs:write",
        "POST /api/v1/schedules/{name}/trigger": "jobs:write",
        "GET /api/v1/workers": "jobs:read", "POST /api/v1/workers/claim": "jobs:write", "POST /api/v1/jobs/{id}/heartbeat": "jobs:write",
        "POST /api/v1/jobs/{id}/progress": "jobs:write", "POST /api/v1/jobs/{id}/complete": "jobs:write", "POST /api/v1/jobs/{id}/fail": "jobs:write",
        "GET /api/v1/gateway/routes": "gateway:read", "POST /api/v1/gateway/routes": "gateway:admin",
        "GET /api/v1/gateway/routes/{name}": "gateway:read", "PUT /api/v1/gateway/routes/{name}": "gateway:admin",
        "DELETE /api/v1/gateway/routes/{name}": "gateway:admin", "GET /api/v1/gateway/services": "gateway:read",
        "PUT /api/v1/gateway/services/{service}/instances": "gateway:register",
        "DELETE /api/v1/gateway/services/{service}/instances": "gateway:register",
        "GET /api/v1/ai/providers": "ai:read", "POST /api/v1/ai/providers": "ai:admin", "PUT /api/v1/ai/providers/{name}": "ai:admin",
        "DELETE /api/v1/ai/providers/{name}": "ai:admin", "GET /api/v1/ai/models": "ai:read", "POST /api/v1/ai/models": "ai:admin",
        "GET /api/v1/ai/models/{name}": "ai:read", "PUT /api/v1/ai/models/{name}": "ai:admin", "DELETE /api/v1/ai/models/{name}": "ai:admin",
        "GET /api/v1/ai/usage": "ai:read", "GET /api/v1/ai/keys/{id}": "ai:read", "PUT /api/v1/ai/keys/{id}": "ai:admin",
        "POST /v1/chat/completions": "ai:use", "POST /v1/embeddings": "ai:use", "GET /v1/models": "ai:use",
    ]

    /// What each built-in role may do, written out independently of the code that defines the roles.
    static let expectedGrants: [String: Set<String>] = [
        "admin": Set(Permissions.catalog.map(\.name)),
        "operator": ["users:read", "roles:read", "apikeys:read", "apikeys:write", "audit:read", "nodes:read", "jobs:read", "jobs:write",
                     "gateway:read", "gateway:admin", "gateway:register", "ai:read", "ai:admin", "ai:use"],
        "developer": ["roles:read", "apikeys:read", "apikeys:write", "nodes:read", "jobs:read", "jobs:write", "gateway:read", "ai:read", "ai:use"],
        "viewer": ["roles:read", "nodes:read", "jobs:read", "gateway:read", "ai:read"],
    ]

    @Test func everyRouteAnswersEveryRoleAsTheMatrixSays() async throws {
        try await withIdentityServer { keel in
            let registered = Dictionary(keel.server.routes.routes.map { ("\($0.method.rawValue) \($0.path)", $0.access.description) }) { a, _ in a }
            let undeclared = Set(registered.keys).subtracting(Self.expectedAccess.keys)
            #expect(undeclared.isEmpty, "routes missing from the access matrix: \(undeclared.sorted())")
            #expect(Set(Self.expectedAccess.keys).subtracting(registered.keys).isEmpty)
            for (route, access) in registered {
                #expect(Self.expectedAccess[route] == access, "\(route) declares \(access)")
            }

            var tokens: [String: String] = [:]
            for role in Self.expectedGrants.keys.sorted() {
                tokens[role] = role == "admin" ? try await keel.adminToken() : try await keel.user(roles: [role]).token
            }
            for route in keel.server.routes.routes {
                let name = "\(route.method.rawValue) \(route.path)"
                let path = route.path.replacingOccurrences(of: "{id}", with: "zz_01aaaaaaaaaaaaaaaaaaaaaaaa")
                    .replacingOccurrences(of: "{name}", with: "no-such-thing")
                    .replacingOccurrences(of: "{service}", with: "no-such-service")
                let anonymous = try await keel.call(route.method, path)
                #expect(anonymous.status.code < 500, "\(name) anonymously: \(anonymous.text)")
                if route.access == .public {
                    #expect(anonymous.status != .unauthorized && anonymous.status != .forbidden, "\(name) is public")
                    continue
                }
                #expect(anonymous.status == .unauthorized, "\(name) without credentials: \(anonymous.status)")
                #expect(anonymous.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
                for (role, grants) in Self.expectedGrants {
                    let reply = try await keel.call(route.method, path, as: .bearer(tokens[role]!))
                    #expect(reply.status.code < 500, "\(name) as \(role): \(reply.text)")
                    let allowed = switch route.access {
                    case .permission(let permission): grants.contains(permission)
                    default: true
                    }
                    if allowed {
                        #expect(reply.status != .unauthorized && reply.status != .forbidden, "\(name) as \(role): \(reply.status) \(reply.text)")
                    } else {
                        #expect(reply.status == .forbidden, "\(name) as \(role) should be forbidden: \(reply.status)")
                    }
                }
            }
        }
    }

    @Test func openAPIDocumentsEveryRouteWithItsAccessRule() async throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.bytes)) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var documented: [String: String] = [:]
        for (path, methods) in paths {
            for (method, value) in methods where ["get", "put", "post", "patch", "delete"].contains(method) {
                let operation = value as? [String: Any] ?? [:]
                let isPublic = (operation["security"] as? [Any])?.isEmpty == true
                documented["\(method.uppercased()) \(path)"] = isPublic ? "public" : operation["x-keel-permission"] as? String ?? "authenticated"
            }
        }
        #expect(documented == Self.expectedAccess)
    }
}
