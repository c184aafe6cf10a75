import Foundation
import KeelServer
import Logging
import ServiceLifecycle

/// Listens for PostgreSQL notifications of new jobs and wakes this process's idle workers, so a job
/// enqueued anywhere starts at once instead of at the next poll. If the connection drops it listens
/// again; polling keeps working meanwhile.
struct JobNotifications: Service {
    let queue: JobQueue
    let readiness: Readiness?
    let logger = Logger(label: "keel.jobs.notifications")

    func run() async throws {
        if let readiness {
            guard await readiness.waitUntilMigrated() else { try? await gracefulShutdown(); return }
        }
        await cancelWhenGracefulShutdown {
            var delay = Duration.milliseconds(250)
            while !Task.isCancelled {
                do {
                    try await queue.store.listen(channel: JobQueue.notificationChannel) { [queue] in queue.wake.signal() }
                } catch {
                    guard !Task.isCancelled else { return }
                    logger.warning("job notifications interrupted; listening again", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }
}
