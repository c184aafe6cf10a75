import Foundation

/// The `keel` binary run as a child process, as users and orchestrators run it.
public final class KeelProcess: @unchecked Sendable {
    public let process = Process()
    public let directory: String
    /// Whether this process made `directory` (and so removes it when done).
    private let ownsDirectory: Bool
    private let stdoutPath: String
    private let stderrPath: String

    /// The repository's root, found from this file's location.
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The binary `swift build` made (override with `KEEL_BINARY`).
    public static var binary: String {
        if let path = ProcessInfo.processInfo.environment["KEEL_BINARY"] { return path }
        return repositoryRoot.appendingPathComponent(".build/debug/keel").path
    }

    /// Path of a helper script in Tests/Support.
    public static func supportScript(_ name: String) -> String {
        repositoryRoot.appendingPathComponent("Tests/Support/\(name)").path
    }

    /// Starts `keel arguments...` in a fresh working directory with `environment` added to a clean
    /// environment (no inherited `KEEL_*`).
    public init(_ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws {
        self.directory = directory ?? (NSTemporaryDirectory() + "keel-proc-" + UUID().uuidString)
        self.ownsDirectory = directory == nil
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        stdoutPath = self.directory + "/stdout.log"
        stderrPath = self.directory + "/stderr.log"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: self.directory)
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KEEL_") }
        env.merge(environment) { _, new in new }
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
    }

    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The JSON log lines written so far.
    public var logLines: [[String: Any]] {
        stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    /// Waits for the "ready" log line and returns the port it names.
    public func waitUntilReady(timeout: Duration = .seconds(30)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = logLines.first(where: { $0["msg"] as? String == "ready" }),
               let port = (line["port"] as? String).flatMap(Int.init) {
                return port
            }
            guard process.isRunning else {
                throw TestSetupError("keel exited (\(process.terminationStatus)) before it was ready:\n\(stdout)\n\(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSetupError("keel was not ready within \(timeout):\n\(stdout)\n\(stderr)")
    }

    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit and returns its status; kills it when it overstays `timeout`.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.terminate()
                throw TestSetupError("keel did not exit within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        if ownsDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }
}

/// A helper script from Tests/Support, run with python3 until stopped.
public final class PythonHelper: @unchecked Sendable {
    public let process = Process()
    private let outputPath: String

    /// - Parameters:
    ///   - script: a file in Tests/Support, or a path from the repository root (`examples/...`).
    ///   - environment: added to this process's environment.
    public init(_ script: String, arguments: [String], environment: [String: String] = [:]) throws {
        outputPath = NSTemporaryDirectory() + "keel-py-" + UUID().uuidString + ".log"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let path = script.contains("/") ? KeelProcess.repositoryRoot.appendingPathComponent(script).path : KeelProcess.supportScript(script)
        process.arguments = ["python3", path] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits until the helper prints `line` (e.g. its "listening" line).
    /// - Parameter context: more to show when it does not (e.g. the logs of the process it serves).
    public func waitFor(_ text: String, timeout: Duration = .seconds(15), context: @autoclosure () -> String = "") async throws {
        let deadline = ContinuousClock.now + timeout
        while !output.contains(text) {
            guard process.isRunning, ContinuousClock.now < deadline else {
                throw TestSetupError("python helper (\(process.isRunning ? "running" : "exited")) did not print \(text):\n\(output)\n\(context())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits for the helper's "listening PORT" line and returns the port. Helpers started with port 0
    /// bind any free one themselves, so no other process can take it between a pick and the bind.
    public func listeningPort(timeout: Duration = .seconds(15)) async throws -> Int {
        try await waitFor("listening ", timeout: timeout)
        let line = output.split(separator: "\n").first { $0.hasPrefix("listening ") }
        guard let port = line.flatMap({ Int($0.dropFirst("listening ".count)) }) else {
            throw TestSetupError("python helper printed no port after \"listening\":\n\(output)")
        }
        return port
    }

    /// Waits for the helper to exit on its own and returns its status.
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { throw TestSetupError("python helper did not exit:\n\(output)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// Kills the helper and waits (briefly) until it is gone. Polls instead of `waitUntilExit()`,
    /// which can block forever when called from a concurrency thread.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        for _ in 0..<500 where process.isRunning { usleep(10_000) }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: outputPath)
    }
}

/// A port on 127.0.0.1 where nothing listens for as long as this lives: bound, so no other process can take it, but not
/// listening, so connections to it are refused. (A port picked free and released can be taken by the next process that
/// binds one before the test uses it.)
public final class ClosedPort: Sendable {
    public let port: Int
    private let descriptor: Int32

    public init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw TestSetupError("cannot bind a port on 127.0.0.1")
        }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }
}
