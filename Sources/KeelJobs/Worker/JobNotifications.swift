import Foundation
import KeelServer
import Logging
import ServiceLifecycle
import Synchronization

/// Listens for PostgreSQL notifications of new jobs and wakes this process's idle workers, so a job
/// enqueued anywhere starts at once instead of at the next poll, and for the jobs handed over to this
/// worker (see `HandOver.swift`). If the connection drops it listens again; polling keeps working meanwhile.
///
/// Every worker process hears every notification. If all of them claimed at once, the losers' empty
/// claims would compete with the winner for CPU and for the row, delaying the start they race for. So the
/// processes that work the same queues take turns: the notification's transaction number picks one owner,
/// which claims at once; the others claim a moment later, which finds nothing unless the owner was busy,
/// gone or had not registered yet.
final class JobNotifications: Service {
    let queue: JobQueue
    let worker: JobWorker
    let workerID: String
    /// Where the jobs handed over to this worker arrive.
    let handOverChannel: String
    let queues: Set<String>
    let readiness: Readiness?
    private let peers = Mutex<NotificationOwnership>(NotificationOwnership(me: "", peers: []))
    var ownership: NotificationOwnership { peers.withLock { $0 } }
    private let deferredWakePending = Atomic<Bool>(false)
    private let logger = Logger(label: "keel.jobs.notifications")

    /// Long enough for the owner's claim to commit, short enough that a job the owner cannot take waits
    /// unnoticeably.
    static let deferral = Duration.milliseconds(3)
    /// How often the list of peers is read again; a dead peer's turns are deferred until it drops out.
    let peerRefresh: Duration

    init(queue: JobQueue, worker: JobWorker, readiness: Readiness?, peerRefresh: Duration = .seconds(5)) {
        self.queue = queue
        self.peerRefresh = peerRefresh
        self.worker = worker
        self.workerID = worker.id
        self.handOverChannel = JobQueue.handOverChannel(workerID: worker.id)
        self.queues = Set(worker.concurrency.keys)
        self.readiness = readiness
    }

    func run() async throws {
        if let readiness {
            guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        }
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen() }
                group.addTask { await self.refreshPeers() }
                await group.waitForAll()
            }
        }
    }

    private func listen() async {
        var delay = Duration.milliseconds(250)
        while !Task.isCancelled {
            var failure: (any Error)?
            do {
                try await queue.store.listen(channels: [JobQueue.notificationChannel, handOverChannel]) { [worker] in
                    worker.handOver(listening: true)
                } notified: { [self] channel, payload in
                    if channel == handOverChannel { worker.handedOver(payload) } else { notified(payload) }
                }
            } catch {
                failure = error
            }
            worker.handOver(listening: false)
            guard !Task.isCancelled else { return }
            if let failure {
                logger.warning("job notifications interrupted; listening again", metadata: ["error": "\(failure)", "retry_in": "\(delay)"])
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(10))
        }
    }

    private func refreshPeers() async {
        while !Task.isCancelled {
            if let ids = try? await queue.liveWorkerIDs(workingQueues: queues) {
                peers.withLock { $0 = NotificationOwnership(me: workerID, peers: ids) }
            }
            try? await Task.sleep(for: peerRefresh)
        }
    }

    func notified(_ payload: String) {
        if peers.withLock({ $0.owns(payload) }) {
            queue.wake.signal()
            return
        }
        // One deferred wake covers every notification that arrives while it waits.
        guard deferredWakePending.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        Task {
            try? await Task.sleep(for: Self.deferral)
            deferredWakePending.store(false, ordering: .relaxed)
            queue.wake.signal()
        }
    }
}

/// Which of the worker processes working the same queues claims first when a notification arrives.
struct NotificationOwnership: Sendable, Equatable {
    let me: String
    /// The live workers' ids, sorted, as every process reads them from the store.
    let peers: [String]

    /// Notifications without a transaction number (a retry or a give-back), and any notification while
    /// this process is alone or not yet listed, are everyone's.
    func owns(_ payload: String) -> Bool {
        guard peers.count > 1, peers.contains(me), let transaction = UInt64(payload) else { return true }
        return peers[Int(transaction % UInt64(peers.count))] == me
    }
}
