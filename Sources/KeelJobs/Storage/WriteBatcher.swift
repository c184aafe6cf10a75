import Foundation
import Synchronization

/// Writes many items in one statement: items that arrive while a batch is being written go into the next one, so
/// under load each statement (and commit) carries many items, and an idle system waits for nothing (the first caller
/// writes in its own task). Each caller learns its own item's outcome.
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

    /// Writes `item` at once when no write is in progress (taking along whatever else is pending), else queues it for
    /// the write after the current one. `write` answers one outcome per item, in order.
    func submit(_ item: Item, write: @escaping @Sendable ([Item]) async throws -> [Outcome]) async throws -> Outcome {
        let isWriter = state.withLock { state -> Bool in
            guard !state.writing else { return false }
            state.writing = true
            return true
        }
        guard isWriter else {
            return try await withCheckedThrowingContinuation { continuation in
                let startWriting = state.withLock { state -> Bool in
                    state.pending.append(Pending(item: item, continuation: continuation))
                    guard !state.writing else { return false }
                    state.writing = true
                    return true
                }
                if startWriting { Task { await self.writeAll(write) } }
            }
        }
        // The writer writes in its own task (no hop when idle), one batch, then hands any backlog to a task of its own.
        let others = state.withLock { state -> [Pending] in
            let others = Array(state.pending.prefix(maxBatch - 1))
            state.pending.removeFirst(others.count)
            return others
        }
        defer {
            let backlog = state.withLock { state -> Bool in
                if state.pending.isEmpty { state.writing = false }
                return state.writing
            }
            if backlog { Task { await self.writeAll(write) } }
        }
        do {
            let outcomes = try await write([item] + others.map(\.item))
            for (pending, outcome) in zip(others, outcomes.dropFirst()) { pending.continuation.resume(returning: outcome) }
            return outcomes[0]
        } catch {
            for pending in others { pending.continuation.resume(throwing: error) }
            throw error
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
