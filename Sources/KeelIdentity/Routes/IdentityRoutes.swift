import Foundation
import Hummingbird
import KeelCore
import KeelServer
import NIOCore

/// The identity API: sign-in and sessions, the caller itself, users, roles, API keys, trusted
/// issuers, signing keys, the audit log, and the discovery documents other services read.
struct IdentityRoutes {
    let identity: IdentityService
    let limits: RequestLimits

    func register(on routes: inout RouteRegistrar) {
        registerDiscovery(on: &routes)
        registerSessions(on: &routes)
        registerMe(on: &routes)
        registerUsers(on: &routes)
        registerRoles(on: &routes)
        registerAPIKeys(on: &routes)
        registerAdministration(on: &routes)
    }

    private func registerDiscovery(on routes: inout RouteRegistrar) {
        let identity = self.identity
        routes.add(.get, "/.well-known/jwks.json", access: .public) { _, _ in
            var response = try Response.json(["keys": identity.keys.current?.jwks ?? []])
            response.headers[.cacheControl] = "public, max-age=300"
            return response
        }
        routes.add(.get, "/.well-known/openid-configuration", access: .public) { _, _ in
            let issuer = identity.tokens.issuer
            var response = try Response.json(DiscoveryDocument(
                issuer: issuer, jwksURI: issuer + "/.well-known/jwks.json", tokenEndpoint: issuer + "/api/v1/auth/login",
                userinfoEndpoint: issuer + "/api/v1/me", algorithms: [identity.settings.signingAlgorithm.rawValue]))
            response.headers[.cacheControl] = "public, max-age=300"
            return response
        }
    }

