import KeelCore
import Foundation
import HummingbirdBcrypt
import NIOPosix
import Synchronization

/// bcrypt hashing on NIO's blocking thread pool, never on an event loop or the cooperative pool.
final class PasswordHasher: Sendable {
    let cost: Int
    /// Verified against when the account does not exist, so unknown and known emails take as long;
    /// made on first need so start-up does not pay for it.
    private let decoy = Mutex<String?>(nil)

    init(cost: Int) {
        self.cost = cost
    }

    func warmUp() async throws {
        _ = try await decoyHash()
    }

    private func decoyHash() async throws -> String {
        if let hash = decoy.withLock({ $0 }) { return hash }
        let hash = try await self.hash(Credential.random(bytes: 16))
        decoy.withLock { $0 = $0 ?? hash }
        return hash
    }

    func hash(_ password: String) async throws -> String {
        let cost = UInt8(self.cost)
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String?) async throws -> Bool {
        let stored: String
        if let hash { stored = hash } else { stored = try await decoyHash() }
        let matches = try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: stored) }
        return matches && hash != nil
    }
}

/// What a new password must satisfy: a minimum length, bcrypt's 72-byte ceiling, not one of the
/// commonly breached passwords shipped with Keel, and not the account's own email.
struct PasswordPolicy: Sendable {
    let minimumLength: Int
    private let common: Set<String>

    init(minimumLength: Int) {
        self.minimumLength = minimumLength
        let url = Bundle.module.url(forResource: "common-passwords", withExtension: "txt")
        let text = url.flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? ""
        common = Set(text.split(whereSeparator: \.isNewline).map { $0.lowercased() })
    }

    var commonPasswordCount: Int { common.count }

    /// Why `password` is refused, or `nil` when it is acceptable.
    func violation(_ password: String, email: String?) -> String? {
        if password.count < minimumLength { return "must be at least \(minimumLength) characters long" }
        if password.utf8.contains(0) { return "must not contain NUL characters" }
        if password.utf8.count > 72 { return "must be at most 72 bytes (bcrypt ignores anything longer)" }
        let lowered = password.lowercased()
        if common.contains(lowered) { return "is one of the most common passwords; choose another" }
        if let email, lowered == email.lowercased() || lowered == email.lowercased().split(separator: "@").first.map(String.init) {
            return "must not be the email address"
        }
        if Set(password).count < 4 { return "must use more than three different characters" }
        return nil
    }
}
