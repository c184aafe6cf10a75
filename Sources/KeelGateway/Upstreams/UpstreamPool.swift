import Foundation
import Metrics
import Synchronization

/// The instances one route balances across, with what the gateway knows of each: requests in flight,
/// health from active checks, and its circuit breaker. Picking an instance and reporting how the
/// request went are the only two operations on the hot path; both take one short lock.
final class UpstreamPool: Sendable {
    struct Instance: Sendable {
        let url: UpstreamURL
        let label: String
        let weight: Int
    }

    enum Outcome { case success, failure }

    let route: String
    let instances: [Instance]
    let balance: GatewayRoute.Balance
    let breakerPolicy: GatewayRoute.CircuitBreakerPolicy
    private let state: Mutex<[InstanceState]>
    private let gauges: [(breaker: Gauge, healthy: Gauge, outstanding: Gauge)]

    /// - Parameter previous: the pool this one replaces (routes were reloaded); instances at the same
    ///   URL keep their health, breaker and in-flight count.
    init(route: String, upstreams: [GatewayRoute.Upstream], balance: GatewayRoute.Balance,
         breaker: GatewayRoute.CircuitBreakerPolicy, previous: UpstreamPool? = nil) {
        self.route = route
        self.balance = balance
        self.breakerPolicy = breaker
        instances = upstreams.compactMap { upstream in
            UpstreamURL(upstream.url).map { Instance(url: $0, label: upstream.url, weight: upstream.weight) }
        }
        let inherited = previous?.state.withLock { states in
            Dictionary(zip(previous!.instances.map(\.label), states), uniquingKeysWith: { first, _ in first })
        } ?? [:]
        state = Mutex(instances.map { inherited[$0.label] ?? InstanceState() })
        gauges = instances.map { instance in
            let dimensions = [("route", route), ("upstream", instance.label)]
            return (Gauge(label: "keel_gateway_upstream_breaker_state", dimensions: dimensions),
                    Gauge(label: "keel_gateway_upstream_healthy", dimensions: dimensions),
                    Gauge(label: "keel_gateway_upstream_outstanding_requests", dimensions: dimensions))
        }
        publishGauges()
    }

    /// An instance for the next attempt, counted as in flight until ``finish(_:outcome:)``; `nil` when
    /// every instance not yet tried is down, drained (weight 0) or has an open breaker.
    func pick(excluding tried: Set<Int> = [], stickyKey: String? = nil, now: ContinuousClock.Instant = .now) -> Int? {
        let policy = breakerPolicy
        let chosen: Int? = state.withLock { states in
            var candidates: [Int] = []
            for index in states.indices where !tried.contains(index) && instances[index].weight > 0 && states[index].healthy
                && states[index].breaker.admits(now: now) {
                candidates.append(index)
            }
            guard !candidates.isEmpty else { return nil }
            let index: Int
            if let stickyKey {
                index = candidates.max { Self.stickyScore(stickyKey, instances[$0]) < Self.stickyScore(stickyKey, instances[$1]) }!
            } else {
                switch balance {
                case .roundRobin:
                    // Smooth weighted round-robin (as nginx): every candidate gains its weight, the richest
                    // is chosen and pays the total back, so 90/10 interleaves instead of bursting.
                    let total = candidates.reduce(0) { $0 + instances[$1].weight }
                    for candidate in candidates { states[candidate].currentWeight += instances[candidate].weight }
                    index = candidates.max { states[$0].currentWeight < states[$1].currentWeight }!
                    states[index].currentWeight -= total
                case .leastOutstanding:
                    index = candidates.min { lhs, rhs in
                        let left = (states[lhs].outstanding + 1) * instances[rhs].weight
                        let right = (states[rhs].outstanding + 1) * instances[lhs].weight
                        return left != right ? left < right : states[lhs].picked < states[rhs].picked
                    }!
                }
            }
            states[index].outstanding += 1
            states[index].picked &+= 1
            states[index].breaker.admitted(now: now, policy: policy)
            return index
        }
        if let chosen { publishGauges(only: chosen) }
        return chosen
    }

    func finish(_ index: Int, outcome: Outcome, now: ContinuousClock.Instant = .now) {
        let policy = breakerPolicy
        state.withLock { states in
            states[index].outstanding -= 1
            states[index].breaker.record(outcome == .success, now: now, policy: policy)
        }
        publishGauges(only: index)
    }

    /// An active health check's result; `healthy_threshold` passes in a row bring an instance back,
    /// `unhealthy_threshold` failures in a row take it out.
    func recordHealthCheck(_ index: Int, passed: Bool, policy: GatewayRoute.HealthCheck) {
        state.withLock { states in
            if passed {
                states[index].healthStreak = max(1, states[index].healthStreak + 1)
                if states[index].healthStreak >= policy.healthyThreshold { states[index].healthy = true }
            } else {
                states[index].healthStreak = min(-1, states[index].healthStreak - 1)
                if -states[index].healthStreak >= policy.unhealthyThreshold { states[index].healthy = false }
            }
        }
        publishGauges(only: index)
    }

