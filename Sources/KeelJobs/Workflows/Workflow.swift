import Foundation
import KeelCore
import KeelServer
import KeelStore

/// Celery's canvas: a chain runs its steps one after another, a group runs them side by side, and a chord is a
/// group followed by a callback. Steps nest (`chain(a, group(b, c), d)`).
public indirect enum WorkflowStep: Sendable {
    case job(NewJob)
    case chain([WorkflowStep])
    case group([WorkflowStep])
    /// A group, then `callback` with every member's result.
    case chord([WorkflowStep], callback: NewJob)
}

/// `POST /api/v1/workflows`: `{"name"?, "chain": [...]}`, `{"name"?, "group": [...]}` or
/// `{"name"?, "chord": {"group": [...], "callback": job}}`; a step is a job or one of those forms.
public struct WorkflowDefinition: Sendable {
    public var name: String?
    public var root: WorkflowStep

    public init(name: String? = nil, _ root: WorkflowStep) {
        self.name = name
        self.root = root
    }

    /// One job of the compiled graph: the step's path in the body (for errors) and the steps it waits for, in order.
    struct Node {
        var job: NewJob
        var field: String
        var parents: [Int]
    }

    /// The graph of jobs: each step waits for the last steps of what came before it in its chain.
    func compile(maxSteps: Int) throws -> [Node] {
        var nodes: [Node] = []
        var errors: [FieldError] = []
        // `field` is the step's path in the JSON body, so errors point at what the caller wrote.
        func add(_ step: WorkflowStep, field: String, after parents: [Int]) -> [Int] {
            let prefix = field.isEmpty ? "" : field + "."
            func members(_ steps: [WorkflowStep], _ path: String) -> [Int] {
                if steps.isEmpty { errors.append(FieldError(field: path, message: "must hold at least one step")) }
                return steps.enumerated().flatMap { index, step in add(step, field: "\(path)[\(index)]", after: parents) }
            }
            switch step {
            case .job(let job):
                nodes.append(Node(job: job, field: field, parents: parents))
                return [nodes.count - 1]
            case .chain(let steps):
                if steps.isEmpty { errors.append(FieldError(field: prefix + "chain", message: "must hold at least one step")) }
                var last = parents
                for (index, step) in steps.enumerated() { last = add(step, field: "\(prefix)chain[\(index)]", after: last) }
                return last
            case .group(let steps):
                return members(steps, prefix + "group")
            case .chord(let steps, let callback):
                let group = members(steps, prefix + "chord.group")
                return add(.job(callback), field: prefix + "chord.callback", after: group)
            }
        }
        _ = add(root, field: "", after: [])
        if nodes.count > maxSteps { errors.append(FieldError(field: "", message: "must hold at most \(maxSteps) jobs in all")) }
        guard errors.isEmpty else { throw Problem.validation("The workflow is invalid; nothing was enqueued.", errors: errors) }
        return nodes
    }

    /// Reads the body's nested form, naming the path of anything malformed.
    public init(json: JSONValue) throws {
        guard case .object(let members) = json else {
            throw Problem.validation("The workflow is invalid.", errors: [FieldError(field: "", message: "must be an object with chain, group or chord")])
        }
        if let name = members["name"] {
            guard case .string(let text) = name, JobQueue.isValidName(text, maxLength: 100) else {
                throw Problem.validation("The workflow is invalid.", errors: [FieldError(field: "name", message: "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'")])
            }
            self.name = text
        }
        let forms = ["chain", "group", "chord"].filter { members[$0] != nil }
        guard forms.count == 1 else {
            throw Problem.validation("The workflow is invalid.", errors: [FieldError(field: "", message: "must have exactly one of chain, group and chord")])
        }
        root = try Self.step(.object([forms[0]: members[forms[0]]!]), field: "")
    }

