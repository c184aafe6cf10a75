import Foundation
import HummingbirdOTP
@testable import KeelIdentity
import KeelStore
import KeelTestSupport
import Testing

/// TOTP enrolment, sign-in with a code or a recovery code, replay refusal, and roles that require it.
@Suite struct SecondFactorTests {
    @Test func enrolThenSignInWithCodesAndRecoveryCodes() async throws {
        try await withIdentityServer { keel in
            let user = try await keel.user(roles: ["developer"])
            let begin = try await keel.call(.post, "/api/v1/me/totp", as: .bearer(user.token))
            #expect(begin.status == .created)
            let uri = try #require(begin["provisioning_uri"] as? String)
            #expect(uri.hasPrefix("otpauth://totp/"))
            let totp = TOTP(secret: TOTPCodes.base32Decode(try #require(begin["secret"] as? String)))

            // Taken together, so a step boundary in between cannot turn a replay into a fresh code.
            let (current, next) = (TOTPCodes.code(totp), TOTPCodes.code(totp, stepsAhead: 1))
            let wrong = current == "000000" ? "000001" : "000000"
            #expect(try await keel.call(.post, "/api/v1/me/totp/confirm", as: .bearer(user.token), json: ["code": wrong]).status == .unprocessableContent)
            let confirm = try await keel.call(.post, "/api/v1/me/totp/confirm", as: .bearer(user.token), json: ["code": current])
            #expect(confirm.status == .ok)
            let recovery = try #require(confirm["recovery_codes"] as? [String])
            #expect(recovery.count == 10 && Set(recovery).count == 10)

            let missing = try await keel.login(user.email, user.password)
            #expect(missing.status == .unauthorized)
            #expect(missing["type"] as? String == "https://keel.dev/problems/totp-required")
            // The code used to confirm cannot be replayed; the next step's code works once.
            #expect(try await keel.login(user.email, user.password, totp: current).status == .unauthorized)
            #expect(try await keel.login(user.email, user.password, totp: next).status == .ok)
            #expect(try await keel.login(user.email, user.password, totp: next).status == .unauthorized)
            // A wrong password with a right code is still a wrong password.
            #expect(try await keel.login(user.email, "not-the-password-at-all", totp: recovery[0]).status == .unauthorized)

            #expect(try await keel.login(user.email, user.password, totp: recovery[1]).status == .ok)
            #expect(try await keel.login(user.email, user.password, totp: recovery[1]).status == .unauthorized)
            #expect(try await keel.login(user.email, user.password, totp: recovery[2].uppercased()).status == .ok)

            let token = try #require(try await keel.login(user.email, user.password, totp: recovery[3])["access_token"] as? String)
            #expect(try await keel.call(.delete, "/api/v1/me/totp", as: .bearer(token), json: ["code": recovery[4]]).status == .noContent)
            #expect(try await keel.login(user.email, user.password).status == .ok)
            let actions = try await keel.auditActions(target: user.id).compactMap { $0["action"] as? String }
            #expect(actions.contains("user.totp.enable") && actions.contains("user.totp.disable"))
            let stored = try await keel.identity.store.query("SELECT COUNT(*) AS n FROM keel_recovery_codes")
            #expect(try stored.first?.int("n") == 0)
        }
    }

    @Test func aRoleCanRequireTheSecondFactor() async throws {
        try await withIdentityServer { keel in
            let admin = try await keel.adminToken()
            let user = try await keel.user(roles: ["developer"])
            let required = try await keel.call(.patch, "/api/v1/roles/developer", as: .bearer(admin), json: ["require_totp": true])
            #expect(required.status == .ok)
            #expect(required["require_totp"] as? Bool == true)
            #expect(try await keel.call(.patch, "/api/v1/roles/developer", as: .bearer(admin), json: ["permissions": ["users:write"]]).status == .conflict)

            let blocked = try await keel.call(.get, "/api/v1/nodes", as: .bearer(user.token))
            #expect(blocked.status == .forbidden)
            #expect((blocked["detail"] as? String)?.contains("two-factor") == true)
            let me = try await keel.call(.get, "/api/v1/me", as: .bearer(user.token))
            #expect(me["must_enroll_second_factor"] as? Bool == true)

            let begin = try await keel.call(.post, "/api/v1/me/totp", as: .bearer(user.token))
            let totp = TOTP(secret: TOTPCodes.base32Decode(try #require(begin["secret"] as? String)))
            #expect(try await keel.call(.post, "/api/v1/me/totp/confirm", as: .bearer(user.token), json: ["code": TOTPCodes.code(totp)]).status == .ok)
            #expect(try await keel.call(.get, "/api/v1/nodes", as: .bearer(user.token)).status == .ok)
            #expect(try await keel.auditActions(target: "developer").contains { $0["action"] as? String == "role.update" })
        }
    }
}
