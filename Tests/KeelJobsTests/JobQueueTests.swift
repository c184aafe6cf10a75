import Foundation
@testable import KeelJobs
import KeelServer
import KeelStore
import KeelTestSupport
import Synchronization
import KeelCore
import KeelTelemetry
import Tracing
import Testing

/// Runs `body` with a job queue on a migrated scratch store of `kind`.
func withQueue(_ kind: StoreKind, tasks: JobRegistry = .testTasks, _ body: (JobQueue) async throws -> Void) async throws {
    try await withScratchStore(kind) { store in
        try await store.migrate(JobsModule.migrations)
        try await body(JobQueue(store: store, tasks: tasks))
    }
}

/// Runs `body` while `worker` works, then stops it.
func whileWorking(_ worker: JobWorker, _ body: () async throws -> Void) async throws {
    let task = Task { try await worker.run() }
    defer { task.cancel() }
    try await body()
}

/// Polls until `condition` holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return false
}

struct Echo: Codable, Sendable, Equatable { var n: Int }

/// Counts how often each job ran, to prove none ran twice.
final class RunLog: Sendable {
    let runs = Mutex<[Int: Int]>([:])
    func record(_ n: Int) { runs.withLock { $0[n, default: 0] += 1 } }
    var counts: [Int: Int] { runs.withLock { $0 } }
}

let testRunLog = RunLog()

