import AsyncHTTPClient
import KeelServer
import NIOCore
import Logging
import ServiceLifecycle
import Synchronization

/// Active health checks: `GET health_check.path` on every instance of every route that asks for
/// them, at the route's interval. A 2xx or 3xx answer within the timeout passes.
struct HealthChecker: Service {
    let gateway: Gateway
    let readiness: Readiness
    let logger = Logger(label: "keel.gateway.health")

    func run() async throws {
        guard await readiness.waitUntilMigrated() else { return }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                var due: [String: ContinuousClock.Instant] = [:]
                var running: Set<String> = []
                let finished = Mailbox<String>()
                while !Task.isCancelled {
                    while let key = finished.poll() { running.remove(key) }
                    let now = ContinuousClock.now
                    var current: Set<String> = []
                    for active in gateway.routes.routes {
                        guard let check = active.route.healthCheck else { continue }
                        for pool in [active.pool] + (active.fallbackPool.map { [$0] } ?? []) {
                            for (index, instance) in pool.instances.enumerated() {
                                let key = "\(active.route.name) \(ObjectIdentifier(pool).hashValue) \(instance.label)"
                                current.insert(key)
                                guard !running.contains(key), due[key].map({ $0 <= now }) ?? true else { continue }
                                due[key] = now + .seconds(check.intervalSeconds)
                                running.insert(key)
                                group.addTask {
                                    let passed = await probe(instance.url, path: check.path, timeout: check.timeoutSeconds)
                                    pool.recordHealthCheck(index, passed: passed, policy: check)
                                    finished.push(key)
                                }
                            }
                        }
                    }
                    due = due.filter { current.contains($0.key) }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }

    private func probe(_ url: UpstreamURL, path: String, timeout: Double) async -> Bool {
        var request = HTTPClientRequest(url: url.origin + ActiveRoute.join(url.basePath, path))
        request.headers.add(name: "Host", value: url.hostHeader)
        request.headers.add(name: "User-Agent", value: "keel-gateway-health-check")
        do {
            let response = try await gateway.client.execute(request, deadline: .now() + TimeAmount.nanoseconds(Int64(timeout * 1e9)), logger: nil)
            for try await _ in response.body {}
            return (200..<400).contains(Int(response.status.code))
        } catch {
            return false
        }
    }
}

/// A mailbox the check tasks post to and the loop empties without waiting.
final class Mailbox<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])

    func push(_ item: Element) { items.withLock { $0.append(item) } }

    func poll() -> Element? {
        items.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }
}
