import Foundation
import KeelCore
@testable import KeelJobs
import KeelServer
import KeelStore
import KeelTestSupport
import Testing

@Suite struct BuiltInTaskTests {
    static var builtIns: JobRegistry {
        var registry = JobRegistry()
        BuiltInTasks.register(in: &registry)
        return registry
    }

    @Test func httpRequestsSignBodiesAndJudgeStatuses() async throws {
        let upstream = try PythonHelper("webhook_receiver.py", arguments: ["0", "whsec-test"])
        defer { upstream.stop() }
        let port = try await upstream.listeningPort()
        try await withQueue(.sqlite, tasks: Self.builtIns) { queue in
            let base = "http://127.0.0.1:\(port)"
            func enqueue(_ args: [String: JSONValue], attempts: Int = 1) async throws -> String {
                try await queue.enqueue([NewJob(task: "http.request", args: .object(args), maxAttempts: attempts)])[0].job.id
            }
            let signed = try await enqueue(["method": .string("POST"), "url": .string(base + "/hook"), "body": .string(#"{"order":42}"#),
                                            "headers": .object(["Content-Type": .string("application/json")]), "hmac_secret": .string("whsec-test")])
            let wrongSecret = try await enqueue(["method": .string("POST"), "url": .string(base + "/hook"), "body": .string("{}"), "hmac_secret": .string("nope")])
            let failing = try await enqueue(["url": .string(base + "/fail")])
            let tolerated = try await enqueue(["url": .string(base + "/fail"), "expected_status": .array([.number(500)])])
            let big = try await enqueue(["url": .string(base + "/big")])
            let badURL = try await enqueue(["url": .string("ftp://example.com/file")], attempts: 5)

            let worker = JobWorker(queue: queue, concurrency: ["default": 4], idlePoll: .milliseconds(100))
            try await whileWorking(worker) {
                let settled = try await eventually {
                    try await [signed, wrongSecret, failing, tolerated, big, badURL].asyncMap { try await queue.job(id: $0).state.isFinal }.allSatisfy { $0 }
                }
                #expect(settled)
            }
            let ok = try await queue.job(id: signed)
            #expect(ok.state == .succeeded)
            #expect(ok.result == .object(["status": .number(200), "body": .string(#"{"received": {"order": 42}}"#), "truncated": .bool(false)]))
            #expect(try await queue.job(id: wrongSecret).errors.first?.error.contains("unexpected HTTP status 401") == true)
            #expect(try await queue.job(id: failing).state == .dead)
            #expect(try await queue.job(id: tolerated).state == .succeeded)
            let truncated = try await queue.job(id: big)
            if case .object(let result) = truncated.result {
                #expect(result["truncated"] == .bool(true))
                if case .string(let body) = result["body"] { #expect(body.utf8.count == 65_536) }
            } else {
                Issue.record("no result for the big response")
            }
            // A URL that can never work is not retried.
            let permanent = try await queue.job(id: badURL)
            #expect(permanent.state == .dead && permanent.attempt == 1)
        }
    }

    /// `email.send` through a worker to a real SMTP server with STARTTLS and a login: delivered, or dead at once when
    /// the server refuses for good, or retried when it cannot be reached.
    @Test func emailSendDeliversOverSMTP() async throws {
        try await SMTPTestServer.with("starttls", credentials: "mailer:s3cret-pass") { server in
            var settings = server.settings
            settings.username = "mailer"
            settings.password = Secret("s3cret-pass")
            settings.from = "noreply@keel.example"
            var registry = JobRegistry()
            BuiltInTasks.register(in: &registry, mail: settings)
            try await withQueue(.sqlite, tasks: registry) { queue in
                let sent = try await queue.enqueue([NewJob(task: "email.send", args: .object([
                    "to": .string("ana@example.com"), "bcc": .array([.string("audit@example.com")]), "subject": .string("Your report"),
                    "text": .string("Ready."), "html": .string("<p>Ready.</p>"),
                ]))])[0].job
                let refused = try await queue.enqueue([NewJob(task: "email.send", args: .object([
                    "to": .string("x@refused.example"), "subject": .string("s"), "text": .string("t"),
                ]))])[0].job
                let injected = try await queue.enqueue([NewJob(task: "email.send", args: .object([
                    "to": .string("a@example.com"), "subject": .string("s\r\nBcc: victim@example.com"), "text": .string("t"),
                ]))])[0].job
                let worker = JobWorker(queue: queue, concurrency: ["default": 4], idlePoll: .milliseconds(50))
                try await whileWorking(worker) {
                    let done = try await eventually { try await [sent, refused, injected].asyncAllFinal(queue) }
                    #expect(done)
                }
                let delivered = try await queue.job(id: sent.id)
                #expect(delivered.state == .succeeded)
                guard case .object(let result)? = delivered.result else { Issue.record("no result: \(delivered)"); return }
                #expect(result["accepted"] == .array([.string("ana@example.com"), .string("audit@example.com")]))
                #expect(server.received.count == 1)
                #expect(server.received.first?["mail_from"] as? String == "noreply@keel.example")
                let dead = try await queue.job(id: refused.id)
                #expect(dead.state == .dead && dead.attempt == 1 && dead.errors.first?.error.contains("550") == true)
                let refusedInjection = try await queue.job(id: injected.id)
                #expect(refusedInjection.state == .dead && refusedInjection.errors.first?.error.contains("subject: must be one line") == true)
            }
        }
        // No server listening: a failed attempt, retried later.
        var settings = MailSettings()
        let closed = try ClosedPort()
        defer { withExtendedLifetime(closed) {} }
        (settings.host, settings.port, settings.from) = ("127.0.0.1", closed.port, "noreply@keel.example")
        var registry = JobRegistry()
        BuiltInTasks.register(in: &registry, mail: settings)
        try await withQueue(.sqlite, tasks: registry) { queue in
            let job = try await queue.enqueue([NewJob(task: "email.send", args: .object(["to": .string("a@example.com"), "subject": .string("s"), "text": .string("t")]))])[0].job
            let worker = JobWorker(queue: queue, concurrency: ["default": 1], idlePoll: .milliseconds(50))
            try await whileWorking(worker) {
                let retrying = try await eventually { try await queue.job(id: job.id).state == .retrying }
                #expect(retrying)
            }
            #expect(try await queue.job(id: job.id).errors.first?.error.contains("cannot connect") == true)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func pruneDeletesOldAndSurplusFinishedJobs(_ kind: StoreKind) async throws {
        try await withQueue(kind, tasks: Self.builtIns) { queue in
            _ = try await queue.enqueue((0..<12).map { _ in NewJob(task: "keel.noop") })
            let worker = JobWorker(queue: queue, concurrency: ["default": 4], idlePoll: .milliseconds(100))
            try await whileWorking(worker) {
                let done = try await eventually { try await queue.list(JobQueue.Filter(), limit: 50, after: nil).items.allSatisfy { $0.state == .succeeded } }
                #expect(done)
            }
            let ids = try await queue.list(JobQueue.Filter(), limit: 50, after: nil).items.map(\.id)
            let old = Date().addingTimeInterval(-8 * 86_400)
            for id in ids.prefix(2) { try await queue.store.execute("UPDATE keel_jobs SET finished_at = \(old) WHERE id = \(id)") }
            let waiting = try await queue.enqueue([NewJob(task: "keel.noop", delaySeconds: 3600)])[0].job

            let deleted = try await queue.prune(BuiltInTasks.PruneArgs(keepPerState: 5))
            #expect(deleted["succeeded"] == 7)  // 2 by age, then 5 beyond the newest 5
            let remaining = try await queue.list(JobQueue.Filter(), limit: 50, after: nil).items
            #expect(remaining.filter { $0.state == .succeeded }.map(\.id) == Array(ids.suffix(5)))
            #expect(remaining.contains { $0.id == waiting.id })

            // Finished workflows go with their jobs, and so does the log of rate-limited starts.
            let workflow = try await queue.startWorkflow(WorkflowDefinition(.chain([.job(NewJob(task: "keel.noop")), .job(NewJob(task: "keel.noop"))])))
            try await whileWorking(worker) {
                let done = try await eventually { try await queue.workflow(id: workflow.id).state == .succeeded }
                #expect(done)
            }
            try await queue.store.execute("UPDATE keel_workflows SET finished_at = \(old) WHERE id = \(workflow.id)")
            try await queue.store.execute("UPDATE keel_jobs SET finished_at = \(old) WHERE workflow_id = \(workflow.id)")
            try await queue.store.execute("INSERT INTO keel_queue_starts (queue, started_at) VALUES ('api', \(old))")
            let again = try await queue.prune(BuiltInTasks.PruneArgs(keepPerState: 5))
            #expect(again["workflows"] == 1 && again["succeeded"] == 2)
            let leftovers = try await queue.store.query("""
                SELECT (SELECT COUNT(*) FROM keel_workflow_edges) AS edges, (SELECT COUNT(*) FROM keel_queue_starts) AS starts
                """)
            #expect(try leftovers.first?.int("edges") == 0 && leftovers.first?.int("starts") == 0)

            try await queue.ensurePruneSchedule()
            try await queue.ensurePruneSchedule()
            let schedule = try await queue.schedule(named: "keel.prune")
            #expect(schedule.cron == "@hourly" && schedule.task == "keel.prune")
        }
    }
}

extension Array where Element == JobRecord {
    func asyncAllFinal(_ queue: JobQueue) async throws -> Bool {
        for job in self where !(try await queue.job(id: job.id).state.isFinal) { return false }
        return true
    }
}
