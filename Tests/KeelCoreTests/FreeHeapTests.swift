import KeelCore
import Testing

@Suite struct FreeHeapTests {
    /// Freed small blocks between live ones stay with the allocator (the heap's top cannot shrink past
    /// the live blocks); releasing the free heap hands those pages back.
    @Test func releasesPagesFreedBehindLiveBlocks() {
        let blocks = (0..<200_000).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 16) }
        for block in blocks { block.storeBytes(of: 0xAB, as: UInt8.self) }
        var kept: [UnsafeMutableRawPointer] = []
        for (index, block) in blocks.enumerated() {
            if index % 1000 == 999 { kept.append(block) } else { block.deallocate() }
        }
        defer { kept.forEach { $0.deallocate() } }
        #if canImport(Glibc)
        #expect(releaseFreeHeap())
        #else
        #expect(!releaseFreeHeap())
        #endif
    }
}
