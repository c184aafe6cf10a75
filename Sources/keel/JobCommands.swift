import ArgumentParser
import Foundation
import KeelCore
import KeelJobs
import KeelPlatform
import KeelServer
import KeelTelemetry

/// Opens the configured store, applies migrations and hands the job queue (with this binary's tasks) to `body`.
func withJobQueue<Result: Sendable>(_ options: ServerOptions, _ body: @escaping @Sendable (JobQueue) async throws -> Result) async throws -> Result {
    var config = try options.load().config
    config.logLevel = min(config.logLevel, .warning)
    _ = try Telemetry.bootstrap(config, logsToStandardError: true)
    let tasks = Platform.tasks(config)
    return try await withRunningStore(config) { store in
        try await store.migrate(Platform.migrations)
        return try await body(JobQueue(store: store, tasks: tasks))
    }
}

/// Parses a JSON argument of the command line, or exits 2 naming the option.
func parseJSONOption(_ text: String, option: String) throws -> JSONValue {
    do {
        return try JSONDecoder.keel().decode(JSONValue.self, from: Data(text.utf8))
    } catch {
        throw CommandFailure(message: "\(option) is not valid JSON: \(text)", exitCode: 2)
    }
}

/// `keel queues pause|resume`.
func setPaused(_ paused: Bool, queue name: String, options: ServerOptions) async throws {
    try await withJobQueue(options) { queue in
        _ = try await queue.updateQueue(named: name, QueueChange(paused: paused))
        print("\(paused ? "paused" : "resumed") \(name)")
    }
}

func jobLine(_ job: JobRecord) -> String {
    [job.id, job.queue, job.task, job.state.rawValue, "attempt \(job.attempt)/\(job.maxAttempts)", Timestamp.format(job.createdAt)].joined(separator: "\t")
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "Enqueue and inspect jobs.", subcommands: [Enqueue.self, List.self, Show.self, Retry.self, Cancel.self])

    struct Enqueue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enqueue a job and print its id.")
        @Argument(help: "Task name.") var task: String
        @Option(help: "JSON arguments.") var args = "{}"
        @Option(help: "Queue (default: default).") var queue: String?
        @Option(help: "Priority, -1000 to 1000.") var priority: Int?
        @Option(help: "Seconds to wait before it may run.") var delaySeconds: Double?
        @Option(help: "Attempts in all.") var maxAttempts: Int?
        @Option(help: "Unique key: at most one job per key within an hour.") var uniqueKey: String?
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let job = NewJob(queue: queue, task: task, args: try parseJSONOption(args, option: "--args"), priority: priority,
                             delaySeconds: delaySeconds, maxAttempts: maxAttempts, uniqueKey: uniqueKey)
            try await withJobQueue(options) { queue in
                let outcome = try await queue.enqueue([job])[0]
                print(outcome.duplicate ? "\(outcome.job.id) (already enqueued under this unique key)" : outcome.job.id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, oldest first.")
        @Option(help: "Only this queue.") var queue: String?
        @Option(help: "Only this state.") var state: String?
        @Option(help: "Only this task.") var task: String?
        @Option(help: "At most this many.") var limit = 50
        @OptionGroup var options: ServerOptions

        func validate() throws {
            if let state, JobState(rawValue: state) == nil {
                throw ValidationError("--state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if !(1...200).contains(limit) { throw ValidationError("--limit must be from 1 to 200") }
        }

        func run() async throws {
            var filter = JobQueue.Filter()
            filter.queue = queue
            filter.state = state.flatMap(JobState.init(rawValue:))
            filter.task = task
            let (frozen, limit) = (filter, self.limit)
            try await withJobQueue(options) { queue in
                for job in try await queue.list(frozen, limit: limit, after: nil).items { print(jobLine(job)) }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one job as JSON.")
        @Argument(help: "Job id.") var id: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let id = self.id
            try await withJobQueue(options) { queue in try printJSON(try await queue.job(id: id)) }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a dead, cancelled or expired job again.")
        @Argument(help: "Job id.") var id: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let id = self.id
            try await withJobQueue(options) { queue in print(jobLine(try await queue.retry(id: id))) }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a waiting job, or ask a running one to stop.")
        @Argument(help: "Job id.") var id: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let id = self.id
            try await withJobQueue(options) { queue in print(jobLine(try await queue.cancel(id: id))) }
        }
    }
}

struct QueuesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queues", abstract: "Inspect, pause and resume queues.", subcommands: [List.self, Pause.self, Resume.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Queues with their job counts by state.")
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await withJobQueue(options) { queue in
                for record in try await queue.queues() {
                    let counts = JobState.allCases.map { "\($0.rawValue)=\(record.counts[$0.rawValue] ?? 0)" }.joined(separator: " ")
                    print("\(record.name)\t\(record.paused ? "paused" : "active")\t\(counts)")
                }
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop workers claiming from a queue.")
        @Argument(help: "Queue name.") var name: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await setPaused(true, queue: name, options: options)
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let workers claim from a queue again.")
        @Argument(help: "Queue name.") var name: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await setPaused(false, queue: name, options: options)
        }
    }
}

struct SchedulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedules", abstract: "Manage recurring jobs.", subcommands: [List.self, Add.self, Remove.self, Trigger.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Schedules with their next fire times.")
        @OptionGroup var options: ServerOptions

        func run() async throws {
            try await withJobQueue(options) { queue in
                for schedule in try await queue.schedules() {
                    let timing = schedule.cron.map { "cron \($0) \(schedule.timezone)" } ?? "every \(schedule.everySeconds ?? 0) s"
                    print([schedule.name, timing, schedule.task, schedule.paused ? "paused" : "next \(schedule.nextRunAt.map(Timestamp.format) ?? "-")"]
                        .joined(separator: "\t"))
                }
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or replace a schedule.")
        @Argument(help: "Schedule name.") var name: String
        @Option(help: "Task name.") var task: String
        @Option(help: "Cron expression (5 fields or @hourly, @daily, ...).") var cron: String?
        @Option(help: "Fixed interval in seconds, instead of --cron.") var everySeconds: Int?
        @Option(help: "IANA time zone of the cron expression (default UTC).") var timezone: String?
        @Option(help: "Queue.") var queue: String?
        @Option(help: "JSON arguments.") var args = "{}"
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let input = ScheduleInput(cron: cron, everySeconds: everySeconds, timezone: timezone, queue: queue, task: task,
                                      args: try parseJSONOption(args, option: "--args"))
            let name = self.name
            try await withJobQueue(options) { queue in
                let saved = try await queue.saveSchedule(named: name, input)
                print("\(saved.name): next run \(saved.nextRunAt.map(Timestamp.format) ?? "never")")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a schedule.")
        @Argument(help: "Schedule name.") var name: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let name = self.name
            try await withJobQueue(options) { queue in try await queue.deleteSchedule(named: name); print("removed \(name)") }
        }
    }

    struct Trigger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enqueue a schedule's job now.")
        @Argument(help: "Schedule name.") var name: String
        @OptionGroup var options: ServerOptions

        func run() async throws {
            let name = self.name
            try await withJobQueue(options) { queue in print(try await queue.triggerSchedule(name).id) }
        }
    }
}
