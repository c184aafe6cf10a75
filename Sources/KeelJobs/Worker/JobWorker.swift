import Foundation
import KeelCore
import KeelServer
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import KeelTelemetry
import Tracing

/// Runs handlers for the jobs of its queues, each queue with its own concurrency. It claims in
/// batches up to its free slots, renews leases while handlers run, stops a handler whose job was
/// cancelled or timed out, and rescues the jobs of workers that died. On graceful shutdown it stops
/// claiming, lets running jobs finish until `drainTimeout`, then gives the rest back.
public final class JobWorker: Service {
    public let id: String
    let queue: JobQueue
    let concurrency: [String: Int]
    let leaseSeconds: Int
    let idlePoll: Duration
    let drainTimeout: Duration
    let readiness: Readiness?
    private let running = Mutex<[String: RunningJob]>([:])
    private let startedJobs = Atomic<Int>(0)
    /// Slots offered for hand-over (PostgreSQL): armed in the store, or taken by an insert whose job is on its way.
    /// An offered slot is kept free for that job, so a worker never runs more than its concurrency.
    private let offers = Mutex<[String: Offer]>([:])
    private enum Offer { case armed, taken }
    /// Set while this process hears its hand-over channel; jobs are only handed to a worker that can hear them.
    private let handOverListening = Atomic<Bool>(false)
    let handOverLedger = Mutex(HandOverLedger())
    private let stopping = Atomic<Bool>(false)
    private let logger = Logger(label: "keel.jobs.worker")

    /// - Parameters:
    ///   - concurrency: queue name → jobs run at once.
    ///   - idlePoll: how often an idle queue looks for work other processes enqueued.
    public init(queue: JobQueue, concurrency: [String: Int], leaseSeconds: Int = 30, idlePoll: Duration = .seconds(1),
                drainTimeout: Duration = .seconds(25), readiness: Readiness? = nil) {
        self.id = KeelID.make(prefix: "wrk")
        self.queue = queue
        self.concurrency = concurrency
        self.leaseSeconds = leaseSeconds
        self.idlePoll = idlePoll
        self.drainTimeout = drainTimeout
        self.readiness = readiness
    }