    private static func step(_ value: JSONValue, field: String) throws -> WorkflowStep {
        func invalid(_ path: String, _ message: String) -> Problem {
            Problem.validation("The workflow is invalid; nothing was enqueued.", errors: [FieldError(field: path, message: message)])
        }
        func steps(_ value: JSONValue?, field: String) throws -> [WorkflowStep] {
            guard case .array(let items) = value else { throw invalid(field, "must be an array of steps") }
            return try items.enumerated().map { try step($1, field: "\(field)[\($0)]") }
        }
        guard case .object(let members) = value else { throw invalid(field, "must be a job or an object with chain, group or chord") }
        let prefix = field.isEmpty ? "" : field + "."
        if members.count == 1, let form = members.keys.first, ["chain", "group", "chord"].contains(form) {
            switch form {
            case "chain": return .chain(try steps(members["chain"], field: prefix + "chain"))
            case "group": return .group(try steps(members["group"], field: prefix + "group"))
            default:
                guard case .object(let chord)? = members["chord"], chord.keys.sorted() == ["callback", "group"], let callback = chord["callback"] else {
                    throw invalid(prefix + "chord", "must be an object with group and callback")
                }
                return .chord(try steps(chord["group"], field: prefix + "chord.group"),
                              callback: try JobRoutes.decode(NewJob.self, from: callback, field: prefix + "chord.callback"))
            }
        }
        return .job(try JobRoutes.decode(NewJob.self, from: value, field: field))
    }
}

/// A workflow as the API shows it, with its jobs in the order they were defined.
public struct WorkflowRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Steps remain; `succeeded` when every job succeeded; `failed` when a job ended dead, cancelled or expired.
        case running, succeeded, failed, cancelled
    }

    public struct Step: Codable, Sendable, Equatable {
        public var job: JobRecord
        /// The jobs whose results this one receives, in order.
        public var dependsOn: [String]

        enum CodingKeys: String, CodingKey {
            case job
            case dependsOn = "depends_on"
        }
    }

    public var id: String
    public var name: String?
    public var state: State
    public var remaining: Int
    public var failedJobID: String?
    public var createdAt: Date
    public var finishedAt: Date?
    public var steps: [Step]

    enum CodingKeys: String, CodingKey {
        case id, name, state, remaining, steps
        case failedJobID = "failed_job_id"
        case createdAt = "created_at"
        case finishedAt = "finished_at"
    }
}

extension JobQueue {
    /// Creates every job of the workflow in one transaction. The first steps are due at once (or at their own
    /// `run_at`/`delay_seconds`); the others wait in `pending` until the steps before them succeed.
    public func startWorkflow(_ definition: WorkflowDefinition) async throws -> WorkflowRecord {
        let nodes = try definition.compile(maxSteps: limits.maxBatch)
        let validated = try await prepare(nodes.map(\.job), fields: nodes.map { $0.field.isEmpty ? "" : $0.field + "." })
        var errors: [FieldError] = []
        for (node, job) in zip(nodes, validated) {
            if job.job.uniqueKey != nil { errors.append(FieldError(field: node.field + ".unique_key", message: "is not allowed in a workflow")) }
            guard !node.parents.isEmpty else { continue }
            let timing = [("run_at", job.job.runAt != nil), ("delay_seconds", job.job.delaySeconds != nil), ("ttl_seconds", job.job.ttlSeconds != nil)]
            for (name, given) in timing where given {
                errors.append(FieldError(field: node.field + "." + name, message: "is only allowed on a workflow's first steps"))
            }
            if let args = job.job.args, case .object = args {} else if job.job.args != nil {
                errors.append(FieldError(field: node.field + ".args", message: "must be an object, since the results of earlier steps are added to it"))
            }
        }
        guard errors.isEmpty else { throw Problem.validation("The workflow is invalid; nothing was enqueued.", errors: errors) }

        let now = clock.now()
        let id = KeelID.make(prefix: "wf", now: now)
        let prepared = zip(validated, nodes).map { job, node in
            var job = job
            job.workflowID = id
            job.waitingOn = node.parents.count
            return job
        }
        let maxLengths = try await queueLimits().maxLengths
        try await store.transaction { tx in
            try await tx.execute("""
                INSERT INTO keel_workflows (id, name, state, remaining, failed_job_id, created_at, finished_at)
                VALUES (\(id), \(definition.name), 'running', \(nodes.count), \(Optional<String>.none), \(now), \(Optional<Date>.none))
                """)
            _ = try await self.insert(prepared, maxLengths: maxLengths, in: tx)
            for (child, node) in nodes.enumerated() {
                for (position, parent) in node.parents.enumerated() {
                    try await tx.execute("""
                        INSERT INTO keel_workflow_edges (parent_id, child_id, position) VALUES (\(prepared[parent].id), \(prepared[child].id), \(position))
                        """)
                }
            }
        }
        try await finishEnqueue(prepared.map { InsertOutcome(id: $0.id, duplicate: false, record: nil) }, fetch: false)
        return try await workflow(id: id)
    }