extension JobRegistry {
    static var testTasks: JobRegistry {
        var registry = JobRegistry()
        registry.register("echo") { (args: Echo, _: JobContext) in args }
        registry.register("count") { (args: Echo, _: JobContext) in testRunLog.record(args.n); return args }
        registry.register("fail", backoffSeconds: 1) { (_: Echo, context: JobContext) -> Echo in
            throw TestFailure("attempt \(context.attempt) failed")
        }
        registry.register("sleep") { (args: Echo, context: JobContext) -> Echo in
            for step in 0..<(args.n * 10) {
                await context.progress(step, "step \(step)")
                try await Task.sleep(for: .milliseconds(100))
            }
            return args
        }
        return registry
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite struct JobQueueTests {
    @Test(arguments: StoreKind.allCases)
    func badJobsAreRefusedWithReasonsAndBatchesAreAllOrNothing(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            func problem(_ jobs: [NewJob]) async -> Problem? {
                do { _ = try await queue.enqueue(jobs); return nil } catch { return error as? Problem }
            }
            let unknown = await problem([NewJob(task: "no.such.task")])
            #expect(unknown?.status == .unprocessableContent)
            let unknownErrors = String(describing: unknown?.extensions["errors"])
            #expect(unknownErrors.contains("is not a task any worker handles"))
            #expect(await problem([NewJob(task: "echo", delaySeconds: -1)])?.status == .unprocessableContent)
            #expect(await problem([NewJob(task: "echo", runAt: Date(), delaySeconds: 5)])?.status == .unprocessableContent)
            #expect(await problem([NewJob(queue: "bad queue!", task: "echo")])?.status == .unprocessableContent)
            #expect(await problem([NewJob(task: "echo", args: .string(String(repeating: "x", count: 70_000)))])?.status == .unprocessableContent)
            let batch = await problem([NewJob(task: "echo"), NewJob(task: "echo", maxAttempts: 0)])
            let batchErrors = String(describing: batch?.extensions["errors"])
            #expect(batchErrors.contains("jobs[1].max_attempts"))
            let check1 = try await queue.list(.init(), limit: 10, after: nil).items.isEmpty
            #expect(check1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aUniqueKeyMakesExactlyOneJobUnderConcurrentEnqueues(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let outcomes = try await withThrowingTaskGroup(of: EnqueueOutcome.self) { group in
                for n in 0..<20 {
                    group.addTask { try await queue.enqueue([NewJob(task: "echo", args: .object(["n": .number(Double(n))]), uniqueKey: "invoice-42")])[0] }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(outcomes.map(\.job.id)).count == 1)
            #expect(outcomes.filter { !$0.duplicate }.count == 1)
            let check2 = try await queue.list(.init(), limit: 50, after: nil).items.count == 1
            #expect(check2)
            // After the window the key is free again.
            let short = try await queue.enqueue([NewJob(task: "echo", uniqueKey: "short", uniqueForSeconds: 1)])[0]
            try await Task.sleep(for: .milliseconds(1100))
            let again = try await queue.enqueue([NewJob(task: "echo", uniqueKey: "short", uniqueForSeconds: 1)])[0]
            #expect(!again.duplicate && again.job.id != short.job.id)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func workersRunJobsByPriorityAndRecordResults(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let jobs = try await queue.enqueue((0..<40).map { NewJob(task: "echo", args: .object(["n": .number(Double($0))]), priority: $0 % 3) })
            let delayed = try await queue.enqueue([NewJob(task: "echo", args: .object(["n": .number(99)]), delaySeconds: 1.5)])[0].job
            #expect(delayed.state == .scheduled)
            let worker = JobWorker(queue: queue, concurrency: [JobQueue.anyQueue: 4], idlePoll: .milliseconds(200))
            try await whileWorking(worker) {
                let check3 = try await eventually { try await queue.list(.init(), limit: 200, after: nil).items.allSatisfy { $0.state == .succeeded } }
                #expect(check3)
            }
            for outcome in jobs {
                let job = try await queue.job(id: outcome.job.id)
                #expect(job.result == outcome.job.args)
                #expect(job.attempt == 1 && job.workerID == worker.id && job.finishedAt != nil)
            }
            let ranDelayed = try await queue.job(id: delayed.id)
            #expect(try #require(ranDelayed.startedAt) >= delayed.runAt)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func failuresRetryWithBackoffThenDieWithTheirHistory(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let job = try await queue.enqueue([NewJob(task: "fail", args: .object(["n": .number(1)]), maxAttempts: 3)])[0].job
            let worker = JobWorker(queue: queue, concurrency: ["default": 1], idlePoll: .milliseconds(100))
            try await whileWorking(worker) {
                let check4 = try await eventually { try await queue.job(id: job.id).state == .dead }
                #expect(check4)
            }
            let dead = try await queue.job(id: job.id)
            #expect(dead.attempt == 3)
            #expect(dead.errors.map(\.attempt) == [1, 2, 3])
            #expect(dead.errors.map(\.error) == ["attempt 1 failed", "attempt 2 failed", "attempt 3 failed"])
            // Backoff: base 1 s doubling with ±25% jitter between the attempts.
            let gaps = zip(dead.errors.dropFirst(), dead.errors).map { $0.at.timeIntervalSince($1.at) }
            #expect(gaps[0] >= 0.7 && gaps[1] >= 1.4)

            let retried = try await queue.retry(id: job.id)
            #expect(retried.state == .available && retried.maxAttempts == 4)
            await #expect(throws: Problem.self) { _ = try await queue.retry(id: job.id) }
        }
    }

    @Test func timeoutsAndCancellationStopRunningHandlers() async throws {
        try await withQueue(.sqlite) { queue in
            let slow = try await queue.enqueue([NewJob(task: "sleep", args: .object(["n": .number(30)]), maxAttempts: 1, timeoutSeconds: 1)])[0].job
            let cancelMe = try await queue.enqueue([NewJob(task: "sleep", args: .object(["n": .number(30)]))])[0].job
            let worker = JobWorker(queue: queue, concurrency: ["default": 2], leaseSeconds: 2, idlePoll: .milliseconds(100))
            try await whileWorking(worker) {
                let check5 = try await eventually { try await queue.job(id: cancelMe.id).progress != nil }
                #expect(check5)
                let requested = try await queue.cancel(id: cancelMe.id)
                #expect(requested.cancelRequested && requested.state == .running)
                let check6 = try await eventually { try await queue.job(id: cancelMe.id).state == .cancelled }
                #expect(check6)
                let check7 = try await eventually { try await queue.job(id: slow.id).state == .dead }
                #expect(check7)
            }
            let check8 = try await queue.job(id: slow.id).errors.first?.error == "timed out after 1 s"
            #expect(check8)
            let check9 = try await queue.job(id: cancelMe.id).errors.first?.error == "cancelled while running"
            #expect(check9)
            await #expect(throws: Problem.self) { _ = try await queue.cancel(id: slow.id) }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func jobsOfALostWorkerAreRescuedAndStaleLeasesChangeNothing(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let job = try await queue.enqueue([NewJob(task: "echo", args: .object(["n": .number(7)]))])[0].job
            // A worker claims it and dies: no heartbeat, no completion.
            let lost = try #require(try await queue.claim(queue: "default", limit: 10, workerID: "wrk_gone", leaseSeconds: 1).first)
            let check10 = try await queue.claim(queue: "default", limit: 10, workerID: "wrk_other", leaseSeconds: 1).isEmpty
            #expect(check10)
            try await Task.sleep(for: .milliseconds(1100))
            let check11 = try await queue.rescueExpiredLeases() == 1
            #expect(check11)
            let rescued = try await queue.job(id: job.id)
            #expect(rescued.state == .retrying && rescued.attempt == 1)
            #expect(rescued.errors.first?.error.contains("wrk_gone lost its lease") == true)
            // The dead worker's late answer is ignored.
            let check12 = try await queue.complete(lost, result: .string("late")) == false
            #expect(check12)
            let check13 = try await queue.job(id: job.id).result == nil
            #expect(check13)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func unstartedJobsExpireAfterTheirTTL(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            _ = try await queue.updateQueue(named: "slow", QueueChange(paused: true))
            let doomed = try await queue.enqueue([NewJob(queue: "slow", task: "echo", ttlSeconds: 1)])[0].job
            let patient = try await queue.enqueue([NewJob(queue: "slow", task: "echo", ttlSeconds: 3600)])[0].job
            #expect(doomed.expiresAt != nil)
            try await Task.sleep(for: .milliseconds(1100))
            // Past its TTL a job is never claimed, even before the sweep marks it.
            _ = try await queue.updateQueue(named: "slow", QueueChange(paused: false))
            let claimed = try await queue.claim(queue: "slow", limit: 10, workerID: "wrk_test", leaseSeconds: 30)
            #expect(claimed.map(\.job.id) == [patient.id])
            #expect(try await queue.expireStaleJobs() == 1)
            let expired = try await queue.job(id: doomed.id)
            #expect(expired.state == .expired && expired.finishedAt != nil)
            let retried = try await queue.retry(id: doomed.id)
            #expect(retried.state == .available && retried.expiresAt == nil)
        }
    }

    /// A worker's `*` slots hold for jobs of every queue together.
    @Test func anyQueueConcurrencyIsALimit() async throws {
        try await withQueue(.sqlite) { queue in
            _ = try await queue.enqueue((0..<6).map { NewJob(queue: $0 % 2 == 0 ? "a" : "b", task: "sleep", args: .object(["n": .number(1)])) })
            let worker = JobWorker(queue: queue, concurrency: [JobQueue.anyQueue: 2], idlePoll: .milliseconds(50))
            var busiest = 0
            try await whileWorking(worker) {
                var filter = JobQueue.Filter()
                filter.state = .running
                let done = try await eventually {
                    busiest = max(busiest, try await queue.list(filter, limit: 10, after: nil).items.count)
                    return try await queue.list(JobQueue.Filter(), limit: 10, after: nil).items.allSatisfy { $0.state == .succeeded }
                }
                #expect(done)
            }
            #expect(busiest == 2)
        }
    }

    /// What enqueue answers is built without reading the job back; it must be exactly what a read gives.
    @Test(arguments: StoreKind.allCases)
    func theEnqueuedRecordIsWhatTheStoreHolds(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let jobs = [
                NewJob(queue: "reports", task: "echo", args: .object(["n": .number(3), "note": .string("ü")]), priority: 7, delaySeconds: 1.2345,
                       maxAttempts: 3, backoffSeconds: 4, timeoutSeconds: 60, tags: ["a", "b"], ttlSeconds: 90),
                NewJob(task: "echo", uniqueKey: "k-1"),
            ]
            // As the API shows them (timestamps in milliseconds).
            func json(_ job: JobRecord) throws -> String { String(decoding: try JSONEncoder.keel().encode(job), as: UTF8.self) }
            for job in jobs {
                let answered = try await queue.enqueue([job])[0].job
                let stored = try await queue.job(id: answered.id)
                #expect(try json(answered) == json(stored))
            }
            let batch = try await queue.enqueue(jobs.map { var job = $0; job.uniqueKey = nil; return job })
            for outcome in batch {
                let stored = try await queue.job(id: outcome.job.id)
                #expect(try json(outcome.job) == json(stored))
            }
        }
    }

