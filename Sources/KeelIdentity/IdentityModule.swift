import Foundation
import KeelCore
import KeelServer
import KeelStore
import Logging
import ServiceLifecycle

/// Identity as a Keel module: its schema, its routes on the api role, bootstrap once the schema is
/// in place, and the upkeep loop.
public struct IdentityModule: KeelModule {
    public let service: IdentityService
    private let printFirstAdminPassword: @Sendable (String, String) -> Void

    public init(service: IdentityService, printFirstAdminPassword: @escaping @Sendable (String, String) -> Void = IdentityService.printOnce) {
        self.service = service
        self.printFirstAdminPassword = printFirstAdminPassword
    }

    public static let migrations = IdentityMigrations.all

    public var migrations: [Migration] { Self.migrations }

    public func register(on routes: inout RouteRegistrar, context: ModuleContext) {
        guard context.config.roles.contains(.api) else { return }
        IdentityRoutes(identity: service, limits: context.limits).register(on: &routes)
    }

    public func prepare(context: ModuleContext) async throws {
        try await service.prepare(printFirstAdminPassword: printFirstAdminPassword)
    }

    public func services(context: ModuleContext) -> [any Service] {
        [IdentityUpkeep(identity: service, readiness: context.readiness)]
    }
}

/// Picks up what other replicas changed (a rotated signing key, a new trusted issuer), refreshes the
/// active-sessions gauge, and deletes credentials that can no longer be used.
struct IdentityUpkeep: Service {
    let identity: IdentityService
    let readiness: Readiness
    let interval = Duration.seconds(10)

    func run() async throws {
        // Without a schema there is nothing to do; wait for the stop the failed migration causes.
        guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        await cancelWhenGracefulShutdown {
            var rounds = 0
            while !Task.isCancelled {
                do {
                    try await identity.recordActiveSessions()
                    if rounds % 360 == 0 { try await identity.purgeExpiredCredentials() }
                    try? await Task.sleep(for: interval)
                    try await identity.keys.reload()
                    try await identity.issuers.reload()
                } catch {
                    identity.logger.warning("identity upkeep failed", metadata: ["error": "\(error)"])
                }
                rounds += 1
            }
        }
    }
}

extension IdentityService {
    public func rotateSigningKey(actor: AuditActor) async throws -> String {
        let kid = try await keys.rotate()
        try await audit.record("signing_key.rotate", actor: actor, target: kid)
        return kid
    }

    public func saveIssuer(name: String, _ input: IssuerInput, actor: AuditActor) async throws -> TrustedIssuer {
        var errors: [FieldError] = []
        if !Self.isValidName(name) {
            errors.append(FieldError(field: "name", message: "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter"))
        }
        for (field, value) in [("issuer", input.issuer), ("jwks_url", input.jwksURL)] {
            guard let url = URLComponents(string: value), ["http", "https"].contains(url.scheme ?? ""), url.host?.isEmpty == false else {
                errors.append(FieldError(field: field, message: "must be an http:// or https:// URL"))
                continue
            }
        }
        if input.audience.isEmpty { errors.append(FieldError(field: "audience", message: "must not be empty")) }
        if input.issuer == tokens.issuer { errors.append(FieldError(field: "issuer", message: "is this Keel itself")) }
        let roles = Array(Set(input.defaultRoles ?? []).union((input.roleMap ?? [:]).values))
        errors += try await roleErrors(roles).map { FieldError(field: "role_map", message: $0.message) }
        guard errors.isEmpty else { throw Problem.validation("The issuer is invalid.", errors: errors) }
        let existing = issuers.list().first { $0.name == name }
        let issuer = TrustedIssuer(name: name, issuer: input.issuer, jwksURL: input.jwksURL, audience: input.audience,
                                   rolesClaim: input.rolesClaim ?? "roles", roleMap: input.roleMap ?? [:], defaultRoles: input.defaultRoles ?? [],
                                   createdAt: existing?.createdAt, updatedAt: nil)
        do {
            try await issuers.save(issuer)
        } catch {
            guard (error as? StoreError)?.isConstraintViolation == true else { throw error }
            throw Problem.conflict("Another trusted issuer already has the issuer URL \(input.issuer).")
        }
        try await audit.record("issuer.save", actor: actor, target: name, detail: [
            "issuer": input.issuer, "role_map": (input.roleMap ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
        ])
        guard let saved = issuers.list().first(where: { $0.name == name }) else { throw Problem.notFound("The issuer vanished while being saved.") }
        return saved
    }

    public func removeIssuer(name: String, actor: AuditActor) async throws {
        guard try await issuers.remove(name: name) else { throw Problem.notFound("No trusted issuer is named \(name).") }
        try await audit.record("issuer.remove", actor: actor, target: name)
    }

    func recordActiveSessions() async throws {
        let now = clock.now()
        let rows = try await store.query("""
            SELECT COUNT(DISTINCT family_id) AS sessions FROM keel_refresh_tokens WHERE revoked_at IS NULL AND used_at IS NULL AND expires_at > \(now)
            """)
        metrics.activeSessions(try rows.first?.int("sessions") ?? 0)
    }

    /// Refresh tokens a day past expiry, spent reset tokens, and throttle entries nobody hit for a day.
    func purgeExpiredCredentials() async throws {
        let dayAgo = clock.now().addingTimeInterval(-86_400)
        try await store.execute("DELETE FROM keel_refresh_tokens WHERE expires_at < \(dayAgo)")
        try await store.execute("DELETE FROM keel_password_resets WHERE expires_at < \(dayAgo)")
        try await store.execute("DELETE FROM keel_login_throttle WHERE updated_at < \(dayAgo)")
    }
}
