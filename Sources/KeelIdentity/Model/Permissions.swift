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
}

/// The four roles every Keel store starts with. They cannot be changed or deleted, so what they mean
/// stays the same across installations; custom roles cover anything else.
public enum BuiltInRoles {
    public static let admin = "admin"
    public static let operator_ = "operator"
    public static let developer = "developer"
    public static let viewer = "viewer"

    public static let definitions: [(name: String, description: String, permissions: Set<String>)] = [
        (admin, "Everything, including users, roles and keys.", Permissions.all),
        (operator_, "Runs the platform: jobs, gateway, AI configuration; reads users and the audit log.", [
            "users:read", "roles:read", "apikeys:read", "apikeys:write", "audit:read", "nodes:read",
            "jobs:read", "jobs:write", "gateway:read", "gateway:admin", "gateway:register", "ai:read", "ai:admin", "ai:use",
        ]),
        (developer, "Builds on the platform: enqueues jobs, calls AI, owns API keys.", [
            "roles:read", "apikeys:read", "apikeys:write", "nodes:read",
            "jobs:read", "jobs:write", "gateway:read", "ai:read", "ai:use",
        ]),
        (viewer, "Reads dashboards and lists, changes nothing.", [
            "roles:read", "nodes:read", "jobs:read", "gateway:read", "ai:read",
        ]),
    ]

    public static func isBuiltIn(_ name: String) -> Bool { definitions.contains { $0.name == name } }
}
