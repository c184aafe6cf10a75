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

@Suite struct CleanFilePagesTests {
    static func residentFileKiB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssFile:") })
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }

    /// The test process has megabytes of its binary and libraries mapped; dropping the clean ones leaves far fewer
    /// resident, and the process goes on running (the pages come back from the file as they are touched).
    @Test func dropsCleanCodePagesAndKeepsRunning() throws {
        #if os(Linux)
        let before = try Self.residentFileKiB()
        let released = releaseCleanFilePages()
        let after = try Self.residentFileKiB()
        #expect(released > 1 << 20, "advised \(released) bytes")
        #expect(after < before / 2, "file-backed resident set \(before) KiB → \(after) KiB")
        // Code, string literals and Foundation's data all still work after the drop.
        #expect(["b", "a"].sorted() == ["a", "b"] && String(describing: 42) == "42")
        #else
        #expect(releaseCleanFilePages() == 0)
        #endif
    }
}
