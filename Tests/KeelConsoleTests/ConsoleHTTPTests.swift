import AsyncHTTPClient
import Foundation
import KeelTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// The console's rules at the HTTP level, where each can be shown exactly: who is sent to sign in,
/// what a session cookie looks like, which forms are refused, and that user input stays inert.
@Suite(.serialized) struct ConsoleHTTPTests {
    struct Reply {
        let status: Int
        let headers: HTTPHeaders
        let body: String
    }

    /// Redirects are what these tests look at, so this client does not follow them.
    static let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))

    static func send(_ method: HTTPMethod, _ url: String, cookie: String? = nil, form: String? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let cookie { request.headers.add(name: "Cookie", value: cookie) }
        if let form {
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: form))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        return Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: try await response.body.collect(upTo: 1 << 22)))
    }

    static func json(_ method: HTTPMethod, _ url: String, authorization: String? = nil, body: String? = nil) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await client.execute(request, timeout: .seconds(30))
        let data = try await response.body.collect(upTo: 1 << 20)
        return (try? JSONSerialization.jsonObject(with: Data(buffer: data)) as? [String: Any]) ?? [:]
    }

    static func cookie(_ name: String, in reply: Reply) -> String? {
        reply.headers["Set-Cookie"].first { $0.hasPrefix(name + "=") }.map { String($0.prefix { $0 != ";" }) }
    }

    static func field(_ name: String, in html: String) -> String? {
        guard let range = html.range(of: "name=\"\(name)\" value=\"") else { return nil }
        return String(html[range.upperBound...].prefix { $0 != "\"" })
    }

    /// Signs in through the form and returns the session cookie and a page's CSRF token.
    static func signIn(_ base: String, email: String, password: String) async throws -> (cookie: String, csrf: String) {
        let form = try await Self.send(.GET, base + "/console/login")
        let signIn = try #require(cookie("keel_signin", in: form))
        let token = try #require(field("_signin", in: form.body))
        let reply = try await Self.send(.POST, base + "/console/login", cookie: signIn,
                                   form: "_signin=\(token)&email=\(email)&password=\(password)&next=/console/jobs")
        #expect(reply.status == 303 && reply.headers["Location"].first == "/console/jobs")
        let session = try #require(cookie("keel_session", in: reply))
        let page = try await Self.send(.GET, base + "/console/jobs", cookie: session)
        return (session, try #require(field("_csrf", in: page.body)))
    }

    @Test func sessionsFormsAndInputFollowTheRules() async throws {
        let keel = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_ADMIN_EMAIL": "admin@example.com", "KEEL_ADMIN_PASSWORD": "console-admin-passphrase-7", "KEEL_AUTH_BCRYPT_COST": "4",
        ])
        let base = "http://127.0.0.1:\(try await keel.waitUntilReady())"
        defer { withExtendedLifetime(keel) {} }

        // Anonymous visitors are sent to sign in; `/` leads to the console.
        let root = try await Self.send(.GET, base + "/")
        #expect(root.status == 303 && root.headers["Location"].first == "/console/")
        let anonymous = try await Self.send(.GET, base + "/console/jobs?queue=a")
        #expect(anonymous.status == 303 && anonymous.headers["Location"].first == "/console/login?next=/console/jobs")

        // The sign-in form needs its own cookie's token (no login CSRF) and never redirects off the console.
        let forged = try await Self.send(.POST, base + "/console/login", form: "_signin=guess&email=admin@example.com&password=console-admin-passphrase-7")
        #expect(forged.status == 403 && Self.cookie("keel_session", in: forged) == nil)
        let form = try await Self.send(.GET, base + "/console/login")
        let signInCookie = try #require(Self.cookie("keel_signin", in: form))
        #expect(form.headers["Set-Cookie"].first { $0.hasPrefix("keel_signin=") }?.contains("HttpOnly; SameSite=Lax") == true)
        #expect(form.headers["Content-Security-Policy"].first?.contains("script-src 'self'") == true)
        let token = try #require(Self.field("_signin", in: form.body))
        let offsite = try await Self.send(.POST, base + "/console/login", cookie: signInCookie,
                                     form: "_signin=\(token)&email=admin@example.com&password=console-admin-passphrase-7&next=https://evil.example/")
        #expect(offsite.status == 303 && offsite.headers["Location"].first == "/console/")
        let setCookie = try #require(offsite.headers["Set-Cookie"].first { $0.hasPrefix("keel_session=") })
        #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Lax") && setCookie.contains("Path=/console"))

        let (session, csrf) = try await Self.signIn(base, email: "admin@example.com", password: "console-admin-passphrase-7")
        // A form without the session's CSRF token changes nothing.
        #expect(try await Self.send(.POST, base + "/console/queues/default/pause", cookie: session, form: "").status == 403)
        #expect(try await Self.send(.POST, base + "/console/queues/default/pause", cookie: session, form: "_csrf=\(csrf.dropLast())x").status == 403)
        #expect(try await Self.send(.GET, base + "/api/v1/queues", cookie: session).status == 401, "the console's cookie is not an API credential")
        let paused = try await Self.send(.POST, base + "/console/queues/default/pause", cookie: session, form: "_csrf=\(csrf)")
        #expect(paused.status == 303 && paused.headers["Location"].first == "/console/jobs?done=paused")
        #expect(try await Self.send(.GET, base + "/console/jobs", cookie: session).body.contains("badge warn\">paused"))

        // What users type is shown as text; oversized forms and filters get a clear refusal.
        let schedule = try await Self.send(.POST, base + "/console/schedules", cookie: session,
                                      form: "_csrf=\(csrf)&name=x&task=%3Cscript%3Ealert(1)%3C%2Fscript%3E&cron=99+*+*+*+*")
        #expect(schedule.status == 400 || schedule.status == 422)
        #expect(schedule.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !schedule.body.contains("<script>alert(1)"))
        #expect(schedule.body.contains("cron:"))
        let huge = try await Self.send(.POST, base + "/console/schedules", cookie: session, form: "_csrf=\(csrf)&args=" + String(repeating: "a", count: 70_000))
        #expect(huge.status == 413 && huge.body.contains("larger than 64 KiB"))
        let filter = try await Self.send(.GET, base + "/console/jobs?state=nope&task=" + String(repeating: "t", count: 300), cookie: session)
        #expect(filter.status == 400 && filter.body.contains("no job state") && filter.body.contains("longer than 200"))
        #expect(try await Self.send(.GET, base + "/console/jobs/job_nope", cookie: session).status == 404)

        // An account with a second factor is asked for its code after the password, and gets in with it.
        let api = try await Self.json(.POST, base + "/api/v1/auth/login", body: #"{"email": "admin@example.com", "password": "console-admin-passphrase-7"}"#)
        let bearer = "Bearer \(try #require(api["access_token"] as? String))"
        let begin = try await Self.json(.POST, base + "/api/v1/me/totp", authorization: bearer)
        let secret = try #require(begin["secret"] as? String)
        _ = try await Self.json(.POST, base + "/api/v1/me/totp/confirm", authorization: bearer, body: #"{"code": "\#(TOTPCodes.code(secret: secret))"}"#)
        let totpForm = try await Self.send(.GET, base + "/console/login")
        let totpCookie = try #require(Self.cookie("keel_signin", in: totpForm))
        let asked = try await Self.send(.POST, base + "/console/login", cookie: totpCookie, form: "_signin=\(try #require(Self.field("_signin", in: totpForm.body)))&email=admin@example.com&password=console-admin-passphrase-7")
        #expect(asked.status == 401 && asked.body.contains("id=\"totp\"") && Self.cookie("keel_session", in: asked) == nil)
        let wrong = try await Self.send(.POST, base + "/console/login", cookie: try #require(Self.cookie("keel_signin", in: asked)),
                                        form: "_signin=\(try #require(Self.field("_signin", in: asked.body)))&email=admin@example.com&password=console-admin-passphrase-7&totp=12345")
        #expect(wrong.status == 401 && wrong.body.contains("two-factor code is wrong") && Self.cookie("keel_session", in: wrong) == nil)
        let admitted = try await Self.send(.POST, base + "/console/login", cookie: try #require(Self.cookie("keel_signin", in: wrong)),
                                           form: "_signin=\(try #require(Self.field("_signin", in: wrong.body)))&email=admin@example.com&password=console-admin-passphrase-7&totp=\(TOTPCodes.code(secret: secret, stepsAhead: 1))")
        #expect(admitted.status == 303 && Self.cookie("keel_session", in: admitted) != nil)

        // Signing out ends the session on the server: the old cookie no longer opens anything.
        let out = try await Self.send(.POST, base + "/console/logout", cookie: session, form: "_csrf=\(csrf)")
        #expect(out.status == 303 && out.headers["Set-Cookie"].first?.contains("Max-Age=0") == true)
        #expect(try await Self.send(.GET, base + "/console/jobs", cookie: session).status == 303)
        let stale = try await Self.send(.POST, base + "/console/queues/default/resume", cookie: session, form: "_csrf=\(csrf)")
        #expect(stale.status == 401 && stale.body.contains("session has ended"))
    }
}
