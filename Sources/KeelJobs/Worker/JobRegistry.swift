import Foundation
import KeelCore
import KeelServer

/// What a handler may do while it runs: know which job and attempt it is, and report progress.
public struct JobContext: Sendable {
    public let jobID: String
    public let attempt: Int
    /// The queue the job came from, for Keel's own tasks (pruning works on the store).
    let queue: JobQueue
    let reportProgress: @Sendable (Int, String?) async -> Void

    /// Records progress (0–100) with an optional message, visible in the job's JSON.
    public func progress(_ percent: Int, _ message: String? = nil) async {
        await reportProgress(min(100, max(0, percent)), message)
    }
}

/// A failure that retrying cannot fix (bad arguments, say): the job goes straight to `dead`.
public struct PermanentJobFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The tasks this process can run, each a typed handler: Codable arguments in, Encodable result out.
public struct JobRegistry: Sendable {
    typealias Handler = @Sendable (JSONValue, JobContext) async throws -> JSONValue

    struct Entry: Sendable {
        let handler: Handler
        let backoffSeconds: Int?
    }

    private var entries: [String: Entry] = [:]

    public init() {}

    /// - Parameter backoffSeconds: base of this task's exponential backoff (a job's `backoff_seconds` wins).
    public mutating func register<Args: Decodable & Sendable, Result: Encodable & Sendable>(
        _ task: String, backoffSeconds: Int? = nil,
        _ handler: @escaping @Sendable (Args, JobContext) async throws -> Result
    ) {
        // Arguments and results that are JSON values already (`keel.noop`, untyped handlers) skip the round trip
        // through Codable, which costs more than a small handler's whole run.
        entries[task] = Entry(handler: { args, context in
            let decoded: Args
            if let same = args as? Args {
                decoded = same
            } else {
                do {
                    decoded = try JSONDecoder.keel().decode(Args.self, from: JSONEncoder.keel().encode(args))
                } catch {
                    throw PermanentJobFailure("the arguments do not fit task \(task): \(error)")
                }
            }
            let result = try await handler(decoded, context)
            if let value = result as? JSONValue { return value }
            return try JSONDecoder.keel().decode(JSONValue.self, from: JSONEncoder.keel().encode(result))
        }, backoffSeconds: backoffSeconds)
    }

    public func knows(_ task: String) -> Bool { entries[task] != nil }
    public var taskNames: [String] { entries.keys.sorted() }
    func entry(_ task: String) -> Entry? { entries[task] }
    func backoffSeconds(for task: String) -> Int? { entries[task]?.backoffSeconds }
}
