import Foundation
import Hummingbird
import KeelCore
import KeelIdentity
import KeelServer

/// Users (create or invite, disable, roles), API keys (a new key shown once), and the audit log. The
/// identity service applies its own rules (who may grant what) on top of the permission each page names.
struct IdentityPages {
    let console: Console
    static let pageSize = 50

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console/users", "users", permission: "users:read") { request, _, session in
            try await users(session: session, notice: Notice.message(request), created: nil, errors: [], status: .ok)
        }
        console.action(router, "/console/users", "user.create", permission: "users:write") { _, context, session, form in
            let input = NewUser(kind: "user", email: form["email"], name: form["name"], password: form["password"],
                                roles: form.all("roles").filter { !$0.isEmpty })
            do {
                let created = try await console.identity.createUser(input, caller: session.principal, actor: Self.actor(context, session))
                return try await users(session: session, notice: "The user was created.", created: created, errors: [], status: .created)
            } catch let problem as Problem where problem.status.code < 500 && problem.status != .unauthorized {
                return try await users(session: session, notice: nil, created: nil, errors: SchedulePages.messages(problem), status: problem.status)
            }
        }
        console.action(router, "/console/users/{id}", "user.update", permission: "users:write") { _, context, session, form in
            let id = try context.parameters.require("id")
            var change = UserChange()
            switch form["action"] {
            case "disable": change.disabled = true
            case "enable": change.disabled = false
            case "roles": change.roles = form.all("roles").filter { !$0.isEmpty }
            default: throw ConsoleError(status: .badRequest, message: "Unknown change to a user.")
            }
            _ = try await console.identity.updateUser(id: id, change, caller: session.principal, actor: Self.actor(context, session))
            return Console.redirect("/console/users?done=user_updated")
        }

        console.page(router, "/console/keys", "keys", permission: "apikeys:read") { request, _, session in
            try await keys(session: session, notice: Notice.message(request), created: nil, errors: [], status: .ok)
        }
        console.action(router, "/console/keys", "key.create", permission: "apikeys:write") { _, context, session, form in
            var expiresAt: Date?
            if let days = form["expires_days"] {
                guard let count = Int(days), (1...3650).contains(count) else {
                    return try await keys(session: session, notice: nil, created: nil, errors: ["Expires after: 1 to 3650 days, or empty for never."], status: .badRequest)
                }
                expiresAt = console.clock.now().addingTimeInterval(TimeInterval(count) * 86_400)
            }
            let input = NewAPIKey(name: form["name"] ?? "", permissions: form.all("permissions").filter { !$0.isEmpty }, expiresAt: expiresAt)
            do {
                let key = try await console.identity.createAPIKey(input, caller: session.principal, actor: Self.actor(context, session))
                return try await keys(session: session, notice: nil, created: key, errors: [], status: .created)
            } catch let problem as Problem where problem.status.code < 500 && problem.status != .unauthorized {
                return try await keys(session: session, notice: nil, created: nil, errors: SchedulePages.messages(problem), status: problem.status)
            }
        }
        console.action(router, "/console/keys/{id}/revoke", "key.revoke", permission: "apikeys:write") { _, context, session, _ in
            try await console.identity.revokeAPIKey(id: try context.parameters.require("id"), caller: session.principal, actor: Self.actor(context, session))
            return Console.redirect("/console/keys?done=key_revoked")
        }

        console.page(router, "/console/audit", "audit", permission: "audit:read") { request, _, session in
            try await audit(request, session: session)
        }
    }

    /// Console actions are audited as the signed-in user, with the request's ID.
    static func actor(_ context: KeelRequestContext, _ session: ConsoleSession) -> AuditActor {
        AuditActor(kind: session.principal.kind.rawValue, id: session.principal.subject, name: session.principal.name,
                   clientIP: context.clientIP, requestID: context.requestID)
    }

    private func users(session: ConsoleSession, notice: String?, created: CreatedUser?, errors: [String], status: HTTPResponse.Status) async throws -> Response {
        let roles = try await console.identity.listRoles().map(\.name)
        let users = try await console.identity.listUsers(kind: nil, limit: 500, after: nil).items.map { user -> [String: Any] in
            ["id": user.id, "name": user.name, "email": user.email ?? "", "kind": user.kind, "disabled": user.disabled,
             "totp": user.totpEnabled, "last_login": Display.time(user.lastLoginAt), "roles_text": user.roles.joined(separator: ", "),
             "role_options": roles.map { ["name": $0, "checked": user.roles.contains($0)] }, "can_write": session.may("users:write"),
             "is_self": user.id == session.principal.subject]
        }
        var data: [String: Any] = ["users": users, "can_write": session.may("users:write"), "notice": notice ?? "",
                                   "errors": errors.map { ["message": $0] }, "has_errors": !errors.isEmpty,
                                   "role_options": roles.map { ["name": $0, "checked": $0 == "viewer"] }]
        if let created {
            data["created"] = ["email": created.user.email ?? created.user.name,
                               "setup_token": created.passwordSetup?.token ?? "", "setup_expires": Display.time(created.passwordSetup?.expiresAt)]
        }
        return console.html("users", title: "Users", session: session, section: "users", data, status: status)
    }

    private func keys(session: ConsoleSession, notice: String?, created: APIKeyRecord?, errors: [String], status: HTTPResponse.Status) async throws -> Response {
        let owner = session.may("users:read") ? "all" : nil
        let keys = try await console.identity.listAPIKeys(ownerID: owner, caller: session.principal, limit: 500, after: nil).items.map { key -> [String: Any] in
            ["id": key.id, "name": key.name, "owner": key.ownerID, "prefix": key.prefix, "permissions": key.permissions.joined(separator: ", "),
             "created": Display.time(key.createdAt), "expires": Display.time(key.expiresAt), "last_used": Display.time(key.lastUsedAt),
             "revoked": key.revokedAt != nil,
             "can_revoke": key.revokedAt == nil && session.may("apikeys:write") && (key.ownerID == session.principal.subject || session.may("users:write"))]
        }
        var data: [String: Any] = ["keys": keys, "can_write": session.may("apikeys:write"), "notice": notice ?? "",
                                   "errors": errors.map { ["message": $0] }, "has_errors": !errors.isEmpty,
                                   // A key can hold only permissions its creator holds.
                                   "permission_options": Permissions.catalog.filter { session.principal.has($0.name) }.map { ["name": $0.name, "summary": $0.summary] }]
        if let created, let secret = created.key {
            data["created"] = ["name": created.name, "key": secret]
        }
        return console.html("keys", title: "API keys", session: session, section: "keys", data, status: status)
    }

    private func audit(_ request: Request, session: ConsoleSession) async throws -> Response {
        var query = ListQuery(request)
        var filter = AuditLog.Filter()
        filter.action = query.text("action")
        filter.outcome = query.text("outcome")
        filter.actor = query.text("actor")
        filter.target = query.text("target")
        filter.since = query.time("since")
        filter.until = query.time("until")
        let after = query.text("after")
        let problems = query.problems
        let page = problems.isEmpty ? try await console.identity.audit.list(filter, limit: Self.pageSize, after: after) : Page<AuditRecord>(items: [], nextAfter: nil)
        let next = query.next(after: page.nextAfter) ?? ""
        let records = page.items.map { record -> [String: Any] in
            ["at": Display.time(record.at), "action": record.action, "outcome": record.outcome, "actor": record.actorName.isEmpty ? record.actorKind : record.actorName,
             "actor_id": record.actorID, "target": record.target, "ip": record.clientIP, "request_id": record.requestID,
             "detail": record.detail.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")]
        }
        return console.html("audit", title: "Audit log", session: session, section: "audit", [
            "records": records, "empty": records.isEmpty, "next": next, "problems": problems.map { ["message": $0] },
            "filter_action": filter.action ?? "", "filter_outcome": filter.outcome ?? "", "filter_actor": filter.actor ?? "",
            "filter_target": filter.target ?? "", "filter_since": query.text("since") ?? "", "filter_until": query.text("until") ?? "",
        ], status: problems.isEmpty ? .ok : .badRequest)
    }
}
