import Foundation
import Synchronization

/// Wall-clock time, injectable so that expiry, TTL and scheduling logic can be tested without sleeping.
public protocol KeelClock: Sendable {
    func now() -> Date
}

public struct SystemClock: KeelClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that moves only when told to; for tests.
public final class ManualClock: KeelClock {
    private let current: Mutex<Date>

    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.current = Mutex(start)
    }

    public func now() -> Date { current.withLock { $0 } }

    public func advance(by seconds: TimeInterval) {
        current.withLock { $0 = $0.addingTimeInterval(seconds) }
    }
}
