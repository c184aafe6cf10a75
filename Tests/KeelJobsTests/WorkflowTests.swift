import Foundation
@testable import KeelJobs
import KeelServer
import KeelStore
import KeelTestSupport
import Testing

/// Adds its `n` to what the steps before it returned, so a final result proves which results reached it.
struct Sum: Codable, Sendable {
    var n: Int
    var previousResult: Echo?
    var results: [Echo]?

    enum CodingKeys: String, CodingKey {
        case n, results
        case previousResult = "previous_result"
    }
}

extension JobRegistry {
    static var workflowTasks: JobRegistry {
        var registry = JobRegistry.testTasks
        registry.register("sum") { (args: Sum, _: JobContext) in
            Echo(n: args.n + (args.previousResult?.n ?? 0) + (args.results ?? []).map(\.n).reduce(0, +))
        }
        return registry
    }
}

@Suite struct WorkflowTests {
    func sum(_ n: Int) -> WorkflowStep { .job(NewJob(task: "sum", args: .object(["n": .number(Double(n))]))) }

    func finished(_ queue: JobQueue, _ id: String) async throws -> WorkflowRecord {
        var workflow = try await queue.workflow(id: id)
        _ = try await eventually {
            workflow = try await queue.workflow(id: id)
            return workflow.state != .running && workflow.steps.allSatisfy { $0.job.state.isFinal }
        }
        return workflow
    }

    func resultN(_ step: WorkflowRecord.Step?) -> Int? {
        guard case .object(let result)? = step?.job.result, case .number(let n)? = result["n"] else { return nil }
        return Int(n)
    }

    /// Chains pass results on, a chord's callback gets every member's result in order (members finish in parallel on
    /// several workers, racing to release it), and nested canvases compose.
    @Test(arguments: StoreKind.allCases)
    func chainsGroupsAndChordsPassResultsOn(_ kind: StoreKind) async throws {
        try await withQueue(kind, tasks: .workflowTasks) { queue in
            // Started before the workers run, so the first step cannot have finished and released the next by the time
            // the workflow is read back.
            let chain = try await queue.startWorkflow(WorkflowDefinition(name: "pipeline", .chain([sum(1), sum(2), sum(3)])))
            #expect(chain.steps.map(\.job.state).filter { $0 == .pending }.count == 2)
            #expect(chain.steps[2].dependsOn == [chain.steps[1].job.id])

            let workers = (0..<2).map { _ in JobWorker(queue: queue, concurrency: [JobQueue.anyQueue: 8], idlePoll: .milliseconds(50)) }
            let tasks = workers.map { worker in Task { try await worker.run() } }
            defer { tasks.forEach { $0.cancel() } }

            let members = (1...20).map(sum)
            let chord = try await queue.startWorkflow(WorkflowDefinition(.chord(members, callback: NewJob(task: "sum", args: .object(["n": .number(1000)])))))
            let nested = try await queue.startWorkflow(WorkflowDefinition(.chain([sum(1), .group([sum(10), sum(20)]), sum(0)])))

            let chainDone = try await finished(queue, chain.id)
            #expect(chainDone.state == .succeeded && chainDone.remaining == 0 && chainDone.finishedAt != nil)
            #expect(resultN(chainDone.steps.last) == 6)
            #expect(chainDone.steps.allSatisfy { $0.job.state == .succeeded && $0.job.workflowID == chain.id })

            let chordDone = try await finished(queue, chord.id)
            #expect(chordDone.state == .succeeded)
            let callback = try #require(chordDone.steps.last)
            #expect(callback.dependsOn == chordDone.steps.dropLast().map(\.job.id))
            guard case .object(let callbackArgs) = callback.job.args, case .array(let results)? = callbackArgs["results"] else {
                Issue.record("the callback got no results: \(callback.job.args)")
                return
            }
            // In the group's order, whichever member finished first.
            #expect(results == (1...20).map { JSONValue.object(["n": .number(Double($0))]) })
            #expect(resultN(callback) == 1000 + 210)
            #expect(callback.job.attempt == 1)

            let nestedDone = try await finished(queue, nested.id)
            #expect(nestedDone.state == .succeeded)
            #expect(resultN(nestedDone.steps.last) == (1 + 10) + (1 + 20))
        }
    }

