import Foundation
import Hummingbird
import KeelCore
import KeelStore
import KeelTelemetry
import NIOCore

/// Routes every process serves whatever its roles: probes, metrics, the API description and status.
struct SystemRoutes {
    let store: any Store
    let readiness: Readiness
    let telemetry: Telemetry
    let node: NodeRecord
    let clock: any KeelClock
    let storeCheckTimeout: Duration

    func register(on routes: inout RouteRegistrar) {
        let healthy = ByteBuffer(string: #"{"status":"ok"}"#)
        routes.add(.get, "/healthz", access: .public) { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: healthy))
        }
        routes.add(.get, "/readyz", access: .public) { _, _ in try await readyz() }
        routes.add(.get, "/metrics", access: .public) { _, _ in
            Response(status: .ok, headers: [.contentType: MetricsExporter.contentType],
                     body: .init(byteBuffer: ByteBuffer(bytes: telemetry.metrics.exposition())))
        }
        let openAPI = OpenAPIDocument.bytes
        routes.add(.get, "/api/v1/openapi.json", access: .public) { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: openAPI)))
        }
        // Everything but the uptime is fixed for the life of the process: encode it once.
        let status = try? JSONEncoder.keel().encode(Status(
            name: "keel", version: node.version, nodeID: node.id, roles: node.roles, store: store.dialect.rawValue,
            startedAt: node.startedAt, uptimeSeconds: 0))
        let (prefix, suffix) = Status.split(status ?? Data())
        routes.add(.get, "/api/v1/status", access: .public) { _, _ in
            var body = ByteBuffer()
            body.writeBytes(prefix)
            body.writeString(String(Int(clock.now().timeIntervalSince(node.startedAt))))
            body.writeBytes(suffix)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
        }
    }

    struct Status: Encodable {
        let name: String
        let version: String
        let nodeID: String
        let roles: [String]
        let store: String
        let startedAt: Date
        let uptimeSeconds: Int

        enum CodingKeys: String, CodingKey {
            case name, version, roles, store
            case nodeID = "node_id"
            case startedAt = "started_at"
            case uptimeSeconds = "uptime_seconds"
        }

        static let uptimeMarker = Array(#""uptime_seconds":0"#.utf8)

        /// The encoded document split around the uptime's value.
        static func split(_ data: Data) -> (prefix: [UInt8], suffix: [UInt8]) {
            let bytes = Array(data)
            guard let start = bytes.firstRange(of: uptimeMarker) else { return (bytes, []) }
            return (Array(bytes[..<(start.upperBound - 1)]), Array(bytes[start.upperBound...]))
        }
    }

    /// 200 when migrations are applied and the store answers within the timeout, else 503 with reasons.
    private func readyz() async throws -> Response {
        var checks: [String: JSONValue] = [:]
        var failures: [String] = []
        switch readiness.migrations {
        case .applied: checks["migrations"] = .string("ok")
        case .pending(let reason), .failed(let reason):
            checks["migrations"] = .string(reason)
            failures.append("migrations not applied: \(reason)")
        }
        let start = ContinuousClock.now
        do {
            try await withDeadline(storeCheckTimeout, orThrow: StoreCheckTimeout()) { try await store.ping() }
            checks["store"] = .string("ok")
            checks["store_latency_ms"] = .number(((ContinuousClock.now - start) / .microseconds(1)).rounded() / 1000)
        } catch {
            checks["store"] = .string("\(error)")
            failures.append("store not reachable")
        }
        guard failures.isEmpty else {
            var problem = Problem.unavailable("Not ready: \(failures.joined(separator: "; ")).", retryAfterSeconds: 1)
            problem.slug = "not-ready"
            problem.title = "Not ready"
            problem.extensions["checks"] = .object(checks)
            throw problem
        }
        return try .json(["status": JSONValue.string("ready"), "checks": .object(checks)])
    }

    private struct StoreCheckTimeout: Error, CustomStringConvertible {
        var description: String { "store did not answer in time" }
    }
}

/// The OpenAPI 3.1 description of the API, shipped as a resource of this module.
public enum OpenAPIDocument {
    public static let bytes: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
              let data = try? Data(contentsOf: url)
        else { return Array(#"{"error":"openapi.json resource missing from this build"}"#.utf8) }
        return Array(data)
    }()
}
