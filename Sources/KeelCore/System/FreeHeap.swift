import CKeelSystem

/// Hands the allocator's free memory back to the system. Call it when a burst of work is over: the
/// allocator otherwise keeps its arenas at their peak size while the process sits idle.
@discardableResult
public func releaseFreeHeap() -> Bool {
    ckeel_release_free_heap() == 1
}
