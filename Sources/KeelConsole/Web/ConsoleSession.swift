import Crypto
import Foundation
import Hummingbird
import KeelCore
import KeelServer

/// The signed-in user of a console request, and the token its forms must send back.
struct ConsoleSession: Sendable {
    let principal: Principal
    /// Derived from the session token, which never leaves the `HttpOnly` cookie: a page from another site
    /// can neither read nor guess it, and knowing it reveals nothing about the session token.
    let csrfToken: String

    init(principal: Principal, sessionToken: String) {
        self.principal = principal
        self.csrfToken = Self.csrfToken(forSession: sessionToken)
    }

    func may(_ permission: String) -> Bool { principal.has(permission) && !principal.mustEnrollSecondFactor }

    static func csrfToken(forSession token: String) -> String {
        Data(SHA256.hash(data: Data(("keel-console-csrf:" + token).utf8))).base64URLEncoded()
    }
}

/// The console's cookies: the session (the refresh token of a login, `HttpOnly`, `SameSite=Lax`, `Secure`
/// over TLS) and, before sign-in, a random value the sign-in form repeats (double-submit) so that no other
/// site can sign a browser into an account of its choosing.
enum ConsoleCookies {
    static let session = "keel_session"
    static let signIn = "keel_signin"
    static let path = "/console"

    static func set(_ name: String, _ value: String, secure: Bool, maxAge: Int? = nil) -> String {
        var cookie = "\(name)=\(value); Path=\(path); HttpOnly; SameSite=Lax"
        if secure { cookie += "; Secure" }
        if let maxAge { cookie += "; Max-Age=\(maxAge)" }
        return cookie
    }

    static func clear(_ name: String, secure: Bool) -> String { set(name, "", secure: secure, maxAge: 0) }

    static func value(_ name: String, in request: Request) -> String? {
        request.cookies[name]?.value
    }
}
