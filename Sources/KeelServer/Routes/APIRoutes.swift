import Foundation
import Hummingbird
import KeelCore
import KeelStore

/// The `/api/v1` routes of the api role.
struct APIRoutes {
    let nodes: NodeRegistry
    let limits: RequestLimits

    func register(on routes: inout RouteRegistrar) {
        routes.add(.get, "/api/v1/nodes", access: .permission("nodes:read")) { request, _ in
            let page = try Pagination(request.uri.queryParameters, idPrefix: "node")
            return try .json(try await nodes.list(limit: page.limit, after: page.after))
        }
        routes.add(.get, "/api/v1/nodes/{id}", access: .permission("nodes:read")) { _, context in
            let id = try context.parameters.require("id")
            guard let node = try await nodes.find(id: id) else { throw Problem.notFound("No node has the id \(id).") }
            return try .json(node)
        }
        routes.add(.post, "/api/v1/config/validate", access: .public) { request, _ in
            let document = try await request.decodeJSON([String: JSONValue].self, limits: limits)
            let values = try Self.flatten(document)
            do {
                let loaded = try ConfigLoader.validate(document: values, source: "request body")
                return try .json(ConfigReport(valid: true, config: loaded.entries.map {
                    ConfigReport.Entry(key: $0.key, value: $0.display, source: $0.source.description)
                }))
            } catch let error as ConfigError {
                throw Problem.validation("The configuration is invalid.", errors: error.issues.map {
                    FieldError(field: $0.key, message: "expected \($0.expected)")
                })
            }
        }
    }

    struct ConfigReport: Encodable {
        struct Entry: Encodable {
            let key: String
            let value: String
            let source: String
        }
        let valid: Bool
        let config: [Entry]
    }

    /// Nested objects join their keys with `_` as in the config file; lists become comma-separated.
    static func flatten(_ document: [String: JSONValue], prefix: String = "") throws(Problem) -> [String: String] {
        var values: [String: String] = [:]
        for (key, value) in document {
            let name = prefix + key
            switch value {
            case .object(let nested): values.merge(try flatten(nested, prefix: name + "_")) { _, new in new }
            case .string(let text): values[name] = text
            case .bool(let flag): values[name] = String(flag)
            case .number(let number): values[name] = number.rounded() == number ? String(Int64(number)) : String(number)
            case .array(let items):
                values[name] = try items.map { item throws(Problem) -> String in
                    guard case .string(let text) = item else {
                        throw Problem.validation("The configuration is invalid.", errors: [FieldError(field: name, message: "must be a list of strings")])
                    }
                    return text
                }.joined(separator: ",")
            case .null:
                throw Problem.validation("The configuration is invalid.", errors: [FieldError(field: name, message: "must not be null")])
            }
        }
        return values
    }
}