    public func workflow(id: String) async throws -> WorkflowRecord {
        guard let workflow = try await workflows(where: "id = \(id)", limit: 1).first else {
            throw Problem.notFound("No workflow has the id \(id).")
        }
        return workflow
    }

    /// Oldest first by id (creation time), keyset-paginated; optionally only those in `state`.
    public func workflows(state: WorkflowRecord.State?, limit: Int, after: String?) async throws -> Page<WorkflowRecord> {
        var condition: SQLQuery = "1 = 1"
        if let state { condition.append(" AND state = \(state.rawValue)") }
        if let after { condition.append(" AND id > \(after)") }
        let found = try await workflows(where: condition, limit: limit + 1)
        let items = Array(found.prefix(limit))
        return Page(items: items, nextAfter: found.count > limit ? items.last?.id : nil)
    }

    /// The workflows matching `condition` with their steps: three queries however many workflows there are.
    private func workflows(where condition: SQLQuery, limit: Int) async throws -> [WorkflowRecord] {
        var query: SQLQuery = "SELECT id, name, state, remaining, failed_job_id, created_at, finished_at FROM keel_workflows WHERE "
        query.append(condition)
        query.append(" ORDER BY id LIMIT \(limit)")
        let rows = try await store.query(query)
        guard !rows.isEmpty else { return [] }
        var ids: SQLQuery = "("
        for (index, row) in rows.enumerated() { ids.append(index == 0 ? "\(try row.string("id"))" : ", \(try row.string("id"))") }
        ids.append(")")

        var edges: SQLQuery = "SELECT e.parent_id, e.child_id FROM keel_workflow_edges e JOIN keel_jobs j ON j.id = e.child_id WHERE j.workflow_id IN "
        edges.append(ids)
        edges.append(" ORDER BY e.child_id, e.position")
        var dependsOn: [String: [String]] = [:]
        for edge in try await store.query(edges) {
            dependsOn[try edge.string("child_id"), default: []].append(try edge.string("parent_id"))
        }
        var jobsQuery: SQLQuery = "SELECT \(unsafeRaw: JobRecord.columns) FROM keel_jobs WHERE workflow_id IN "
        jobsQuery.append(ids)
        jobsQuery.append(" ORDER BY id")
        var steps: [String: [WorkflowRecord.Step]] = [:]
        for row in try await store.query(jobsQuery) {
            let job = try JobRecord(row: row)
            steps[job.workflowID ?? "", default: []].append(.init(job: job, dependsOn: dependsOn[job.id] ?? []))
        }
        return try rows.map { row in
            let id = try row.string("id")
            return WorkflowRecord(
                id: id, name: try row.optionalString("name"), state: WorkflowRecord.State(rawValue: try row.string("state")) ?? .running,
                remaining: try row.int("remaining"), failedJobID: try row.optionalString("failed_job_id"),
                createdAt: try row.date("created_at"), finishedAt: try row.optionalDate("finished_at"), steps: steps[id] ?? [])
        }
    }

