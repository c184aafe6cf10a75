import Foundation
import KeelCore
import KeelStore
import Logging
import ServiceLifecycle

/// A Keel process as seen by the others: which roles it runs, where, and when it last reported.
public struct NodeRecord: Codable, Sendable, Equatable {
    public var id: String
    public var hostname: String
    public var pid: Int
    public var address: String
    public var roles: [String]
    public var version: String
    public var startedAt: Date
    public var heartbeatAt: Date

    enum CodingKeys: String, CodingKey {
        case id, hostname, pid, address, roles, version
        case startedAt = "started_at"
        case heartbeatAt = "heartbeat_at"
    }
}

/// One page of a list, by keyset: pass `next_after` back as `?after=` for the next page.
public struct Page<Item: Codable & Sendable>: Codable, Sendable {
    public var items: [Item]
    public var nextAfter: String?

    public init(items: [Item], nextAfter: String?) {
        self.items = items
        self.nextAfter = nextAfter
    }

    enum CodingKeys: String, CodingKey {
        case items
        case nextAfter = "next_after"
    }
}

/// Every process records itself in `keel_nodes` and refreshes a heartbeat, so the cluster (and the
/// console) can see which roles run where without a leader. Nodes that stop heartbeating drop out
/// of the list and are deleted after an hour.
public final class NodeRegistry: Service {
    public let node: NodeRecord
    let store: any Store
    let readiness: Readiness
    let clock: any KeelClock
    let interval: Duration
    let logger: Logger

    /// A node whose heartbeat is older than this is considered gone.
    public var staleAfter: TimeInterval { 3 * interval.seconds }

    init(store: any Store, readiness: Readiness, roles: Set<Role>, address: String, clock: any KeelClock,
         interval: Duration = .seconds(10), logger: Logger) {
        let now = clock.now()
        self.node = NodeRecord(
            id: KeelID.make(prefix: "node", now: now), hostname: ProcessInfo.processInfo.hostName,
            pid: Int(ProcessInfo.processInfo.processIdentifier), address: address,
            roles: roles.sorted().map(\.rawValue), version: KeelVersion.current, startedAt: now, heartbeatAt: now)
        self.store = store
        self.readiness = readiness
        self.clock = clock
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        // Without a schema there is nothing to do; wait for the stop the failed migration causes.
        guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await self.heartbeat()
                } catch {
                    self.logger.warning("node heartbeat failed", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: self.interval)
            }
        }
        do {
            try await store.execute("DELETE FROM keel_nodes WHERE id = \(node.id)")
        } catch {
            logger.warning("could not deregister node", metadata: ["error": "\(error)"])
        }
    }

    func heartbeat() async throws(StoreError) {
        let now = clock.now()
        try await store.execute("""
            INSERT INTO keel_nodes (id, hostname, pid, address, roles, version, started_at, heartbeat_at)
            VALUES (\(node.id), \(node.hostname), \(node.pid), \(node.address), \(node.roles.joined(separator: ",")), \(node.version), \(node.startedAt), \(now))
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
            """)
        try await store.execute("DELETE FROM keel_nodes WHERE heartbeat_at < \(now.addingTimeInterval(-3600))")
    }

    /// Live nodes in ID (start) order.
    public func list(limit: Int, after: String?) async throws(StoreError) -> Page<NodeRecord> {
        let cutoff = clock.now().addingTimeInterval(-staleAfter)
        var query: SQLQuery = "SELECT * FROM keel_nodes WHERE heartbeat_at >= \(cutoff)"
        if let after { query.append(" AND id > \(after)") }
        query.append(" ORDER BY id LIMIT \(limit + 1)")
        let records = try await store.query(query).map(Self.decode)
        let page = Array(records.prefix(limit))
        return Page(items: page, nextAfter: records.count > limit ? page.last?.id : nil)
    }

    /// Every node that reported in the last hour, stale ones included (the console shows them as such).
    public static func recent(in store: any Store) async throws(StoreError) -> [NodeRecord] {
        try await store.query("SELECT * FROM keel_nodes ORDER BY id").map(decode)
    }

    public func find(id: String) async throws(StoreError) -> NodeRecord? {
        try await store.query("SELECT * FROM keel_nodes WHERE id = \(id)").first.map(Self.decode)
    }

    private static func decode(_ row: SQLRow) throws(StoreError) -> NodeRecord {
        NodeRecord(
            id: try row.string("id"), hostname: try row.string("hostname"), pid: try row.int("pid"),
            address: try row.string("address"), roles: try row.string("roles").split(separator: ",").map(String.init),
            version: try row.string("version"), startedAt: try row.date("started_at"), heartbeatAt: try row.date("heartbeat_at"))
    }
}

extension Duration {
    var seconds: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
