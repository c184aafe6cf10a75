/// Whoever made a request, as established by the identity module: a user, a service account acting
/// through an API key, or a caller holding a token from a trusted external issuer.
public struct Principal: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        case user
        case serviceAccount = "service_account"
        case apiKey = "api_key"
        case external
    }

    public var kind: Kind
    /// The user or service account id; for external callers `issuer-name:sub`.
    public var subject: String
    public var name: String
    public var roles: [String]
    public var permissions: Set<String>
    /// The API key id or refresh-token family (session) the request was authenticated with.
    public var credentialID: String?
    /// A role of this user requires a second factor it has not enrolled yet: only routes open to any
    /// authenticated caller (such as enrolment itself) are allowed.
    public var mustEnrollSecondFactor: Bool

    public init(kind: Kind, subject: String, name: String, roles: [String], permissions: Set<String>,
                credentialID: String? = nil, mustEnrollSecondFactor: Bool = false) {
        self.kind = kind
        self.subject = subject
        self.name = name
        self.roles = roles
        self.permissions = permissions
        self.credentialID = credentialID
        self.mustEnrollSecondFactor = mustEnrollSecondFactor
    }

    public func has(_ permission: String) -> Bool { permissions.contains(permission) }
}
