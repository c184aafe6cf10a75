import Foundation
import Testing
@testable import KeelCore

@Suite struct KeelIDTests {
    @Test func idsSortInCreationOrderEvenWithinOneMillisecond() {
        let instant = Date(timeIntervalSince1970: 1_800_000_000)
        let ids = (0..<10_000).map { _ in KeelID.make(prefix: "job", now: instant) }
        #expect(ids == ids.sorted())
        #expect(Set(ids).count == ids.count)
    }

    @Test func laterTimesSortAfterEarlierOnes() {
        let early = KeelID.make(prefix: "node", now: Date(timeIntervalSince1970: 1_900_000_000))
        let late = KeelID.make(prefix: "node", now: Date(timeIntervalSince1970: 1_900_000_001))
        #expect(early < late)
    }

    @Test func shapeIsPrefixUnderscoreAndTwentySixBase32Characters() {
        let id = KeelID.make(prefix: "node")
        #expect(id.hasPrefix("node_"))
        #expect(id.count == 31)
        #expect(KeelID.isValid(id, prefix: "node"))
        #expect(!KeelID.isValid(id, prefix: "job"))
        #expect(!KeelID.isValid("node_' OR 1=1 --", prefix: "node"))
        #expect(!KeelID.isValid("node_01m89ybd2gxmrbyxwwa7q8wk6u", prefix: "node"))  // 'u' is not Crockford
    }

    @Test func timestampPrefixEncodesMilliseconds() {
        // 48-bit time in the first 10 characters: the same millisecond gives the same prefix.
        let instant = Date(timeIntervalSince1970: 1_234_567.891)
        let a = KeelID.make(prefix: "x", now: instant), b = KeelID.make(prefix: "x", now: instant.addingTimeInterval(0.0004))
        #expect(a.dropFirst(2).prefix(10) == b.dropFirst(2).prefix(10))
    }
}

@Suite struct TimestampTests {
    @Test func formatsUTCWithMilliseconds() {
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1_795_630_150.123)) == "2026-11-25T18:09:10.123Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: -0.5)) == "1969-12-31T23:59:59.500Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 951_782_400.9996)) == "2000-02-29T00:00:01.000Z")
    }

    @Test func parsesWithAndWithoutFraction() {
        let parsed = Timestamp.parse("2026-11-25T18:09:10.123Z")?.timeIntervalSince1970 ?? 0
        #expect(abs(parsed - 1_795_630_150.123) < 0.0005)
        #expect(Timestamp.parse("2026-11-25T18:09:10Z") == Date(timeIntervalSince1970: 1_795_630_150))
        #expect(Timestamp.parse("yesterday") == nil)
    }

    @Test func manualClockMovesOnlyWhenAdvanced() {
        let clock = ManualClock(Date(timeIntervalSince1970: 100))
        #expect(clock.now() == Date(timeIntervalSince1970: 100))
        clock.advance(by: 5)
        #expect(clock.now() == Date(timeIntervalSince1970: 105))
    }
}
