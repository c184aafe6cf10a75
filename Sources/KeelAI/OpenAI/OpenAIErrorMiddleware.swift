import Foundation
import HTTPTypes
import Hummingbird
import KeelServer
import NIOCore

/// Under `/v1/`, Keel's problem+json errors become OpenAI's error shape, which OpenAI SDKs parse:
/// `{"error": {"message", "type", "param", "code"}}`, with the same status and headers (`Retry-After`).
struct OpenAIErrorMiddleware: RouterMiddleware {
    typealias Context = KeelRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        guard request.uri.path.hasPrefix("/v1/"), response.headers[.contentType] == "application/problem+json" else { return response }
        let collected = Collected()
        try await response.body.write(Collector(into: collected))
        guard case .object(let problem)? = try? JSONValue.parse(collected.buffer) else { return response }
        var error: [String: JSONValue] = [:]
        if case .string(let detail)? = problem["detail"] { error["message"] = .string(detail) }
        let status = response.status.code
        error["type"] = .string(Self.type(for: status))
        var param = JSONValue.null
        if case .array(let fields)? = problem["errors"], case .object(let first)? = fields.first, case .string(let field)? = first["field"] {
            param = .string(field)
        }
        error["param"] = param
        if case .string(let type)? = problem["type"], let slug = type.split(separator: "/").last {
            error["code"] = .string(Self.code(for: String(slug), status: status))
        }
        var headers = response.headers
        headers[.contentType] = "application/json"
        headers[.contentLength] = nil
        return Response(status: response.status, headers: headers, body: .init(byteBuffer: JSONValue.object(["error": .object(error)]).bytes))
    }

    static func type(for status: Int) -> String {
        switch status {
        case 401: "authentication_error"
        case 403: "permission_error"
        case 429: "rate_limit_error"
        case 500...: "api_error"
        default: "invalid_request_error"
        }
    }

    /// OpenAI's codes where they have one, else Keel's problem slug in their style.
    static func code(for slug: String, status: Int) -> String {
        switch (slug, status) {
        case (_, 401): "invalid_api_key"
        case ("too-many-requests", _): "rate_limit_exceeded"
        default: slug.replacingOccurrences(of: "-", with: "_")
        }
    }

    /// Gathers a problem's body (a few hundred bytes, written whole).
    final class Collected: @unchecked Sendable {
        var buffer = ByteBuffer()
    }

    struct Collector: ResponseBodyWriter {
        let into: Collected

        mutating func write(_ part: ByteBuffer) async throws {
            var part = part
            into.buffer.writeBuffer(&part)
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }
}
