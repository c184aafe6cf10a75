import AsyncHTTPClient
import Foundation
import KeelServer
import NIOCore

/// Ollama's native API: `POST {base_url}/api/chat` (newline-delimited JSON when streaming) and
/// `POST {base_url}/api/embed`. Sampling settings move into `options`; tokens come from
/// `prompt_eval_count` and `eval_count`.
struct OllamaDialect: ProviderDialect {
    func request(_ endpoint: OpenAIEndpoints.Endpoint, fields: [String: JSONValue], provider: AIProvider) throws -> HTTPClientRequest {
        var body: [String: JSONValue] = ["model": fields["model"] ?? .null]
        switch endpoint {
        case .chat:
            var messages: [JSONValue] = []
            if case .array(let items)? = fields["messages"] {
                for item in items {
                    var message: [String: JSONValue] = ["role": item["role"] ?? .string("user"), "content": .string(text(of: item["content"]))]
                    if let calls = item["tool_calls"] { message["tool_calls"] = calls }
                    messages.append(.object(message))
                }
            }
            body["messages"] = .array(messages)
            body["stream"] = .bool(fields["stream"] == .bool(true))
            var options: [String: JSONValue] = [:]
            for (openai, ollama) in [("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"), ("max_tokens", "num_predict"),
                                     ("max_completion_tokens", "num_predict"), ("presence_penalty", "presence_penalty"),
                                     ("frequency_penalty", "frequency_penalty")] {
                if let value = fields[openai] { options[ollama] = value }
            }
            if let stop = fields["stop"] { options["stop"] = stop.string.map { .array([.string($0)]) } ?? stop }
            if !options.isEmpty { body["options"] = .object(options) }
            if let tools = fields["tools"] { body["tools"] = tools }
            if fields["response_format"]?["type"]?.string == "json_object" { body["format"] = .string("json") }
            if let schema = fields["response_format"]?["json_schema"]?["schema"] { body["format"] = schema }
        case .embeddings:
            body["input"] = fields["input"] ?? .null
        }
        var request = HTTPClientRequest(url: provider.baseURL + (endpoint == .chat ? "/api/chat" : "/api/embed"))
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let key = provider.apiKey { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        request.body = .bytes(JSONValue.object(body).bytes)
        return request
    }

    func answer(_ endpoint: OpenAIEndpoints.Endpoint, body: ByteBuffer, model: String) -> (answer: JSONValue, tokensIn: Int, tokensOut: Int) {
        let reply = (try? JSONValue.parse(body)) ?? .null
        let (tokensIn, tokensOut) = (reply["prompt_eval_count"]?.int ?? 0, reply["eval_count"]?.int ?? 0)
        switch endpoint {
        case .chat:
            let finish = reply["done_reason"]?.string == "length" ? "length" : (reply["message"]?["tool_calls"] != nil ? "tool_calls" : "stop")
            return (chatCompletion(model: model, content: reply["message"]?["content"]?.string ?? "", finishReason: finish,
                                   tokensIn: tokensIn, tokensOut: tokensOut, toolCalls: reply["message"]?["tool_calls"].map(Self.openAIToolCalls)),
                    tokensIn, tokensOut)
        case .embeddings:
            var data: [JSONValue] = []
            if case .array(let vectors)? = reply["embeddings"] {
                for (index, vector) in vectors.enumerated() {
                    data.append(.object(["object": .string("embedding"), "index": .number(Double(index)), "embedding": vector]))
                }
            }
            return (.object(["object": .string("list"), "data": .array(data), "model": .string(model),
                             "usage": .object(["prompt_tokens": .number(Double(tokensIn)), "total_tokens": .number(Double(tokensIn))])]),
                    tokensIn, 0)
        }
    }

    /// Ollama gives tool arguments as an object; OpenAI as a JSON string, with ids and a type.
    static func openAIToolCalls(_ calls: JSONValue) -> JSONValue {
        guard case .array(let items) = calls else { return calls }
        return .array(items.enumerated().map { index, call in
            let arguments = (call["function"]?["arguments"]).map { String(buffer: $0.bytes) } ?? "{}"
            return .object(["id": .string("call_\(index)"), "type": .string("function"),
                            "function": .object(["name": call["function"]?["name"] ?? .null, "arguments": .string(arguments)])])
        })
    }

    func streamTranslator(model: String, includeUsage: Bool) -> any StreamTranslator {
        OllamaStreamTranslator(writer: ChunkWriter(model: model), includeUsage: includeUsage)
    }
}

/// Ollama's lines (`{"message": {"content": ...}, "done": false}` ... `{"done": true, ...counts}`) as OpenAI chunks.
struct OllamaStreamTranslator: StreamTranslator {
    let writer: ChunkWriter
    let includeUsage: Bool
    private var lines = LineSplitter()
    private var started = false
    private(set) var tokensIn = 0
    private(set) var tokensOut = 0

    init(writer: ChunkWriter, includeUsage: Bool) {
        self.writer = writer
        self.includeUsage = includeUsage
    }

    mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        for line in lines.lines(in: chunk) where !line.isEmpty {
            guard let event = try? JSONValue.parse(line.utf8) else { continue }
            if !started {
                started = true
                var first = writer.opening
                out.writeBuffer(&first)
            }
            if let content = event["message"]?["content"]?.string, !content.isEmpty {
                var piece = writer.chunk(delta: ["content": .string(content)])
                out.writeBuffer(&piece)
            }
            if event["done"] == .bool(true) {
                (tokensIn, tokensOut) = (event["prompt_eval_count"]?.int ?? 0, event["eval_count"]?.int ?? 0)
                var ending = writer.ending(finishReason: event["done_reason"]?.string == "length" ? "length" : "stop",
                                           includeUsage: includeUsage, tokensIn: tokensIn, tokensOut: tokensOut)
                out.writeBuffer(&ending)
            }
        }
        return out
    }

    mutating func finish() -> ByteBuffer { ByteBuffer() }
}
