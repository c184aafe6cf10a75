import Foundation
import KeelTestSupport
import Testing

/// Workers in any language: the Python example in examples/ works a queue over HTTP.
@Suite struct HTTPWorkerTests {
    @Test(arguments: StoreKind.allCases)
    func thePythonExampleWorkerDrainsAnExternalQueue(_ kind: StoreKind) async throws {
        try await JobAPITests().withJobsServer(kind) { api in
            let port = try #require(api.port)
            // Unknown tasks are refused until the queue is marked for external workers.
            #expect(try await api.call(.post, "/api/v1/jobs", json: ["task": "py.add", "queue": "py"]).status == .unprocessableContent)
            #expect(try await api.call(.patch, "/api/v1/queues/py", json: ["external": true]).json["external"] as? Bool == true)
            let key = try #require(try await api.call(.post, "/api/v1/apikeys", json: ["name": "py-worker", "permissions": ["jobs:write"]]).json["key"] as? String)

            let jobs = (0..<20).map { ["task": "py.add", "queue": "py", "args": ["a": $0, "b": 100], "backoff_seconds": 1] as [String: Any] }
            #expect(try await api.call(.post, "/api/v1/jobs", json: ["jobs": jobs]).status == .created)
            let doomed = try #require(try await api.call(.post, "/api/v1/jobs", json: ["task": "py.fail", "queue": "py", "max_attempts": 1]).json["id"] as? String)

            // A stale or foreign lease token changes nothing.
            let claimed = try await api.call(.post, "/api/v1/workers/claim", json: ["queues": ["py"], "max": 1])
            let first = try #require((claimed.json["jobs"] as? [[String: Any]])?.first)
            let firstID = try #require(first["id"] as? String)
            let wrong = try await api.call(.post, "/api/v1/jobs/\(firstID)/complete", json: ["lease_token": "lease_01aaaaaaaaaaaaaaaaaaaaaaaaaa", "result": 1])
            #expect(wrong.status == .conflict)
            #expect((wrong.json["detail"] as? String)?.contains("not this job's current lease") == true)
            #expect(try await api.call(.get, "/api/v1/jobs/\(firstID)").json["state"] as? String == "running")
            let token = try #require(first["lease_token"] as? String)
            #expect(try await api.call(.post, "/api/v1/jobs/\(firstID)/heartbeat", json: ["lease_token": token]).json["cancel_requested"] as? Bool == false)
            #expect(try await api.call(.post, "/api/v1/jobs/\(firstID)/progress", json: ["lease_token": token, "percent": 150]).status == .unprocessableContent)
            #expect(try await api.call(.post, "/api/v1/jobs/\(firstID)/fail", json: ["lease_token": token, "error": "handing it back"]).status == .ok)
            #expect(try await api.call(.post, "/api/v1/jobs/\(firstID)/complete", json: ["lease_token": token]).status == .conflict)
            #expect(try await api.call(.post, "/api/v1/jobs/\(doomed)/complete", json: ["lease_token": token]).status == .conflict)
            #expect(try await api.call(.post, "/api/v1/workers/claim", json: ["queues": ["py"], "max": 0]).status == .unprocessableContent)

            // The example worker drains the queue, including the attempt handed back above once its backoff passes.
            let worker = try PythonHelper("examples/python-worker/worker.py", arguments: [], environment: [
                "KEEL_URL": "http://127.0.0.1:\(port)", "KEEL_API_KEY": key, "KEEL_QUEUES": "py", "KEEL_EXIT_WHEN_IDLE": "1",
            ])
            #expect(try await worker.waitForExit(timeout: .seconds(60)) == 0, "\(worker.output)")
            let done = try await api.call(.get, "/api/v1/jobs?queue=py&state=succeeded&limit=200")
            let items = try #require(done.json["items"] as? [[String: Any]])
            #expect(items.count == 20, "\(worker.output)")
            for item in items {
                let a = try #require((item["args"] as? [String: Any])?["a"] as? Int)
                #expect((item["result"] as? [String: Any])?["sum"] as? Int == a + 100)
                #expect((item["worker_id"] as? String)?.hasPrefix("http:py-") == true)
            }
            let retried = try await api.call(.get, "/api/v1/jobs/\(firstID)")
            #expect(retried.json["attempt"] as? Int == 2)
            #expect(((retried.json["errors"] as? [[String: Any]])?.first)?["error"] as? String == "handing it back")
            let dead = try await api.call(.get, "/api/v1/jobs/\(doomed)")
            #expect(dead.json["state"] as? String == "dead")
            #expect((((dead.json["errors"] as? [[String: Any]])?.first)?["error"] as? String)?.hasPrefix("ValueError: cannot process") == true)
        }
    }
}