    public func run() async throws {
        if let readiness {
            guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        }
        logger.info("worker started", metadata: ["worker_id": .string(id), "queues": .string(concurrency.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ","))])
        let startedAt = Date()
        try? await queue.registerWorker(id: id, queues: concurrency, running: 0, startedAt: startedAt)
        await withTaskGroup(of: Void.self) { group in
            for (name, slots) in concurrency {
                group.addTask { await cancelWhenGracefulShutdown { await self.claimLoop(queue: name, slots: slots) } }
            }
            group.addTask { await cancelWhenGracefulShutdown { await self.leaseLoop() } }
            group.addTask { await cancelWhenGracefulShutdown { await self.timeoutLoop() } }
            await group.waitForAll()
        }
        stopping.store(true, ordering: .relaxed)
        queue.localWorkers.withLock { $0[id] = nil }
        if queue.store.dialect == .postgres { try? await queue.removeHandOvers(workerID: id) }
        await drain()
        try? await queue.deregisterWorker(id: id)
        logger.info("worker stopped", metadata: ["worker_id": .string(id)])
    }

    /// Jobs running in the slots of `slot` (a queue name, or ``JobQueue/anyQueue``).
    private func runningCount(slot: String) -> Int {
        running.withLock { $0.values.filter { $0.slot == slot }.count }
    }

    private func claimLoop(queue name: String, slots: Int) async {
        var failures = 0
        while !Task.isCancelled {
            let seen = queue.wake.current
            var free = slots - runningCount(slot: name) - (offers.withLock { $0[name] } == nil ? 0 : 1)
            // The slot kept for a hand-over is the last one free: take it back for the jobs already waiting.
            if free == 0, offers.withLock({ $0[name] == .armed }) { free += await withdrawOffer(slot: name) ? 1 : 0 }
            var claimed: [JobQueue.Claim] = []
            if free > 0 {
                do {
                    claimed = try await queue.claim(queue: name, limit: free, workerID: id, leaseSeconds: leaseSeconds, tasks: queue.tasks.taskNames)
                    failures = 0
                } catch {
                    failures += 1
                    logger.warning("cannot claim jobs", metadata: ["queue": .string(name), "error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(min(5000, 100 * (1 << min(failures, 6)))))
                    continue
                }
            }
            for claim in claimed { start(claim, slot: name) }
            // A full batch means more may be waiting; otherwise sleep until work or a free slot appears.
            if claimed.isEmpty || claimed.count < free {
                await offer(slot: name, slots: slots)
                await queue.wake.wait(after: seen, timeout: queue.idleWait(poll: idlePoll))
            }
        }
    }

    /// Offers one free slot for hand-over when nothing is waiting for it. Not for single-slot queues: their one slot
    /// could not be kept for a hand-over and still serve the jobs that become due without an insert.
    private func offer(slot name: String, slots: Int) async {
        guard handOverListening.load(ordering: .relaxed), !stopping.load(ordering: .relaxed), slots - runningCount(slot: name) >= 2,
              offers.withLock({ offers in
                  guard offers[name] == nil else { return false }
                  // Marked before the write: the job an insert hands over may arrive before the write returns.
                  offers[name] = .armed
                  return true
              }) else { return }
        do {
            try await queue.armHandOver(workerID: id, slot: name, tasks: queue.tasks.taskNames, leaseSeconds: leaseSeconds)
        } catch {
            offers.withLock { if $0[name] == .armed { $0[name] = nil } }
            logger.warning("cannot offer a slot for hand-over", metadata: ["queue": .string(name), "error": "\(error)"])
        }
    }

    /// Takes an armed offer back; `false` when an insert took it first (its job will arrive and use the slot).
    private func withdrawOffer(slot name: String) async -> Bool {
        guard (try? await queue.disarmHandOver(workerID: id, slot: name)) == true else {
            offers.withLock { if $0[name] == .armed { $0[name] = .taken } }
            return false
        }
        offers.withLock { if $0[name] == .armed { $0[name] = nil } }
        return true
    }

    /// Whether this process hears its hand-over channel (from ``JobNotifications``). Offers made while it did
    /// are withdrawn when it stops; jobs already handed over are adopted by the lease loop. Only while it hears it
    /// can inserts hand it jobs, so only then do this process's inserts look out for them (``JobQueue/localWorkers``).
    func handOver(listening: Bool) {
        handOverListening.store(listening, ordering: .relaxed)
        if listening {
            queue.localWorkers.withLock { $0[id] = self }
            queue.wake.signal()
        } else {
            queue.localWorkers.withLock { $0[id] = nil }
            offers.withLock { offers in offers = offers.filter { $0.value == .taken } }
            // The notifications of jobs started from their insert will not come now.
            handOverLedger.withLock { $0.startedFromInsert.removeAll() }
            Task { try? await queue.disarmHandOvers(workerID: id) }
        }
    }

    /// Runs a job an insert handed to this worker, with the slot it was offered for, and offers the slot again.
    func handedOver(_ payload: String) {
        guard let (slot, claim) = JobQueue.handedOver(payload) else {
            logger.warning("unreadable hand-over notification", metadata: ["worker_id": .string(id)])
            return
        }
        let id = claim.job.id
        let startedAlready = handOverLedger.withLock { ledger -> Bool in
            if ledger.startedFromInsert.remove(id) != nil { return true }
            if ledger.expected.contains(id) { ledger.startedFromNotification.insert(id) }
            return false
        }
        guard !startedAlready else { return }
        run(handedOver: claim, slot: slot)
    }

    /// This process is about to insert jobs `ids`; any of them handed to this worker may come from the insert's return.
    func expectHandOvers(_ ids: [String]) {
        handOverLedger.withLock { $0.expected.formUnion(ids) }
    }

    /// The insert of `ids` returned (or failed), and the jobs handed to this worker were taken.
    func stopExpectingHandOvers(_ ids: [String]) {
        handOverLedger.withLock { ledger in
            for id in ids {
                ledger.expected.remove(id)
                ledger.startedFromNotification.remove(id)
            }
        }
    }

    /// Runs a job this process's own insert handed to this worker, as the insert returns: sooner than its notification,
    /// which also comes and is then passed over. The notification names the slot the insert took; here it is the one
    /// offer open for the job's queue. With two open (the queue's own and any queue's), the notification runs the job.
    func handedOverByInsert(_ claim: JobQueue.Claim) {
        let id = claim.job.id
        let open = offers.withLock { offers in [claim.job.queue, JobQueue.anyQueue].filter { concurrency[$0] != nil && offers[$0] != nil } }
        let take = handOverLedger.withLock { ledger -> Bool in
            ledger.expected.remove(id)
            guard ledger.startedFromNotification.remove(id) == nil, open.count == 1, !stopping.load(ordering: .relaxed) else { return false }
            ledger.startedFromInsert.insert(id)
            return true
        }
        if take { run(handedOver: claim, slot: open[0]) }
    }

    private func run(handedOver claim: JobQueue.Claim, slot: String) {
        offers.withLock { $0[slot] = nil }
        // Adopted already, the notification being very late.
        guard running.withLock({ $0[claim.job.id] == nil }) else { return }
        guard let slots = concurrency[slot], !stopping.load(ordering: .relaxed) else {
            Task { try? await queue.release(claim) }
            return
        }
        queue.metrics.counter("keel_jobs_handed_over_total", [("queue", claim.job.queue)]).increment()
        start(claim, slot: slot)
        Task { await offer(slot: slot, slots: slots) }
    }

    /// Starts the jobs handed to this worker whose notifications never arrived.
    private func adoptHandOvers() async throws {
        let orphans = try await queue.unclaimedHandOvers(workerID: id, running: Set(running.withLock { $0.keys }), grace: 5)
        for claim in orphans where running.withLock({ $0[claim.job.id] == nil }) {
            let slot = concurrency[claim.job.queue] != nil ? claim.job.queue : JobQueue.anyQueue
            offers.withLock { if $0[slot] == .taken { $0[slot] = nil } }
            logger.warning("adopting a job handed over without a notification", metadata: ["job_id": .string(claim.job.id)])
            if concurrency[slot] == nil || stopping.load(ordering: .relaxed) { try await queue.release(claim) } else { start(claim, slot: slot) }
        }
    }

    private func start(_ claim: JobQueue.Claim, slot: String) {
        let job = claim.job
        guard let entry = queue.tasks.entry(job.task) else {
            Task { _ = try? await queue.fail(claim, error: "no handler for task \(job.task) in this worker", permanent: true, workerID: id) }
            return
        }
        let context = JobContext(jobID: job.id, attempt: job.attempt, queue: queue) { [queue] percent, message in
            try? await queue.progress(claim, percent: percent, message: message)
        }
        // The handler runs in its own task so that stopping it (cancel, timeout, shutdown) leaves the
        // bookkeeping below free to write the outcome to the store.
        // The run continues the enqueuer's trace, even when another process enqueued the job.
        let parent = claim.traceparent.map { TracePropagation.context(from: ["traceparent": $0]) } ?? .topLevel
        let run = RunningJob(claim: claim, slot: slot, deadline: .now + .seconds(job.timeoutSeconds), handler: Task {
            try await withSpan("job \(job.task)", context: parent, ofKind: .consumer) { span in
                span.attributes["keel.job.id"] = job.id
                span.attributes["keel.job.queue"] = job.queue
                span.attributes["keel.job.attempt"] = job.attempt
                return try await entry.handler(job.args, context)
            }
        })
        running.withLock { $0[job.id] = run }
        startedJobs.add(1, ordering: .relaxed)
        Task { await self.finish(run) }
    }

    private func finish(_ run: RunningJob) async {
        let claim = run.claim
        let job = claim.job
        defer {
            let wasFull = running.withLock { running in
                let full = running.values.filter { $0.slot == run.slot }.count >= concurrency[run.slot, default: 0]
                running.removeValue(forKey: job.id)
                return full
            }
            // Only a full queue's claim loop waits for a free slot; the others wait for work, which wakes them itself.
            if wasFull { queue.wake.signal() }
        }
        if let startedAt = job.startedAt {
            queue.metrics.timer("keel_job_wait_seconds", [("queue", job.queue)])
                .recordInterval(job.attempt == 1 ? job.createdAt : job.runAt, startedAt)
        }
        do {
            let result = try await run.handler.value
            _ = try await queue.complete(claim, result: result)
        } catch {
            switch run.stopReason {
            case .timedOut:
                _ = try? await queue.fail(claim, error: "timed out after \(job.timeoutSeconds) s", workerID: id)
            case .cancelled:
                _ = try? await queue.fail(claim, error: "cancelled while running", cancelled: true, workerID: id)
            case .shutdown:
                _ = try? await queue.release(claim)
            case nil:
                _ = try? await queue.fail(claim, error: String(describing: error), permanent: error is PermanentJobFailure, workerID: id)
            }
        }
    }

    /// Stops handlers that outlive their job's timeout. One loop for all jobs: a sleeping task per job would stay
    /// allocated until its full timeout even after the job finished (a cancelled sleep keeps its timer).
    private func timeoutLoop() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let current = running.withLock { Array($0.values) }
            for run in current where run.deadline <= now { run.stop(.timedOut) }
            let next = current.map(\.deadline).filter { $0 > now }.min() ?? now + .seconds(1)
            try? await Task.sleep(until: min(next, now + .seconds(1)), clock: .continuous)
        }
    }

    /// Renews leases of running jobs, stops those cancelled through the store, and rescues the jobs
    /// of lost workers. Once quiet for a whole interval after starting or after work, it returns the memory the work
    /// used to the system and drops code pages that start-up and the work touched but idling does not.
    private func leaseLoop() async {
        let interval = Duration.milliseconds(max(200, leaseSeconds * 1000 / 3))
        var startedAtLastTick = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let current = running.withLock { $0 }
            let started = startedJobs.load(ordering: .relaxed)
            defer { startedAtLastTick = started }
            do {
                try await queue.registerWorker(id: id, queues: concurrency, running: current.count, startedAt: Date())
                let cancelled = try await queue.heartbeat(current.values.map(\.claim), leaseSeconds: leaseSeconds)
                for id in cancelled { current[id]?.stop(.cancelled) }
                try await queue.rescueExpiredLeases()
                try await queue.expireStaleJobs()
                if queue.store.dialect == .postgres {
                    try await queue.dropStaleHandOvers()
                    try await adoptHandOvers()
                }
            } catch {
                logger.warning("cannot renew job leases", metadata: ["error": "\(error)"])
            }
            // Each interval it was quiet for, once this round of bookkeeping is done: give back what the work and the
            // bookkeeping used. Not between the jobs of a steady trickle, whose next job would pay for the dropped pages
            // in its start latency.
            if running.withLock({ $0.isEmpty }), started == startedAtLastTick, startedJobs.load(ordering: .relaxed) == started {
                releaseFreeHeap()
                releaseCleanFilePages()
            }
        }
    }

    /// Waits for running jobs until the drain deadline, then stops them and gives them back.
    private func drain() async {
        let deadline = ContinuousClock.now + drainTimeout
        // A cancelled worker (not a graceful stop) gives its jobs back at once.
        while !Task.isCancelled, ContinuousClock.now < deadline, running.withLock({ !$0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for run in running.withLock({ Array($0.values) }) { run.stop(.shutdown) }
        // Let the give-backs reach the store, bounded so a handler ignoring cancellation cannot hold the exit;
        // the pause is a detached sleep because this task may itself be cancelled (a sleep would return at once).
        let giveBack = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < giveBack, running.withLock({ !$0.isEmpty }) {
            await Task.detached { try? await Task.sleep(for: .milliseconds(10)) }.value
        }
    }
}

/// A job handed to a worker by an insert of its own process reaches it twice: from the insert's return and in the
/// notification. Whichever comes first runs it; these sets let the second pass it over.
struct HandOverLedger {
    /// Jobs this process is inserting.
    var expected: Set<String> = []
    /// Run from the insert's return; their notifications are still to come.
    var startedFromInsert: Set<String> = []
    /// Run from their notification before their insert returned.
    var startedFromNotification: Set<String> = []
}

/// A handler at work, and why it was stopped, if it was.
final class RunningJob: Sendable {
    enum StopReason: Sendable { case cancelled, timedOut, shutdown }

    let claim: JobQueue.Claim
    /// The worker slots it occupies: its queue's, or those of ``JobQueue/anyQueue``.
    let slot: String
    let deadline: ContinuousClock.Instant
    let handler: Task<JSONValue, any Error>
    private let reason = Mutex<StopReason?>(nil)

    init(claim: JobQueue.Claim, slot: String, deadline: ContinuousClock.Instant, handler: Task<JSONValue, any Error>) {
        self.claim = claim
        self.slot = slot
        self.deadline = deadline
        self.handler = handler
    }

    var stopReason: StopReason? { reason.withLock { $0 } }

    func stop(_ why: StopReason) {
        let first = reason.withLock { reason -> Bool in
            guard reason == nil else { return false }
            reason = why
            return true
        }
        if first { handler.cancel() }
    }
}
