import AsyncHTTPClient
import Foundation
import KeelCore
import KeelServer
import Logging
import Metrics
import NIOCore
import Synchronization

/// The AI gateway of one process: the catalog in force (providers with their keys, models), the state of
/// each deployment (requests in flight, cooldown after failures) and the client that calls upstreams.
public final class AIGateway: Sendable {
    let catalog: CatalogStore
    let usage: UsageLog
    let ledger: SpendLedger
    let minutes: MinuteLimits
    let logger = Logger(label: "keel.ai")
    private let snapshot = Mutex(Snapshot())
    private let deployments = Mutex<[String: DeploymentState]>([:])
    private let upstreams: UpstreamClient

    struct Snapshot {
        var revision = -1
        var providers: [String: AIProvider] = [:]
        var models: [String: AIModel] = [:]
        var policies: [String: KeyPolicy] = [:]
    }

    struct DeploymentState {
        var inFlight = 0
        var coolingUntil: ContinuousClock.Instant?
        var picked = 0
        var successes = 0
        var failures = 0
        var lastFailure: (at: Date, reason: String)?
    }

    /// How long a deployment is left alone after a failure (429, 5xx, timeout, no connection).
    static let cooldown = Duration.seconds(10)

    /// Spans are exported: the HTTP client then makes one per upstream call.
    let tracing: Bool

    init(catalog: CatalogStore, usage: UsageLog, tracing: Bool) {
        self.tracing = tracing
        self.catalog = catalog
        self.usage = usage
        ledger = SpendLedger(store: catalog.store, clock: catalog.clock)
        minutes = MinuteLimits(store: catalog.store, clock: catalog.clock)
        upstreams = UpstreamClient(connectTimeout: .seconds(10), connectionsPerHost: 256, http1Only: false, tracing: tracing)
    }

    var client: HTTPClient { upstreams.client }

    func shutdown() async {
        await upstreams.shutdown()
    }

    var models: [String: AIModel] { snapshot.withLock { $0.models } }

    func provider(named name: String) -> AIProvider? { snapshot.withLock { $0.providers[name] } }

    var providers: [AIProvider] { snapshot.withLock { Array($0.providers.values) } }

    let probes = ProviderProbes()
    let cache = ResponseCache()

    /// Probes a provider that was just added or changed, without waiting for the next round.
    func probeSoon(_ name: String) {
        guard let provider = provider(named: name) else { return }
        Task { await probes.probe(provider, client: client) }
    }

    func policy(for credentialID: String) -> KeyPolicy? { snapshot.withLock { $0.policies[credentialID] } }

    /// Loads providers and models when the store's revision moved (or always, with `force`).
    func reload(force: Bool) async throws {
        let revision = try await catalog.revision()
        guard force || snapshot.withLock({ $0.revision != revision }) else { return }
        let providers = try await catalog.providers()
        let models = try await catalog.models().map(\.model)
        let policies = try await catalog.policies()
        snapshot.withLock {
            $0 = Snapshot(revision: revision, providers: Dictionary(uniqueKeysWithValues: providers.map { ($0.name, $0) }),
                          models: Dictionary(uniqueKeysWithValues: models.map { ($0.name, $0) }), policies: policies)
        }
    }

    /// The deployments of `model` in the order to try them: by priority number, within it by the
    /// model's strategy; deployments cooling down after a failure go last.
    func plan(for model: AIModel, now: ContinuousClock.Instant = .now) -> [AIModel.Deployment] {
        deployments.withLock { states in
            let groups = Dictionary(grouping: model.deployments, by: \.priority).sorted { $0.key < $1.key }.map(\.value)
            var ordered: [AIModel.Deployment] = []
            for group in groups {
                switch model.strategy {
                case .priority:
                    ordered += group
                case .weighted:
                    var remaining = group
                    while !remaining.isEmpty {
                        var draw = Int.random(in: 0..<remaining.reduce(0) { $0 + $1.weight })
                        let index = remaining.firstIndex { draw -= $0.weight; return draw < 0 }!
                        ordered.append(remaining.remove(at: index))
                    }
                case .leastBusy:
                    ordered += group.sorted { lhs, rhs in
                        let (left, right) = (states[Self.key(lhs)] ?? .init(), states[Self.key(rhs)] ?? .init())
                        let leftLoad = (left.inFlight + 1) * rhs.weight, rightLoad = (right.inFlight + 1) * lhs.weight
                        return leftLoad != rightLoad ? leftLoad < rightLoad : left.picked < right.picked
                    }
                }
            }
            let cooling = Set(ordered.map(Self.key).filter { (states[$0]?.coolingUntil).map { $0 > now } ?? false })
            return ordered.filter { !cooling.contains(Self.key($0)) } + ordered.filter { cooling.contains(Self.key($0)) }
        }
    }

    func started(_ deployment: AIModel.Deployment) {
        deployments.withLock {
            $0[Self.key(deployment), default: .init()].inFlight += 1
            $0[Self.key(deployment), default: .init()].picked &+= 1
        }
    }

    /// - Parameter failure: why the deployment failed (429, 5xx, timeout, no connection); `nil` when it answered.
    func finished(_ deployment: AIModel.Deployment, failure: String?) {
        deployments.withLock {
            $0[Self.key(deployment), default: .init()].inFlight -= 1
            if let failure {
                $0[Self.key(deployment), default: .init()].coolingUntil = .now + Self.cooldown
                $0[Self.key(deployment), default: .init()].failures += 1
                $0[Self.key(deployment), default: .init()].lastFailure = (Date(), failure)
            } else {
                $0[Self.key(deployment), default: .init()].successes += 1
            }
        }
        if let failure {
            Counter(label: "keel_ai_upstream_errors_total", dimensions: [("provider", deployment.provider), ("deployment", deployment.model)]).increment()
            logger.warning("AI deployment failed; cooling down", metadata: [
                "provider": .string(deployment.provider), "deployment": .string(deployment.model), "reason": .string(failure),
            ])
        }
    }

    /// Each deployment of `model` as this process sees it: requests in flight, answers and failures so far,
    /// the last failure and whether it is cooling down.
    func status(of model: AIModel, now: ContinuousClock.Instant = .now) -> [JSONValue] {
        deployments.withLock { states in
            model.deployments.map { deployment in
                let state = states[Self.key(deployment)] ?? .init()
                var status: [String: JSONValue] = [
                    "provider": .string(deployment.provider), "model": .string(deployment.model),
                    "in_flight": .number(Double(state.inFlight)), "successes": .number(Double(state.successes)),
                    "failures": .number(Double(state.failures)),
                    "cooling_down": .bool(state.coolingUntil.map { $0 > now } ?? false),
                ]
                if let last = state.lastFailure {
                    status["last_failure"] = .object(["at": .string(Timestamp.format(last.at)), "reason": .string(last.reason)])
                }
                return .object(status)
            }
        }
    }

    static func key(_ deployment: AIModel.Deployment) -> String { deployment.provider + "|" + deployment.model }
}
