import Foundation
import Hummingbird
import KeelServer

/// An `application/x-www-form-urlencoded` body, as the console's forms post it.
struct Form: Sendable {
    static let maxBytes = 64 * 1024
    private let fields: [String: [String]]

    init(fields: [String: [String]]) { self.fields = fields }

    init(encoded: String) {
        var fields: [String: [String]] = [:]
        for pair in encoded.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ part: Substring) -> String {
                part.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            fields[decode(parts[0]), default: []].append(parts.count > 1 ? decode(parts[1]) : "")
        }
        self.fields = fields
    }

    static func read(_ request: Request) async throws -> Form {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: maxBytes)
        } catch {
            throw ConsoleError(status: .contentTooLarge, message: "The form is larger than \(maxBytes / 1024) KiB.")
        }
        return Form(encoded: String(buffer: body))
    }

    /// The trimmed value, `nil` when absent or empty.
    subscript(_ name: String) -> String? {
        guard let value = fields[name]?.first?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else { return nil }
        return value
    }

    func all(_ name: String) -> [String] { fields[name] ?? [] }
}

/// What the console tells the user when a request cannot be served; rendered as a page, never a stack trace.
struct ConsoleError: Error {
    let status: HTTPResponse.Status
    let message: String
}
