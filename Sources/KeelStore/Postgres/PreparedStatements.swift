import PostgresNIO
import Synchronization

/// The text and parameter types of each ``PreparedStatement``, fixed by its first use. postgres-nio prepares a statement
/// per connection from its type's static `name` and `sql`, so the text must be known to the type.
enum PreparedStatements {
    private struct Text {
        /// Unique in the process, and short: PostgreSQL cuts statement names at 63 bytes, where Swift type names
        /// often differ only later.
        let name: String
        let sql: String
        let types: [PostgresDataType]
    }

    private static let texts = Mutex<[ObjectIdentifier: Text]>([:])

    /// Whether `query` can run as `Statement`: it has the statement's text and a type for every value (its first use
    /// sets both). A query that differs runs unprepared rather than against a plan made for another text.
    static func admit<Statement: PreparedStatement>(_ statement: Statement.Type, _ query: SQLQuery) -> Bool {
        let sql = query.sql(for: .postgres)
        return texts.withLock { texts in
            guard let known = texts[ObjectIdentifier(statement)] else {
                let types = query.kinds.compactMap { $0.map(dataType) }
                guard types.count == query.kinds.count else { return false }
                texts[ObjectIdentifier(statement)] = Text(name: "keel_\(texts.count + 1)", sql: sql, types: types)
                return true
            }
            // A NULL of unknown type fits any parameter; a value must have the type the statement was prepared with.
            return known.sql == sql && zip(query.kinds, known.types).allSatisfy { kind, type in (kind.map(dataType) ?? type) == type }
        }
    }

    static func text<Statement: PreparedStatement>(of statement: Statement.Type) -> (name: String, sql: String, types: [PostgresDataType]) {
        texts.withLock { texts in texts[ObjectIdentifier(statement)].map { ($0.name, $0.sql, $0.types) } ?? ("", "", []) }
    }

    /// The type postgres-nio binds each kind of value as (`PostgresStore.postgresBindings`).
    private static func dataType(_ kind: SQLKind) -> PostgresDataType {
        switch kind {
        case .int: .int8
        case .double: .float8
        case .text: .text
        case .bool: .bool
        case .blob: .bytea
        case .timestamp: .timestamptz
        }
    }
}

/// A ``PreparedStatement`` as postgres-nio runs it, once ``PreparedStatements/admit(_:_:)`` has recorded its text.
struct Prepared<Statement: PreparedStatement>: PostgresPreparedStatement {
    static var name: String { PreparedStatements.text(of: Statement.self).name }
    static var sql: String { PreparedStatements.text(of: Statement.self).sql }
    static var bindingDataTypes: [PostgresDataType] { PreparedStatements.text(of: Statement.self).types }

    let bindings: PostgresBindings

    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}
