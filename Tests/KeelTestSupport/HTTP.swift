import AsyncHTTPClient
import Foundation
import NIOCore

/// Plain HTTP calls to a `keel` child process on loopback.
public enum HTTP {
    public struct Response: Sendable {
        public let status: Int
        public let headers: [(String, String)]
        public let body: String
    }

    public static func get(port: Int, path: String, headers: [String: String] = [:]) async throws -> Response {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        return Response(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: String(buffer: body))
    }
}
