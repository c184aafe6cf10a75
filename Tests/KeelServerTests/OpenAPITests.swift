import Foundation
import KeelServer
import KeelTestSupport
import Testing

/// The OpenAPI document and the registered routes must describe the same API.
@Suite struct OpenAPITests {
    /// What the document says about one operation's access.
    struct DocumentedAccess: Sendable, Equatable {
        var isPublic: Bool
        var permission: String?
    }

    /// Every route this server registers is documented with its access rule. (The whole document,
    /// modules included, is held to the whole route table in KeelIdentityTests.)
    @Test func documentCoversTheCoreRoutesOfAllRoles() async throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.bytes)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var operations: [String: DocumentedAccess] = [:]
        for (path, methods) in paths {
            for (method, value) in methods where ["get", "put", "post", "patch", "delete"].contains(method) {
                let operation = value as? [String: Any] ?? [:]
                operations["\(method.uppercased()) \(path)"] = DocumentedAccess(
                    isPublic: (operation["security"] as? [Any])?.isEmpty == true,
                    permission: operation["x-keel-permission"] as? String)
            }
        }
        let documented = operations
        try await withLiveServer(.sqlite) { client, server in
            let registered = Set(server.routes.routes.map { "\($0.method.rawValue) \($0.path)" })
            let known = Set(documented.keys)
            #expect(registered.subtracting(known).isEmpty, "routes missing from openapi.json: \(registered.subtracting(known).sorted())")

            // Protected routes name their permission; public ones opt out of the bearer requirement.
            for route in server.routes.routes {
                let access = documented["\(route.method.rawValue) \(route.path)"]
                switch route.access {
                case .public:
                    #expect(access == DocumentedAccess(isPublic: true, permission: nil), "\(route.path)")
                case .authenticated:
                    #expect(access == DocumentedAccess(isPublic: false, permission: nil), "\(route.path)")
                case .permission(let permission):
                    #expect(access == DocumentedAccess(isPublic: false, permission: permission), "\(route.path)")
                }
            }

            let served = try await client.execute(uri: "/api/v1/openapi.json", method: .get)
            #expect(served.status == .ok)
            #expect(Array(served.body.readableBytesView) == OpenAPIDocument.bytes)
        }
    }
}
