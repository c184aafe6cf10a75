import Foundation
import KeelCore
#if canImport(Glibc)
import Glibc
#endif
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
    #if os(Linux)
    /// Resident KiB of the mapping that starts at `address`, from /proc/self/smaps.
    static func residentKiB(at address: UnsafeMutableRawPointer) throws -> Int {
        let start = String(UInt(bitPattern: address), radix: 16)
        // Read to the end: /proc files report no size, and smaps is long.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        let header = try #require(smaps.firstIndex { $0.hasPrefix(start + "-") }, "mapping \(start) not in smaps")
        let line = try #require(smaps[header...].first { $0.hasPrefix("Rss:") })
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }

    /// Maps `bytes` of a file privately and touches every page; `written` maps it writable, writes it, then makes it
    /// read-only, as the loader does with relocated data.
    static func mapFile(_ path: String, bytes: Int, written: Bool) throws -> UnsafeMutableRawPointer {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let protection = written ? PROT_READ | PROT_WRITE : PROT_READ
        let address = try #require(mmap(nil, bytes, protection, MAP_PRIVATE, fd, 0), "mmap failed")
        #expect(address != MAP_FAILED)
        var sum = 0
        for offset in stride(from: 0, to: bytes, by: 4096) {
            if written { address.storeBytes(of: 0x5A, toByteOffset: offset, as: UInt8.self) }
            sum &+= Int(address.load(fromByteOffset: offset, as: UInt8.self))
        }
        #expect(sum >= 0)
        if written { #expect(mprotect(address, bytes, PROT_READ) == 0) }
        return address
    }
    #endif

    /// Clean read-only file pages (what code and read-only data are) leave the resident set and come back from the file
    /// when read; pages the process wrote (relocated data, then made read-only) stay, with what was written.
    @Test func dropsCleanFilePagesAndKeepsWrittenOnes() throws {
        #if os(Linux)
        let path = NSTemporaryDirectory() + "keel-pages-" + UUID().uuidString
        let bytes = 4 << 20
        try Data((0..<bytes).map { UInt8(truncatingIfNeeded: $0 / 4096) }).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clean = try Self.mapFile(path, bytes: bytes, written: false)
        let written = try Self.mapFile(path, bytes: bytes, written: true)
        defer { munmap(clean, bytes); munmap(written, bytes) }
        #expect(try Self.residentKiB(at: clean) == bytes / 1024 && Self.residentKiB(at: written) == bytes / 1024)

        #expect(releaseCleanFilePages() >= bytes)
        #expect(try Self.residentKiB(at: clean) == 0, "clean file pages stayed resident")
        #expect(try Self.residentKiB(at: written) == bytes / 1024, "written pages were dropped")
        #expect(clean.load(fromByteOffset: 5 * 4096, as: UInt8.self) == 5, "a dropped page did not come back from the file")
        #expect(written.load(fromByteOffset: 5 * 4096, as: UInt8.self) == 0x5A, "a written page lost what was written")
        #else
        #expect(releaseCleanFilePages() == 0)
        #endif
    }
}
