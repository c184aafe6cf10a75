/// What a configuration value should have been; thrown by the parsers of single keys.
public struct ConfigExpectation: Error, Sendable, Equatable {
    public let expected: String
    public init(_ expected: String) { self.expected = expected }
}

/// Where a configuration value came from.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    case defaultValue
    case file(String)
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: "default"
        case .file(let path): "file \(path)"
        case .environment(let name): "env \(name)"
        case .flag(let name): "flag \(name)"
        }
    }
}

/// One problem with the configuration, naming the key, the offending value and what was expected.
public struct ConfigIssue: Error, Sendable, Equatable, CustomStringConvertible {
    public let key: String
    public let value: String?
    public let source: ConfigSource?
    public let expected: String

    public init(key: String, value: String?, source: ConfigSource?, expected: String) {
        self.key = key
        self.value = value
        self.source = source
        self.expected = expected
    }

    public var description: String {
        var text = key
        if let value { text += " = \"\(value)\"" }
        if let source { text += " (from \(source))" }
        return text + ": expected \(expected)"
    }
}

/// Every problem found while loading the configuration; loading reports them all at once.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public let issues: [ConfigIssue]

    public init(_ issues: [ConfigIssue]) { self.issues = issues }

    public var description: String {
        "invalid configuration:\n" + issues.map { "  \($0)" }.joined(separator: "\n")
    }
}
