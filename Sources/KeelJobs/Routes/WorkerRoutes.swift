import Foundation
import Hummingbird
import KeelCore
import KeelServer

/// The HTTP pull protocol for workers in any language: claim jobs with a lease, then heartbeat,
/// report progress, complete or fail each with its lease token. Same leases, retries and rescue as
/// the built-in workers; a stale or foreign token changes nothing (409).
struct WorkerRoutes {
    let queue: JobQueue
    let limits: RequestLimits

    struct ClaimRequest: Decodable {
        let queues: [String]
        let max: Int?
        let leaseSeconds: Int?
        let waitSeconds: Double?
        let workerID: String?

        enum CodingKeys: String, CodingKey {
            case queues, max
            case leaseSeconds = "lease_seconds"
            case waitSeconds = "wait_seconds"
            case workerID = "worker_id"
        }
    }

    struct ClaimedJob: Encodable {
        let job: JobRecord
        let leaseToken: String

        func encode(to encoder: any Encoder) throws {
            try job.encode(to: encoder)
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(leaseToken, forKey: .leaseToken)
        }

        enum Key: String, CodingKey { case leaseToken = "lease_token" }
    }

    struct LeaseRequest: Decodable {
        let leaseToken: String
        let leaseSeconds: Int?
        let percent: Int?
        let message: String?
        let result: JSONValue?
        let error: String?
        let retryable: Bool?

        enum CodingKeys: String, CodingKey {
            case percent, message, result, error, retryable
            case leaseToken = "lease_token"
            case leaseSeconds = "lease_seconds"
        }
    }

    func register(on routes: inout RouteRegistrar) {
        let (queue, limits) = (self.queue, self.limits)
        routes.add(.get, "/api/v1/workers", access: .permission("jobs:read")) { _, _ in
            try .json(["items": try await queue.workers()])
        }
        routes.add(.post, "/api/v1/workers/claim", access: .permission("jobs:write")) { request, context in
            let body = try await request.decodeJSON(ClaimRequest.self, limits: limits)
            var errors: [FieldError] = []
            if body.queues.isEmpty || body.queues.count > 50 || body.queues.contains(where: { !JobQueue.isValidName($0, maxLength: 100) }) {
                errors.append(FieldError(field: "queues", message: "must name 1-50 queues"))
            }
            let max = body.max ?? 1, lease = body.leaseSeconds ?? 30, wait = body.waitSeconds ?? 0
            if !(1...100).contains(max) { errors.append(FieldError(field: "max", message: "must be from 1 to 100")) }
            if !(5...3600).contains(lease) { errors.append(FieldError(field: "lease_seconds", message: "must be from 5 to 3600")) }
            if !(0...30).contains(wait) { errors.append(FieldError(field: "wait_seconds", message: "must be from 0 to 30")) }
            if let id = body.workerID, !JobQueue.isValidName(id, maxLength: 100) {
                errors.append(FieldError(field: "worker_id", message: "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'"))
            }
            guard errors.isEmpty else { throw Problem.validation("The claim is invalid.", errors: errors) }
            let principal = try context.requirePrincipal()
            let workerID = "http:" + (body.workerID ?? principal.subject)
            // Long-poll: with nothing to claim, wait up to `wait_seconds` for an enqueue in this process.
            let deadline = ContinuousClock.now + .milliseconds(Int(wait * 1000))
            var claimed: [JobQueue.Claim] = []
            repeat {
                let seen = queue.wake.current
                for name in body.queues where claimed.count < max {
                    claimed += try await queue.claim(queue: name, limit: max - claimed.count, workerID: workerID, leaseSeconds: lease)
                }
                if claimed.isEmpty, ContinuousClock.now < deadline {
                    await queue.wake.wait(after: seen, timeout: min(.seconds(1), deadline - ContinuousClock.now))
                }
            } while claimed.isEmpty && ContinuousClock.now < deadline
            return try .json(["jobs": claimed.map { ClaimedJob(job: $0.job, leaseToken: $0.leaseToken) }])
        }
        routes.add(.post, "/api/v1/jobs/{id}/heartbeat", access: .permission("jobs:write")) { request, context in
            let (claim, body) = try await Self.claim(request, context, queue: queue, limits: limits)
            let cancelled = try await queue.heartbeat([claim], leaseSeconds: min(3600, max(5, body.leaseSeconds ?? 30)))
            let job = try await queue.job(id: claim.job.id)
            return try .json(["cancel_requested": .bool(cancelled.contains(job.id)),
                              "lease_expires_at": .string(job.leaseExpiresAt.map(Timestamp.format) ?? "")] as [String: JSONValue])
        }
        routes.add(.post, "/api/v1/jobs/{id}/progress", access: .permission("jobs:write")) { request, context in
            let (claim, body) = try await Self.claim(request, context, queue: queue, limits: limits)
            guard let percent = body.percent, (0...100).contains(percent) else {
                throw Problem.validation("The progress is invalid.", errors: [FieldError(field: "percent", message: "must be from 0 to 100")])
            }
            try await queue.progress(claim, percent: percent, message: body.message)
            return try .json(try await queue.job(id: claim.job.id))
        }
        routes.add(.post, "/api/v1/jobs/{id}/complete", access: .permission("jobs:write")) { request, context in
            let (claim, body) = try await Self.claim(request, context, queue: queue, limits: limits)
            guard try await queue.complete(claim, result: body.result ?? .null) else { throw Self.staleLease() }
            return try .json(try await queue.job(id: claim.job.id))
        }
        routes.add(.post, "/api/v1/jobs/{id}/fail", access: .permission("jobs:write")) { request, context in
            let (claim, body) = try await Self.claim(request, context, queue: queue, limits: limits)
            guard let error = body.error, !error.isEmpty else {
                throw Problem.validation("The failure is invalid.", errors: [FieldError(field: "error", message: "is required")])
            }
            guard try await queue.fail(claim, error: error, permanent: body.retryable == false, workerID: claim.job.workerID) else { throw Self.staleLease() }
            return try .json(try await queue.job(id: claim.job.id))
        }
    }

    /// The job of the path with the lease token of the body; refuses a token that is not the job's current one.
    static func claim(_ request: Request, _ context: KeelRequestContext, queue: JobQueue, limits: RequestLimits) async throws -> (JobQueue.Claim, LeaseRequest) {
        let body = try await request.decodeJSON(LeaseRequest.self, limits: limits)
        let id = try context.parameters.require("id")
        let job = try await queue.job(id: id)
        guard job.state == .running, try await queue.holdsLease(id: id, token: body.leaseToken) else { throw staleLease() }
        return (JobQueue.Claim(job: job, leaseToken: body.leaseToken), body)
    }

    static func staleLease() -> Problem {
        Problem(status: .conflict, slug: "stale-lease", title: "Stale lease",
                detail: "The lease token is not this job's current lease (it expired, was rescued, or belongs to another worker); the job was not changed.")
    }
}
