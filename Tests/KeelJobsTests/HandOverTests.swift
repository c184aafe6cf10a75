import Foundation
import KeelServer
import KeelStore
import KeelTestSupport
import Synchronization
import Testing

@testable import KeelJobs

/// Hand-over on PostgreSQL: an idle worker offers a slot, and the insert of a job it can run writes the job as running
/// for it and sends it on the worker's own channel, with no claim in between.
@Suite struct HandOverTests {
    /// How many handlers of the `gauge` task run at once, and the most there ever were.
    final class Gauge: Sendable {
        let state = Mutex((now: 0, most: 0))
        func enter() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
        func leave() { state.withLock { $0.now -= 1 } }
        var most: Int { state.withLock { $0.most } }
    }

    static func tasks(_ gauge: Gauge) -> JobRegistry {
        var registry = JobRegistry.testTasks
        registry.register("gauge") { (args: Echo, _: JobContext) -> Echo in
            gauge.enter()
            defer { gauge.leave() }
            try await Task.sleep(for: .milliseconds(150))
            return args
        }
        return registry
    }

    /// One worker process with its listener, polling only once a minute, so whatever starts at once came by
    /// notification or hand-over.
    static func withWorker(_ store: any Store, concurrency: [String: Int], tasks: JobRegistry = .testTasks,
                           _ body: (JobQueue, JobWorker) async throws -> Void) async throws {
        let workerSide = JobQueue(store: store, tasks: tasks)
        let worker = JobWorker(queue: workerSide, concurrency: concurrency, leaseSeconds: 3, idlePoll: .seconds(60))
        let listener = JobNotifications(queue: workerSide, worker: worker, readiness: nil)
        let running = [Task { try await worker.run() }, Task { try await listener.run() }]
        defer { running.forEach { $0.cancel() } }
        try await body(JobQueue(store: store, tasks: tasks), worker)
    }

    static func offers(_ store: any Store, worker: String) async throws -> Int {
        try await store.query("SELECT COUNT(*) AS n FROM keel_job_reservations WHERE worker_id = \(worker) AND armed").first?.int("n") ?? 0
    }

