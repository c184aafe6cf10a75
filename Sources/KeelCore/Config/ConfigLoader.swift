import Foundation
import Yams

/// The effective configuration together with where each value came from, for `keel config check`.
public struct LoadedConfig: Sendable {
    public struct Entry: Sendable, Equatable {
        public let key: String
        /// The value as shown to people: secrets and passwords are masked.
        public let display: String
        public let source: ConfigSource
    }

    public let config: KeelConfig
    public let entries: [Entry]
    public let configFile: String?
}

/// Builds ``KeelConfig`` from defaults, a YAML config file, `KEEL_*` environment variables and flags,
/// each overriding the one before, and reports every bad value with its key, value, source and expectation.
public enum ConfigLoader {
    /// The file read when neither `--config` nor `KEEL_CONFIG` names one and it exists.
    public static let defaultFileName = "keel.yaml"

    /// - Parameters:
    ///   - environment: the process environment; only `KEEL_*` names are read.
    ///   - flags: raw flag values by key name (`["port": "9090"]`).
    ///   - configFile: a path given by `--config`, which must exist.
    public static func load(
        environment: [String: String],
        flags: [String: String] = [:],
        configFile: String? = nil
    ) throws(ConfigError) -> LoadedConfig {
        var issues: [ConfigIssue] = []
        var raw: [String: (text: String, source: ConfigSource)] = [:]

        let explicitFile = configFile ?? environment["KEEL_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let filePath = explicitFile ?? (FileManager.default.fileExists(atPath: defaultFileName) ? defaultFileName : nil)
        if let filePath {
            do {
                for (key, text) in try readFile(filePath) { raw[key] = (text, .file(filePath)) }
            } catch {
                issues.append(error)
            }
        }
        for key in ConfigKey.all {
            if let text = environment[key.environmentName] { raw[key.name] = (text, .environment(key.environmentName)) }
        }
        for (name, text) in flags {
            guard let key = ConfigKey.named(name) else {
                issues.append(ConfigIssue(key: name, value: nil, source: nil, expected: unknownKeyExpectation(name)))
                continue
            }
            raw[name] = (text, .flag(key.flagName))
        }

        return try resolve(raw, issues: issues, configFile: filePath)
    }

    /// Validates a configuration document on its own (defaults plus `document`), as a config file
    /// would be read; for checking a configuration before it is deployed.
    public static func validate(document: [String: String], source: String) throws(ConfigError) -> LoadedConfig {
        var raw: [String: (text: String, source: ConfigSource)] = [:]
        var issues: [ConfigIssue] = []
        for (name, text) in document {
            guard ConfigKey.named(name) != nil else {
                issues.append(ConfigIssue(key: name, value: nil, source: .file(source), expected: unknownKeyExpectation(name)))
                continue
            }
            raw[name] = (text, .file(source))
        }
        return try resolve(raw, issues: issues, configFile: nil)
    }

    private static func resolve(
        _ raw: [String: (text: String, source: ConfigSource)], issues: [ConfigIssue], configFile: String?
    ) throws(ConfigError) -> LoadedConfig {
        var issues = issues
        var config = KeelConfig()
        var sources: [String: ConfigSource] = [:]
        for key in ConfigKey.all {
            guard let (text, source) = raw[key.name] else { continue }
            do {
                try key.apply(text, &config)
                sources[key.name] = source
            } catch {
                issues.append(ConfigIssue(key: key.name, value: key.isSecret ? "****" : text, source: source, expected: error.expected))
            }
        }
        if raw["database_url"] == nil {
            // The embedded store follows data_dir unless a database is named.
            config.database = .sqlite(path: (config.dataDir as NSString).appendingPathComponent("keel.db"))
        }
        guard issues.isEmpty else { throw ConfigError(issues.sorted { $0.key < $1.key }) }

        let entries = ConfigKey.all.map {
            LoadedConfig.Entry(key: $0.name, display: $0.display(config), source: sources[$0.name] ?? .defaultValue)
        }
        return LoadedConfig(config: config, entries: entries, configFile: configFile)
    }

    /// Reads a YAML mapping; nested mappings join their keys with `_` (`database: {url: x}` is `database_url`),
    /// sequences become comma-separated lists. Unknown keys are errors, so typos do not pass silently.
    static func readFile(_ path: String) throws(ConfigIssue) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigIssue(key: "config file", value: path, source: nil, expected: "a readable UTF-8 YAML file")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigIssue(key: "config file", value: path, source: nil, expected: "valid YAML (\(error))")
        }
        guard let root else { return [:] }
        guard case .mapping(let mapping) = root else {
            throw ConfigIssue(key: "config file", value: path, source: nil, expected: "a YAML mapping of keys to values")
        }
        var values: [String: String] = [:]
        try flatten(mapping, prefix: "", path: path, into: &values)
        return values
    }

    private static func flatten(_ mapping: Node.Mapping, prefix: String, path: String, into values: inout [String: String]) throws(ConfigIssue) {
        for (keyNode, valueNode) in mapping {
            let name = prefix + (keyNode.string ?? "")
            // Structured keys keep their tree, as JSON text (the form their environment variable takes too).
            if ConfigKey.named(name)?.isStructured == true {
                values[name] = jsonText(valueNode)
                continue
            }
            switch valueNode {
            case .mapping(let nested):
                try flatten(nested, prefix: name + "_", path: path, into: &values)
                continue
            case .scalar(let scalar):
                values[name] = scalar.string
            case .sequence(let sequence):
                values[name] = sequence.compactMap(\.string).joined(separator: ",")
            case .alias:
                throw ConfigIssue(key: name, value: nil, source: .file(path), expected: "a plain value (YAML aliases are not supported)")
            }
            guard ConfigKey.named(name) != nil else {
                throw ConfigIssue(key: name, value: nil, source: .file(path), expected: unknownKeyExpectation(name))
            }
        }
    }

    /// A YAML subtree as JSON text: plain scalars that read as numbers, booleans or null become those, all else strings.
    static func jsonText(_ node: Node) -> String {
        func value(_ node: Node) -> Any {
            switch node {
            case .mapping(let mapping): Dictionary(mapping.map { ($0.key.string ?? "", value($0.value)) }, uniquingKeysWith: { $1 })
            case .sequence(let sequence): sequence.map(value)
            case .scalar(let scalar):
                scalar.style != .plain ? scalar.string
                    : node.null.map { $0 as Any } ?? node.bool.map { $0 as Any } ?? node.int.map { $0 as Any } ?? node.float.map { $0 as Any } ?? scalar.string
            case .alias: NSNull()
            }
        }
        let data = (try? JSONSerialization.data(withJSONObject: value(node), options: [.sortedKeys, .fragmentsAllowed])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    private static func unknownKeyExpectation(_ name: String) -> String {
        "a known configuration key" + (closestKey(to: name).map { " (did you mean \($0)?)" } ?? "")
    }

    private static func closestKey(to name: String) -> String? {
        let scored = ConfigKey.all.map { ($0.name, editDistance($0.name, name)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, name.count / 3) else { return nil }
        return best
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
