import NIOCore
import NIOPosix
import Synchronization

/// Runs `body`, but gives up after `limit`: `body` is cancelled and `error` thrown once it returns.
/// The timer is an event-loop task that is removed when `body` finishes in time; a sleeping child task would stay
/// allocated until `limit` even then, and the store runs this around every operation.
public func withDeadline<T: Sendable>(
    _ limit: Duration, orThrow error: @autoclosure @escaping @Sendable () -> any Error,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let timeoutError = error
    let work = Task { try await body() }
    let expired = DeadlineFlag()
    let (seconds, attoseconds) = limit.components
    let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
        expired.value.withLock { $0 = true }
        work.cancel()
    }
    defer { timer.cancel() }
    return try await withTaskCancellationHandler {
        do {
            return try await work.value
        } catch where expired.value.withLock({ $0 }) {
            throw timeoutError()
        }
    } onCancel: {
        work.cancel()
    }
}

private final class DeadlineFlag: Sendable {
    let value = Mutex(false)
}

extension Optional {
    /// `map` with an async transform.
    public func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
