import Foundation
@testable import KeelIdentity
import KeelStore
import KeelTestSupport
import Testing

/// API keys: shown once, stored hashed, scoped, expiring, revocable, and never above their owner.
@Suite struct APIKeyTests {
    @Test(arguments: StoreKind.allCases)
    func keysWorkInBothHeadersAndAreShownOnce(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind) { keel in
            let developer = try await keel.user(roles: ["developer"])
            let created = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(developer.token),
                                              json: ["name": "ci pipeline", "permissions": ["jobs:read", "nodes:read"]])
            #expect(created.status == .created)
            #expect(created.headers[.cacheControl] == "no-store")
            let key = try #require(created["key"] as? String)
            #expect(key.hasPrefix("keel_") && key.count == 48)
            let id = try #require(created["id"] as? String)

            for credential in [IdentityHarness.Credential.bearer(key), .apiKey(key)] {
                let me = try await keel.call(.get, "/api/v1/me", as: credential)
                #expect(me.status == .ok)
                #expect(me["kind"] as? String == "api_key")
                #expect(me["subject"] as? String == developer.id)
                #expect(me["credential_id"] as? String == id)
                #expect(me["permissions"] as? [String] == ["jobs:read", "nodes:read"])
                #expect(try await keel.call(.get, "/api/v1/nodes", as: credential).status == .ok)
                // Scoped: the owner may manage keys, this key may not.
                #expect(try await keel.call(.get, "/api/v1/apikeys", as: credential).status == .forbidden)
            }

            let listed = try await keel.call(.get, "/api/v1/apikeys", as: .bearer(developer.token))
            #expect(listed.items.count == 1)
            #expect(listed.items.first?["key"] == nil)
            #expect((listed.items.first?["prefix"] as? String).map { key.hasPrefix($0) } == true)
            let stored = try await keel.identity.store.query("SELECT key_hash FROM keel_api_keys WHERE id = \(id)")
            #expect(try stored.first?.string("key_hash") != key)
            #expect(try stored.first?.string("key_hash").count == 64)