    private func registerSessions(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        routes.add(.post, "/api/v1/auth/login", access: .public) { request, context in
            struct Login: Decodable { let email: String; let password: String; let totp: String? }
            let body = try await request.decodeJSON(Login.self, limits: limits)
            return try .json(try await identity.login(email: body.email, password: body.password, totp: body.totp, actor: AuditActor(context)))
        }
        routes.add(.post, "/api/v1/auth/refresh", access: .public) { request, context in
            struct Refresh: Decodable { let refreshToken: String; enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" } }
            let body = try await request.decodeJSON(Refresh.self, limits: limits)
            return try .json(try await identity.refresh(token: body.refreshToken, actor: AuditActor(context)))
        }
        routes.add(.post, "/api/v1/auth/logout", access: .public) { request, context in
            struct Logout: Decodable { let refreshToken: String; enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" } }
            let body = try await request.decodeJSON(Logout.self, limits: limits)
            try await identity.logout(token: body.refreshToken, actor: AuditActor(context))
            return Response(status: .noContent)
        }
        routes.add(.post, "/api/v1/auth/password-reset", access: .public) { request, context in
            struct Reset: Decodable {
                let token: String
                let newPassword: String
                enum CodingKeys: String, CodingKey { case token; case newPassword = "new_password" }
            }
            let body = try await request.decodeJSON(Reset.self, limits: limits)
            try await identity.resetPassword(token: body.token, newPassword: body.newPassword, actor: AuditActor(context))
            return Response(status: .noContent)
        }
    }

    private func registerMe(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        routes.add(.get, "/api/v1/me", access: .authenticated) { _, context in
            let principal = try context.requirePrincipal()
            // The state authentication just read (cached for seconds), not another query per call.
            let user = principal.kind == .external ? nil : try await identity.userState(id: principal.subject)?.record
            return try .json(Me(principal: principal, user: user))
        }
        routes.add(.post, "/api/v1/me/password", access: .authenticated) { request, context in
            struct Change: Decodable {
                let currentPassword: String
                let newPassword: String
                enum CodingKeys: String, CodingKey { case currentPassword = "current_password"; case newPassword = "new_password" }
            }
            let body = try await request.decodeJSON(Change.self, limits: limits)
            try await identity.changePassword(caller: try context.requirePrincipal(), current: body.currentPassword, new: body.newPassword,
                                              actor: AuditActor(context))
            return Response(status: .noContent)
        }
        routes.add(.post, "/api/v1/me/totp", access: .authenticated) { _, context in
            try .json(try await identity.beginTOTPEnrollment(caller: try context.requirePrincipal(), actor: AuditActor(context)), status: .created)
        }
        routes.add(.post, "/api/v1/me/totp/confirm", access: .authenticated) { request, context in
            struct Code: Decodable { let code: String }
            let body = try await request.decodeJSON(Code.self, limits: limits)
            return try .json(try await identity.confirmTOTPEnrollment(caller: try context.requirePrincipal(), code: body.code, actor: AuditActor(context)))
        }
        routes.add(.delete, "/api/v1/me/totp", access: .authenticated) { request, context in
            struct Code: Decodable { let code: String }
            let body = try await request.decodeJSON(Code.self, limits: limits)
            try await identity.disableTOTP(caller: try context.requirePrincipal(), code: body.code, actor: AuditActor(context))
            return Response(status: .noContent)
        }
    }

    private func registerUsers(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        routes.add(.get, "/api/v1/users", access: .permission("users:read")) { request, _ in
            let page = try Pagination(request.uri.queryParameters, idPrefixes: ["usr", "svc"])
            let kind = request.uri.queryParameters.get("kind")
            if let kind, kind != "user", kind != "service_account" {
                throw Problem.invalidParameters([FieldError(field: "kind", message: "must be user or service_account")])
            }
            return try .json(try await identity.listUsers(kind: kind, limit: page.limit, after: page.after))
        }
        routes.add(.post, "/api/v1/users", access: .permission("users:write")) { request, context in
            let body = try await request.decodeJSON(NewUser.self, limits: limits)
            return try .json(try await identity.createUser(body, caller: try context.requirePrincipal(), actor: AuditActor(context)), status: .created)
        }
        routes.add(.get, "/api/v1/users/{id}", access: .permission("users:read")) { _, context in
            try .json(try await identity.user(id: try context.parameters.require("id")))
        }
        routes.add(.patch, "/api/v1/users/{id}", access: .permission("users:write")) { request, context in
            let body = try await request.decodeJSON(UserChange.self, limits: limits)
            return try .json(try await identity.updateUser(id: try context.parameters.require("id"), body, caller: try context.requirePrincipal(),
                                                           actor: AuditActor(context)))
        }
        routes.add(.delete, "/api/v1/users/{id}", access: .permission("users:write")) { _, context in
            try await identity.deleteUser(id: try context.parameters.require("id"), caller: try context.requirePrincipal(), actor: AuditActor(context))
            return Response(status: .noContent)
        }
        routes.add(.post, "/api/v1/users/{id}/password-reset", access: .permission("users:write")) { _, context in
            try .json(try await identity.issuePasswordReset(userID: try context.parameters.require("id"), caller: try context.requirePrincipal(),
                                                            actor: AuditActor(context)), status: .created)
        }
    }

    private func registerRoles(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        // The catalog is fixed for the life of the binary: encoded once.
        let catalog = ByteBuffer(bytes: (try? JSONEncoder.keel().encode(["items": Permissions.catalog.map { ["name": $0.name, "summary": $0.summary] }])) ?? Data())
        routes.add(.get, "/api/v1/permissions", access: .permission("roles:read")) { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: catalog))
        }
        routes.add(.get, "/api/v1/roles", access: .permission("roles:read")) { _, _ in
            try .json(["items": try await identity.listRoles()])
        }
        routes.add(.post, "/api/v1/roles", access: .permission("roles:write")) { request, context in
            let body = try await request.decodeJSON(NewRole.self, limits: limits)
            return try .json(try await identity.createRole(body, caller: try context.requirePrincipal(), actor: AuditActor(context)), status: .created)
        }
        routes.add(.get, "/api/v1/roles/{name}", access: .permission("roles:read")) { _, context in
            try .json(try await identity.role(named: try context.parameters.require("name")))
        }
        routes.add(.patch, "/api/v1/roles/{name}", access: .permission("roles:write")) { request, context in
            let body = try await request.decodeJSON(RoleChange.self, limits: limits)
            return try .json(try await identity.updateRole(named: try context.parameters.require("name"), body, caller: try context.requirePrincipal(),
                                                           actor: AuditActor(context)))
        }
        routes.add(.delete, "/api/v1/roles/{name}", access: .permission("roles:write")) { _, context in
            try await identity.deleteRole(named: try context.parameters.require("name"), caller: try context.requirePrincipal(), actor: AuditActor(context))
            return Response(status: .noContent)
        }
    }

    private func registerAPIKeys(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        routes.add(.get, "/api/v1/apikeys", access: .permission("apikeys:read")) { request, context in
            let page = try Pagination(request.uri.queryParameters, idPrefixes: ["key"])
            return try .json(try await identity.listAPIKeys(ownerID: request.uri.queryParameters.get("owner_id"), caller: try context.requirePrincipal(),
                                                            limit: page.limit, after: page.after))
        }
        routes.add(.post, "/api/v1/apikeys", access: .permission("apikeys:write")) { request, context in
            let body = try await request.decodeJSON(NewAPIKey.self, limits: limits)
            var response = try Response.json(try await identity.createAPIKey(body, caller: try context.requirePrincipal(), actor: AuditActor(context)),
                                             status: .created)
            response.headers[.cacheControl] = "no-store"
            return response
        }
        routes.add(.delete, "/api/v1/apikeys/{id}", access: .permission("apikeys:write")) { _, context in
            try await identity.revokeAPIKey(id: try context.parameters.require("id"), caller: try context.requirePrincipal(), actor: AuditActor(context))
            return Response(status: .noContent)
        }
    }

