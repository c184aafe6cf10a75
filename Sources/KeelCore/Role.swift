/// A role is one part of the platform that a process can run. `keel up` runs them all;
/// `keel serve --roles ...` runs a subset so that each can scale as its own process or container.
public enum Role: String, CaseIterable, Codable, Sendable, Comparable {
    case api
    case worker
    case scheduler
    case gateway
    case console

    public static func < (lhs: Role, rhs: Role) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}
