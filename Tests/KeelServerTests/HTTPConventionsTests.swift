import Foundation
import HTTPTypes
import HummingbirdTesting
import KeelCore
import KeelServer
import KeelTestSupport
import NIOCore
import Testing

/// The conventions of docs/api-conventions.md, checked on a live server.
@Suite struct HTTPConventionsTests {
    @Test(arguments: StoreKind.allCases)
    func probesReportLivenessAndReadiness(kind: StoreKind) async throws {
        try await withLiveServer(kind) { client, _ in
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            #expect(health.json["status"] as? String == "ok")
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            let checks = ready.json["checks"] as? [String: Any]
            #expect(checks?["store"] as? String == "ok")
            #expect(checks?["migrations"] as? String == "ok")
        }
    }

    @Test func statusDescribesTheProcess() async throws {
        try await withLiveServer(.sqlite, roles: [.api, .worker]) { client, server in
            let response = try await client.execute(uri: "/api/v1/status", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "application/json")
            let body = response.json
            #expect(body["version"] as? String == KeelVersion.current)
            #expect(body["roles"] as? [String] == ["api", "worker"])
            #expect(body["store"] as? String == "sqlite")
            #expect(body["node_id"] as? String == server.nodes.node.id)
            let startedAt = try #require(body["started_at"] as? String)
            #expect(Timestamp.parse(startedAt) != nil)
            #expect(startedAt.hasSuffix("Z"))
        }
    }

    @Test func requestIDsAreHonouredOrGeneratedAndAlwaysEchoed() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let generated = try await client.execute(uri: "/healthz", method: .get)
            let id = try #require(generated.headers[.init("X-Request-ID")!])
            #expect(id.count == 32 && id.allSatisfy(\.isHexDigit))

            let honoured = try await client.execute(uri: "/healthz", method: .get, headers: [.init("X-Request-ID")!: "trace-me:42"])
            #expect(honoured.headers[.init("X-Request-ID")!] == "trace-me:42")

            let hostile = try await client.execute(uri: "/nowhere", method: .get, headers: [.init("X-Request-ID")!: "bad id\twith\"quotes"])
            let replaced = try #require(hostile.headers[.init("X-Request-ID")!])
            #expect(replaced != "bad id\twith\"quotes")
            #expect(hostile.json["request_id"] as? String == replaced)
        }
    }

    @Test func unknownRoutesAndWrongMethodsAreProblems() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let missing = try await client.execute(uri: "/api/v1/nothing-here", method: .get)
            #expect(missing.status == .notFound)
            #expect(missing.headers[.contentType] == "application/problem+json")
            #expect(missing.json["type"] as? String == "https://keel.dev/problems/not-found")
            #expect(missing.json["status"] as? Int == 404)
            #expect(missing.json["instance"] as? String == "/api/v1/nothing-here")

            let wrongMethod = try await client.execute(uri: "/healthz", method: .delete)
            #expect(wrongMethod.status == .methodNotAllowed)
            #expect(wrongMethod.headers[.allow] == "GET")
            #expect(wrongMethod.json["type"] as? String == "https://keel.dev/problems/method-not-allowed")

            let templated = try await client.execute(uri: "/api/v1/nodes/node_x", method: .put)
            #expect(templated.status == .methodNotAllowed)
        }
    }

    @Test func badBodiesGetTheirOwnStatus() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let path = "/api/v1/config/validate"
            let noType = try await client.execute(uri: path, method: .post, body: .json(#"{"port":1}"#))
            #expect(noType.status == .unsupportedMediaType)
            #expect(noType.json["type"] as? String == "https://keel.dev/problems/unsupported-media-type")

            let json: HTTPFields = [.contentType: "application/json"]
            let tooLarge = try await client.execute(uri: path, method: .post, headers: json,
                                                    body: .json(#"{"host":""# + String(repeating: "a", count: 2000) + #""}"#))
            #expect(tooLarge.status == .contentTooLarge)
            #expect(tooLarge.headers[.contentType] == "application/problem+json")

            let malformed = try await client.execute(uri: path, method: .post, headers: json, body: .json(#"{"port": 80"#))
            #expect(malformed.status == .badRequest)
            #expect(malformed.json["type"] as? String == "https://keel.dev/problems/malformed-json")

            let wrongShape = try await client.execute(uri: path, method: .post, headers: json, body: .json(#"["port", 80]"#))
            #expect(wrongShape.status == .unprocessableContent)
            #expect(wrongShape.json["type"] as? String == "https://keel.dev/problems/validation-failed")

            let invalid = try await client.execute(uri: path, method: .post, headers: json,
                                                   body: .json(#"{"port": 70000, "database": {"tls": "always"}}"#))
            #expect(invalid.status == .unprocessableContent)
            let fields = (invalid.json["errors"] as? [[String: Any]])?.compactMap { $0["field"] as? String }
            #expect(fields == ["database_tls", "port"])
        }
    }

    @Test func oversizedStreamedBodiesAreCutOff() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let port = try #require(client.port)
            let connection = try RawConnection(port: port)
            let chunk = String(repeating: "x", count: 800)
            try connection.send("POST /api/v1/config/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for _ in 0..<3 { try? connection.send(String(chunk.count, radix: 16) + "\r\n" + chunk + "\r\n") }
            try? connection.send("0\r\n\r\n")
            let response = connection.readAll()
            #expect(response.hasPrefix("HTTP/1.1 413"))
            #expect(response.contains("application/problem+json"))
        }
    }

    @Test func validConfigurationIsEchoedWithSecretsMasked() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let response = try await client.execute(
                uri: "/api/v1/config/validate", method: .post, headers: [.contentType: "application/json; charset=utf-8"],
                body: .json(#"{"port": 9090, "roles": ["api", "worker"], "database": {"url": "postgres://keel:hunter2@db/keel"}, "secret_key": "0123456789abcdef0123456789abcdef-hidden"}"#))
            #expect(response.status == .ok)
            let text = String(buffer: response.body)
            #expect(!text.contains("hunter2"))
            #expect(!text.contains("hidden"))
            let entries = response.json["config"] as? [[String: String]] ?? []
            #expect(entries.first { $0["key"] == "port" }?["value"] == "9090")
            #expect(entries.first { $0["key"] == "roles" }?["value"] == "api,worker")
            #expect(entries.first { $0["key"] == "database_url" }?["value"] == "postgres://keel:****@db:5432/keel")
        }
    }

    @Test func protectedRoutesAreDeniedWithoutAnIdentityProvider() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            let response = try await client.execute(uri: "/api/v1/nodes", method: .get)
            #expect(response.status == .unauthorized)
            #expect(response.headers[.wwwAuthenticate] == "Bearer realm=\"keel\"")
            #expect(response.json["type"] as? String == "https://keel.dev/problems/unauthorized")
        }
    }

    @Test func rolesDecideWhichRoutesAProcessServes() async throws {
        try await withLiveServer(.sqlite, roles: [.worker]) { client, server in
            for path in ["/healthz", "/readyz", "/metrics", "/api/v1/status"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .ok, "\(path)")
            }
            let nodes = try await client.execute(uri: "/api/v1/nodes", method: .get)
            #expect(nodes.status == .notFound)
            #expect(!server.routes.routes.contains { $0.path == "/api/v1/nodes" })
        }
    }
}
