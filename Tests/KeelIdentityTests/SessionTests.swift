import Foundation
import KeelTestSupport
import Testing

/// Sign-in, refresh rotation with reuse detection, logout and lockout, on both stores.
@Suite struct SessionTests {
    @Test(arguments: StoreKind.allCases)
    func loginReturnsOAuthShapedTokensAndMeDescribesTheUser(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind) { keel in
            let login = try await keel.login(IdentityHarness.adminEmail, IdentityHarness.adminPassword)
            #expect(login.status == .ok)
            #expect(login["token_type"] as? String == "Bearer")
            #expect(login["expires_in"] as? Int == 900)
            let access = try #require(login["access_token"] as? String)
            #expect((login["refresh_token"] as? String)?.hasPrefix("kr_") == true)
            #expect(access.split(separator: ".").count == 3)

            let me = try await keel.call(.get, "/api/v1/me", as: .bearer(access))
            #expect(me.status == .ok)
            #expect(me["kind"] as? String == "user")
            #expect(me["roles"] as? [String] == ["admin"])
            #expect((me["permissions"] as? [String])?.contains("users:write") == true)
            #expect((me["user"] as? [String: Any])?["email"] as? String == IdentityHarness.adminEmail)

            let metrics = try await keel.call(.get, "/metrics").text
            #expect(metrics.contains(#"keel_auth_logins_total{outcome="success"}"#))
            #expect(metrics.contains(#"keel_auth_token_verifications_total{kind="access_token",outcome="valid"}"#))
            #expect(!metrics.contains(access))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func refreshRotatesAndReuseRevokesTheWholeFamily(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind, configure: { $0.auth.refreshReuseLeewaySeconds = 0 }) { keel in
            let first = try await keel.session(IdentityHarness.adminEmail, IdentityHarness.adminPassword)
            let rotated = try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": first.refresh])
            #expect(rotated.status == .ok)
            let second = try #require(rotated["refresh_token"] as? String)
            #expect(second != first.refresh)
            let secondAccess = try #require(rotated["access_token"] as? String)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(secondAccess)).status == .ok)

            // The old token comes back (a thief's copy): refused, and the whole session ends.
            try await Task.sleep(for: .milliseconds(20))
            let reuse = try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": first.refresh])
            #expect(reuse.status == .unauthorized)
            #expect(reuse.headers[.wwwAuthenticate]?.contains("invalid_token") == true)
            #expect((reuse["detail"] as? String)?.contains("already used") == true)
            let afterReuse = try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": second])
            #expect(afterReuse.status == .unauthorized)
            let revokedAccess = try await keel.call(.get, "/api/v1/me", as: .bearer(secondAccess))
            #expect(revokedAccess.status == .unauthorized)

            let audit = try await keel.auditActions()
            #expect(audit.contains { $0["action"] as? String == "auth.refresh.reuse" && $0["outcome"] as? String == "revoked" })
        }
    }

    @Test func concurrentRefreshesOfOneTokenBothSucceedWithinTheLeeway() async throws {
        try await withIdentityServer(configure: { $0.auth.refreshReuseLeewaySeconds = 5 }) { keel in
            let session = try await keel.session(IdentityHarness.adminEmail, IdentityHarness.adminPassword)
            async let first = keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": session.refresh])
            async let second = keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": session.refresh])
            let replies = try await [first, second]
            #expect(replies.map(\.status) == [.ok, .ok])
            let tokens = replies.compactMap { $0["refresh_token"] as? String }
            #expect(Set(tokens).count == 2)
            // Both tabs keep working afterwards.
            for token in tokens {
                #expect(try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": token]).status == .ok)
            }
        }
    }

    @Test func logoutEndsTheSessionAndItsAccessTokens() async throws {
        try await withIdentityServer { keel in
            let session = try await keel.session(IdentityHarness.adminEmail, IdentityHarness.adminPassword)
            let logout = try await keel.call(.post, "/api/v1/auth/logout", json: ["refresh_token": session.refresh])
            #expect(logout.status == .noContent)
            #expect(try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": session.refresh]).status == .unauthorized)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(session.access)).status == .unauthorized)
            // Logging out twice is not an error.
            #expect(try await keel.call(.post, "/api/v1/auth/logout", json: ["refresh_token": session.refresh]).status == .noContent)
            #expect(try await keel.auditActions().contains { $0["action"] as? String == "auth.logout" })
        }
    }

    @Test(arguments: StoreKind.allCases)
    func disabledUsersCannotLogInRefreshOrUseTheirTokens(_ kind: StoreKind) async throws {
        try await withIdentityServer(kind) { keel in
            let user = try await keel.user(roles: ["developer"])
            let session = try await keel.session(user.email, user.password)
            let admin = try await keel.adminToken()
            let disable = try await keel.call(.patch, "/api/v1/users/\(user.id)", as: .bearer(admin), json: ["disabled": true])
            #expect(disable.status == .ok)
            #expect(disable["disabled"] as? Bool == true)

            let login = try await keel.login(user.email, user.password)
            #expect(login.status == .unauthorized)
            #expect(login["detail"] as? String == "Invalid email or password.")
            #expect(try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": session.refresh]).status == .unauthorized)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(session.access)).status == .unauthorized)

            #expect(try await keel.call(.patch, "/api/v1/users/\(user.id)", as: .bearer(admin), json: ["disabled": false]).status == .ok)
            #expect(try await keel.login(user.email, user.password).status == .ok)
            let actions = try await keel.auditActions(target: user.id).compactMap { $0["action"] as? String }
            #expect(actions.contains("user.disable") && actions.contains("user.enable") && actions.contains("user.create"))
        }
    }

    @Test func unknownAccountsAndWrongPasswordsGetTheSameAnswer() async throws {
        try await withIdentityServer { keel in
            let unknown = try await keel.login("nobody@example.com", "whatever-password-123")
            let wrong = try await keel.login(IdentityHarness.adminEmail, "wrong-password-123456")
            #expect(unknown.status == .unauthorized && wrong.status == .unauthorized)
            #expect(unknown["detail"] as? String == wrong["detail"] as? String)
            #expect(unknown["type"] as? String == wrong["type"] as? String)
            let failures = try await keel.auditActions().filter { $0["action"] as? String == "auth.login" && $0["outcome"] as? String == "failure" }
            #expect(failures.count == 2)
            #expect(failures.allSatisfy { ($0["client_ip"] as? String)?.isEmpty == false && ($0["request_id"] as? String)?.isEmpty == false })
        }
    }

    @Test func repeatedFailuresLockTheAccountWithGrowingDelays() async throws {
        try await withIdentityServer(configure: { $0.auth.lockoutThreshold = 3 }) { keel in
            let admin = try await keel.adminToken()
            let user = try await keel.user(roles: ["viewer"])
            for _ in 0..<3 {
                #expect(try await keel.login(user.email, "wrong-password-123456").status == .unauthorized)
            }
            // Locked now: even the right password waits, and the answer says for how long.
            let locked = try await keel.login(user.email, user.password)
            #expect(locked.status == .tooManyRequests)
            let retryAfter = try #require(locked.headers[.retryAfter].flatMap(Int.init))
            #expect(retryAfter >= 1)
            try await Task.sleep(for: .seconds(retryAfter) + .milliseconds(100))
            #expect(try await keel.login(user.email, "wrong-password-123456").status == .unauthorized)
            let longer = try await keel.login(user.email, user.password)
            #expect(longer.status == .tooManyRequests)
            #expect((longer.headers[.retryAfter].flatMap(Int.init) ?? 0) >= 2)
            // Unknown accounts lock the same way, so lockouts do not reveal which emails exist.
            for _ in 0..<3 { _ = try await keel.login("ghost@example.com", "wrong-password-123456") }
            #expect(try await keel.login("ghost@example.com", "wrong-password-123456").status == .tooManyRequests)
            let audit = try await keel.call(.get, "/api/v1/audit?outcome=locked", as: .bearer(admin))
            #expect(audit.items.contains { $0["target"] as? String == user.email })
        }
    }

    @Test func badInputGetsClearProblems() async throws {
        try await withIdentityServer { keel in
            let admin = try await keel.adminToken()
            let badEmail = try await keel.call(.post, "/api/v1/users", as: .bearer(admin), json: ["email": "not-an-email", "password": "long-enough-passphrase-1"])
            #expect(badEmail.status == .unprocessableContent)
            #expect(badEmail.text.contains("\"field\":\"email\""))
            let weak = try await keel.call(.post, "/api/v1/users", as: .bearer(admin), json: ["email": "a@example.com", "password": "password1234"])
            #expect(weak.status == .unprocessableContent)
            #expect(weak.text.contains("most common passwords"))
            let short = try await keel.call(.post, "/api/v1/users", as: .bearer(admin), json: ["email": "a@example.com", "password": "short"])
            #expect(short.text.contains("at least 12 characters"))
            let unknownRole = try await keel.call(.post, "/api/v1/users", as: .bearer(admin),
                                                  json: ["email": "a@example.com", "password": "long-enough-passphrase-1", "roles": ["emperor"]])
            #expect(unknownRole.status == .unprocessableContent)
            #expect(unknownRole.text.contains("\\\"emperor\\\" is not a role"))
            let malformed = try await keel.call(.get, "/api/v1/me", as: .header("Basic YWRtaW46YWRtaW4="))
            #expect(malformed.status == .unauthorized)
            #expect(malformed.headers[.wwwAuthenticate]?.contains("invalid_request") == true)
            let garbage = try await keel.call(.get, "/api/v1/me", as: .bearer("not.a.jwt"))
            #expect(garbage.status == .unauthorized)
            #expect(garbage.headers[.wwwAuthenticate]?.contains("invalid_token") == true)
            let missing = try await keel.call(.post, "/api/v1/auth/login", json: ["email": "a@example.com"])
            #expect(missing.status == .unprocessableContent)
            let badRefresh = try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": "nope"])
            #expect(badRefresh.status == .unauthorized)
            #expect(badRefresh["type"] as? String == "https://keel.dev/problems/unauthorized")
        }
    }

    @Test func passwordChangeAndResetEndEverySession() async throws {
        try await withIdentityServer { keel in
            let user = try await keel.user(roles: ["viewer"])
            let session = try await keel.session(user.email, user.password)
            let wrong = try await keel.call(.post, "/api/v1/me/password", as: .bearer(session.access),
                                            json: ["current_password": "wrong-one-entirely", "new_password": "brand-new-passphrase-7"])
            #expect(wrong.status == .forbidden)
            let change = try await keel.call(.post, "/api/v1/me/password", as: .bearer(session.access),
                                             json: ["current_password": user.password, "new_password": "brand-new-passphrase-7"])
            #expect(change.status == .noContent)
            #expect(try await keel.call(.get, "/api/v1/me", as: .bearer(session.access)).status == .unauthorized)
            #expect(try await keel.call(.post, "/api/v1/auth/refresh", json: ["refresh_token": session.refresh]).status == .unauthorized)
            #expect(try await keel.login(user.email, user.password).status == .unauthorized)
            #expect(try await keel.login(user.email, "brand-new-passphrase-7").status == .ok)

            let reset = try await keel.call(.post, "/api/v1/users/\(user.id)/password-reset", as: .bearer(try await keel.adminToken()))
            #expect(reset.status == .created)
            let token = try #require(reset["token"] as? String)
            let weak = try await keel.call(.post, "/api/v1/auth/password-reset", json: ["token": token, "new_password": "qwertyuiop123"])
            #expect(weak.status == .unprocessableContent)
            let done = try await keel.call(.post, "/api/v1/auth/password-reset", json: ["token": token, "new_password": "reset-passphrase-9000"])
            #expect(done.status == .noContent)
            let again = try await keel.call(.post, "/api/v1/auth/password-reset", json: ["token": token, "new_password": "another-passphrase-9001"])
            #expect(again.status == .unauthorized)
            #expect(try await keel.login(user.email, "reset-passphrase-9000").status == .ok)
            let actions = try await keel.auditActions(target: user.id).compactMap { $0["action"] as? String }
            #expect(actions.contains("user.password_change") && actions.contains("user.password_reset"))
        }
    }
}
