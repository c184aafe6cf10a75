import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import NIOCore

/// An RFC 9457 problem: the only shape in which Keel's API reports errors. `type` is a stable URI
/// per kind of problem (clients branch on it), `detail` a human explanation of this occurrence.
public struct Problem: Error, HTTPResponseError, Sendable {
    public static let typeBase = "https://keel.dev/problems/"

    public var status: HTTPResponse.Status
    public var slug: String
    public var title: String
    public var detail: String
    /// Extension members, such as `errors` for validation problems.
    public var extensions: [String: JSONValue]
    public var headers: HTTPFields

    public init(status: HTTPResponse.Status, slug: String, title: String, detail: String,
                extensions: [String: JSONValue] = [:], headers: HTTPFields = [:]) {
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extensions = extensions
        self.headers = headers
    }

    public var type: String { Self.typeBase + slug }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        response(requestID: (context as? KeelRequestContext)?.requestID, instance: request.uri.path)
    }

    public func response(requestID: String?, instance: String) -> Response {
        var body: [String: JSONValue] = extensions
        body["type"] = .string(type)
        body["title"] = .string(title)
        body["status"] = .number(Double(status.code))
        body["detail"] = .string(detail)
        body["instance"] = .string(instance)
        if let requestID { body["request_id"] = .string(requestID) }
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        let data = (try? JSONEncoder.keel().encode(body)) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension Problem {
    public static func invalidParameters(_ errors: [FieldError]) -> Problem {
        Problem(status: .badRequest, slug: "invalid-parameter", title: "Invalid parameter", detail: "Invalid query parameters.",
                extensions: ["errors": .array(errors.map(\.json))])
    }

    public static func malformedJSON(_ detail: String) -> Problem {
        Problem(status: .badRequest, slug: "malformed-json", title: "Malformed JSON", detail: detail)
    }

    /// The fields a validation or parameter problem names.
    public var fieldErrors: [FieldError] {
        guard case .array(let items)? = extensions["errors"] else { return [] }
        return items.compactMap { item in
            guard case .object(let members) = item, case .string(let field)? = members["field"], case .string(let message)? = members["message"] else { return nil }
            return FieldError(field: field, message: message)
        }
    }

    public static func validation(_ detail: String, errors: [FieldError]) -> Problem {
        Problem(status: .unprocessableContent, slug: "validation-failed", title: "Validation failed", detail: detail,
                extensions: ["errors": .array(errors.map(\.json))])
    }

    public static func unsupportedMediaType(_ detail: String) -> Problem {
        Problem(status: .unsupportedMediaType, slug: "unsupported-media-type", title: "Unsupported media type", detail: detail,
                headers: [.accept: "application/json"])
    }

    public static func contentTooLarge(limit: Int) -> Problem {
        Problem(status: .contentTooLarge, slug: "content-too-large", title: "Content too large",
                detail: "The request body exceeds the limit of \(limit) bytes.")
    }

    public static func notFound(_ detail: String) -> Problem {
        Problem(status: .notFound, slug: "not-found", title: "Not found", detail: detail)
    }

    public static func methodNotAllowed(_ method: HTTPRequest.Method, allowed: [HTTPRequest.Method]) -> Problem {
        let list = allowed.map(\.rawValue).joined(separator: ", ")
        var headers = HTTPFields()
        headers[.allow] = list
        return Problem(status: .methodNotAllowed, slug: "method-not-allowed", title: "Method not allowed",
                       detail: "\(method.rawValue) is not supported here; allowed: \(list).", headers: headers)
    }

    /// 401 with the RFC 6750 challenge; `error` is `invalid_token` when credentials were sent but refused.
    public static func unauthorized(_ detail: String, error: String? = nil) -> Problem {
        let challenge = error.map { "Bearer realm=\"keel\", error=\"\($0)\"" } ?? "Bearer realm=\"keel\""
        return Problem(status: .unauthorized, slug: "unauthorized", title: "Unauthorized", detail: detail,
                       headers: [.wwwAuthenticate: challenge])
    }

    public static func forbidden(_ detail: String) -> Problem {
        Problem(status: .forbidden, slug: "forbidden", title: "Forbidden", detail: detail)
    }

    public static func conflict(_ detail: String) -> Problem {
        Problem(status: .conflict, slug: "conflict", title: "Conflict", detail: detail)
    }

    public static func tooManyRequests(_ detail: String, retryAfterSeconds: Int) -> Problem {
        Problem(status: .tooManyRequests, slug: "too-many-requests", title: "Too many requests", detail: detail,
                headers: [.retryAfter: String(max(1, retryAfterSeconds))])
    }

    public static func unavailable(_ detail: String, retryAfterSeconds: Int = 5) -> Problem {
        Problem(status: .serviceUnavailable, slug: "service-unavailable", title: "Service unavailable", detail: detail,
                headers: [.retryAfter: String(retryAfterSeconds)])
    }

    public static func internalError() -> Problem {
        Problem(status: .internalServerError, slug: "internal-error", title: "Internal error",
                detail: "Keel failed to handle this request; the request_id identifies it in the logs.")
    }

    /// Any other status Hummingbird or NIO reported.
    static func from(status: HTTPResponse.Status, detail: String?) -> Problem {
        let slug = status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "-")
        return Problem(status: status, slug: slug, title: status.reasonPhrase, detail: detail ?? status.reasonPhrase)
    }
}

/// A definition (a gateway route, an AI model, ...) with mistakes; answered as a 422 listing every field.
public struct ValidationFailure: Error, Sendable {
    public let errors: [FieldError]
    public init(errors: [FieldError]) { self.errors = errors }
}

/// One invalid field of a request body, in a validation problem's `errors`.
public struct FieldError: Sendable, Equatable {
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    var json: JSONValue { .object(["field": .string(field), "message": .string(message)]) }
}

/// Arbitrary JSON, for problem extensions and free-form documents.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue {
    /// The member `key` of an object; `nil` for other values.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { members[key] } else { nil }
    }

    public var object: [String: JSONValue]? { if case .object(let members) = self { members } else { nil } }
    public var array: [JSONValue]? { if case .array(let items) = self { items } else { nil } }
    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var number: Double? { if case .number(let value) = self { value } else { nil } }

    /// `value` as Keel's JSON encodes it (snake_case keys, RFC 3339 dates), for code that shows what the API shows.
    public static func encoding(_ value: some Encodable) throws -> JSONValue {
        try JSONDecoder.keel().decode(JSONValue.self, from: try JSONEncoder.keel().encode(value))
    }
}
