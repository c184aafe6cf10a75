import Foundation

/// One result row, with values by column name.
public struct SQLRow: Sendable {
    public let columns: [String]
    public let values: [SQLValue]

    public init(columns: [String], values: [SQLValue]) {
        self.columns = columns
        self.values = values
    }

    public subscript(column: String) -> SQLValue? {
        columns.firstIndex(of: column).map { values[$0] }
    }

    private func value(_ column: String) throws(StoreError) -> SQLValue {
        guard let value = self[column] else { throw StoreError.decoding(column: column, reason: "no such column") }
        return value
    }

    public func string(_ column: String) throws(StoreError) -> String {
        guard case .text(let text) = try value(column) else { throw mismatch(column, "text") }
        return text
    }

    public func optionalString(_ column: String) throws(StoreError) -> String? {
        if case .null = try value(column) { return nil }
        return try string(column)
    }

    public func int(_ column: String) throws(StoreError) -> Int {
        switch try value(column) {
        case .int(let value): return Int(value)
        case .bool(let flag): return flag ? 1 : 0
        default: throw mismatch(column, "integer")
        }
    }

    public func optionalInt(_ column: String) throws(StoreError) -> Int? {
        if case .null = try value(column) { return nil }
        return try int(column)
    }

    public func double(_ column: String) throws(StoreError) -> Double {
        switch try value(column) {
        case .double(let value): return value
        case .int(let value): return Double(value)
        default: throw mismatch(column, "number")
        }
    }

    public func bool(_ column: String) throws(StoreError) -> Bool {
        switch try value(column) {
        case .bool(let flag): return flag
        case .int(let value): return value != 0  // SQLite has no boolean type
        default: throw mismatch(column, "boolean")
        }
    }

    public func date(_ column: String) throws(StoreError) -> Date {
        switch try value(column) {
        case .timestamp(let date): return date
        case .int(let micros): return Date(timeIntervalSince1970: Double(micros) / 1_000_000)
        default: throw mismatch(column, "timestamp")
        }
    }

    public func optionalDate(_ column: String) throws(StoreError) -> Date? {
        if case .null = try value(column) { return nil }
        return try date(column)
    }

    public func bytes(_ column: String) throws(StoreError) -> [UInt8] {
        guard case .blob(let bytes) = try value(column) else { throw mismatch(column, "bytes") }
        return bytes
    }

    private func mismatch(_ column: String, _ expected: String) -> StoreError {
        .decoding(column: column, reason: "expected \(expected), found \(self[column].map { "\($0)" } ?? "nothing")")
    }
}
