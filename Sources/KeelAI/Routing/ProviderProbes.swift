import AsyncHTTPClient
import Foundation
import KeelCore
import KeelServer
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// Active health of each provider: a cheap authenticated read every `interval` (OpenAI-compatible and
/// Anthropic: `GET /models`; Ollama: `GET /api/tags`), so an operator sees a provider is down before
/// requests fail on it. Routing does not wait for probes: failures of real requests cool deployments down.
final class ProviderProbes: Sendable {
    struct Health: Sendable {
        var healthy: Bool
        var checkedAt: Date
        var latency: Duration
        var error: String?
    }

    static let interval = Duration.seconds(30)
    static let timeout = TimeAmount.seconds(5)
    private let results = Mutex<[String: Health]>([:])

    func health(of provider: String) -> Health? { results.withLock { $0[provider] } }

    func probe(_ provider: AIProvider, client: HTTPClient) async {
        var request: HTTPClientRequest
        switch provider.kind {
        case .openai:
            request = HTTPClientRequest(url: provider.baseURL + "/models")
            if let key = provider.apiKey { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        case .ollama:
            request = HTTPClientRequest(url: provider.baseURL + "/api/tags")
            if let key = provider.apiKey { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        case .anthropic:
            request = HTTPClientRequest(url: provider.baseURL + "/v1/models")
            request.headers.add(name: "anthropic-version", value: AnthropicDialect.version)
            if let key = provider.apiKey { request.headers.add(name: "x-api-key", value: key) }
        }
        let started = ContinuousClock.now
        var health = Health(healthy: false, checkedAt: Date(), latency: .zero, error: nil)
        do {
            let response = try await client.execute(request, timeout: Self.timeout)
            _ = try await response.body.collect(upTo: 4 << 20)
            health.healthy = (200..<300).contains(Int(response.status.code))
            if !health.healthy { health.error = "answered \(response.status.code)" }
        } catch {
            health.error = error is HTTPClientError ? String(describing: error) : "not reachable"
        }
        health.latency = .now - started
        let result = health
        results.withLock { $0[provider.name] = result }
        Gauge(label: "keel_ai_provider_up", dimensions: [("provider", provider.name)]).record(result.healthy ? 1 : 0)
    }
}

/// Probes every provider now and then every ``ProviderProbes/interval``.
struct ProviderProber: Service {
    let ai: AIGateway
    let readiness: Readiness

    func run() async throws {
        guard await readiness.waitUntilMigrated() else { return }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await withTaskGroup(of: Void.self) { group in
                    for provider in ai.providers { group.addTask { await ai.probes.probe(provider, client: ai.client) } }
                }
                try? await Task.sleep(for: ProviderProbes.interval)
            }
        }
    }
}
