/// Every permission Keel knows. Routes name one of these; roles and API keys hold sets of them.
public enum Permissions {
    public static let catalog: [(name: String, summary: String)] = [
        ("users:read", "list and view users and service accounts"),
        ("users:write", "create, change, disable and delete users and service accounts; manage any API key"),
        ("roles:read", "list roles and their permissions"),
        ("roles:write", "create, change and delete custom roles"),
        ("apikeys:read", "list one's own API keys"),
        ("apikeys:write", "create and revoke one's own API keys"),
        ("audit:read", "read the audit log"),
        ("identity:admin", "manage signing keys and trusted external issuers"),
        ("nodes:read", "see the processes of the cluster"),
        ("jobs:read", "see queues, jobs and schedules"),
        ("jobs:write", "enqueue, retry, cancel and purge jobs; manage queues and schedules"),
        ("gateway:read", "see gateway routes and upstream health"),
        ("gateway:admin", "manage gateway routes and upstreams"),
        ("gateway:register", "register service instances with the gateway (what a service's own key needs)"),
        ("ai:use", "call the AI gateway"),
        ("ai:read", "see AI models, providers and usage"),
        ("ai:admin", "manage AI providers, models, limits and budgets"),
    ]

    public static let all: Set<String> = Set(catalog.map(\.name))

    public static func isKnown(_ permission: String) -> Bool { all.contains(permission) }

    /// The namespaces of Keel's own permissions (`users`, `jobs`, `gateway`, ...).
    public static let keelNamespaces: Set<String> = Set(catalog.map { String($0.name.prefix { $0 != ":" }) })

    /// An application's own permission, such as `orders:read`: roles may hold it and gateway routes may
    /// require it. Lower-case `namespace:action` (letters, digits, `.`, `_`, `-`; `*` in the action), at
    /// most 100 characters, outside Keel's namespaces.
    public static func isApplicationPermission(_ permission: String) -> Bool {
        let parts = permission.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, permission.utf8.count <= 100, !keelNamespaces.contains(String(parts[0])) else { return false }
        func valid(_ part: Substring, star: Bool) -> Bool {
            !part.isEmpty && part.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) || (star && $0 == "*")
            }
        }
        return valid(parts[0], star: false) && valid(parts[1], star: true)
    }

    /// What a role, API key or route may name: one of Keel's permissions or an application permission.
    public static func isGrantable(_ permission: String) -> Bool { isKnown(permission) || isApplicationPermission(permission) }
}

