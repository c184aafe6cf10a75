import Foundation
import Hummingbird
import KeelCore

/// The filters and page marker of a list page's query string, and what is wrong with them: values over
/// `maxLength` and unreadable times are refused with a message instead of being sent to the store.
struct ListQuery {
    static let maxLength = 200
    let request: Request
    private(set) var problems: [String] = []

    init(_ request: Request) { self.request = request }

    /// The trimmed value, `nil` when absent, empty or refused.
    mutating func text(_ name: String) -> String? {
        guard let value = request.uri.queryParameters.get(name)?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        guard value.count <= Self.maxLength else {
            problems.append("The \(name) filter is longer than \(Self.maxLength) characters.")
            return nil
        }
        return value
    }

    /// `2026-11-26T10:00` (what a datetime-local input sends, read as UTC) or RFC 3339.
    mutating func time(_ name: String) -> Date? {
        guard let text = text(name) else { return nil }
        if let date = Timestamp.parse(text) ?? Timestamp.parse(text + ":00Z") ?? Timestamp.parse(text + "Z") { return date }
        problems.append("The \(name) time \"\(text)\" is not a time like 2026-11-26T10:00.")
        return nil
    }

    mutating func problem(_ message: String) { problems.append(message) }

    /// The link to the page after `marker`, keeping the filters (and dropping one-time notices); `nil` on the last page.
    func next(after marker: String?) -> String? {
        guard let marker else { return nil }
        let kept = request.uri.queryParameters.filter { !["after", "done", "count"].contains(String($0.key)) }
            .map { "\(Console.queryEscaped(String($0.key)))=\(Console.queryEscaped(String($0.value)))" }
        return request.uri.path + "?" + (kept + ["after=\(Console.queryEscaped(marker))"]).joined(separator: "&")
    }
}
