import CKeelSystem

/// Hands the allocator's free memory back to the system. Call it when a burst of work is over: the
/// allocator otherwise keeps its arenas at their peak size while the process sits idle.
@discardableResult
public func releaseFreeHeap() -> Bool {
    ckeel_release_free_heap() == 1
}

/// Leaves resident only the code and read-only data the process goes on to use (see
/// `ckeel_release_clean_file_pages`): what a long-idle worker needs is a small part of the binary and its libraries.
/// Returns the bytes of mappings released, 0 where unsupported.
@discardableResult
public func releaseCleanFilePages() -> Int {
    max(0, ckeel_release_clean_file_pages())
}
