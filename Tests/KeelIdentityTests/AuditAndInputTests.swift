import Foundation
@testable import KeelIdentity
import KeelStore
import KeelTestSupport
import Testing

/// The audit log is append-only and filterable; hostile text is stored verbatim and stays inert.
@Suite struct AuditAndInputTests {
    static let hostile = [
        "Robert'); DROP TABLE keel_users;--",
        "' OR '1'='1",
        "\"; DELETE FROM keel_audit_log; --",
        "1; UPDATE keel_users SET roles = '[\"admin\"]'",
        "名前 \\ % _ ☃ 🚀",
    ]

    @Test(arguments: StoreKind.allCases)
    func hostileTextIsStoredVerbatimAndHarmless(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind) { keel in
            let admin = try await keel.adminToken()
            for (index, text) in Self.hostile.enumerated() {
                let user = try await keel.call(.post, "/api/v1/users", as: .bearer(admin),
                                               json: ["email": "o'brien\(index)@example.com", "name": text, "password": "a-long-passphrase-\(index)x"])
                #expect(user.status == .created, "\(user.text)")
                let id = try #require((user["user"] as? [String: Any])?["id"] as? String)
                #expect((try await keel.call(.get, "/api/v1/users/\(id)", as: .bearer(admin)))["name"] as? String == text)
                #expect(try await keel.login("o'brien\(index)@example.com", "a-long-passphrase-\(index)x").status == .ok)

                let role = try await keel.call(.post, "/api/v1/roles", as: .bearer(admin),
                                               json: ["name": "role-\(index)", "description": text, "permissions": ["nodes:read"]])
                #expect(role["description"] as? String == text)
                let key = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin), json: ["name": text, "permissions": ["nodes:read"]])
                #expect(key["name"] as? String == text)

                // Hostile filters and login fields find nothing and break nothing.
                let encoded = text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                let audit = try await keel.call(.get, "/api/v1/audit?action=\(encoded)&actor=\(encoded)", as: .bearer(admin))
                #expect(audit.status == .ok && audit.items.isEmpty)
                #expect(try await keel.login(text, text).status == .unauthorized)
                #expect(try await keel.call(.get, "/api/v1/users/\(encoded)", as: .bearer(admin)).status == .notFound)
            }
            // NUL fits no store: refused with a clear problem wherever it arrives.
            let nulName = try await keel.call(.post, "/api/v1/users", as: .bearer(admin),
                                              json: ["email": "nul@example.com", "name": "a\u{0}b", "password": "a-long-passphrase-x"])
            #expect(nulName.status == .unprocessableContent)
            #expect(nulName.text.contains("NUL"))
            let controlName = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin), json: ["name": "bell\u{7}", "permissions": ["nodes:read"]])
            #expect(controlName.status == .unprocessableContent)
            let nulQuery = try await keel.call(.get, "/api/v1/audit?action=a%00b", as: .bearer(admin))
            #expect(nulQuery.status == .badRequest)
            #expect(try await keel.call(.get, "/api/v1/users/usr%00x", as: .bearer(admin)).status == .badRequest)

            let users = try await keel.call(.get, "/api/v1/users?limit=200", as: .bearer(admin))
            #expect(users.items.count == Self.hostile.count + 1)
            #expect(users.items.filter { ($0["roles"] as? [String]) == ["admin"] }.count == 1)
            #expect(try await keel.auditActions().count > Self.hostile.count * 3)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theAuditLogIsAppendOnlyAndFilterable(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind) { keel in
            let admin = try await keel.adminToken()
            _ = try await keel.login(IdentityHarness.adminEmail, "wrong-password-123456")
            let user = try await keel.user(roles: ["viewer"])
            #expect(try await keel.call(.delete, "/api/v1/users/\(user.id)", as: .bearer(admin)).status == .noContent)

            let logins = try await keel.call(.get, "/api/v1/audit?action=auth.login", as: .bearer(admin))
            #expect(logins.items.allSatisfy { $0["action"] as? String == "auth.login" })
            #expect(logins.items.contains { $0["outcome"] as? String == "failure" } && logins.items.contains { $0["outcome"] as? String == "success" })
            let family = try await keel.call(.get, "/api/v1/audit?action=user", as: .bearer(admin))
            let actions = Set(family.items.compactMap { $0["action"] as? String })
            #expect(actions.isSuperset(of: ["user.create", "user.delete"]))
            let deletion = try #require(family.items.first { $0["action"] as? String == "user.delete" })
            #expect(deletion["target"] as? String == user.id)
            #expect(deletion["actor_kind"] as? String == "user")
            #expect((deletion["actor_name"] as? String) == IdentityHarness.adminEmail)
            #expect((deletion["request_id"] as? String)?.isEmpty == false)

            // Newest first, page by page, without overlap.
            let first = try await keel.call(.get, "/api/v1/audit?limit=2", as: .bearer(admin))
            let next = try #require(first["next_after"] as? String)
            let second = try await keel.call(.get, "/api/v1/audit?limit=2&after=\(next)", as: .bearer(admin))
            let ids = (first.items + second.items).compactMap { $0["id"] as? String }
            #expect(ids.count == 4 && ids == ids.sorted(by: >))
            let future = try await keel.call(.get, "/api/v1/audit?since=2999-01-01T00:00:00Z", as: .bearer(admin))
            #expect(future.status == .ok && future.items.isEmpty)
            let badTime = try await keel.call(.get, "/api/v1/audit?since=yesterday", as: .bearer(admin))
            #expect(badTime.status == .badRequest)
            #expect(badTime.text.contains("RFC 3339"))

            await #expect(throws: StoreError.self) {
                try await keel.identity.store.execute("UPDATE keel_audit_log SET outcome = 'success'")
            }
            await #expect(throws: StoreError.self) {
                try await keel.identity.store.execute("DELETE FROM keel_audit_log")
            }
        }
    }
}
