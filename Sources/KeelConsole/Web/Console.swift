import Foundation
import Hummingbird
import KeelAI
import KeelCore
import KeelGateway
import KeelIdentity
import KeelJobs
import KeelServer
import KeelStore
import Logging
import Metrics
import Tracing

/// The console's pages and actions. Every page needs a signed-in user and names the permission it
/// shows; every action (a POST) also needs the form's CSRF token, and names the permission it uses.
struct Console: Sendable {
    let identity: IdentityService
    let jobs: JobQueue
    let gateway: GatewayModule
    let ai: AIModule
    let store: any Store
    let config: KeelConfig
    let clock: any KeelClock
    let renderer: Renderer
    let logger = Logger(label: "keel.console")

    init(identity: IdentityService, jobs: JobQueue, gateway: GatewayModule, ai: AIModule, store: any Store, config: KeelConfig,
         clock: any KeelClock) throws {
        self.identity = identity
        self.jobs = jobs
        self.gateway = gateway
        self.ai = ai
        self.store = store
        self.config = config
        self.clock = clock
        self.renderer = try Renderer()
    }

    /// Cookies are `Secure` when the server itself speaks TLS.
    var secureCookies: Bool { config.tlsCertFile != nil }

    typealias PageHandler = @Sendable (Request, KeelRequestContext, ConsoleSession) async throws -> Response
    typealias ActionHandler = @Sendable (Request, KeelRequestContext, ConsoleSession, Form) async throws -> Response

    func install(on router: Router<KeelRequestContext>) {
        router.get("/") { _, _ in Self.redirect("/console/") }
        router.get("/console/assets/{file}") { request, context in try self.asset(request, context: context) }
        SignInPages(console: self).install(on: router)
        OverviewPage(console: self).install(on: router)
        JobPages(console: self).install(on: router)
        SchedulePages(console: self).install(on: router)
        IdentityPages(console: self).install(on: router)
        PlatformPages(console: self).install(on: router)
        LiveEvents(console: self).install(on: router)
    }

    // MARK: - Pages and actions

    /// A page for users holding `permission` (any signed-in user when `nil`).
    func page(_ router: Router<KeelRequestContext>, _ path: RouterPath, _ name: String, permission: String?, _ handler: @escaping PageHandler) {
        router.get(path) { request, context in
            try await self.respond(name, request: request, context: context) {
                guard let session = try await self.session(request) else {
                    return Self.redirect("/console/login?next=\(Self.queryEscaped(request.uri.path))")
                }
                try self.check(permission, session)
                return try await handler(request, context, session)
            }
        }
    }

    /// A state-changing form post: signed in, holding `permission`, and carrying the session's CSRF token.
    func action(_ router: Router<KeelRequestContext>, _ path: RouterPath, _ name: String, permission: String?, _ handler: @escaping ActionHandler) {
        router.post(path) { request, context in
            try await self.respond(name, request: request, context: context) {
                guard let session = try await self.session(request) else {
                    throw ConsoleError(status: .unauthorized, message: "Your session has ended. Sign in again; nothing was changed.")
                }
                let form = try await Form.read(request)
                guard let sent = form["_csrf"] ?? request.headers[.init("X-CSRF-Token")!], Credential.constantTimeEquals(sent, session.csrfToken) else {
                    logger.warning("console form refused: CSRF token missing or wrong", metadata: ["request_id": .string(context.requestID), "path": .string(request.uri.path)])
                    throw ConsoleError(status: .forbidden, message: "This form is out of date or did not come from the console. Reload the page and try again; nothing was changed.")
                }
                try self.check(permission, session)
                return try await handler(request, context, session, form)
            }
        }
    }

    private func check(_ permission: String?, _ session: ConsoleSession) throws {
        if session.principal.mustEnrollSecondFactor, permission != nil {
            throw ConsoleError(status: .forbidden, message: "Your role requires two-factor authentication. Enrol TOTP (POST /api/v1/me/totp) first.")
        }
        if let permission, !session.may(permission) {
            throw ConsoleError(status: .forbidden, message: "This needs the permission \(permission), which \(session.principal.name) does not have.")
        }
    }

    /// Times the page, and turns refusals and failures into an error page with the request ID.
    private func respond(_ name: String, request: Request, context: KeelRequestContext, _ body: () async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        defer {
            let elapsed = (ContinuousClock.now - started).components
            Timer(label: "keel_console_page_seconds", dimensions: [("page", name)])
                .recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        }
        return await withSpan("console \(name)") { span in
            span.attributes["keel.console.page"] = name
            do {
                return try await body()
            } catch let error as ConsoleError {
                return errorPage(error.status, error.message, request: request, context: context)
            } catch let problem as Problem {
                return errorPage(problem.status, problem.detail, request: request, context: context)
            } catch {
                logger.error("console page failed", metadata: ["page": .string(name), "request_id": .string(context.requestID), "error": "\(error)"])
                return errorPage(.internalServerError, "Something went wrong on the server. The request ID below finds it in the logs.", request: request, context: context)
            }
        }
    }

