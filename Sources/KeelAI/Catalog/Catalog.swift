import Foundation
import KeelServer

/// An upstream that serves models: an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, LM Studio, ...).
/// Its credential is write-only: stored sealed with `KEEL_SECRET_KEY`, never returned or logged.
public struct AIProvider: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// The OpenAI API shape: `POST {base_url}/chat/completions`, `/embeddings`, bearer key.
        case openai
        /// Ollama's native API at `{base_url}/api/chat` and `/api/embed`.
        case ollama
        /// Anthropic's Messages API at `{base_url}/v1/messages` (chat only).
        case anthropic
    }

    public var name: String
    public var kind: Kind
    /// OpenAI-compatible: up to the API version (`https://api.openai.com/v1`, `http://vllm:8000/v1`); Ollama:
    /// the server (`http://ollama:11434`); Anthropic: `https://api.anthropic.com`.
    public var baseURL: String
    public var apiKey: String?

    public init(name: String, kind: Kind, baseURL: String, apiKey: String? = nil) {
        self.name = name
        self.kind = kind
        self.baseURL = baseURL
        self.apiKey = apiKey
    }

    enum CodingKeys: String, CodingKey {
        case name, kind
        case baseURL = "base_url"
        case apiKey = "api_key"
    }

    func validated() throws(ValidationFailure) -> AIProvider {
        var errors: [FieldError] = []
        var provider = self
        if !AIModel.isValidName(name) { errors.append(FieldError(field: "name", message: AIModel.nameRule)) }
        if let url = URLComponents(string: baseURL), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host?.isEmpty == false,
           url.user == nil, url.query == nil, url.fragment == nil, !baseURL.contains(where: \.isWhitespace) {
            provider.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        } else {
            errors.append(FieldError(field: "base_url", message: "must be an http:// or https:// URL without credentials, query or fragment"))
        }
        if let key = apiKey, key.isEmpty || key.utf8.count > 4096 || key.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f }) {
            errors.append(FieldError(field: "api_key", message: "must be 1-4096 printable characters without spaces"))
        }
        guard errors.isEmpty else { throw ValidationFailure(errors: errors) }
        return provider
    }
}

/// A public model name and the deployments that serve it.
public struct AIModel: Codable, Sendable, Equatable {
    public enum Strategy: String, Codable, Sendable, CaseIterable {
        /// The lowest `priority` number first; the next on failure.
        case priority
        /// By weight among the deployments of the lowest priority number, the rest as fallback.
        case weighted
        /// The deployment with the fewest requests in flight (per weight), the rest as fallback.
        case leastBusy = "least_busy"
    }

    public struct Deployment: Codable, Sendable, Equatable {
        public var provider: String
        /// The upstream's own name for the model.
        public var model: String
        public var weight: Int
        /// 0 is tried first, then 1, and so on.
        public var priority: Int
        public var timeoutSeconds: Double

        public init(provider: String, model: String, weight: Int = 1, priority: Int = 0, timeoutSeconds: Double = 120) {
            self.provider = provider
            self.model = model
            self.weight = weight
            self.priority = priority
            self.timeoutSeconds = timeoutSeconds
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.init(provider: try container.decode(String.self, forKey: .provider), model: try container.decode(String.self, forKey: .model))
            weight = try container.decodeIfPresent(Int.self, forKey: .weight) ?? weight
            priority = try container.decodeIfPresent(Int.self, forKey: .priority) ?? priority
            timeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .timeoutSeconds) ?? timeoutSeconds
        }

        enum CodingKeys: String, CodingKey {
            case provider, model, weight, priority
            case timeoutSeconds = "timeout_seconds"
        }
    }

    /// Prices in currency units (say USD) per million tokens.
    public struct Price: Codable, Sendable, Equatable {
        public var inputPerMillion: Double
        public var outputPerMillion: Double

        enum CodingKeys: String, CodingKey {
            case inputPerMillion = "input_per_million"
            case outputPerMillion = "output_per_million"
        }
    }

    /// Keep whole answers for `ttl_seconds` and answer the same request again from memory.
    public struct Cache: Codable, Sendable, Equatable {
        public var ttlSeconds: Double

        enum CodingKeys: String, CodingKey {
            case ttlSeconds = "ttl_seconds"
        }
    }

    public var name: String
    public var deployments: [Deployment]
    public var strategy: Strategy
    public var price: Price?
    public var cache: Cache?

    public init(name: String, deployments: [Deployment], strategy: Strategy = .priority, price: Price? = nil, cache: Cache? = nil) {
        self.name = name
        self.deployments = deployments
        self.strategy = strategy
        self.price = price
        self.cache = cache
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try container.decodeIfPresent(String.self, forKey: .name) ?? "",
                  deployments: try container.decode([Deployment].self, forKey: .deployments))
        strategy = try container.decodeIfPresent(Strategy.self, forKey: .strategy) ?? strategy
        price = try container.decodeIfPresent(Price.self, forKey: .price)
        cache = try container.decodeIfPresent(Cache.self, forKey: .cache)
    }

    enum CodingKeys: String, CodingKey {
        case name, deployments, strategy, price, cache
    }

    static let nameRule = "must be 1-200 characters of letters, digits, '.', '_', ':', '/' or '-'"

    /// Model names such as `gpt-4o-mini`, `llama3.1:8b` or `org/model`.
    static func isValidName(_ name: String) -> Bool {
        (1...200).contains(name.utf8.count) && name.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "._:/-".unicodeScalars.contains($0)
        }
    }

    func validated(providers: Set<String>) throws(ValidationFailure) -> AIModel {
        var errors: [FieldError] = []
        if !Self.isValidName(name) { errors.append(FieldError(field: "name", message: Self.nameRule)) }
        if !(1...32).contains(deployments.count) { errors.append(FieldError(field: "deployments", message: "must list 1-32 deployments")) }
        for (index, deployment) in deployments.enumerated() {
            let field = "deployments[\(index)]"
            if !providers.contains(deployment.provider) {
                errors.append(FieldError(field: "\(field).provider", message: "\"\(deployment.provider)\" is not a provider (see GET /api/v1/ai/providers)"))
            }
            if !Self.isValidName(deployment.model) { errors.append(FieldError(field: "\(field).model", message: Self.nameRule)) }
            if !(1...1000).contains(deployment.weight) { errors.append(FieldError(field: "\(field).weight", message: "must be from 1 to 1000")) }
            if !(0...100).contains(deployment.priority) { errors.append(FieldError(field: "\(field).priority", message: "must be from 0 to 100")) }
            if !(1...3600).contains(deployment.timeoutSeconds) {
                errors.append(FieldError(field: "\(field).timeout_seconds", message: "must be from 1 to 3600"))
            }
        }
        if let cache, !(1...86_400).contains(cache.ttlSeconds) {
            errors.append(FieldError(field: "cache.ttl_seconds", message: "must be from 1 to 86400"))
        }
        if let price, !(0...1_000_000).contains(price.inputPerMillion) || !(0...1_000_000).contains(price.outputPerMillion) {
            errors.append(FieldError(field: "price", message: "input_per_million and output_per_million must be from 0 to 1000000"))
        }
        guard errors.isEmpty else { throw ValidationFailure(errors: errors) }
        return self
    }
}
