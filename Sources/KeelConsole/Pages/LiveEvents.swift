import Foundation
import Hummingbird
import KeelCore
import KeelJobs
import KeelServer

/// Server-sent events that tell an open page its data changed (`event: change`), so the page's script
/// reloads the live parts: a job's state and progress on its detail page, queue counts on the lists. The
/// store is read every `interval` (changes may come from any process); an unchanged page hears only a
/// keep-alive comment now and then. Without script, the pages are complete and a reload shows the news.
struct LiveEvents {
    let console: Console
    static let interval = Duration.seconds(1)
    /// Browsers reconnect on their own; ending streams lets sessions that ended stop being served.
    static let lifetime = Duration.seconds(300)

    func install(on router: Router<KeelRequestContext>) {
        console.page(router, "/console/events", "events", permission: "jobs:read") { request, _, _ in
            let jobID: String? = request.uri.queryParameters.get("job")
            if let jobID, !jobID.hasPrefix("job_") || jobID.count > 64 {
                throw ConsoleError(status: .badRequest, message: "The job parameter is not a job id.")
            }
            let jobs = console.jobs
            let body = ResponseBody { writer in
                var last: String?
                var quiet = 0
                let end = ContinuousClock.now + Self.lifetime
                try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                while ContinuousClock.now < end, !Task.isCancelled {
                    let current = try await Self.fingerprint(jobs: jobs, jobID: jobID)
                    if current != last {
                        if last != nil { try await writer.write(ByteBuffer(string: "event: change\ndata: {}\n\n")) }
                        last = current
                        quiet = 0
                    } else {
                        quiet += 1
                        if quiet % 15 == 0 { try await writer.write(ByteBuffer(string: ": still here\n\n")) }
                    }
                    try await Task.sleep(for: Self.interval)
                }
                try await writer.finish(nil)
            }
            var headers = Console.securityHeaders
            headers[.contentType] = "text/event-stream"
            return Response(status: .ok, headers: headers, body: body)
        }
    }

    /// What the page shows, condensed: it changes exactly when the page would.
    static func fingerprint(jobs: JobQueue, jobID: String?) async throws -> String {
        if let jobID {
            let job = try await jobs.job(id: jobID)
            return "\(job.state.rawValue):\(job.attempt):\(job.progress?.percent ?? -1):\(job.errors.count):\(job.cancelRequested)"
        }
        return try await jobs.queues().map { queue in
            "\(queue.name)=\(queue.paused):" + JobState.allCases.map { String(queue.counts[$0.rawValue] ?? 0) }.joined(separator: ",")
        }.joined(separator: ";")
    }
}
