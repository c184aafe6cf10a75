import AsyncHTTPClient
import Foundation
import KeelServer
import NIOCore

/// Anthropic's Messages API: `POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version`.
/// System messages move to `system`, `max_tokens` is required (4096 unless the request says),
/// stop reasons and usage map back, and its typed stream events become OpenAI chunks. It has no
/// embeddings.
struct AnthropicDialect: ProviderDialect {
    static let version = "2023-06-01"
    static let defaultMaxTokens = 4096

    struct Unsupported: Error {}

    func request(_ endpoint: OpenAIEndpoints.Endpoint, fields: [String: JSONValue], provider: AIProvider) throws -> HTTPClientRequest {
        guard endpoint == .chat else { throw Unsupported() }
        var body: [String: JSONValue] = ["model": fields["model"] ?? .null]
        var system: [String] = []
        var messages: [JSONValue] = []
        if case .array(let items)? = fields["messages"] {
            for item in items {
                let role = item["role"]?.string ?? "user"
                let content = text(of: item["content"])
                switch role {
                case "system", "developer": system.append(content)
                case "assistant": messages.append(.object(["role": .string("assistant"), "content": .string(content)]))
                case "tool":
                    messages.append(.object(["role": .string("user"), "content": .array([.object([
                        "type": .string("tool_result"), "tool_use_id": item["tool_call_id"] ?? .null, "content": .string(content),
                    ])])]))
                default: messages.append(.object(["role": .string("user"), "content": .string(content)]))
                }
            }
        }
        if !system.isEmpty { body["system"] = .string(system.joined(separator: "\n\n")) }
        body["messages"] = .array(messages)
        body["max_tokens"] = fields["max_completion_tokens"] ?? fields["max_tokens"] ?? .number(Double(Self.defaultMaxTokens))
        for key in ["temperature", "top_p"] { if let value = fields[key] { body[key] = value } }
        if let stop = fields["stop"] { body["stop_sequences"] = stop.string.map { .array([.string($0)]) } ?? stop }
        if fields["stream"] == .bool(true) { body["stream"] = .bool(true) }
        if case .array(let tools)? = fields["tools"] {
            body["tools"] = .array(tools.map { tool in
                .object(["name": tool["function"]?["name"] ?? .null, "description": tool["function"]?["description"] ?? .string(""),
                         "input_schema": tool["function"]?["parameters"] ?? .object(["type": .string("object")])])
            })
        }
        var request = HTTPClientRequest(url: provider.baseURL + "/v1/messages")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "anthropic-version", value: Self.version)
        if let key = provider.apiKey { request.headers.add(name: "x-api-key", value: key) }
        request.body = .bytes(JSONValue.object(body).bytes)
        return request
    }

    static func finishReason(_ stopReason: String?) -> String {
        switch stopReason {
        case "max_tokens": "length"
        case "tool_use": "tool_calls"
        default: "stop"
        }
    }

    func answer(_ endpoint: OpenAIEndpoints.Endpoint, body: ByteBuffer, model: String) -> (answer: JSONValue, tokensIn: Int, tokensOut: Int) {
        let reply = (try? JSONValue.parse(body)) ?? .null
        let (tokensIn, tokensOut) = (reply["usage"]?["input_tokens"]?.int ?? 0, reply["usage"]?["output_tokens"]?.int ?? 0)
        var content = ""
        var toolCalls: [JSONValue] = []
        if case .array(let blocks)? = reply["content"] {
            for block in blocks {
                switch block["type"]?.string {
                case "text": content += block["text"]?.string ?? ""
                case "tool_use":
                    let arguments = (block["input"]).map { String(buffer: $0.bytes) } ?? "{}"
                    toolCalls.append(.object(["id": block["id"] ?? .null, "type": .string("function"),
                                              "function": .object(["name": block["name"] ?? .null, "arguments": .string(arguments)])]))
                default: break
                }
            }
        }
        return (chatCompletion(model: model, content: content, finishReason: Self.finishReason(reply["stop_reason"]?.string),
                               tokensIn: tokensIn, tokensOut: tokensOut, toolCalls: toolCalls.isEmpty ? nil : .array(toolCalls)),
                tokensIn, tokensOut)
    }

    func streamTranslator(model: String, includeUsage: Bool) -> any StreamTranslator {
        AnthropicStreamTranslator(writer: ChunkWriter(model: model), includeUsage: includeUsage)
    }
}

/// Anthropic's events (`message_start`, `content_block_delta`, `message_delta`, `message_stop`) as OpenAI chunks.
struct AnthropicStreamTranslator: StreamTranslator {
    let writer: ChunkWriter
    let includeUsage: Bool
    private var lines = LineSplitter()
    private var finishReason = "stop"
    private(set) var tokensIn = 0
    private(set) var tokensOut = 0

    init(writer: ChunkWriter, includeUsage: Bool) {
        self.writer = writer
        self.includeUsage = includeUsage
    }

    mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        for line in lines.lines(in: chunk) where line.hasPrefix("data: ") {
            guard let event = try? JSONValue.parse(line.dropFirst(6).utf8) else { continue }
            switch event["type"]?.string {
            case "message_start":
                tokensIn = event["message"]?["usage"]?["input_tokens"]?.int ?? 0
                var first = writer.opening
                out.writeBuffer(&first)
            case "content_block_delta":
                if let text = event["delta"]?["text"]?.string, !text.isEmpty {
                    var piece = writer.chunk(delta: ["content": .string(text)])
                    out.writeBuffer(&piece)
                }
            case "message_delta":
                finishReason = AnthropicDialect.finishReason(event["delta"]?["stop_reason"]?.string)
                tokensOut = event["usage"]?["output_tokens"]?.int ?? tokensOut
            case "message_stop":
                var ending = writer.ending(finishReason: finishReason, includeUsage: includeUsage, tokensIn: tokensIn, tokensOut: tokensOut)
                out.writeBuffer(&ending)
            default:
                break
            }
        }
        return out
    }

    mutating func finish() -> ByteBuffer { ByteBuffer() }
}
