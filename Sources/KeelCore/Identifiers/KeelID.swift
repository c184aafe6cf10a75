import Foundation
import Synchronization

/// Time-ordered string identifiers: `<prefix>_<26 chars>` where the 26 characters are a ULID in lower-case
/// Crockford base32 (48-bit millisecond timestamp, 80 random bits). IDs made later sort after earlier ones,
/// also within one millisecond in one process, so they serve as keyset-pagination cursors.
public enum KeelID {
    private static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    private static let state = Mutex<(millis: UInt64, random: (UInt16, UInt64))>((0, (0, 0)))

    public static func make(prefix: String, now: Date = Date()) -> String {
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let (time, random) = state.withLock { state -> (UInt64, (UInt16, UInt64)) in
            if millis <= state.millis {
                // Same (or an earlier, clock-stepped) millisecond: increment the random part to stay monotonic.
                var (high, low) = state.random
                low &+= 1
                if low == 0 { high &+= 1 }
                state.random = (high, low)
            } else {
                state.millis = millis
                var generator = SystemRandomNumberGenerator()
                state.random = (UInt16.random(in: 0...UInt16.max, using: &generator), generator.next())
            }
            return (state.millis, state.random)
        }
        return prefix + "_" + encode(time: time, high: random.0, low: random.1)
    }

    /// Whether `value` has the shape of an ID with this prefix.
    public static func isValid(_ value: some StringProtocol, prefix: String) -> Bool {
        guard value.hasPrefix(prefix + "_") else { return false }
        let body = value.utf8.dropFirst(prefix.utf8.count + 1)
        return body.count == 26 && body.allSatisfy { alphabet.contains($0) }
    }

    private static func encode(time: UInt64, high: UInt16, low: UInt64) -> String {
        // 128 bits: 48 time | 16 high random | 64 low random, written as 26 base32 digits (130 bits, top 2 zero).
        var bytes = [UInt8](repeating: 0, count: 26)
        let hi = (time << 16) | UInt64(high)  // upper 64 bits
        let lo = low
        for index in 0..<26 {
            let shift = 125 - 5 * index  // bit offset of this digit within the 130-bit number
            var digit: UInt64
            if shift >= 64 {
                digit = hi >> UInt64(shift - 64)
            } else if shift > 59 {
                digit = (hi << UInt64(64 - shift)) | (lo >> UInt64(shift))
            } else {
                digit = lo >> UInt64(shift)
            }
            bytes[index] = alphabet[Int(digit & 0x1f)]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
