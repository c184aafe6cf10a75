import Synchronization

/// Whether this process may take traffic: its migrations are applied (the store is checked live by
/// `/readyz`). Services that need the schema wait on ``waitUntilMigrated()``.
public final class Readiness: Sendable {
    public enum Migrations: Sendable, Equatable {
        case pending(String)
        case applied
        case failed(String)
    }

    private struct State {
        var migrations = Migrations.pending("not started")
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var migrations: Migrations { state.withLock { $0.migrations } }

    public func update(_ migrations: Migrations) {
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.migrations = migrations
            if case .pending = migrations { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        let applied = migrations == .applied
        for waiter in waiters { waiter.resume(returning: applied) }
    }

    /// Waits until migrations are settled: `true` once applied, `false` when they failed (the process
    /// is stopping), so that waiting services end instead of hanging the shutdown.
    @discardableResult
    public func waitUntilMigrated() async -> Bool {
        await withCheckedContinuation { continuation in
            let settled = state.withLock { state -> Bool? in
                switch state.migrations {
                case .applied: return true
                case .failed: return false
                case .pending:
                    state.waiters.append(continuation)
                    return nil
                }
            }
            if let settled { continuation.resume(returning: settled) }
        }
    }
}
