import Foundation
import KeelTestSupport
import Testing

/// The jobs verbs of the command line against the embedded store.
@Suite struct JobCommandTests {
    @Test func queuesJobsAndSchedulesVerbs() async throws {
        let directory = NSTemporaryDirectory() + "keel-jobs-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func keel(_ arguments: [String]) async throws -> KeelProcess {
            let process = try KeelProcess(arguments, directory: directory)
            _ = try await process.waitForExit()
            return process
        }
        #expect(try await keel(["queues", "pause", "email"]).stdout == "paused email\n")
        let list = try await keel(["queues", "list"])
        #expect(list.stdout.hasPrefix("email\tpaused\tpending=0 scheduled=0 available=0 running=0"))
        #expect(try await keel(["queues", "resume", "email"]).stdout == "resumed email\n")

        let unknown = try await keel(["jobs", "enqueue", "no.such.task"])
        #expect(unknown.process.terminationStatus == 2)
        #expect(unknown.stderr.contains("\"no.such.task\" is not a task any worker handles"))
        let badArgs = try await keel(["jobs", "enqueue", "x", "--args", "{nope"])
        #expect(badArgs.process.terminationStatus == 2)
        #expect(badArgs.stderr.contains("--args is not valid JSON"))
        let badCron = try await keel(["schedules", "add", "nightly", "--task", "x", "--cron", "0 25 * * *"])
        #expect(badCron.process.terminationStatus == 2)
        #expect(badCron.stderr.contains("cron: hour field \"25\""))
        let missing = try await keel(["jobs", "show", "job_01aaaaaaaaaaaaaaaaaaaaaaaa"])
        #expect(missing.process.terminationStatus == 2)
        #expect(missing.stderr.contains("No job has the id job_01aaaaaaaaaaaaaaaaaaaaaaaa"))
        let badState = try await keel(["jobs", "list", "--state", "lost"])
        #expect(badState.process.terminationStatus == 2)
        #expect(try await keel(["jobs", "list"]).stdout.isEmpty)
        #expect(try await keel(["schedules", "list"]).stdout.isEmpty)
    }
}
