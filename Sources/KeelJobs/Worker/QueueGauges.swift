import Foundation
import KeelServer
import Logging
import Metrics
import ServiceLifecycle

/// Keeps `keel_queue_jobs{queue,state}`, `keel_queue_oldest_waiting_seconds{queue}` (how long the oldest due job has
/// waited: the alert for stuck or starved queues) and `keel_workers{status}` current for Prometheus: the
/// counts live in the store, so every process with the api role reads them every few seconds.
struct QueueGauges: Service {
    let queue: JobQueue
    let readiness: Readiness?
    let interval: Duration = .seconds(5)
    let logger = Logger(label: "keel.jobs.gauges")

    func run() async throws {
        if let readiness {
            guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let oldest = try await queue.oldestWaiting()
                    for record in try await queue.queues() {
                        for (state, count) in record.counts {
                            Gauge(label: "keel_queue_jobs", dimensions: [("queue", record.name), ("state", state)]).record(count)
                        }
                        Gauge(label: "keel_queue_oldest_waiting_seconds", dimensions: [("queue", record.name)]).record(oldest[record.name] ?? 0)
                    }
                    let workers = try await queue.workers()
                    for status in ["alive", "dead", "stopped"] {
                        Gauge(label: "keel_workers", dimensions: [("status", status)]).record(workers.filter { $0.status == status }.count)
                    }
                } catch {
                    logger.warning("cannot read queue counts", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
