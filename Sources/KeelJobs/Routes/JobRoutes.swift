import Foundation
import Hummingbird
import KeelCore
import KeelServer

/// `/api/v1/jobs`: enqueue (one or a batch), list with filters, show, cancel, retry; workflows, schedules and queues.
struct JobRoutes {
    let queue: JobQueue
    let limits: RequestLimits

    func register(on routes: inout RouteRegistrar) {
        let (queue, limits) = (self.queue, self.limits)
        routes.add(.post, "/api/v1/jobs", access: .permission("jobs:write")) { request, _ in
            switch try await request.decodeJSON(EnqueueBody.self, limits: limits) {
            case .batch(let jobs):
                return try .json(["items": try await queue.enqueue(jobs)], status: .created)
            case .one(let job):
                let outcome = try await queue.enqueue([job])[0]
                // An existing job holding the unique key is answered, not created again.
                return try .json(outcome.job, status: outcome.duplicate ? .ok : .created)
            }
        }
        routes.add(.get, "/api/v1/jobs", access: .permission("jobs:read")) { request, _ in
            let parameters = request.uri.queryParameters
            let page = try Pagination(parameters, idPrefix: "job")
            var filter = JobQueue.Filter()
            var errors: [FieldError] = []
            filter.queue = parameters.get("queue")
            filter.task = parameters.get("task")
            filter.tag = parameters.get("tag")
            if let state = parameters.get("state") {
                filter.state = JobState(rawValue: state)
                if filter.state == nil {
                    errors.append(FieldError(field: "state", message: "must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))"))
                }
            }
            let range = TimeRange(parameters, errors: &errors)
            guard errors.isEmpty else { throw Problem.invalidParameters(errors) }
            (filter.since, filter.until) = (range.since, range.until)
            return try .json(try await queue.list(filter, limit: page.limit, after: page.after))
        }
        routes.add(.get, "/api/v1/jobs/{id}", access: .permission("jobs:read")) { _, context in
            try .json(try await queue.job(id: try context.parameters.require("id")))
        }
        routes.add(.post, "/api/v1/jobs/{id}/cancel", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.cancel(id: try context.parameters.require("id")))
        }
        routes.add(.post, "/api/v1/jobs/{id}/retry", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.retry(id: try context.parameters.require("id")))
        }
        routes.add(.post, "/api/v1/workflows", access: .permission("jobs:write")) { request, _ in
            let definition = try WorkflowDefinition(json: try await request.decodeJSON(JSONValue.self, limits: limits))
            return try .json(try await queue.startWorkflow(definition), status: .created)
        }
        routes.add(.get, "/api/v1/workflows", access: .permission("jobs:read")) { request, _ in
            let parameters = request.uri.queryParameters
            let page = try Pagination(parameters, idPrefix: "wf")
            var state: WorkflowRecord.State?
            if let text = parameters.get("state") {
                state = WorkflowRecord.State(rawValue: text)
                if state == nil { throw Problem.invalidParameters([FieldError(field: "state", message: "must be one of running, succeeded, failed, cancelled")]) }
            }
            return try .json(try await queue.workflows(state: state, limit: page.limit, after: page.after))
        }
        routes.add(.get, "/api/v1/workflows/{id}", access: .permission("jobs:read")) { _, context in
            try .json(try await queue.workflow(id: try context.parameters.require("id")))
        }
        routes.add(.post, "/api/v1/workflows/{id}/cancel", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.cancelWorkflow(id: try context.parameters.require("id")))
        }
        routes.add(.get, "/api/v1/schedules", access: .permission("jobs:read")) { _, _ in
            try .json(["items": try await queue.schedules()])
        }
        routes.add(.post, "/api/v1/schedules", access: .permission("jobs:write")) { request, _ in
            let input = try await request.decodeJSON(ScheduleInput.self, limits: limits)
            guard let name = input.name else {
                throw Problem.validation("The schedule is invalid.", errors: [FieldError(field: "name", message: "is required")])
            }
            if (try? await queue.schedule(named: name)) != nil { throw Problem.conflict("A schedule named \(name) exists; PUT /api/v1/schedules/\(name) replaces it.") }
            return try .json(try await queue.saveSchedule(named: name, input), status: .created)
        }
        routes.add(.get, "/api/v1/schedules/{name}", access: .permission("jobs:read")) { _, context in
            try .json(try await queue.schedule(named: try context.parameters.require("name")))
        }
        routes.add(.put, "/api/v1/schedules/{name}", access: .permission("jobs:write")) { request, context in
            let input = try await request.decodeJSON(ScheduleInput.self, limits: limits)
            return try .json(try await queue.saveSchedule(named: try context.parameters.require("name"), input))
        }
        routes.add(.delete, "/api/v1/schedules/{name}", access: .permission("jobs:write")) { _, context in
            try await queue.deleteSchedule(named: try context.parameters.require("name"))
            return Response(status: .noContent)
        }
        routes.add(.post, "/api/v1/schedules/{name}/pause", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.setSchedulePaused(try context.parameters.require("name"), paused: true))
        }
        routes.add(.post, "/api/v1/schedules/{name}/resume", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.setSchedulePaused(try context.parameters.require("name"), paused: false))
        }
        routes.add(.post, "/api/v1/schedules/{name}/trigger", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.triggerSchedule(try context.parameters.require("name")), status: .created)
        }
        routes.add(.get, "/api/v1/queues", access: .permission("jobs:read")) { _, _ in
            try .json(["items": try await queue.queues()])
        }
        routes.add(.get, "/api/v1/queues/{name}", access: .permission("jobs:read")) { _, context in
            try .json(try await queue.queue(named: try context.parameters.require("name")))
        }
        routes.add(.get, "/api/v1/queues/{name}/stats", access: .permission("jobs:read")) { request, context in
            let text = request.uri.queryParameters.get("window_seconds") ?? "3600"
            guard let window = Int(text), (60...604_800).contains(window) else {
                throw Problem.invalidParameters([FieldError(field: "window_seconds", message: "must be an integer from 60 to 604800")])
            }
            return try .json(try await queue.stats(queue: try context.parameters.require("name"), windowSeconds: window))
        }
        routes.add(.patch, "/api/v1/queues/{name}", access: .permission("jobs:write")) { request, context in
            let change = try await request.decodeJSON(QueueChange.self, limits: limits)
            return try .json(try await queue.updateQueue(named: try context.parameters.require("name"), change))
        }
        routes.add(.post, "/api/v1/queues/{name}/pause", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.updateQueue(named: try context.parameters.require("name"), QueueChange(paused: true)))
        }
        routes.add(.post, "/api/v1/queues/{name}/resume", access: .permission("jobs:write")) { _, context in
            try .json(try await queue.updateQueue(named: try context.parameters.require("name"), QueueChange(paused: false)))
        }
        routes.add(.post, "/api/v1/queues/{name}/purge", access: .permission("jobs:write")) { request, context in
            struct Purge: Decodable { let states: [JobState]? }
            let states = request.headers[.contentLength].flatMap(Int.init) ?? 0 > 0
                ? try await request.decodeJSON(Purge.self, limits: limits).states : nil
            return try .json(["purged": try await queue.purge(queue: try context.parameters.require("name"), states: states)])
        }
    }

    /// A JSON value as `T`, with the shape errors of `decodeJSON` (422 naming the field).
    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue, field: String) throws -> T {
        do {
            return try JSONDecoder.keel().decode(T.self, from: JSONEncoder.keel().encode(value))
        } catch let error as DecodingError {
            var fieldError = FieldError(error)
            if !field.isEmpty { fieldError.field = fieldError.field.isEmpty ? field : field + (fieldError.field.hasPrefix("[") ? "" : ".") + fieldError.field }
            throw Problem.validation("The body does not match the expected shape.", errors: [fieldError])
        }
    }
}

/// `POST /api/v1/jobs`: one job, or `{"jobs": [...]}`.
enum EnqueueBody: Decodable {
    case one(NewJob)
    case batch([NewJob])

    private enum Keys: String, CodingKey { case jobs }

    init(from decoder: any Decoder) throws {
        if let container = try? decoder.container(keyedBy: Keys.self), container.contains(.jobs) {
            self = .batch(try container.decode([NewJob].self, forKey: .jobs))
        } else {
            self = .one(try NewJob(from: decoder))
        }
    }
}