    /// Two workers with their own view of the queue (as two processes would have) together start at most
    /// `limit` jobs of a rate-limited queue in any window, while other queues run unhindered.
    @Test(arguments: StoreKind.allCases)
    func rateLimitsHoldAcrossWorkers(_ kind: StoreKind) async throws {
        try await withQueue(kind) { queue in
            let limited = try await queue.updateQueue(named: "api", QueueChange(rateLimit: QueueRateLimit(limit: 4, perSeconds: 1)))
            #expect(limited.rateLimit == QueueRateLimit(limit: 4, perSeconds: 1))
            _ = try await queue.enqueue((0..<12).map { NewJob(queue: "api", task: "echo", args: .object(["n": .number(Double($0))])) })
            _ = try await queue.enqueue((0..<12).map { NewJob(task: "echo", args: .object(["n": .number(Double($0))])) })
            let elsewhere = JobQueue(store: queue.store, tasks: .testTasks)
            let workers = [JobWorker(queue: queue, concurrency: [JobQueue.anyQueue: 8], idlePoll: .milliseconds(50)),
                           JobWorker(queue: elsewhere, concurrency: ["api": 8], idlePoll: .milliseconds(50))]
            let tasks = workers.map { worker in Task { try await worker.run() } }
            defer { tasks.forEach { $0.cancel() } }
            let done = try await eventually {
                try await queue.list(JobQueue.Filter(), limit: 50, after: nil).items.allSatisfy { $0.state == .succeeded }
            }
            #expect(done)
            let starts = try await queue.list({ var filter = JobQueue.Filter(); filter.queue = "api"; return filter }(), limit: 50, after: nil)
                .items.compactMap(\.startedAt).map(\.timeIntervalSince1970).sorted()
            #expect(starts.count == 12)
            // Every start, with those in the second before it, makes at most four.
            let busiest = starts.map { start in starts.filter { $0 > start - 1 && $0 <= start }.count }.max() ?? 0
            #expect(busiest <= 4, "\(busiest) starts within one second")
            #expect(starts.last! - starts.first! >= 2)

            let invalid = await #expect(throws: Problem.self) {
                _ = try await queue.updateQueue(named: "api", QueueChange(rateLimit: QueueRateLimit(limit: -1, perSeconds: 0)))
            }
            let invalidFields = String(describing: invalid?.extensions["errors"])
            #expect(invalidFields.contains("rate_limit.per_seconds") && invalidFields.contains("rate_limit.limit"))
            let removed = try await queue.updateQueue(named: "api", QueueChange(rateLimit: QueueRateLimit(limit: 0, perSeconds: 1)))
            #expect(removed.rateLimit == nil)
        }
    }

    /// A worker polling only once a minute still starts a job enqueued elsewhere at once: PostgreSQL
    /// notifies its process. (The enqueuing queue object has its own wake signal, as another process would.)
    @Test func postgresNotificationsWakeIdleWorkersElsewhere() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let enqueuer = JobQueue(store: store, tasks: .testTasks)
            let workerSide = JobQueue(store: store, tasks: .testTasks)
            let worker = JobWorker(queue: workerSide, concurrency: ["default": 1], idlePoll: .seconds(60))
            let listener = JobNotifications(queue: workerSide, worker: worker, readiness: nil)
            let tasks = [Task { try await worker.run() }, Task { try await listener.run() }]
            defer { tasks.forEach { $0.cancel() } }
            try await Task.sleep(for: .milliseconds(500))  // both idle: the claim loop sleeps, the listener listens

            let started = ContinuousClock.now
            let job = try await enqueuer.enqueue([NewJob(task: "echo", args: .object(["n": .number(5)]))])[0].job
            let ran = try await eventually(timeout: .seconds(20)) { try await enqueuer.job(id: job.id).state == .succeeded }
            #expect(ran)
            #expect(ContinuousClock.now - started < .seconds(20))
        }
    }

    /// Two worker processes take turns claiming on notifications; when the owner of a notification has no
    /// free slot, the other still starts the job at once instead of at its next poll, a minute away.
    @Test func postgresNotificationOwnerBusyOtherProcessStartsTheJob() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let enqueuer = JobQueue(store: store, tasks: .testTasks)
            let sides = [JobQueue(store: store, tasks: .testTasks), JobQueue(store: store, tasks: .testTasks)]
            let workers = sides.map { JobWorker(queue: $0, concurrency: ["default": 1], idlePoll: .seconds(60)) }
            let listeners = zip(sides, workers).map { JobNotifications(queue: $0, worker: $1, readiness: nil, peerRefresh: .milliseconds(100)) }
            let tasks = workers.map { worker in Task { try await worker.run() } } + listeners.map { listener in Task { try await listener.run() } }
            defer { tasks.forEach { $0.cancel() } }
            let listed = try await eventually(timeout: .seconds(10)) { listeners.allSatisfy { $0.ownership.peers.count == 2 } }
            #expect(listed)
            let heard = Mutex<[String]>([])
            let eavesdropper = Task { try await store.listen(channels: [JobQueue.notificationChannel], listening: {}) { _, payload in heard.withLock { $0.append(payload) } } }
            defer { eavesdropper.cancel() }

            // One process is busy for the whole test; the jobs that follow are owned by each process in turn.
            let busy = try await enqueuer.enqueue([NewJob(task: "sleep", args: .object(["n": .number(30)]))])[0].job
            let busyStarted = try await eventually(timeout: .seconds(10)) { try await enqueuer.job(id: busy.id).state == .running }
            #expect(busyStarted)
            for n in 0..<8 {
                let job = try await enqueuer.enqueue([NewJob(task: "echo", args: .object(["n": .number(Double(n))]))])[0].job
                let ran = try await eventually(timeout: .seconds(10)) { try await enqueuer.job(id: job.id).state == .succeeded }
                #expect(ran, "job \(n) did not start although one worker was free")
            }
            #expect(try await enqueuer.job(id: busy.id).state == .running)
            let owners = Set(heard.withLock { $0 }.flatMap { payload in listeners.filter { $0.ownership.owns(payload) }.map(\.workerID) })
            #expect(owners.count == 2, "both processes owned some of the notifications")
        }
    }

    @Test func notificationOwnershipTakesTurns() {
        let peers = ["wrk_a", "wrk_b", "wrk_c"]
        let views = peers.map { NotificationOwnership(me: $0, peers: peers) }
        for transaction in 1000..<1030 {
            #expect(views.filter { $0.owns(String(transaction)) }.count == 1)
        }
        #expect(views[0].owns("999") && views[1].owns("1000") && views[2].owns("1001"))
        // Alone, not yet listed, or a notification without a transaction: claim at once.
        #expect(NotificationOwnership(me: "wrk_a", peers: ["wrk_a"]).owns("1001"))
        #expect(NotificationOwnership(me: "wrk_z", peers: peers).owns("1001"))
        #expect(views.allSatisfy { $0.owns("") })
    }

    @Test func manyWorkersOnPostgresNeverRunAJobTwice() async throws {
        try await withQueue(.postgres) { queue in
            let jobs = (0..<600).map { NewJob(task: "count", args: .object(["n": .number(Double($0 + 10_000))])) }
            _ = try await queue.enqueue(Array(jobs[..<300]))
            _ = try await queue.enqueue(Array(jobs[300...]))
            let workers = (0..<3).map { _ in JobWorker(queue: queue, concurrency: ["default": 8], idlePoll: .milliseconds(50)) }
            let tasks = workers.map { worker in Task { try await worker.run() } }
            defer { tasks.forEach { $0.cancel() } }
            let check14 = try await eventually(timeout: .seconds(60)) {
                let unfinished = try await queue.store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE state <> 'succeeded'")
                return try unfinished.first?.int("n") == 0
            }
            #expect(check14)
            let counts = testRunLog.counts.filter { (10_000..<10_600).contains($0.key) }
            #expect(counts.count == 600)
            #expect(counts.values.allSatisfy { $0 == 1 })
            let byWorker = try await queue.store.query("SELECT COUNT(DISTINCT worker_id) AS n FROM keel_jobs")
            #expect(try byWorker.first?.int("n") ?? 0 >= 2)
        }
    }
}

