import KeelCore
import KeelServer
import KeelStore
import ServiceLifecycle

/// Jobs as a Keel module: the schema, `/api/v1/jobs|queues|schedules` on the api role, a worker on the worker
/// role, and the schedule ticker on the scheduler role.
public struct JobsModule: KeelModule {
    public let queue: JobQueue
    /// Queue name → concurrency for this process's worker; ``JobQueue/anyQueue`` works every queue.
    public let concurrency: [String: Int]

    public init(queue: JobQueue, concurrency: [String: Int] = [JobQueue.anyQueue: 4]) {
        self.queue = queue
        self.concurrency = concurrency
    }

    public static let migrations = JobMigrations.all

    public var migrations: [Migration] { Self.migrations }

    public func register(on routes: inout RouteRegistrar, context: ModuleContext) {
        guard context.config.roles.contains(.api) else { return }
        JobRoutes(queue: queue, limits: context.limits).register(on: &routes)
        WorkerRoutes(queue: queue, limits: context.limits).register(on: &routes)
    }

    public func prepare(context: ModuleContext) async throws {
        if context.config.roles.contains(.scheduler) {
            try await queue.ensurePruneSchedule()
            try await queue.syncDeclaredSchedules(context.config.declaredSchedules)
        }
    }

    public func services(context: ModuleContext) -> [any Service] {
        var services: [any Service] = []
        if context.config.roles.contains(.worker), !concurrency.isEmpty {
            let worker = JobWorker(queue: queue, concurrency: concurrency, leaseSeconds: context.config.jobLeaseSeconds, readiness: context.readiness)
            services.append(worker)
            if context.store.dialect == .postgres, context.config.jobWakeup == .notify {
                services.append(JobNotifications(queue: queue, worker: worker, readiness: context.readiness))
            }
        }
        if context.config.roles.contains(.api) {
            services.append(QueueGauges(queue: queue, readiness: context.readiness))
        }
        if context.config.roles.contains(.scheduler) {
            services.append(JobScheduler(queue: queue, readiness: context.readiness))
        }
        return services
    }
}