    /// Cancels what has not run, asks running steps to stop, and marks the workflow cancelled.
    public func cancelWorkflow(id: String) async throws -> WorkflowRecord {
        let now = clock.now()
        let changed = try await store.transaction { tx in
            let updated = try await tx.execute("""
                UPDATE keel_workflows SET state = 'cancelled', finished_at = \(now) WHERE id = \(id) AND state = 'running' RETURNING id
                """)
            guard !updated.isEmpty else { return false }
            try await tx.execute("""
                UPDATE keel_jobs SET state = 'cancelled', finished_at = \(now)
                WHERE workflow_id = \(id) AND state IN ('pending', 'available', 'scheduled', 'retrying')
                """)
            try await tx.execute("UPDATE keel_jobs SET cancel_requested = \(true) WHERE workflow_id = \(id) AND state = 'running'")
            return true
        }
        let workflow = try await workflow(id: id)
        guard changed else { throw Problem.conflict("The workflow is \(workflow.state.rawValue); only running workflows can be cancelled.") }
        return workflow
    }

    /// Every transaction that changes a workflow's steps takes its row first, so that two steps finishing at once
    /// (each holding its own job row, both touching the callback's) queue up instead of deadlocking.
    func lockWorkflow(_ id: String, in tx: any StoreTransaction) async throws {
        guard store.dialect == .postgres else { return }  // SQLite's one writer already serializes
        _ = try await tx.query("SELECT id FROM keel_workflows WHERE id = \(id) FOR UPDATE")
    }

    /// After step `job` succeeded (in the transaction that recorded it): releases the steps that waited only for it,
    /// handing them the results of the steps they waited for, and finishes the workflow after its last step.
    func workflowStepSucceeded(_ job: JobRecord, workflowID: String, now: Date, in tx: any StoreTransaction) async throws {
        let children = try await tx.execute("""
            UPDATE keel_jobs SET waiting_on = waiting_on - 1
            WHERE state = 'pending' AND id IN (SELECT child_id FROM keel_workflow_edges WHERE parent_id = \(job.id))
            RETURNING id, waiting_on, args
            """)
        for child in children where try child.int("waiting_on") == 0 {
            let childID = try child.string("id")
            let results = try await tx.query("""
                SELECT j.result FROM keel_workflow_edges e JOIN keel_jobs j ON j.id = e.parent_id WHERE e.child_id = \(childID) ORDER BY e.position
                """).map { row -> JSONValue in
                    try row.optionalString("result").flatMap { try? JSONDecoder.keel().decode(JSONValue.self, from: Data($0.utf8)) } ?? .null
                }
            guard case .object(var args) = try JSONDecoder.keel().decode(JSONValue.self, from: Data(try child.string("args").utf8)) else { continue }
            // One step before: its result; several (a chord's callback): all of theirs, in the group's order.
            if results.count == 1 { args["previous_result"] = results[0] } else { args["results"] = .array(results) }
            try await tx.execute("""
                UPDATE keel_jobs SET state = 'available', run_at = \(now), args = \(Self.encodeJSON(JSONValue.object(args))) WHERE id = \(childID) AND state = 'pending'
                """)
        }
        if children.contains(where: { (try? $0.int("waiting_on")) == 0 }) { try await notifyWorkers(in: tx) }
        try await tx.execute("""
            UPDATE keel_workflows SET remaining = remaining - 1,
                state = CASE WHEN remaining = 1 AND state = 'running' THEN 'succeeded' ELSE state END,
                finished_at = CASE WHEN remaining = 1 AND state = 'running' THEN \(now) ELSE finished_at END
            WHERE id = \(workflowID)
            """)
    }

    /// After step `jobID` ended without success (dead, cancelled, expired): the workflow fails and the steps still
    /// waiting for earlier ones are cancelled; steps already running or due go on (a chord's callback never runs).
    func workflowStepFailed(jobID: String, workflowID: String, now: Date, in tx: any StoreTransaction) async throws {
        try await tx.execute("""
            UPDATE keel_workflows SET state = 'failed', failed_job_id = \(jobID), finished_at = \(now) WHERE id = \(workflowID) AND state = 'running'
            """)
        try await tx.execute("UPDATE keel_jobs SET state = 'cancelled', finished_at = \(now) WHERE workflow_id = \(workflowID) AND state = 'pending'")
    }
}
