import Foundation

/// A value bound into, or read out of, a query. The same set works on SQLite and PostgreSQL.
///
/// Timestamps are `timestamptz` in PostgreSQL and INTEGER microseconds since the epoch in SQLite;
/// ``SQLRow/date(_:)`` reads either.
public enum SQLValue: Sendable, Hashable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case bool(Bool)
    case blob([UInt8])
    case timestamp(Date)

    /// The value's type; `nil` for `NULL`, whose type only the statement (or ``SQLBindable/sqlKind``) knows.
    public var kind: SQLKind? {
        switch self {
        case .null: nil
        case .int: .int
        case .double: .double
        case .text: .text
        case .bool: .bool
        case .blob: .blob
        case .timestamp: .timestamp
        }
    }
}

/// The type of a bound value, known even when the value is `NULL`.
public enum SQLKind: Sendable, Hashable {
    case int, double, text, bool, blob, timestamp
}

/// Types that can be bound as query parameters.
public protocol SQLBindable: Sendable {
    var sqlValue: SQLValue { get }
    /// The type of every value of this Swift type, `NULL` included (`nil` when it varies, as for ``SQLValue``).
    static var sqlKind: SQLKind? { get }
}

extension SQLValue: SQLBindable {
    public var sqlValue: SQLValue { self }
    public static var sqlKind: SQLKind? { nil }
}
extension Int: SQLBindable {
    public var sqlValue: SQLValue { .int(Int64(self)) }
    public static var sqlKind: SQLKind? { .int }
}
extension Int64: SQLBindable {
    public var sqlValue: SQLValue { .int(self) }
    public static var sqlKind: SQLKind? { .int }
}
extension Double: SQLBindable {
    public var sqlValue: SQLValue { .double(self) }
    public static var sqlKind: SQLKind? { .double }
}
extension String: SQLBindable {
    public var sqlValue: SQLValue { .text(self) }
    public static var sqlKind: SQLKind? { .text }
}
extension Bool: SQLBindable {
    public var sqlValue: SQLValue { .bool(self) }
    public static var sqlKind: SQLKind? { .bool }
}
extension Date: SQLBindable {
    public var sqlValue: SQLValue { .timestamp(self) }
    public static var sqlKind: SQLKind? { .timestamp }
}
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
    public static var sqlKind: SQLKind? { Wrapped.sqlKind }
}
