import Foundation
import Hummingbird
import KeelCore
import KeelJobs
import KeelServer

/// Flower's views and more: queues with counts and controls, the job list with filters and keyset
/// pagination, a job's detail with its attempts and timeline, and the workers.
struct JobPages {
    let console: Console
    static let pageSize = 50

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console/jobs", "jobs", permission: "jobs:read") { request, _, session in
            try await list(request, session: session)
        }
        console.page(router, "/console/jobs/{id}", "job", permission: "jobs:read") { request, context, session in
            let id = try context.parameters.require("id")
            let job: JobRecord
            do {
                job = try await console.jobs.job(id: id)
            } catch let problem as Problem where problem.status == .notFound {
                throw ConsoleError(status: .notFound, message: "There is no job \(id).")
            }
            return console.html("job", title: "Job \(job.id)", session: session, section: "jobs",
                                Self.detail(job, session: session, notice: Notice.message(request)))
        }
        console.page(router, "/console/workers", "workers", permission: "jobs:read") { _, _, session in
            let workers = try await console.jobs.workers().map { worker -> [String: Any] in
                ["id": worker.id, "hostname": worker.hostname, "pid": worker.pid, "status": worker.status,
                 "queues": worker.queues.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "),
                 "running": worker.running, "concurrency": worker.concurrency, "started": Display.time(worker.startedAt),
                 "heartbeat": Display.time(worker.heartbeatAt), "jobs": (worker.runningJobs ?? []).map { ["id": $0] }]
            }
            return console.html("workers", title: "Workers", session: session, section: "workers", ["workers": workers])
        }

        console.action(router, "/console/jobs/{id}/retry", "job.retry", permission: "jobs:write") { _, context, _, _ in
            let id = try context.parameters.require("id")
            _ = try await console.jobs.retry(id: id)
            return Console.redirect("/console/jobs/\(Console.queryEscaped(id))?done=retried")
        }
        console.action(router, "/console/jobs/{id}/cancel", "job.cancel", permission: "jobs:write") { _, context, _, _ in
            let id = try context.parameters.require("id")
            _ = try await console.jobs.cancel(id: id)
            return Console.redirect("/console/jobs/\(Console.queryEscaped(id))?done=cancelled")
        }
        console.action(router, "/console/jobs/retry-dead", "jobs.retry_dead", permission: "jobs:write") { _, _, _, form in
            let count = try await console.jobs.retryDead(queue: form["queue"])
            return Console.redirect("/console/jobs?done=retried_dead&count=\(count)")
        }
        console.action(router, "/console/queues/{name}/pause", "queue.pause", permission: "jobs:write") { _, context, _, _ in
            _ = try await console.jobs.updateQueue(named: try context.parameters.require("name"), QueueChange(paused: true))
            return Console.redirect("/console/jobs?done=paused")
        }
        console.action(router, "/console/queues/{name}/resume", "queue.resume", permission: "jobs:write") { _, context, _, _ in
            _ = try await console.jobs.updateQueue(named: try context.parameters.require("name"), QueueChange(paused: false))
            return Console.redirect("/console/jobs?done=resumed")
        }
        console.action(router, "/console/queues/{name}/purge", "queue.purge", permission: "jobs:write") { _, context, _, form in
            let states = form["states"] == "finished" ? [JobState.succeeded, .dead, .cancelled, .expired] : nil
            let count = try await console.jobs.purge(queue: try context.parameters.require("name"), states: states)
            return Console.redirect("/console/jobs?done=purged&count=\(count)")
        }
    }

    private func list(_ request: Request, session: ConsoleSession) async throws -> Response {
        var query = ListQuery(request)
        var filter = JobQueue.Filter()
        filter.newestFirst = true
        filter.queue = query.text("queue")
        filter.task = query.text("task")
        filter.tag = query.text("tag")
        if let state = query.text("state") {
            filter.state = JobState(rawValue: state)
            if filter.state == nil { query.problem("There is no job state \"\(state)\".") }
        }
        filter.since = query.time("since")
        filter.until = query.time("until")
        let after = query.text("after")
        if let after, !after.hasPrefix("job_") || after.count > 64 { query.problem("The page marker is not a job id.") }
        let problems = query.problems

        let queues = try await console.jobs.queues()
        let page = problems.isEmpty ? try await console.jobs.list(filter, limit: Self.pageSize, after: after) : Page<JobRecord>(items: [], nextAfter: nil)
        let next = query.next(after: page.nextAfter)
        let canWrite = session.may("jobs:write")
        let data: [String: Any] = [
            "can_write": canWrite,
            "notice": Notice.message(request) ?? "",
            "problems": problems.map { ["message": $0] },
            "queues": queues.map { queue -> [String: Any] in
                ["name": queue.name, "paused": queue.paused, "can_write": canWrite,
                 "counts": JobState.allCases.map { ["state": $0.rawValue, "count": queue.counts[$0.rawValue] ?? 0] }]
            },
            "states": JobState.allCases.map { ["state": $0.rawValue] },
            "filter_queue": filter.queue ?? "", "filter_state": filter.state?.rawValue ?? "", "filter_task": filter.task ?? "",
            "filter_tag": filter.tag ?? "", "filter_since": query.text("since") ?? "", "filter_until": query.text("until") ?? "",
            "queue_options": queues.map { ["name": $0.name, "selected": $0.name == filter.queue] },
            "state_options": JobState.allCases.map { ["state": $0.rawValue, "selected": $0 == filter.state] },
            "jobs": page.items.map(Self.row),
            "empty": page.items.isEmpty,
            "next": next ?? "",
            "first_page": after != nil,
        ]
        return console.html("jobs", title: "Jobs", session: session, section: "jobs", data, status: problems.isEmpty ? .ok : .badRequest)
    }

    static func row(_ job: JobRecord) -> [String: Any] {
        ["id": job.id, "queue": job.queue, "task": job.task, "state": job.state.rawValue, "attempt": job.attempt,
         "max_attempts": job.maxAttempts, "created": Display.time(job.createdAt), "tags": job.tags.joined(separator: ", "),
         "progress": job.progress.map { "\($0.percent)%" } ?? ""]
    }

    static func detail(_ job: JobRecord, session: ConsoleSession, notice: String?) -> [String: Any] {
        // In the order things happen: earlier attempts' failures, then the current attempt's start, its failure, the end.
        var timeline: [(Date, String)] = [(job.createdAt, "created")]
        if job.runAt > job.createdAt.addingTimeInterval(1) { timeline.append((job.runAt, "due")) }
        for error in job.errors where error.attempt < job.attempt { timeline.append((error.at, "attempt \(error.attempt) failed")) }
        if let started = job.startedAt { timeline.append((started, "attempt \(job.attempt) started")) }
        for error in job.errors where error.attempt >= job.attempt { timeline.append((error.at, "attempt \(error.attempt) failed")) }
        if let finished = job.finishedAt { timeline.append((finished, job.state.rawValue)) }
        let canWrite = session.may("jobs:write")
        return [
            "job": [
                "id": job.id, "queue": job.queue, "task": job.task, "state": job.state.rawValue, "priority": job.priority,
                "attempt": job.attempt, "max_attempts": job.maxAttempts, "timeout": job.timeoutSeconds,
                "unique_key": job.uniqueKey ?? "", "tags": job.tags.joined(separator: ", "), "worker": job.workerID ?? "",
                "workflow": job.workflowID ?? "",
                "args": Display.json(job.args), "result": Display.json(job.result), "has_result": job.result != nil,
                "errors": job.errors.map { ["attempt": $0.attempt, "at": Display.time($0.at), "error": $0.error, "worker": $0.workerID ?? ""] },
                "has_errors": !job.errors.isEmpty,
                "final": job.state.isFinal,
            ].merging(job.progress.map { ["progress": ["percent": $0.percent, "message": $0.message ?? ""] as [String: Any]] } ?? [:]) { a, _ in a },
            "timeline": timeline.map { ["at": Display.time($0.0), "event": $0.1] },
            "can_retry": canWrite && [.dead, .cancelled, .expired].contains(job.state),
            "can_cancel": canWrite && !job.state.isFinal && !job.cancelRequested,
            "cancel_requested": job.cancelRequested && !job.state.isFinal,
            "notice": notice ?? "",
        ]
    }
}

/// What an action did, shown once on the page it returns to. Only known codes become text, so a link
/// cannot put words in the console's mouth.
enum Notice {
    static func message(_ request: Request) -> String? {
        let count = request.uri.queryParameters.get("count").flatMap { Int($0) } ?? 0
        switch request.uri.queryParameters.get("done") {
        case "retried": return "The job will run again."
        case "cancelled": return "The job was cancelled (a running job stops at its next heartbeat)."
        case "retried_dead": return "\(count) dead job\(count == 1 ? "" : "s") will run again."
        case "paused": return "The queue is paused: its jobs wait until it resumes."
        case "resumed": return "The queue is running again."
        case "purged": return "\(count) job\(count == 1 ? " was" : "s were") deleted."
        case "schedule_saved": return "The schedule was saved."
        case "schedule_paused": return "The schedule is paused."
        case "schedule_resumed": return "The schedule is running again."
        case "schedule_triggered": return "The schedule's job was enqueued."
        case "schedule_deleted": return "The schedule was deleted."
        case "user_created": return "The user was created."
        case "user_updated": return "The user was updated."
        case "key_revoked": return "The API key was revoked."
        default: return nil
        }
    }
}
