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
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var migrations: Migrations { state.withLock { $0.migrations } }

    public func update(_ migrations: Migrations) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.migrations = migrations
            guard migrations == .applied else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    public func waitUntilMigrated() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if state.migrations == .applied { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}
