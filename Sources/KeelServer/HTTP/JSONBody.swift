import Foundation
import HTTPTypes
import Hummingbird
import KeelCore
import NIOCore

/// Request limits every route shares.
public struct RequestLimits: Sendable {
    public var maxBodyBytes: Int
    public init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }
}

extension Request {
    /// Reads and decodes a JSON body, answering each client mistake with its own problem:
    /// wrong content type 415, too large 413, not JSON 400, wrong shape 422.
    public func decodeJSON<Value: Decodable>(_ type: Value.Type, limits: RequestLimits) async throws -> Value {
        let contentType = headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        guard let contentType, contentType == "application/json" || contentType.hasSuffix("+json") else {
            throw Problem.unsupportedMediaType("Send the body as application/json (got \(contentType ?? "no Content-Type")).")
        }
        if let declared = headers[.contentLength].flatMap(Int.init), declared > limits.maxBodyBytes {
            throw Problem.contentTooLarge(limit: limits.maxBodyBytes)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limits.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw Problem.contentTooLarge(limit: limits.maxBodyBytes)
        }
        let data = Data(buffer: buffer)
        if data.containsEscapedNUL {
            throw Problem.validation("Text in the body must not contain NUL characters.",
                                     errors: [FieldError(field: "", message: "must not contain \\u0000")])
        }
        do {
            return try JSONDecoder.keel().decode(Value.self, from: data)
        } catch let error as DecodingError {
            // Parsed once on the way in; only a body that did not decode is parsed again, to tell bad JSON from a bad shape.
            if (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) == nil {
                throw Problem.malformedJSON("The body is not valid JSON.")
            }
            throw Problem.validation("The body does not match the expected shape.", errors: [FieldError(error)])
        }
    }
}

extension FieldError {
    public init(_ error: DecodingError) {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(field: path(context.codingPath + [key]), message: "is required")
        case .typeMismatch(let type, let context):
            self.init(field: path(context.codingPath), message: "must be \(Self.describe(type))")
        case .valueNotFound(let type, let context):
            self.init(field: path(context.codingPath), message: "must be \(Self.describe(type)), not null")
        case .dataCorrupted(let context):
            self.init(field: path(context.codingPath), message: context.debugDescription)
        @unknown default:
            self.init(field: "", message: "is invalid")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is [Any].Type: "an array"
        default: "a \(type)".replacingOccurrences(of: "Swift.", with: "")
        }
    }
}

extension Response {
    /// A JSON response in Keel's encoding (snake_case keys as declared, RFC 3339 dates).
    public static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONEncoder.keel().encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension Data {
    /// Whether the JSON text has a `\u0000` escape (an escaped backslash followed by `u0000` is not
    /// one); raw NUL bytes are not valid JSON and were refused already.
    var containsEscapedNUL: Bool {
        let bytes = [UInt8](self)
        let pattern = Array("u0000".utf8)
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "\\") else { index += 1; continue }
            guard index + 1 < bytes.count else { return false }
            if bytes[index + 1] == UInt8(ascii: "\\") { index += 2; continue }
            if index + 6 <= bytes.count, Array(bytes[(index + 1)..<(index + 6)]) == pattern { return true }
            index += 2
        }
        return false
    }
}
