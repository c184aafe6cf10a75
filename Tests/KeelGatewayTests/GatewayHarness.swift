import AsyncHTTPClient
import Foundation
import KeelTestSupport
import NIOCore
import NIOHTTP1

/// A named upstream instance (`Tests/Support/upstream_server.py`) on loopback.
final class Upstream: @unchecked Sendable {
    let name: String
    let port: Int
    private let helper: PythonHelper

    init(_ name: String) async throws {
        self.name = name
        helper = try PythonHelper("upstream_server.py", arguments: ["0", name])
        port = try await helper.listeningPort()
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Requests seen so far, by `"METHOD /path"`.
    func hits() async throws -> [String: Int] {
        let response = try await Client.send("GET", "\(url)/control/hits")
        return (try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])?["hits"] as? [String: Int] ?? [:]
    }

    func setHealthy(_ healthy: Bool) async throws {
        _ = try await Client.send("POST", "\(url)/control/\(healthy ? "healthy" : "unhealthy")")
    }

    /// Answers every request (but health checks) with `status`; `0` restores normal answers.
    func force(status: Int) async throws {
        _ = try await Client.send("POST", "\(url)/control/mode?status=\(status)")
    }

    func stop() { helper.stop() }
}

/// `keel` with the gateway role, its routes declared through `KEEL_GATEWAY_ROUTES`.
final class GatewayServer: @unchecked Sendable {
    let process: KeelProcess
    let port: Int
    static let adminEmail = "admin@example.com"
    static let adminPassword = "gateway-admin-passphrase-1"

    init(routes: [String: Any], roles: [String] = [], environment: [String: String] = [:]) async throws {
        let data = try JSONSerialization.data(withJSONObject: routes)
        var env = environment
        env["KEEL_GATEWAY_ROUTES"] = String(decoding: data, as: UTF8.self)
        env["KEEL_ADMIN_EMAIL"] = Self.adminEmail
        env["KEEL_ADMIN_PASSWORD"] = Self.adminPassword
        env["KEEL_AUTH_BCRYPT_COST"] = "4"
        let arguments = roles.isEmpty ? ["up", "--port", "0"] : ["serve", "--roles", roles.joined(separator: ","), "--port", "0"]
        process = try KeelProcess(arguments, environment: env)
        port = try await process.waitUntilReady()
    }

    func send(_ method: String, _ path: String, headers: [String: String] = [:], body: String? = nil) async throws -> Client.Response {
        try await Client.send(method, "http://127.0.0.1:\(port)\(path)", headers: headers, body: body)
    }

    /// An access token of the first admin.
    func adminToken() async throws -> String {
        let body = #"{"email": "\#(Self.adminEmail)", "password": "\#(Self.adminPassword)"}"#
        let response = try await send("POST", "/api/v1/auth/login", headers: ["Content-Type": "application/json"], body: body)
        guard let token = response.json["access_token"] as? String else { throw TestSetupError("login failed: \(response.status) \(response.body)") }
        return token
    }
}

/// An HTTP client that follows no redirects and adds nothing of its own (no tracing headers).
enum Client {
    struct Response: Sendable {
        let status: Int
        let headers: HTTPHeaders
        let body: String

        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
        /// The upstream instance that answered (the echo's `instance`).
        var instance: String? { json["instance"] as? String }
        /// Headers the upstream received, from the echo.
        var upstreamHeaders: [String: [String]] {
            var headers: [String: [String]] = [:]
            for pair in json["headers"] as? [[String]] ?? [] where pair.count == 2 { headers[pair[0].lowercased(), default: []].append(pair[1]) }
            return headers
        }
    }

    static let shared: HTTPClient = {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)),
                                                     connectionPool: .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 64))
        configuration.tracing.tracer = nil
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    static func send(_ method: String, _ url: String, headers: [String: String] = [:], body: String? = nil) async throws -> Response {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await shared.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return Response(status: Int(response.status.code), headers: response.headers, body: String(buffer: collected))
    }
}

/// A route definition for `KEEL_GATEWAY_ROUTES`.
func route(_ prefix: String, _ upstreams: [Upstream], auth: String = "public", _ extra: [String: Any] = [:]) -> [String: Any] {
    var definition: [String: Any] = [
        "match": ["prefix": prefix],
        "upstreams": upstreams.map { ["url": $0.url] },
        "auth": auth,
        "strip_prefix": true,
    ]
    definition.merge(extra) { _, new in new }
    return definition
}
