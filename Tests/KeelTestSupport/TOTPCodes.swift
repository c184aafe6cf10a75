import Foundation
import HummingbirdOTP

/// Codes of an authenticator app, for tests that enrol and sign in with a second factor.
public enum TOTPCodes {
    /// RFC 4648 base32, as in otpauth:// URIs.
    public static func base32Decode(_ text: String) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var bits = 0, value = 0
        var bytes: [UInt8] = []
        for character in text.uppercased() {
            guard let index = alphabet.firstIndex(of: character) else { continue }
            value = (value << 5) | index
            bits += 5
            if bits >= 8 {
                bytes.append(UInt8((value >> (bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The six-digit code for the base32 `secret` now, or `stepsAhead` 30-second steps later.
    public static func code(secret: String, stepsAhead: Int = 0) -> String {
        code(TOTP(secret: base32Decode(secret)), stepsAhead: stepsAhead)
    }

    public static func code(_ totp: TOTP, stepsAhead: Int = 0) -> String {
        let value = String(totp.compute(date: Date().addingTimeInterval(TimeInterval(30 * stepsAhead))))
        return String(repeating: "0", count: 6 - value.count) + value
    }
}
