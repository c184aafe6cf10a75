import AsyncHTTPClient
import Foundation
import KeelServer
import NIOCore

/// How one kind of provider is spoken to: the upstream request for an OpenAI-shaped request, and the
/// upstream's answers and stream events turned into OpenAI's shape, with the tokens they report.
protocol ProviderDialect: Sendable {
    func request(_ endpoint: OpenAIEndpoints.Endpoint, fields: [String: JSONValue], provider: AIProvider) throws -> HTTPClientRequest
    /// A whole answer in OpenAI's shape, and its input and output tokens.
    func answer(_ endpoint: OpenAIEndpoints.Endpoint, body: ByteBuffer, model: String) -> (answer: JSONValue, tokensIn: Int, tokensOut: Int)
    /// A translator for one streamed answer; `includeUsage` when the client asked for the usage chunk.
    func streamTranslator(model: String, includeUsage: Bool) -> any StreamTranslator
}

/// Turns an upstream's stream into OpenAI's server-sent events as the bytes arrive.
protocol StreamTranslator: Sendable {
    /// The OpenAI events for this piece of the upstream's stream (empty while a line is incomplete).
    mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer
    /// What to send when the upstream's stream has ended.
    mutating func finish() -> ByteBuffer
    var tokensIn: Int { get }
    var tokensOut: Int { get }
}

extension AIProvider.Kind {
    var dialect: any ProviderDialect {
        switch self {
        case .openai: OpenAIDialect()
        case .ollama: OllamaDialect()
        case .anthropic: AnthropicDialect()
        }
    }
}

/// Splits a byte stream into lines, across chunk boundaries.
struct LineSplitter: Sendable {
    private var pending: [UInt8] = []

    mutating func lines(in chunk: ByteBuffer) -> [Substring] {
        pending += chunk.readableBytesView
        var lines: [Substring] = []
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            var line = pending[..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            lines.append(Substring(String(decoding: line, as: UTF8.self)))
            pending.removeSubrange(...newline)
        }
        return lines
    }
}

/// OpenAI's chat completion chunks, written as server-sent events.
struct ChunkWriter: Sendable {
    let id = "chatcmpl-" + String(UInt64.random(in: 0 ... .max), radix: 36)
    let model: String
    let created = Int(Date().timeIntervalSince1970)

    func event(_ value: JSONValue) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        value.write(to: &buffer)
        buffer.writeString("\n\n")
        return buffer
    }

    func chunk(delta: [String: JSONValue], finishReason: String? = nil) -> ByteBuffer {
        event(.object([
            "id": .string(id), "object": .string("chat.completion.chunk"), "created": .number(Double(created)), "model": .string(model),
            "choices": .array([.object(["index": .number(0), "delta": .object(delta), "finish_reason": finishReason.map(JSONValue.string) ?? .null])]),
        ]))
    }

    func usage(_ tokensIn: Int, _ tokensOut: Int) -> ByteBuffer {
        event(.object([
            "id": .string(id), "object": .string("chat.completion.chunk"), "created": .number(Double(created)), "model": .string(model),
            "choices": .array([]), "usage": usageObject(tokensIn, tokensOut),
        ]))
    }

    static let done = ByteBuffer(string: "data: [DONE]\n\n")

    /// The opening chunk of a translated stream (the assistant's role).
    var opening: ByteBuffer { chunk(delta: ["role": .string("assistant"), "content": .string("")]) }

    /// The closing chunks of a translated stream: the finish reason, the usage chunk when the client asked
    /// for it, and `[DONE]`.
    func ending(finishReason: String, includeUsage: Bool, tokensIn: Int, tokensOut: Int) -> ByteBuffer {
        var out = chunk(delta: [:], finishReason: finishReason)
        if includeUsage {
            var usage = usage(tokensIn, tokensOut)
            out.writeBuffer(&usage)
        }
        var done = Self.done
        out.writeBuffer(&done)
        return out
    }
}

