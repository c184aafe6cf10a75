import Foundation
import HTTPTypes
import KeelCore
@testable import KeelServer
import KeelTestSupport
import Testing

@Suite struct NodeRegistryTests {
    @Test(arguments: StoreKind.allCases)
    func nodesListThemselvesAndPageByKeyset(kind: StoreKind) async throws {
        try await withLiveServer(kind, authenticator: AllowAllAuthenticator()) { client, server in
            // The heartbeat runs right after migrations; wait for this node's row.
            var listed: [[String: Any]] = []
            for _ in 0..<200 where listed.isEmpty {
                let response = try await client.execute(uri: "/api/v1/nodes", method: .get)
                #expect(response.status == .ok)
                listed = response.json["items"] as? [[String: Any]] ?? []
                if listed.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
            }
            let me = try #require(listed.first)
            #expect(me["id"] as? String == server.nodes.node.id)
            #expect(me["roles"] as? [String] == Role.allCases.map(\.rawValue))
            #expect(me["pid"] as? Int == Int(ProcessInfo.processInfo.processIdentifier))

            let one = try await client.execute(uri: "/api/v1/nodes/\(server.nodes.node.id)", method: .get)
            #expect(one.status == .ok)
            #expect(one.json["version"] as? String == KeelVersion.current)

            let unknown = try await client.execute(uri: "/api/v1/nodes/\(KeelID.make(prefix: "node"))", method: .get)
            #expect(unknown.status == .notFound)
            #expect(unknown.headers[.contentType] == "application/problem+json")

            for query in ["limit=0", "limit=201", "limit=ten", "after=robert%27)%3B%20DROP%20TABLE%20keel_nodes%3B--"] {
                let bad = try await client.execute(uri: "/api/v1/nodes?\(query)", method: .get)
                #expect(bad.status == .badRequest, "\(query)")
                #expect(bad.json["type"] as? String == "https://keel.dev/problems/invalid-parameter")
            }

            // Other processes join the same store; paging two at a time visits each node exactly once.
            let others = try await (0..<4).asyncMap { index in
                let peer = NodeRegistry(store: server.store, readiness: server.readiness, roles: [.worker],
                                        address: "10.0.0.\(index):8080", clock: SystemClock(), logger: quietLogger)
                try await peer.heartbeat()
                return peer.node.id
            }
            // One that last reported a minute ago is gone and not listed.
            let stale = NodeRegistry(store: server.store, readiness: server.readiness, roles: [.worker], address: "10.0.0.9:8080",
                                     clock: ManualClock(Date().addingTimeInterval(-60)), logger: quietLogger)
            try await stale.heartbeat()
            var seen: [String] = []
            var after: String?
            repeat {
                let query = "limit=2" + (after.map { "&after=\($0)" } ?? "")
                let page = try await client.execute(uri: "/api/v1/nodes?\(query)", method: .get)
                let items = page.json["items"] as? [[String: Any]] ?? []
                #expect(items.count <= 2)
                seen += items.compactMap { $0["id"] as? String }
                after = page.json["next_after"] as? String
            } while after != nil
            #expect(seen == ([server.nodes.node.id] + others).sorted())
        }
    }
}
