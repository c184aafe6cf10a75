/// The SQL flavours Keel speaks.
public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres
}

/// A parameterized statement. Interpolated values become bind parameters, never SQL text:
///
///     let query: SQLQuery = "SELECT * FROM keel_nodes WHERE id = \(id)"
///
/// renders as `... id = $1` for PostgreSQL and `... id = ?1` for SQLite, with `id` bound separately.
public struct SQLQuery: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    enum Part: Sendable {
        case sql(String)
        case bind(Int)
    }

    var parts: [Part]
    public private(set) var binds: [SQLValue]
    /// Each bind's type, `NULL`s included where the interpolated Swift type tells it; a prepared statement declares them.
    public private(set) var kinds: [SQLKind?]

    public init(stringLiteral value: String) {
        self.parts = [.sql(value)]
        self.binds = []
        self.kinds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.parts = stringInterpolation.parts
        self.binds = stringInterpolation.binds
        self.kinds = stringInterpolation.kinds
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var parts: [Part] = []
        var binds: [SQLValue] = []
        var kinds: [SQLKind?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {}

        public mutating func appendLiteral(_ literal: String) {
            parts.append(.sql(literal))
        }

        /// SQL text from a literal in the source (a column list, say); never from input, which the
        /// `StaticString` type guarantees.
        public mutating func appendInterpolation(unsafeRaw text: StaticString) {
            parts.append(.sql(text.description))
        }

        public mutating func appendInterpolation<Value: SQLBindable>(_ value: Value) {
            bind(value.sqlValue, kind: Value.sqlKind)
        }

        /// `nil` binds SQL `NULL`.
        public mutating func appendInterpolation<Value: SQLBindable>(_ value: Value?) {
            bind(value.sqlValue, kind: Value.sqlKind)
        }

        private mutating func bind(_ value: SQLValue, kind: SQLKind?) {
            binds.append(value)
            kinds.append(value.kind ?? kind)
            parts.append(.bind(binds.count))
        }
    }

    /// The statement text with placeholders for `dialect`.
    public func sql(for dialect: SQLDialect) -> String {
        var text = ""
        for part in parts {
            switch part {
            case .sql(let literal): text += literal
            case .bind(let index): text += (dialect == .postgres ? "$" : "?") + String(index)
            }
        }
        return text
    }

    /// Appends another query, renumbering its parameters; for building filters piece by piece.
    public mutating func append(_ other: SQLQuery) {
        let offset = binds.count
        for part in other.parts {
            switch part {
            case .sql(let literal): parts.append(.sql(literal))
            case .bind(let index): parts.append(.bind(index + offset))
            }
        }
        binds += other.binds
        kinds += other.kinds
    }

    public var description: String { sql(for: .postgres) }
}

extension String {
    /// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
    public var likeEscaped: String {
        replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_")
    }
}
