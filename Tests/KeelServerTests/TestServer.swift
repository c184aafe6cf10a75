import Foundation
import Hummingbird
import HummingbirdTesting
import KeelCore
import KeelServer
import KeelStore
import KeelTelemetry
import KeelTestSupport
import NIOCore
import Testing

/// Grants every permission; stands in for the identity module so protected routes can be exercised.
struct AllowAllAuthenticator: RequestAuthenticator {
    func authenticate(_ request: Request, context: KeelRequestContext) async throws -> Principal? {
        Principal(kind: .user, subject: "usr_test", name: "test", roles: ["admin"], permissions: ["nodes:read"])
    }
}

func testConfig(_ location: DatabaseLocation, roles: Set<Role> = Set(Role.allCases)) -> KeelConfig {
    var config = quietTestConfig(location)
    config.roles = roles
    config.maxBodyBytes = 1024
    return config
}

/// Runs a live server on a scratch store of `kind` and hands the test a client once it is ready.
func withLiveServer(
    _ kind: StoreKind, roles: Set<Role> = Set(Role.allCases), authenticator: any RequestAuthenticator = NoIdentityAuthenticator(),
    _ test: @escaping @Sendable (any TestClientProtocol, KeelServer) async throws -> Void
) async throws {
    try await withScratchDatabase(kind) { location in
        try await withLiveServer(config: testConfig(location, roles: roles), authenticator: authenticator, test)
    }
}

func withLiveServer(
    config: KeelConfig, authenticator: any RequestAuthenticator = NoIdentityAuthenticator(),
    _ test: @escaping @Sendable (any TestClientProtocol, KeelServer) async throws -> Void
) async throws {
    let telemetry = try Telemetry.bootstrap(config)
    let store = try await config.openStore(logger: quietLogger)
    let server = KeelServer(config: config, store: store, telemetry: telemetry, authenticator: authenticator)
    try await server.makeApplication().test(.live) { client in
        let deadline = ContinuousClock.now + .seconds(30)
        while server.readiness.migrations != .applied {
            guard ContinuousClock.now < deadline else {
                throw TestSetupError("the server did not apply its migrations within 30 s: \(server.readiness.migrations)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        try await test(client, server)
    }
}

extension TestResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]) ?? [:]
    }
}

extension ByteBuffer {
    static func json(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
}