func usageObject(_ tokensIn: Int, _ tokensOut: Int) -> JSONValue {
    .object(["prompt_tokens": .number(Double(tokensIn)), "completion_tokens": .number(Double(tokensOut)), "total_tokens": .number(Double(tokensIn + tokensOut))])
}

/// A whole chat completion in OpenAI's shape.
func chatCompletion(model: String, content: String, finishReason: String, tokensIn: Int, tokensOut: Int, toolCalls: JSONValue? = nil) -> JSONValue {
    var message: [String: JSONValue] = ["role": .string("assistant"), "content": .string(content)]
    if let toolCalls { message["tool_calls"] = toolCalls }
    return .object([
        "id": .string("chatcmpl-" + String(UInt64.random(in: 0 ... .max), radix: 36)), "object": .string("chat.completion"),
        "created": .number(Date().timeIntervalSince1970.rounded(.down)), "model": .string(model),
        "choices": .array([.object(["index": .number(0), "message": .object(message), "finish_reason": .string(finishReason)])]),
        "usage": usageObject(tokensIn, tokensOut),
    ])
}

/// The text of an OpenAI message's content: a string, or the text parts of an array.
func text(of content: JSONValue?) -> String {
    switch content {
    case .string(let text)?: return text
    case .array(let parts)?:
        return parts.compactMap { part -> String? in
            guard case .object(let members) = part, case .string(let text)? = members["text"] else { return nil }
            return text
        }.joined()
    default: return ""
    }
}

extension JSONValue {
    /// A token count or similar: 0 when absent.
    var int: Int { number.map { Int($0) } ?? 0 }
}

/// The OpenAI API itself: requests pass through (with the stream's usage chunk asked for), answers come
/// back with the public model name.
struct OpenAIDialect: ProviderDialect {
    func request(_ endpoint: OpenAIEndpoints.Endpoint, fields: [String: JSONValue], provider: AIProvider) throws -> HTTPClientRequest {
        var fields = fields
        if fields["stream"] == .bool(true) {
            var options: [String: JSONValue] = [:]
            if case .object(let existing)? = fields["stream_options"] { options = existing }
            options["include_usage"] = .bool(true)
            fields["stream_options"] = .object(options)
        }
        var request = HTTPClientRequest(url: provider.baseURL + "/" + endpoint.rawValue)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let key = provider.apiKey { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        request.body = .bytes(JSONValue.object(fields).bytes)
        return request
    }

    func answer(_ endpoint: OpenAIEndpoints.Endpoint, body: ByteBuffer, model: String) -> (answer: JSONValue, tokensIn: Int, tokensOut: Int) {
        var answer = (try? JSONValue.parse(body)) ?? .null
        let usage = answer["usage"]
        if case .object(var members) = answer {
            members["model"] = .string(model)
            answer = .object(members)
        }
        return (answer, usage?["prompt_tokens"]?.int ?? 0, usage?["completion_tokens"]?.int ?? 0)
    }

    func streamTranslator(model: String, includeUsage: Bool) -> any StreamTranslator {
        PassThroughTranslator()
    }
}

/// OpenAI's own stream, passed on untouched; its usage chunk is read on the way.
struct PassThroughTranslator: StreamTranslator {
    private var lines = LineSplitter()
    private(set) var tokensIn = 0
    private(set) var tokensOut = 0

    mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        for line in lines.lines(in: chunk) where line.hasPrefix("data: {") && line.contains("\"usage\"") {
            if let event = try? JSONValue.parse(line.dropFirst(6).utf8), let usage = event["usage"],
               usage["prompt_tokens"] != nil {
                (tokensIn, tokensOut) = (usage["prompt_tokens"]?.int ?? 0, usage["completion_tokens"]?.int ?? 0)
            }
        }
        return chunk
    }

    mutating func finish() -> ByteBuffer { ByteBuffer() }
}
