import AsyncHTTPClient
import Foundation
import KeelCore
import KeelServer
import Logging
import NIOCore
import NIOPosix
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
    private let clientBox = Mutex<HTTPClient?>(nil)

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
    }

    var client: HTTPClient {
        clientBox.withLock { box in
            if let client = box { return client }
            var configuration = HTTPClient.Configuration(
                redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10)),
                connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256),
                decompression: .disabled)
            configuration.connectionPool.retryConnectionEstablishment = false
            if !tracing { configuration.tracing.tracer = nil }
            let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)
            box = client
            return client
        }
    }

    func shutdown() async {
        let client = clientBox.withLock { box in
            defer { box = nil }
            return box
        }
        try? await client?.shutdown()
    }

    var models: [String: AIModel] { snapshot.withLock { $0.models } }

    func provider(named name: String) -> AIProvider? { snapshot.withLock { $0.providers[name] } }

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

    func finished(_ deployment: AIModel.Deployment, failed: Bool) {
        deployments.withLock {
            $0[Self.key(deployment), default: .init()].inFlight -= 1
            if failed { $0[Self.key(deployment), default: .init()].coolingUntil = .now + Self.cooldown }
        }
    }

    static func key(_ deployment: AIModel.Deployment) -> String { deployment.provider + "|" + deployment.model }
}
