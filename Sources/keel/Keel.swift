import ArgumentParser
import Foundation
import KeelCore
import KeelServer

struct Keel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "Keel: gateway, identity, jobs, AI gateway and console in one process.",
        version: KeelVersion.current,
        subcommands: [Up.self, Serve.self, Migrate.self, ConfigCommand.self, UsersCommand.self, APIKeysCommand.self, KeysCommand.self,
                      JobsCommand.self, QueuesCommand.self, SchedulesCommand.self,
                      HealthCommand.self, BackupCommand.self, RestoreCommand.self, SecretsCommand.self,
                      VersionCommand.self]
    )

    /// ArgumentParser exits 64 on usage errors; Keel promises 2 for every bad input on the command line.
    static func runMain() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("keel: \(error)\n".utf8))
            Foundation.exit(2)
        } catch let error as FatalStartupError {
            FileHandle.standardError.write(Data("keel: \(error.description)\n".utf8))
            Foundation.exit(2)
        } catch let problem as Problem {
            // The identity commands share the API's rules and report its problems.
            var message = "keel: \(problem.detail)"
            if case .array(let errors)? = problem.extensions["errors"] {
                for case .object(let error) in errors {
                    if case .string(let field)? = error["field"], case .string(let text)? = error["message"] { message += "\n  \(field): \(text)" }
                }
            }
            FileHandle.standardError.write(Data((message + "\n").utf8))
            Foundation.exit(problem.status.code < 500 ? 2 : 1)
        } catch let error as CommandFailure {
            FileHandle.standardError.write(Data("keel: \(error.message)\n".utf8))
            Foundation.exit(error.exitCode)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

/// A failure with a message for people and a specific exit code.
struct CommandFailure: Error {
    let message: String
    var exitCode: Int32 = 1
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print Keel's version.")

    func run() {
        print("keel \(KeelVersion.current)")
    }
}
