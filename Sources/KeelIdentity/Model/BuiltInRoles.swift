import KeelServer

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