    /// Each instance as the admin API shows it.
    func status(now: ContinuousClock.Instant = .now) -> [UpstreamStatus] {
        state.withLock { states in
            zip(instances, states).map { instance, state in
                UpstreamStatus(url: instance.label, weight: instance.weight, healthy: state.healthy,
                               breaker: state.breaker.phaseName(now: now), outstanding: state.outstanding)
            }
        }
    }

    private func publishGauges(only index: Int? = nil) {
        let now = ContinuousClock.now
        let values = state.withLock { states in states.map { ($0.breaker.phaseCode(now: now), $0.healthy, $0.outstanding) } }
        for (position, value) in values.enumerated() where index == nil || index == position {
            gauges[position].breaker.record(value.0)
            gauges[position].healthy.record(value.1 ? 1 : 0)
            gauges[position].outstanding.record(value.2)
        }
    }

    /// Weighted rendezvous hashing: a key keeps its instance while that instance stays up, and only the
    /// keys of an instance that goes away move.
    static func stickyScore(_ key: String, _ instance: Instance) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash = (hash ^ 0xff) &* 0x100_0000_01b3
        for byte in instance.label.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let unit = (Double(hash >> 11) + 0.5) / Double(1 << 53)
        return Double(instance.weight) / -log(unit)
    }
}

/// An upstream instance in `GET /api/v1/gateway/routes/{name}/upstreams`.
public struct UpstreamStatus: Codable, Sendable, Equatable {
    public var url: String
    public var weight: Int
    public var healthy: Bool
    /// `closed`, `open` or `half_open`.
    public var breaker: String
    public var outstanding: Int
}

struct InstanceState {
    var outstanding = 0
    var picked = 0
    var currentWeight = 0
    var healthy = true
    /// Consecutive health-check passes (positive) or failures (negative).
    var healthStreak = 0
    var breaker = CircuitBreaker()
}

/// Closed: requests flow and failures are counted, in a row and over a sliding window. Open: no
/// requests until `open_seconds` pass. Half-open: one probe request; its success closes the breaker,
/// its failure opens it again.
struct CircuitBreaker {
    enum Phase: Equatable {
        case closed
        case open(until: ContinuousClock.Instant)
        case halfOpen(probing: Bool)
    }

    private(set) var phase = Phase.closed
    private var consecutiveFailures = 0
    /// Ten slots over the window: requests and failures per slot, keyed by the slot's number.
    private var slots: [(number: Int64, requests: Int, failures: Int)] = []

    func admits(now: ContinuousClock.Instant) -> Bool {
        switch phase {
        case .closed: true
        case .open(let until): now >= until
        case .halfOpen(let probing): !probing
        }
    }

    mutating func admitted(now: ContinuousClock.Instant, policy: GatewayRoute.CircuitBreakerPolicy) {
        switch phase {
        case .open(let until) where now >= until: phase = .halfOpen(probing: true)
        case .halfOpen: phase = .halfOpen(probing: true)
        default: break
        }
    }

    mutating func record(_ succeeded: Bool, now: ContinuousClock.Instant, policy: GatewayRoute.CircuitBreakerPolicy) {
        if case .halfOpen = phase {
            if succeeded { reset() } else { trip(now: now, policy: policy) }
            return
        }
        guard case .closed = phase else { return }
        consecutiveFailures = succeeded ? 0 : consecutiveFailures + 1
        let slotLength = Duration.seconds(policy.windowSeconds / 10)
        let number = Int64((now - Self.epoch) / slotLength)
        slots.removeAll { $0.number <= number - 10 }
        if let last = slots.indices.last, slots[last].number == number {
            slots[last].requests += 1
            slots[last].failures += succeeded ? 0 : 1
        } else {
            slots.append((number, 1, succeeded ? 0 : 1))
        }
        let requests = slots.reduce(0) { $0 + $1.requests }
        let failures = slots.reduce(0) { $0 + $1.failures }
        if consecutiveFailures >= policy.consecutiveFailures
            || (requests >= policy.minRequests && Double(failures) >= policy.errorRate * Double(requests)) {
            trip(now: now, policy: policy)
        }
    }

    private mutating func trip(now: ContinuousClock.Instant, policy: GatewayRoute.CircuitBreakerPolicy) {
        phase = .open(until: now + .seconds(policy.openSeconds))
        consecutiveFailures = 0
        slots.removeAll()
    }

    private mutating func reset() {
        phase = .closed
        consecutiveFailures = 0
        slots.removeAll()
    }

    func phaseName(now: ContinuousClock.Instant) -> String {
        switch phase {
        case .closed: "closed"
        case .open(let until): now >= until ? "half_open" : "open"
        case .halfOpen: "half_open"
        }
    }

    /// For `keel_gateway_upstream_breaker_state`: 0 closed, 1 open, 2 half-open.
    func phaseCode(now: ContinuousClock.Instant) -> Int {
        switch phaseName(now: now) {
        case "closed": 0
        case "open": 1
        default: 2
        }
    }

    private static let epoch = ContinuousClock.now
}
