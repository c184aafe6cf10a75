import ArgumentParser
import Foundation
import KeelCore
import KeelIdentity
import KeelPlatform
import KeelServer
import KeelStore
import KeelTelemetry

/// Opens the configured store, applies migrations and hands an identity service to `body`; the
/// command line acts with full rights and is audited as `cli`.
func withIdentity<Result: Sendable>(_ options: ServerOptions, _ body: @escaping @Sendable (IdentityService) async throws -> Result) async throws -> Result {
    var config = try options.load().config
    config.logLevel = min(config.logLevel, .warning)
    _ = try Telemetry.bootstrap(config, logsToStandardError: true)
    let settings = config
    return try await withRunningStore(config) { store in
        try await store.migrate(Platform.migrations)
        let identity = IdentityService(config: settings, store: store)
        try await identity.prepareForCommandLine()
        return try await body(identity)
    }
}

/// `keel users disable|enable`.
func setDisabled(_ disabled: Bool, user: String, options: ServerOptions) async throws {
    try await withIdentity(options) { identity in
        let target = try await identity.user(idOrEmail: user)
        _ = try await identity.updateUser(id: target.id, UserChange(disabled: disabled), caller: nil, actor: .commandLine())
        print("\(disabled ? "disabled" : "enabled") \(target.email ?? target.name)")
    }
}

extension LogLevel: Comparable {
    private var rank: Int { Self.allCases.firstIndex(of: self) ?? 0 }
    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rank > rhs.rank }
}

func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder.keel()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage users and service accounts.",
        subcommands: [List.self, Create.self, Disable.self, Enable.self, SetRole.self, ResetPassword.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users and service accounts.")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let json = self.json
            try await withIdentity(options) { identity in
                var users: [UserRecord] = []
                var after: String?
                repeat {
                    let page = try await identity.listUsers(kind: nil, limit: 200, after: after)
                    users += page.items
                    after = page.nextAfter
                } while after != nil
                if json { try printJSON(users); return }
                for user in users {
                    let state = user.disabled ? "disabled" : "active"
                    print([user.id, user.kind, user.email ?? user.name, user.roles.joined(separator: ","), state, user.totpEnabled ? "totp" : "-"]
                        .joined(separator: "\t"))
                }
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user (EMAIL) or, with --service-account, a service account (NAME).",
            discussion: "Without --password-stdin the user gets a single-use token to choose a password (POST /api/v1/auth/password-reset).")
        @Argument(help: "Email of the user, or name of the service account.") var identifier: String
        @Option(name: .customLong("role"), help: "Role to grant (repeatable; default viewer for users).") var roles: [String] = []
        @Flag(help: "Create a service account instead of a user.") var serviceAccount = false
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let password = passwordStdin ? readLine(strippingNewline: true) : nil
            if passwordStdin, password?.isEmpty ?? true { throw CommandFailure(message: "no password on standard input", exitCode: 2) }
            let input = serviceAccount
                ? NewUser(kind: "service_account", name: identifier, roles: roles)
                : NewUser(email: identifier, password: password, roles: roles.isEmpty ? nil : roles)
            try await withIdentity(options) { identity in
                let created = try await identity.createUser(input, caller: nil, actor: .commandLine())
                print("created \(created.user.kind) \(created.user.id) (\(created.user.email ?? created.user.name)) with roles \(created.user.roles.joined(separator: ","))")
                if let setup = created.passwordSetup {
                    print("password setup token (single use, until \(Timestamp.format(setup.expiresAt))): \(setup.token)")
                }
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user: no sign-in, sessions and keys stop working.")
        @Argument(help: "User id or email.") var user: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await setDisabled(true, user: user, options: options)
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled user.")
        @Argument(help: "User id or email.") var user: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await setDisabled(false, user: user, options: options)
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Replace a user's roles.")
        @Argument(help: "User id or email.") var user: String
        @Argument(help: "Roles the user will hold.") var roles: [String]
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let (user, roles) = (self.user, self.roles)
            try await withIdentity(options) { identity in
                let target = try await identity.user(idOrEmail: user)
                let updated = try await identity.updateUser(id: target.id, UserChange(roles: roles), caller: nil, actor: .commandLine())
                print("\(updated.email ?? updated.name) now has roles \(updated.roles.joined(separator: ","))")
            }
        }
    }

    struct ResetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-password", abstract: "Issue a single-use password reset token for a user.")
        @Argument(help: "User id or email.") var user: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let user = self.user
            try await withIdentity(options) { identity in
                let target = try await identity.user(idOrEmail: user)
                let token = try await identity.issuePasswordReset(userID: target.id, caller: nil, actor: .commandLine())
                print("reset token for \(target.email ?? target.name) (single use, until \(Timestamp.format(token.expiresAt))): \(token.token)")
            }
        }
    }
}

struct APIKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeys", abstract: "Manage API keys.", subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key; it is printed once and never again.")
        @Option(help: "Name of the key.") var name: String
        @Option(help: "Owner: user id, email or service account name.") var owner: String
        @Option(name: .customLong("permission"), help: "Permission of the key (repeatable).") var permissions: [String] = []
        @Option(help: "Days until the key expires (default: never).") var expiresInDays: Int?
        @OptionGroup var options: ServerOptions

        func validate() throws {
            if let days = expiresInDays, days < 1 { throw ValidationError("--expires-in-days must be at least 1") }
        }

        func run() async throws {
            let (name, owner, permissions) = (self.name, self.owner, self.permissions)
            let expires = expiresInDays.map { Date().addingTimeInterval(TimeInterval($0) * 86_400) }
            try await withIdentity(options) { identity in
                let ownerID = try await identity.accountID(owner)
                let key = try await identity.createAPIKey(NewAPIKey(name: name, permissions: permissions, expiresAt: expires, ownerID: ownerID),
                                                          caller: nil, actor: .commandLine())
                print("created API key \(key.id) for \(owner)")
                print(key.key ?? "")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (never the keys themselves).")
        @Option(help: "Only the keys of this owner (user id, email or service account name).") var owner: String?
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let owner = self.owner
            try await withIdentity(options) { identity in
                let ownerID = try await owner.asyncMap { try await identity.accountID($0) } ?? "all"
                let page = try await identity.listAPIKeys(ownerID: ownerID, caller: nil, limit: 200, after: nil)
                for key in page.items {
                    let state = key.revokedAt != nil ? "revoked" : key.expiresAt.map { $0 < Date() ? "expired" : "active" } ?? "active"
                    print([key.id, key.prefix + "…", key.name, key.ownerID, key.permissions.joined(separator: ","), state,
                           key.lastUsedAt.map(Timestamp.format) ?? "never used"].joined(separator: "\t"))
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key.")
        @Argument(help: "Key id (key_...).") var id: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let id = self.id
            try await withIdentity(options) { identity in
                try await identity.revokeAPIKey(id: id, caller: nil, actor: .commandLine())
                print("revoked \(id)")
            }
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage the keys that sign access tokens.", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new signing key; old public keys stay published until their tokens have expired.")
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await withIdentity(options) { identity in
                let kid = try await identity.rotateSigningKey(actor: .commandLine())
                print("new signing key \(kid); running servers pick it up within 10 seconds")
            }
        }
    }
}

