import Foundation
import Hummingbird
import KeelCore

/// `?limit=&after=` of list endpoints: `limit` 1–200 (default 50), `after` the last ID of the previous page.
public struct Pagination: Sendable {
    public static let defaultLimit = 50
    public static let maximumLimit = 200

    public let limit: Int
    public let after: String?

    public init(_ query: Parameters, idPrefix: String) throws(Problem) {
        try self.init(query, idPrefixes: [idPrefix])
    }

    /// - Parameter idPrefixes: the id prefixes a list may hold (users lists `usr_` and `svc_`).
    public init(_ query: Parameters, idPrefixes: [String]) throws(Problem) {
        var errors: [FieldError] = []
        if let text = query.get("limit") {
            if let value = Int(text), (1...Self.maximumLimit).contains(value) {
                limit = value
            } else {
                errors.append(FieldError(field: "limit", message: "must be an integer from 1 to \(Self.maximumLimit)"))
                limit = Self.defaultLimit
            }
        } else {
            limit = Self.defaultLimit
        }
        after = query.get("after")
        if let after, !idPrefixes.contains(where: { KeelID.isValid(after, prefix: $0) }) {
            errors.append(FieldError(field: "after", message: "must be an id returned as next_after"))
        }
        guard errors.isEmpty else { throw Problem.invalidParameters(errors) }
    }
}

/// `?since=&until=` of list endpoints: RFC 3339 times, `since` inclusive, `until` exclusive.
public struct TimeRange: Sendable {
    public let since: Date?
    public let until: Date?

    /// Invalid times are added to `errors`, so a route reports them with its other parameter problems.
    public init(_ query: Parameters, errors: inout [FieldError]) {
        var found: [FieldError] = []
        func parse(_ name: String) -> Date? {
            guard let text = query.get(name) else { return nil }
            guard let date = Timestamp.parse(text) else {
                found.append(FieldError(field: name, message: "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"))
                return nil
            }
            return date
        }
        since = parse("since")
        until = parse("until")
        errors += found
    }
}