    private func registerAdministration(on routes: inout RouteRegistrar) {
        let (identity, limits) = (self.identity, self.limits)
        routes.add(.get, "/api/v1/audit", access: .permission("audit:read")) { request, _ in
            let query = request.uri.queryParameters
            let page = try Pagination(query, idPrefixes: ["aud"])
            var filter = AuditLog.Filter()
            filter.action = query.get("action")
            filter.outcome = query.get("outcome")
            filter.actor = query.get("actor")
            filter.target = query.get("target")
            var errors: [FieldError] = []
            let range = TimeRange(query, errors: &errors)
            guard errors.isEmpty else { throw Problem.invalidParameters(errors) }
            (filter.since, filter.until) = (range.since, range.until)
            return try .json(try await identity.audit.list(filter, limit: page.limit, after: page.after))
        }
        routes.add(.post, "/api/v1/auth/keys/rotate", access: .permission("identity:admin")) { _, context in
            let kid = try await identity.rotateSigningKey(actor: AuditActor(context))
            return try .json(["kid": kid], status: .created)
        }
        routes.add(.get, "/api/v1/auth/issuers", access: .permission("identity:admin")) { _, _ in
            try .json(["items": identity.issuers.list()])
        }
        routes.add(.put, "/api/v1/auth/issuers/{name}", access: .permission("identity:admin")) { request, context in
            let body = try await request.decodeJSON(IssuerInput.self, limits: limits)
            let issuer = try await identity.saveIssuer(name: try context.parameters.require("name"), body, actor: AuditActor(context))
            return try .json(issuer)
        }
        routes.add(.delete, "/api/v1/auth/issuers/{name}", access: .permission("identity:admin")) { _, context in
            try await identity.removeIssuer(name: try context.parameters.require("name"), actor: AuditActor(context))
            return Response(status: .noContent)
        }
    }
}

struct DiscoveryDocument: Encodable {
    let issuer: String
    let jwksURI: String
    let tokenEndpoint: String
    let userinfoEndpoint: String
    let algorithms: [String]

    enum CodingKeys: String, CodingKey {
        case issuer
        case jwksURI = "jwks_uri"
        case tokenEndpoint = "token_endpoint"
        case userinfoEndpoint = "userinfo_endpoint"
        case algorithms = "id_token_signing_alg_values_supported"
        case subjectTypes = "subject_types_supported"
        case responseTypes = "response_types_supported"
        case grantTypes = "grant_types_supported"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(issuer, forKey: .issuer)
        try container.encode(jwksURI, forKey: .jwksURI)
        try container.encode(tokenEndpoint, forKey: .tokenEndpoint)
        try container.encode(userinfoEndpoint, forKey: .userinfoEndpoint)
        try container.encode(algorithms, forKey: .algorithms)
        try container.encode(["public"], forKey: .subjectTypes)
        try container.encode(["token"], forKey: .responseTypes)
        try container.encode(["password", "refresh_token"], forKey: .grantTypes)
    }
}

/// `GET /api/v1/me`: whoever called, whatever the credential.
struct Me: Encodable {
    let principal: Principal
    let user: UserRecord?

    enum CodingKeys: String, CodingKey {
        case kind, subject, name, roles, permissions, user
        case credentialID = "credential_id"
        case mustEnroll = "must_enroll_second_factor"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(principal.kind.rawValue, forKey: .kind)
        try container.encode(principal.subject, forKey: .subject)
        try container.encode(principal.name, forKey: .name)
        try container.encode(principal.roles.sorted(), forKey: .roles)
        try container.encode(principal.permissions.sorted(), forKey: .permissions)
        try container.encodeIfPresent(principal.credentialID, forKey: .credentialID)
        try container.encode(principal.mustEnrollSecondFactor, forKey: .mustEnroll)
        try container.encodeIfPresent(user, forKey: .user)
    }
}

/// `PUT /api/v1/auth/issuers/{name}`.
public struct IssuerInput: Decodable, Sendable {
    public var issuer: String
    public var jwksURL: String
    public var audience: String
    public var rolesClaim: String?
    public var roleMap: [String: String]?
    public var defaultRoles: [String]?

    enum CodingKeys: String, CodingKey {
        case issuer, audience
        case jwksURL = "jwks_url"
        case rolesClaim = "roles_claim"
        case roleMap = "role_map"
        case defaultRoles = "default_roles"
    }
}
