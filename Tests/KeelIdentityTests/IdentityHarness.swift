import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import KeelIdentity
import KeelCore
import KeelPlatform
import KeelServer
import KeelStore
import KeelTelemetry
import KeelTestSupport
import NIOCore
import Testing

/// A live Keel server with the identity module on a scratch store, an admin to act as, and helpers
/// to call the API as any role.
struct IdentityHarness: Sendable {
    static let adminEmail = "admin@example.com"
    static let adminPassword = "correct-horse-admin-42"

    let client: any TestClientProtocol
    let server: KeelServer
    let identity: IdentityService
    let config: KeelConfig

    /// A call's outcome with its JSON parsed.
    struct Reply: Sendable {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let text: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:] }
        var items: [[String: Any]] { json["items"] as? [[String: Any]] ?? [] }
        subscript(key: String) -> Any? { json[key] }
    }

    enum Credential {
        case bearer(String)
        case apiKey(String)
        case header(String)
    }

    func call(_ method: HTTPRequest.Method, _ path: String, as credential: Credential? = nil, json: Any? = nil) async throws -> Reply {
        var headers = HTTPFields()
        switch credential {
        case .bearer(let token): headers[.authorization] = "Bearer \(token)"
        case .apiKey(let key): headers[HTTPField.Name("X-API-Key")!] = key
        case .header(let value): headers[.authorization] = value
        case nil: break
        }
        var body: ByteBuffer?
        if let json {
            headers[.contentType] = "application/json"
            body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json))
        }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
        let text = String(buffer: response.body)
        // No response ever carries a stored secret.
        #expect(!text.contains("$2b$") && !text.contains("$2a$"), "a bcrypt hash leaked from \(method) \(path)")
        #expect(!text.contains("password_hash") && !text.contains("key_hash") && !text.contains("private_key"), "a secret column leaked from \(path)")
        return Reply(status: response.status, headers: response.headers, text: text)
    }

    func login(_ email: String, _ password: String, totp: String? = nil) async throws -> Reply {
        var body: [String: Any] = ["email": email, "password": password]
        if let totp { body["totp"] = totp }
        return try await call(.post, "/api/v1/auth/login", json: body)
    }

    /// Signs in and returns the access and refresh tokens.
    func session(_ email: String, _ password: String) async throws -> (access: String, refresh: String) {
        let reply = try await login(email, password)
        guard reply.status == .ok, let access = reply["access_token"] as? String, let refresh = reply["refresh_token"] as? String else {
            throw TestSetupError("login of \(email) failed: \(reply.status) \(reply.text)")
        }
        return (access, refresh)
    }

    func adminToken() async throws -> String { try await session(Self.adminEmail, Self.adminPassword).access }

    /// A new user holding `roles`, signed in.
    func user(roles: [String], email: String? = nil) async throws -> (id: String, email: String, password: String, token: String) {
        let email = email ?? "user-\(UUID().uuidString.prefix(8).lowercased())@example.com"
        let password = "a-long-user-passphrase-\(UUID().uuidString.prefix(6))"
        let created = try await call(.post, "/api/v1/users", as: .bearer(try await adminToken()),
                                     json: ["email": email, "password": password, "roles": roles])
        guard created.status == .created, let user = created["user"] as? [String: Any], let id = user["id"] as? String else {
            throw TestSetupError("cannot create user: \(created.status) \(created.text)")
        }
        return (id, email, password, try await session(email, password).access)
    }

    func auditActions(target: String? = nil) async throws -> [[String: Any]] {
        let query = target.map { "?target=\($0)&limit=200" } ?? "?limit=200"
        return try await call(.get, "/api/v1/audit" + query, as: .bearer(try await adminToken())).items
    }
}

func identityTestConfig(_ location: DatabaseLocation) -> KeelConfig {
    var config = quietTestConfig(location)
    config.publicURL = "http://keel.test"
    config.auth.adminEmail = IdentityHarness.adminEmail
    config.auth.adminPassword = Secret(IdentityHarness.adminPassword)
    config.secretKey = Secret("test-secret-key-that-is-long-enough-000")
    return config
}

/// Runs `body` against a live server with identity on a scratch store of `kind`.
func withIdentityServer(
    _ kind: StoreKind = .sqlite, jwksRefetchInterval: TimeInterval = 30,
    configure: @Sendable (inout KeelConfig) -> Void = { _ in },
    _ body: @escaping @Sendable (IdentityHarness) async throws -> Void
) async throws {
    try await withScratchDatabase(kind) { location in
        var config = identityTestConfig(location)
        configure(&config)
        let telemetry = try Telemetry.bootstrap(config)
        let store = try await config.openStore(logger: quietLogger)
        // The whole platform, so the access matrix and the OpenAPI test see every route.
        let (modules, identity) = Platform.modules(config: config, store: store, jwksRefetchInterval: jwksRefetchInterval,
                                                   printFirstAdminPassword: { _, _ in })
        let server = KeelServer(config: config, store: store, telemetry: telemetry, modules: modules, authenticator: identity)
        let frozen = config
        try await server.makeApplication().test(.live) { client in
            let deadline = ContinuousClock.now + .seconds(30)
            while server.readiness.migrations != .applied {
                guard ContinuousClock.now < deadline else { throw TestSetupError("not ready: \(server.readiness.migrations)") }
                try await Task.sleep(for: .milliseconds(10))
            }
            try await body(IdentityHarness(client: client, server: server, identity: identity, config: frozen))
        }
    }
}