            // last_used_at is recorded off the request path.
            try await Task.sleep(for: .milliseconds(200))
            let after = try await keel.call(.get, "/api/v1/apikeys", as: .bearer(developer.token))
            #expect(after.items.first?["last_used_at"] is String)
        }
    }

    @Test func revokedExpiredAndMalformedKeysAreRefused() async throws {
        try await withIdentityServer { keel in
            let admin = try await keel.adminToken()
            let created = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin),
                                              json: ["name": "short-lived", "permissions": ["nodes:read"], "expires_at": "2099-01-01T00:00:00Z"])
            let key = try #require(created["key"] as? String)
            let id = try #require(created["id"] as? String)
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .apiKey(key)).status == .ok)

            // Expiry passes (moved into the past in the store, as time would).
            try await keel.identity.store.execute("UPDATE keel_api_keys SET expires_at = \(Date().addingTimeInterval(-1)) WHERE id = \(id)")
            keel.identity.apiKeyCache.removeAll()
            let expired = try await keel.call(.get, "/api/v1/nodes", as: .apiKey(key))
            #expect(expired.status == .unauthorized)
            #expect((expired["detail"] as? String)?.contains("expired") == true)

            let second = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin), json: ["name": "to revoke", "permissions": ["nodes:read"]])
            let secondKey = try #require(second["key"] as? String)
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .apiKey(secondKey)).status == .ok)
            #expect(try await keel.call(.delete, "/api/v1/apikeys/\(try #require(second["id"] as? String))", as: .bearer(admin)).status == .noContent)
            let revoked = try await keel.call(.get, "/api/v1/nodes", as: .apiKey(secondKey))
            #expect(revoked.status == .unauthorized)
            #expect(revoked.headers[.wwwAuthenticate]?.contains("invalid_token") == true)

            var forged = secondKey
            forged.removeLast()
            forged += forged.last == "A" ? "B" : "A"
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .apiKey(forged)).status == .unauthorized)
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .apiKey("keel_short")).status == .unauthorized)

            let pastExpiry = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin),
                                                 json: ["name": "x", "permissions": ["nodes:read"], "expires_at": "2001-01-01T00:00:00Z"])
            #expect(pastExpiry.status == .unprocessableContent)
            let unknown = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin), json: ["name": "x", "permissions": ["jobs:everything"]])
            #expect(unknown.status == .unprocessableContent)
            #expect(unknown.text.contains("is neither a Keel permission"))
            let actions = try await keel.auditActions().compactMap { $0["action"] as? String }
            #expect(actions.filter { $0 == "apikey.create" }.count == 2 && actions.contains("apikey.revoke"))
        }
    }

    @Test func nobodyEscalatesTheirOwnPermissions() async throws {
        try await withIdentityServer { keel in
            let developer = try await keel.user(roles: ["developer"])
            // A developer cannot give itself admin, mint an admin-grade key, or create an admin role.
            let ownRole = try await keel.call(.patch, "/api/v1/users/\(developer.id)", as: .bearer(developer.token), json: ["roles": ["admin"]])
            #expect(ownRole.status == .forbidden)
            let adminKey = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(developer.token),
                                               json: ["name": "root", "permissions": ["users:write", "jobs:read"]])
            #expect(adminKey.status == .forbidden)
            #expect((adminKey["detail"] as? String)?.contains("users:write") == true)
            let foreignKey = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(developer.token),
                                                 json: ["name": "theirs", "permissions": ["jobs:read"], "owner_id": "usr_01aaaaaaaaaaaaaaaaaaaaaaaa"])
            #expect(foreignKey.status == .forbidden)

            // An operator holding roles:write? No: operators cannot write roles at all; an admin can, but
            // even a custom role manager cannot grant what it lacks.
            let admin = try await keel.adminToken()
            #expect(try await keel.call(.post, "/api/v1/roles", as: .bearer(admin),
                                        json: ["name": "role-manager", "permissions": ["roles:write", "roles:read", "users:write", "users:read"]]).status == .created)
            let manager = try await keel.user(roles: ["role-manager"])
            let grab = try await keel.call(.post, "/api/v1/roles", as: .bearer(manager.token), json: ["name": "superuser", "permissions": ["audit:read"]])
            #expect(grab.status == .forbidden)
            let promote = try await keel.call(.patch, "/api/v1/users/\(developer.id)", as: .bearer(manager.token), json: ["roles": ["admin"]])
            #expect(promote.status == .forbidden)
            let demoteAdmin = try await keel.call(.get, "/api/v1/users?limit=200", as: .bearer(manager.token))
            let adminID = try #require(demoteAdmin.items.first { $0["email"] as? String == IdentityHarness.adminEmail }?["id"] as? String)
            #expect(try await keel.call(.patch, "/api/v1/users/\(adminID)", as: .bearer(manager.token), json: ["disabled": true]).status == .forbidden)

            // A key keeps only what its owner still holds: demote the owner and the key shrinks with it.
            let key = try #require(try await keel.call(.post, "/api/v1/apikeys", as: .bearer(developer.token),
                                                       json: ["name": "jobs", "permissions": ["jobs:write", "nodes:read"]])["key"] as? String)
            #expect(try await keel.call(.patch, "/api/v1/users/\(developer.id)", as: .bearer(admin), json: ["roles": ["viewer"]]).status == .ok)
            let shrunk = try await keel.call(.get, "/api/v1/me", as: .apiKey(key))
            #expect(shrunk["permissions"] as? [String] == ["nodes:read"])

            // The last admin cannot be disabled or demoted.
            let me = try await keel.call(.get, "/api/v1/me", as: .bearer(admin))
            let adminSelf = try #require(me["subject"] as? String)
            #expect(try await keel.call(.patch, "/api/v1/users/\(adminSelf)", as: .bearer(admin), json: ["disabled": true]).status == .forbidden)
            let other = try await keel.user(roles: ["viewer"])
            #expect(try await keel.call(.patch, "/api/v1/users/\(other.id)", as: .bearer(admin), json: ["roles": ["admin"]]).status == .ok)
            #expect(try await keel.call(.patch, "/api/v1/users/\(other.id)", as: .bearer(admin), json: ["roles": ["viewer"]]).status == .ok)
            let roleChanges = try await keel.auditActions(target: other.id).filter { $0["action"] as? String == "user.roles_change" }
            #expect(roleChanges.count == 2)
            #expect((roleChanges.first?["detail"] as? [String: String])?["roles_after"] == "viewer")
        }
    }

    @Test func serviceAccountsOwnKeysAndCannotSignIn() async throws {
        try await withIdentityServer { keel in
            let admin = try await keel.adminToken()
            let account = try await keel.call(.post, "/api/v1/users", as: .bearer(admin),
                                              json: ["kind": "service_account", "name": "billing-worker", "roles": ["developer"]])
            #expect(account.status == .created)
            let id = try #require((account["user"] as? [String: Any])?["id"] as? String)
            #expect(id.hasPrefix("svc_"))
            let key = try await keel.call(.post, "/api/v1/apikeys", as: .bearer(admin),
                                          json: ["name": "billing", "permissions": ["jobs:write"], "owner_id": id])
            #expect(key.status == .created)
            let me = try await keel.call(.get, "/api/v1/me", as: .apiKey(try #require(key["key"] as? String)))
            #expect(me["subject"] as? String == id)
            #expect((me["user"] as? [String: Any])?["kind"] as? String == "service_account")
            let withPassword = try await keel.call(.post, "/api/v1/users", as: .bearer(admin),
                                                   json: ["kind": "service_account", "name": "x", "password": "a-long-passphrase-1"])
            #expect(withPassword.status == .unprocessableContent)
            let duplicate = try await keel.call(.post, "/api/v1/users", as: .bearer(admin), json: ["kind": "service_account", "name": "billing-worker"])
            #expect(duplicate.status == .conflict)
        }
    }
}