    func session(_ request: Request) async throws -> ConsoleSession? {
        guard let token = ConsoleCookies.value(ConsoleCookies.session, in: request), !token.isEmpty,
              let principal = try await identity.principal(forSessionToken: token) else { return nil }
        return ConsoleSession(principal: principal, sessionToken: token)
    }

    // MARK: - Responses

    static let securityHeaders: HTTPFields = [
        .contentSecurityPolicy: "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        .xContentTypeOptions: "nosniff",
        .init("Referrer-Policy")!: "same-origin",
        .cacheControl: "no-store",
    ]

    /// A whole page: the layout around `template`, with the navigation the user's permissions allow.
    func html(_ template: String, title: String, session: ConsoleSession?, section: String, _ data: [String: Any],
              status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var values = data
        values["title"] = title
        values["version"] = KeelVersion.current
        if let session {
            values["user"] = session.principal.name
            values["roles"] = session.principal.roles.joined(separator: ", ")
            values["csrf"] = session.csrfToken
            values["nav"] = Self.navigation.filter { $0.permission.map(session.may) ?? true }.map { item -> [String: Any] in
                ["href": item.href, "label": item.label, "current": item.section == section]
            }
        }
        let content = renderer.render(template, values)
        var fields = Self.securityHeaders
        fields[.contentType] = "text/html; charset=utf-8"
        fields.append(contentsOf: headers)
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: content)))
    }

    func errorPage(_ status: HTTPResponse.Status, _ message: String, request: Request, context: KeelRequestContext) -> Response {
        html("error", title: status.reasonPhrase, session: nil, section: "",
             ["status": Int(status.code), "reason": status.reasonPhrase, "message": message, "request_id": context.requestID,
              "sign_in": status == .unauthorized], status: status)
    }

    static func redirect(_ location: String, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.location] = location
        fields[.cacheControl] = "no-store"
        return Response(status: .seeOther, headers: fields)
    }

    static func queryEscaped(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~/"))) ?? ""
    }

    private func asset(_ request: Request, context: KeelRequestContext) throws -> Response {
        guard let name = context.parameters.get("file"), let asset = renderer.assets[name] else {
            return errorPage(.notFound, "No such file.", request: request, context: context)
        }
        if request.headers[.ifNoneMatch] == asset.etag { return Response(status: .notModified, headers: [.eTag: asset.etag]) }
        return Response(status: .ok, headers: [.contentType: asset.contentType, .eTag: asset.etag, .cacheControl: "no-cache",
                                               .xContentTypeOptions: "nosniff"],
                        body: .init(byteBuffer: asset.body))
    }

    struct NavigationItem: Sendable {
        let section: String
        let href: String
        let label: String
        let permission: String?
    }

    static let navigation: [NavigationItem] = [
        NavigationItem(section: "overview", href: "/console/", label: "Overview", permission: nil),
        NavigationItem(section: "jobs", href: "/console/jobs", label: "Jobs", permission: "jobs:read"),
        NavigationItem(section: "workers", href: "/console/workers", label: "Workers", permission: "jobs:read"),
        NavigationItem(section: "schedules", href: "/console/schedules", label: "Schedules", permission: "jobs:read"),
        NavigationItem(section: "gateway", href: "/console/gateway", label: "Gateway", permission: "gateway:read"),
        NavigationItem(section: "ai", href: "/console/ai", label: "AI", permission: "ai:read"),
        NavigationItem(section: "users", href: "/console/users", label: "Users", permission: "users:read"),
        NavigationItem(section: "keys", href: "/console/keys", label: "API keys", permission: "apikeys:read"),
        NavigationItem(section: "audit", href: "/console/audit", label: "Audit log", permission: "audit:read"),
    ]
}

/// How the console shows times: UTC, to the second, the same on every page.
enum Display {
    static func time(_ date: Date?) -> String {
        guard let date else { return "" }
        return date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false)
            .timeSeparator(.colon).dateTimeSeparator(.space)) + " UTC"
    }

    static func json(_ value: JSONValue?) -> String {
        let encoder = JSONEncoder.keel()
        encoder.outputFormatting.insert(.prettyPrinted)
        guard let value, let data = try? encoder.encode(value) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}

extension Display {
    /// A time as the clock on the wall of `zone` shows it, with the zone's offset.
    static func time(_ date: Date, in zone: TimeZone) -> String {
        var style = Date.ISO8601FormatStyle(timeZone: zone)
        style = style.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(.colon)
            .dateTimeSeparator(.space).timeZone(separator: .colon)
        return date.formatted(style)
    }
}

extension Console {
    /// A piece of a page (no layout), for the console's scripts to put in place.
    func fragment(_ template: String, _ data: [String: Any]) -> Response {
        var fields = Self.securityHeaders
        fields[.contentType] = "text/html; charset=utf-8"
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: ByteBuffer(string: renderer.render(template, data))))
    }
}
