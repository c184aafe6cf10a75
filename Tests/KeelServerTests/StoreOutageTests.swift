import Foundation
import HTTPTypes
import KeelCore
import KeelTestSupport
import Testing

/// PostgreSQL reached through a TCP proxy that the test cuts and restores: Keel must report
/// unreadiness and 503s while the store is away, and recover without a restart.
@Suite struct StoreOutageTests {
    @Test func readinessAndRequestsFollowTheStore() async throws {
        try await TestPostgres.withDatabase { direct in
            let firstProxy = try PythonHelper("tcp_proxy.py", arguments: ["0", String(direct.port)])
            let proxyPort = try await firstProxy.listeningPort()
            var viaProxy = direct
            viaProxy.port = proxyPort
            try await withLiveServer(config: testConfig(.postgres(viaProxy)), authenticator: AllowAllAuthenticator()) { client, _ in
                for path in ["/readyz", "/api/v1/nodes"] {
                    let response = try await client.execute(uri: path, method: .get)
                    #expect(response.status == .ok, "\(path) before the outage")
                }

                firstProxy.stop()
                let unready = try await client.execute(uri: "/readyz", method: .get)
                #expect(unready.status == .serviceUnavailable)
                #expect(unready.headers[.contentType] == "application/problem+json")
                #expect(unready.json["type"] as? String == "https://keel.dev/problems/not-ready")
                let checks = unready.json["checks"] as? [String: Any]
                #expect(checks?["store"] as? String != "ok")

                let refused = try await client.execute(uri: "/api/v1/nodes", method: .get)
                #expect(refused.status == .serviceUnavailable)
                #expect(refused.headers[.retryAfter] != nil)
                #expect(refused.json["type"] as? String == "https://keel.dev/problems/service-unavailable")

                let secondProxy = try PythonHelper("tcp_proxy.py", arguments: [String(proxyPort), String(direct.port)])
                defer { secondProxy.stop() }
                _ = try await secondProxy.listeningPort()
                var status = HTTPResponse.Status.serviceUnavailable
                let deadline = ContinuousClock.now + .seconds(30)
                while status != .ok && ContinuousClock.now < deadline {
                    status = try await client.execute(uri: "/readyz", method: .get).status
                    if status != .ok { try await Task.sleep(for: .milliseconds(200)) }
                }
                #expect(status == .ok)
                let recovered = try await client.execute(uri: "/api/v1/nodes", method: .get)
                #expect(recovered.status == .ok)
            }
        }
    }
}
