import Crypto
import Foundation

/// Seals stored secrets (signing keys, TOTP seeds, provider credentials) with AES-256-GCM under a key
/// derived from `KEEL_SECRET_KEY`. Without a secret key the box stores plaintext, marked as such, so
/// setting a key later still reads old values (they are sealed when next written).
public struct SecretBox: Sendable {
    private let key: SymmetricKey?

    public init(secretKey: Secret?, purpose: String) {
        key = secretKey.map {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: Data($0.value.utf8)),
                                   salt: Data("keel".utf8), info: Data(purpose.utf8), outputByteCount: 32)
        }
    }

    public var encrypts: Bool { key != nil }

    public func seal(_ plaintext: Data) throws -> String {
        guard let key else { return "plain:" + plaintext.base64EncodedString() }
        let sealed = try AES.GCM.seal(plaintext, using: key)
        guard let combined = sealed.combined else { throw SecretBoxError.cannotSeal }
        return "aesgcm:" + combined.base64EncodedString()
    }

    public func open(_ stored: String) throws -> Data {
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

public enum SecretBoxError: Error, CustomStringConvertible {
    case cannotSeal, malformed, keyMissing, wrongKey

    public var description: String {
        switch self {
        case .cannotSeal: "cannot seal the secret"
        case .malformed: "the stored secret is malformed"
        case .keyMissing: "the stored secret is encrypted but KEEL_SECRET_KEY is not set"
        case .wrongKey: "the stored secret does not open with this KEEL_SECRET_KEY"
        }
    }
}

