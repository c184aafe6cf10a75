import Foundation
import Synchronization

/// Writes many items in one statement: items that arrive while a batch is being written go into the next one, so
/// under load each statement (and commit) carries many items, and an idle system waits for nothing. Each caller
/// learns its own item's outcome.
final class WriteBatcher<Item: Sendable, Outcome: Sendable>: Sendable {
    private struct Pending {
        let item: Item
        let continuation: CheckedContinuation<Outcome, any Error>
    }

    private struct State {
        var pending: [Pending] = []
        var writing = false
    }

    private let state = Mutex(State())
    let maxBatch: Int

    init(maxBatch: Int) {
        self.maxBatch = maxBatch
    }

    /// Queues `item`; the caller that finds no write in progress writes batches with `write` (which answers one outcome
    /// per item, in order) until none are left.
    func submit(_ item: Item, write: @escaping @Sendable ([Item]) async throws -> [Outcome]) async throws -> Outcome {
        try await withCheckedThrowingContinuation { continuation in
            let startWriting = state.withLock { state -> Bool in
                state.pending.append(Pending(item: item, continuation: continuation))
                guard !state.writing else { return false }
                state.writing = true
                return true
            }
            if startWriting { Task { await self.writeAll(write) } }
        }
    }

    private func writeAll(_ write: @Sendable ([Item]) async throws -> [Outcome]) async {
        while true {
            let batch = state.withLock { state -> [Pending] in
                let batch = Array(state.pending.prefix(maxBatch))
                state.pending.removeFirst(batch.count)
                if batch.isEmpty { state.writing = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            do {
                let outcomes = try await write(batch.map(\.item))
                for (pending, outcome) in zip(batch, outcomes) { pending.continuation.resume(returning: outcome) }
            } catch {
                for pending in batch { pending.continuation.resume(throwing: error) }
            }
        }
    }
}
