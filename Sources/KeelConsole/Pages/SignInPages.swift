import Foundation
import Hummingbird
import KeelCore
import KeelIdentity
import KeelServer

/// Sign-in with Keel identity (password, then the second factor when enrolled) and sign-out.
struct SignInPages {
    let console: Console

    func install(on router: Router<KeelRequestContext>) {
        router.get("/console/login") { request, context in
            if try await console.session(request) != nil { return Console.redirect(Self.safeNext(request.uri.queryParameters.get("next"))) }
            return form(next: request.uri.queryParameters.get("next"), email: nil, totp: false, status: .ok, error: nil)
        }
        router.post("/console/login") { request, context in
            let form = try await Form.read(request)
            let next = Self.safeNext(form["next"])
            guard let expected = ConsoleCookies.value(ConsoleCookies.signIn, in: request), let sent = form["_signin"],
                  Credential.constantTimeEquals(expected, sent) else {
                return self.form(next: next, email: form["email"], totp: false, status: .forbidden,
                                 error: "The sign-in form expired or did not come from this console. Try again.")
            }
            guard let email = form["email"], let password = form.all("password").first, !password.isEmpty else {
                return self.form(next: next, email: form["email"], totp: false, status: .badRequest, error: "Enter your email and password.")
            }
            do {
                let tokens = try await console.identity.login(email: email, password: password, totp: form["totp"], actor: AuditActor(context))
                return Console.redirect(next, headers: [
                    .setCookie: ConsoleCookies.set(ConsoleCookies.session, tokens.refreshToken, secure: console.secureCookies),
                ])
            } catch let problem as Problem where problem.slug == "totp-required" {
                return self.form(next: next, email: email, totp: true, status: .unauthorized, error: nil)
            } catch let problem as Problem {
                return self.form(next: next, email: email, totp: form["totp"] != nil, status: problem.status, error: problem.detail)
            }
        }
        router.post("/console/logout") { request, context in
            let form = try await Form.read(request)
            if let token = ConsoleCookies.value(ConsoleCookies.session, in: request), let sent = form["_csrf"],
               Credential.constantTimeEquals(sent, ConsoleSession.csrfToken(forSession: token)) {
                try? await console.identity.logout(token: token, actor: AuditActor(context))
            }
            return Console.redirect("/console/login", headers: [.setCookie: ConsoleCookies.clear(ConsoleCookies.session, secure: console.secureCookies)])
        }
    }

    /// The sign-in form with a fresh double-submit token in its cookie and its hidden field.
    private func form(next: String?, email: String?, totp: Bool, status: HTTPResponse.Status, error: String?) -> Response {
        let token = Credential.random(bytes: 24)
        return console.html("login", title: "Sign in", session: nil, section: "",
                            ["signin_token": token, "next": Self.safeNext(next), "email": email ?? "", "totp": totp, "error": error ?? ""],
                            status: status, headers: [.setCookie: ConsoleCookies.set(ConsoleCookies.signIn, token, secure: console.secureCookies)])
    }

    /// Only paths of the console itself: a link may not send a user who signs in somewhere else.
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/console/"), !next.hasPrefix("//"), !next.contains("\\"), next.utf8.count <= 512 else { return "/console/" }
        return next
    }
}
