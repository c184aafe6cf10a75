import Crypto
import Foundation
import KeelCore

/// Random credentials and their stored form. Credentials with ≥ 128 bits of entropy (refresh tokens,
/// API keys, reset tokens, recovery codes) are stored as SHA-256 digests, which a lookup by digest
/// finds without ever comparing secrets byte by byte; passwords get bcrypt instead.
enum Credential {
    /// `bytes` random bytes as unpadded base64url, after `prefix`.
    static func random(prefix: String = "", bytes: Int = 32) -> String {
        var generator = SystemRandomNumberGenerator()
        let data = Data((0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        return prefix + data.base64URLEncoded()
    }

    /// Lowercase hex SHA-256, the stored form of a high-entropy credential.
    static func digest(_ credential: String) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(64)
        for byte in SHA256.hash(data: Data(credential.utf8)) {
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0xF)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Compares two secrets in time that depends only on their lengths.
    static func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
        let a = Array(lhs.utf8), b = Array(rhs.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}

/// Seals stored secrets (signing keys, TOTP seeds, provider credentials) with AES-256-GCM under a key
/// derived from `KEEL_SECRET_KEY`. Without a secret key the box stores plaintext, marked as such, so
/// setting a key later still reads old values (they are sealed when next written).
struct SecretBox: Sendable {
    private let key: SymmetricKey?

    init(secretKey: Secret?, purpose: String) {
        key = secretKey.map {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: Data($0.value.utf8)),
                                   salt: Data("keel".utf8), info: Data(purpose.utf8), outputByteCount: 32)
        }
    }

    var encrypts: Bool { key != nil }

    func seal(_ plaintext: Data) throws -> String {
        guard let key else { return "plain:" + plaintext.base64EncodedString() }
        let sealed = try AES.GCM.seal(plaintext, using: key)
        guard let combined = sealed.combined else { throw SecretBoxError.cannotSeal }
        return "aesgcm:" + combined.base64EncodedString()
    }

    func open(_ stored: String) throws -> Data {
        if stored.hasPrefix("plain:"), let data = Data(base64Encoded: String(stored.dropFirst(6))) {
            return data
        }
        guard stored.hasPrefix("aesgcm:"), let data = Data(base64Encoded: String(stored.dropFirst(7))) else {
            throw SecretBoxError.malformed
        }
        guard let key else { throw SecretBoxError.keyMissing }
        do {
            return try AES.GCM.open(AES.GCM.SealedBox(combined: data), using: key)
        } catch {
            throw SecretBoxError.wrongKey
        }
    }
}

enum SecretBoxError: Error, CustomStringConvertible {
    case cannotSeal, malformed, keyMissing, wrongKey

    var description: String {
        switch self {
        case .cannotSeal: "cannot seal the secret"
        case .malformed: "the stored secret is malformed"
        case .keyMissing: "the stored secret is encrypted but KEEL_SECRET_KEY is not set"
        case .wrongKey: "the stored secret does not open with this KEEL_SECRET_KEY"
        }
    }
}

extension Data {
    func base64URLEncoded() -> String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init?(base64URLEncoded text: some StringProtocol) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }
}