/// The run of a job continues the trace of whoever enqueued it.
@Suite struct JobTracingTests {
    static let seen = Mutex<String?>(nil)

    @Test func aRunContinuesTheEnqueuersTrace() async throws {
        var config = KeelConfig()
        config.logLevel = .critical
        _ = try Telemetry.bootstrap(config)
        var registry = JobRegistry()
        registry.register("traced") { (_: JSONValue, _: JobContext) -> JSONValue in
            Self.seen.withLock { $0 = TracePropagation.headers().first { $0.name == "traceparent" }?.value }
            return .null
        }
        try await withQueue(.sqlite, tasks: registry) { queue in
            let enqueuer = try await withSpan("enqueue") { _ in
                _ = try await queue.enqueue([NewJob(task: "traced")])
                return TracePropagation.headers().first { $0.name == "traceparent" }?.value
            }
            let enqueuerTrace = try #require(enqueuer?.split(separator: "-").dropFirst().first)
            let worker = JobWorker(queue: queue, concurrency: ["default": 1], idlePoll: .milliseconds(50))
            try await whileWorking(worker) {
                let ran = try await eventually { Self.seen.withLock { $0 } != nil }
                #expect(ran)
            }
            let runParts = try #require(Self.seen.withLock { $0 }).split(separator: "-")
            #expect(runParts.dropFirst().first == enqueuerTrace)
            // The run is its own span inside that trace.
            #expect(runParts.dropFirst(2).first != enqueuer?.split(separator: "-").dropFirst(2).first)
        }
    }
}