    @Test func anIdleWorkerIsHandedANewJobWithoutAClaimOrAWakeUp() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            try await Self.withWorker(store, concurrency: ["default": 4]) { enqueuer, worker in
                #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
                let wakeUps = Mutex<[String]>([])
                let eavesdropper = Task {
                    try await store.listen(channels: [JobQueue.notificationChannel], listening: {}) { _, payload in wakeUps.withLock { $0.append(payload) } }
                }
                defer { eavesdropper.cancel() }
                try await Task.sleep(for: .milliseconds(300))

                let job = try await enqueuer.enqueue([NewJob(task: "echo", args: .object(["n": .number(7)]))])[0].job
                // The insert itself wrote the job as running for the worker: nothing was left to claim.
                let row = try await store.query("SELECT state, worker_id, attempt FROM keel_jobs WHERE id = \(job.id)")[0]
                #expect(try ["running", "succeeded"].contains(row.string("state")))
                #expect(try row.optionalString("worker_id") == worker.id)
                #expect(try row.int("attempt") == 1)
                #expect(try await eventually(timeout: .seconds(10)) { try await enqueuer.job(id: job.id).state == .succeeded })
                #expect(try await enqueuer.job(id: job.id).result == .object(["n": .number(7)]))
                // Offered again for the next job; no other process was woken.
                #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
                #expect(wakeUps.withLock { $0 }.isEmpty)

                // A job the worker cannot take now is left to the claim, which the notification wakes.
                _ = try await enqueuer.enqueue([NewJob(task: "echo", args: .object(["n": .number(8)]), delaySeconds: 1)])
                #expect(try await eventually(timeout: .seconds(10)) { !wakeUps.withLock { $0 }.isEmpty })
            }
        }
    }

    @Test func pausedQueuesDelayedJobsAndUnknownTasksAreLeftToTheClaim() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            try await Self.withWorker(store, concurrency: [JobQueue.anyQueue: 4]) { enqueuer, worker in
                #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
                // A hand-over takes the offer (and the worker makes a new one): the same offer left means none happened.
                func offer() async throws -> [[SQLValue]] { try await store.query("SELECT armed, armed_at FROM keel_job_reservations").map(\.values) }
                let before = try await offer()
                _ = try await enqueuer.updateQueue(named: "default", QueueChange(paused: true))
                _ = try await enqueuer.enqueue([NewJob(task: "echo")])
                #expect(try await offer() == before, "a job of a paused queue was handed over")
                _ = try await enqueuer.enqueue([NewJob(queue: "later", task: "echo", delaySeconds: 30)])
                #expect(try await offer() == before, "a delayed job was handed over")
                try await store.execute("UPDATE keel_job_reservations SET tasks = ',count,' WHERE worker_id = \(worker.id)")
                let before2 = try await offer()
                _ = try await enqueuer.enqueue([NewJob(queue: "other", task: "echo")])
                #expect(try await offer() == before2, "a job of a task the offer does not name was handed over")
                _ = try await enqueuer.enqueue([NewJob(queue: "other", task: "count", args: .object(["n": .number(-1)]))])
                #expect(try await offer() != before2, "the job of a task the offer names was not handed over")
            }
        }
    }

    /// Hand-overs and claims together never run more of a queue's jobs at once than its concurrency.
    @Test func handOversKeepTheConcurrencyLimit() async throws {
        let gauge = Gauge()
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            try await Self.withWorker(store, concurrency: ["default": 2], tasks: Self.tasks(gauge)) { enqueuer, worker in
                #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
                var ids: [String] = []
                for n in 0..<12 {
                    ids.append(try await enqueuer.enqueue([NewJob(task: "gauge", args: .object(["n": .number(Double(n))]))])[0].job.id)
                    try await Task.sleep(for: .milliseconds(40))
                }
                #expect(try await eventually(timeout: .seconds(30)) {
                    try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE state = 'succeeded'").first?.int("n") == 12
                })
                #expect(gauge.most == 2)
                let handedOver = try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE attempt = 1 AND worker_id = \(worker.id)")
                #expect(try handedOver.first?.int("n") == 12)
            }
        }
    }

    /// A worker of the enqueuing process gets its job from the insert's return: with no listener behind its offer
    /// (no notification can come), a minute's poll and a 20 s lease loop (no adoption before then), the job still
    /// runs at once; and the enqueue reports it running for that worker, waking no claim (there is nothing to claim).
    @Test func aWorkerOfTheEnqueuingProcessStartsItsJobFromTheInsert() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let queue = JobQueue(store: store, tasks: .testTasks)
            let worker = JobWorker(queue: queue, concurrency: ["default": 2], leaseSeconds: 60, idlePoll: .seconds(60))
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            try await Task.sleep(for: .milliseconds(200))
            worker.handOver(listening: true)
            #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
            let wakeUps = queue.wake.current
            let job = try await queue.enqueue([NewJob(task: "echo", args: .object(["n": .number(5)]))])[0].job
            #expect(job.state == .running && job.workerID == worker.id && job.attempt == 1 && job.startedAt != nil)
            #expect(try await eventually(timeout: .seconds(15)) { try await queue.job(id: job.id).state == .succeeded })
            #expect(queue.wake.current == wakeUps)
            // A job left waiting (delayed) wakes the claim as before.
            _ = try await queue.enqueue([NewJob(task: "echo", delaySeconds: 30)])
            #expect(queue.wake.current > wakeUps)
            #expect(try await queue.job(id: job.id).result == .object(["n": .number(5)]))
            // Its notification never came: the ledger holds it until the listener stops, then lets it go.
            #expect(worker.handOverLedger.withLock { $0.startedFromInsert } == [job.id])
            worker.handOver(listening: false)
            #expect(worker.handOverLedger.withLock { $0.startedFromInsert.isEmpty })
        }
    }

    /// With its listener running too, each job of the enqueuing process reaches its worker twice (the insert's
    /// return and the notification) and runs once, whichever comes first.
    @Test func aJobReachingItsWorkerTwiceRunsOnce() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let queue = JobQueue(store: store, tasks: .testTasks)
            let worker = JobWorker(queue: queue, concurrency: ["default": 4], leaseSeconds: 30, idlePoll: .seconds(60))
            let listener = JobNotifications(queue: queue, worker: worker, readiness: nil)
            let running = [Task { try await worker.run() }, Task { try await listener.run() }]
            defer { running.forEach { $0.cancel() } }
            #expect(try await eventually(timeout: .seconds(10)) { try await Self.offers(store, worker: worker.id) == 1 })
            var handedOver = 0
            for n in 0..<40 {
                let job = try await queue.enqueue([NewJob(task: "count", args: .object(["n": .number(Double(20_000 + n))]))])[0].job
                if job.state == .running { handedOver += 1 }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(handedOver >= 20, "only \(handedOver) of 40 jobs were handed over")
            #expect(try await eventually(timeout: .seconds(30)) {
                try await store.query("SELECT COUNT(*) AS n FROM keel_jobs WHERE state = 'succeeded'").first?.int("n") == 40
            })
            // Late notifications have had time to arrive (and be passed over).
            #expect(try await eventually(timeout: .seconds(10)) { worker.handOverLedger.withLock { $0.startedFromInsert.isEmpty } })
            try await Task.sleep(for: .milliseconds(500))
            // Runs are counted by `n`; other suites count theirs under other numbers.
            let runs = testRunLog.counts.filter { (20_000..<20_040).contains($0.key) }
            #expect(runs.count == 40 && runs.values.allSatisfy { $0 == 1 }, "a job ran twice or never: \(runs)")
            #expect(worker.handOverLedger.withLock { $0.expected.isEmpty && $0.startedFromNotification.isEmpty })
        }
    }

    /// A job handed over whose notification never arrived (the listener's connection dropped) is still the worker's:
    /// its lease loop finds and runs it.
    @Test func aHandOverWithoutItsNotificationIsAdopted() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let queue = JobQueue(store: store, tasks: .testTasks)
            let worker = JobWorker(queue: queue, concurrency: ["default": 2], leaseSeconds: 30, idlePoll: .seconds(60))
            let running = Task { try await worker.run() }
            defer { running.cancel() }
            #expect(try await eventually(timeout: .seconds(10)) { try await queue.workers().contains { $0.id == worker.id } })
            let job = try await queue.enqueue([NewJob(task: "echo", args: .object(["n": .number(3)]))])[0].job
            // As the trigger writes a hand-over; the worker polls only once a minute and hears nothing.
            let now = Date()
            try await store.execute("""
                UPDATE keel_jobs SET state = 'running', attempt = 1, worker_id = \(worker.id), lease_token = 'lease_lost',
                    started_at = \(now.addingTimeInterval(-6)), lease_expires_at = \(now.addingTimeInterval(60)) WHERE id = \(job.id)
                """)
            #expect(try await eventually(timeout: .seconds(30)) { try await queue.job(id: job.id).state == .succeeded })
            #expect(try await queue.job(id: job.id).attempt == 1)
        }
    }

    @Test func offersOfWorkersThatStoppedHeartbeatingAreDropped() async throws {
        try await withScratchStore(.postgres) { store in
            try await store.migrate(JobsModule.migrations)
            let queue = JobQueue(store: store, tasks: .testTasks)
            try await queue.registerWorker(id: "wrk_alive", queues: ["*": 4], running: 0, startedAt: Date())
            try await queue.registerWorker(id: "wrk_gone", queues: ["*": 4], running: 0, startedAt: Date().addingTimeInterval(-120))
            try await store.execute("UPDATE keel_workers SET heartbeat_at = \(Date().addingTimeInterval(-60)) WHERE id = 'wrk_gone'")
            for worker in ["wrk_alive", "wrk_gone"] {
                try await queue.armHandOver(workerID: worker, slot: "*", tasks: ["echo"], leaseSeconds: 30)
            }
            try await queue.dropStaleHandOvers()
            let left = try await store.query("SELECT worker_id FROM keel_job_reservations WHERE armed").map { try $0.string("worker_id") }
            #expect(left == ["wrk_alive"])
            // The one offer left takes the next job; the job after it finds none and waits for a claim.
            let first = try await queue.enqueue([NewJob(task: "echo")])[0].job
            let second = try await queue.enqueue([NewJob(task: "echo")])[0].job
            #expect(try await queue.job(id: first.id).workerID == "wrk_alive")
            #expect(try await queue.job(id: second.id).state == .available)
        }
    }

    @Test func theNotificationCarriesTheWholeJob() throws {
        let payload = """
            {"slot" : "*", "lease_token" : "lease_abc", "traceparent" : null, "id" : "job_1", "queue" : "default", "task" : "echo", \
            "args" : "{\\"n\\":1}", "priority" : 5, "state" : "running", "run_at" : 1795680000.123456, "attempt" : 1, \
            "max_attempts" : 3, "backoff_seconds" : null, "timeout_seconds" : 60, "unique_key" : null, "tags" : "[\\"a\\"]", \
            "errors" : "[]", "cancel_requested" : false, "created_at" : 1795680000.12, "started_at" : 1795680000.5, \
            "worker_id" : "wrk_1", "lease_expires_at" : 1795680030.5, "expires_at" : null, "workflow_id" : null}
            """
        let handed = try #require(JobQueue.handedOver(payload))
        #expect(handed.slot == "*")
        #expect(handed.claim.leaseToken == "lease_abc")
        let job = handed.claim.job
        #expect(job.id == "job_1" && job.task == "echo" && job.args == .object(["n": .number(1)]) && job.priority == 5)
        #expect(job.state == .running && job.attempt == 1 && job.tags == ["a"] && job.timeoutSeconds == 60)
        #expect(abs(job.startedAt!.timeIntervalSince1970 - 1795680000.5) < 0.000_01)
        #expect(JobQueue.handedOver("{\"slot\": 1}") == nil)
        #expect(JobQueue.handedOver("not json") == nil)
    }
}