    /// A member that dies fails the workflow: the callback never runs and shows why; siblings still finish.
    @Test(arguments: StoreKind.allCases)
    func aDeadStepFailsTheWorkflowAndCancelsWhatWaits(_ kind: StoreKind) async throws {
        try await withQueue(kind, tasks: .workflowTasks) { queue in
            let worker = JobWorker(queue: queue, concurrency: [JobQueue.anyQueue: 4], idlePoll: .milliseconds(50))
            try await whileWorking(worker) {
                let failing = NewJob(task: "fail", args: .object(["n": .number(0)]), maxAttempts: 1)
                let started = try await queue.startWorkflow(WorkflowDefinition(.chord([sum(1), .job(failing)], callback: NewJob(task: "sum", args: .object(["n": .number(1)])))))
                let done = try await finished(queue, started.id)
                #expect(done.state == .failed)
                #expect(done.failedJobID == done.steps[1].job.id)
                #expect(done.steps.map(\.job.state) == [.succeeded, .dead, .cancelled])
                #expect(done.steps[2].job.attempt == 0)

                // Cancelling a waiting first step fails its chain the same way.
                let paused = try await queue.updateQueue(named: "held", QueueChange(paused: true))
                #expect(paused.paused)
                let held = try await queue.startWorkflow(WorkflowDefinition(.chain([
                    .job(NewJob(queue: "held", task: "sum", args: .object(["n": .number(1)]))), sum(2),
                ])))
                _ = try await queue.cancel(id: held.steps[0].job.id)
                let heldDone = try await queue.workflow(id: held.id)
                #expect(heldDone.state == .failed && heldDone.steps.map(\.job.state) == [.cancelled, .cancelled])

                // Cancelling the workflow cancels every step not yet run.
                let other = try await queue.startWorkflow(WorkflowDefinition(.chain([
                    .job(NewJob(queue: "held", task: "sum", args: .object(["n": .number(1)]))), sum(2),
                ])))
                let cancelled = try await queue.cancelWorkflow(id: other.id)
                #expect(cancelled.state == .cancelled && cancelled.steps.allSatisfy { $0.job.state == .cancelled })
                await #expect(throws: Problem.self) { _ = try await queue.cancelWorkflow(id: other.id) }
                let listed = try await queue.workflows(state: .failed, limit: 10, after: nil).items.map(\.id)
                #expect(listed == [started.id, held.id])
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func badWorkflowsAreRefusedWholeWithThePathOfTheFault(_ kind: StoreKind) async throws {
        try await withQueue(kind, tasks: .workflowTasks) { queue in
            func fields(_ body: String) async -> String {
                do {
                    let json = try JSONDecoder().decode(JSONValue.self, from: Data(body.utf8))
                    _ = try await queue.startWorkflow(try WorkflowDefinition(json: json))
                    return "accepted"
                } catch {
                    guard let problem = error as? Problem else { return "not a problem: \(error)" }
                    return String(describing: problem.extensions["errors"])
                }
            }
            #expect(await fields(#"{"chain": []}"#).contains("must hold at least one step"))
            #expect(await fields(#"{"chain": [{"task":"sum"}], "group": [{"task":"sum"}]}"#).contains("exactly one of chain, group and chord"))
            #expect(await fields(#"{"chain": [{"task":"sum","args":{"n":1}}, {"group": [{"task":"sum"}, {"task":"nope"}]}]}"#).contains("chain[1].group[1].task"))
            #expect(await fields(#"{"chain": [{"task":"sum"}, {"task":"sum","args":[1]}]}"#).contains("chain[1].args"))
            #expect(await fields(#"{"chord": {"group": [{"task":"sum"}]}}"#).contains("group and callback"))
            #expect(await fields(#"{"chord": {"group": [{"task":"sum"}], "callback": {"task":"sum","args":[1]}}}"#).contains("chord.callback.args"))
            #expect(await fields(#"{"chain": [{"task":"sum"}, {"task":"sum","delay_seconds":5}]}"#).contains("chain[1].delay_seconds"))
            #expect(await fields(#"{"group": [{"task":"sum","unique_key":"k"}]}"#).contains("group[0].unique_key"))
            #expect(await fields(#"{"chain": "sum"}"#).contains("must be an array of steps"))
            #expect(await fields(#"{"name": "bad name!", "chain": [{"task":"sum"}]}"#).contains("name"))
            let none = try await queue.list(.init(), limit: 10, after: nil).items
            #expect(none.isEmpty)
            #expect(await fields(#"{"name": "ok", "chain": [{"task":"sum","args":{"n":1}}, {"task":"sum"}]}"#) == "accepted")
        }
    }
}
