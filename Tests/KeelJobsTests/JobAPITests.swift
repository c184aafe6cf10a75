import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeelCore
@testable import KeelJobs
import KeelPlatform
import KeelServer
import KeelStore
import KeelTelemetry
import KeelTestSupport
import NIOCore
import Testing

/// `/api/v1/jobs` and `/api/v1/queues` on a live server with the whole platform and a worker.
@Suite struct JobAPITests {
    struct Client: Sendable {
        let client: any TestClientProtocol
        let token: String

        var port: Int? { client.port }

        func call(_ method: HTTPRequest.Method, _ path: String, json: Any? = nil) async throws -> (status: HTTPResponse.Status, json: [String: Any], headers: HTTPFields) {
            var headers: HTTPFields = [.authorization: "Bearer \(token)"]
            var body: ByteBuffer?
            if let json {
                headers[.contentType] = "application/json"
                body = ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json))
            }
            let response = try await client.execute(uri: path, method: method, headers: headers, body: body)
            return (response.status, (try? JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]) ?? [:], response.headers)
        }
    }

    func withJobsServer(_ kind: StoreKind, _ body: @escaping @Sendable (Client) async throws -> Void) async throws {
        try await withScratchDatabase(kind) { location in
            var config = quietTestConfig(location)
            config.auth.adminEmail = "ops@example.com"
            config.auth.adminPassword = Secret("jobs-admin-passphrase-1")
            let telemetry = try Telemetry.bootstrap(config)
            let store = try await config.openStore(logger: quietLogger)
            let (modules, identity) = Platform.modules(config: config, store: store, tasks: .testTasks, printFirstAdminPassword: { _, _ in })
            let server = KeelServer(config: config, store: store, telemetry: telemetry, modules: modules, authenticator: identity)
            try await server.makeApplication().test(.live) { client in
                while server.readiness.migrations != .applied { try await Task.sleep(for: .milliseconds(10)) }
                let login = try await client.execute(uri: "/api/v1/auth/login", method: .post, headers: [.contentType: "application/json"],
                                                     body: ByteBuffer(string: #"{"email":"ops@example.com","password":"jobs-admin-passphrase-1"}"#))
                let token = try #require((try JSONSerialization.jsonObject(with: Data(buffer: login.body)) as? [String: Any])?["access_token"] as? String)
                try await body(Client(client: client, token: token))
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func enqueueRunInspectAndOperateQueues(_ kind: StoreKind) async throws {
        try await withJobsServer(kind) { api in
            let created = try await api.call(.post, "/api/v1/jobs", json: ["task": "echo", "args": ["n": 1], "unique_key": "report-7", "tags": ["nightly"]])
            #expect(created.status == .created)
            let id = try #require(created.json["id"] as? String)
            let again = try await api.call(.post, "/api/v1/jobs", json: ["task": "echo", "args": ["n": 2], "unique_key": "report-7"])
            #expect(again.status == .ok && again.json["id"] as? String == id)

            let batch = try await api.call(.post, "/api/v1/jobs", json: ["jobs": [["task": "echo", "args": ["n": 3]], ["task": "echo", "args": ["n": 4], "queue": "email"]]])
            #expect(batch.status == .created)
            #expect((batch.json["items"] as? [[String: Any]])?.count == 2)
            let bad = try await api.call(.post, "/api/v1/jobs", json: ["jobs": [["task": "echo"], ["task": "nope"]]])
            #expect(bad.status == .unprocessableContent)
            #expect(String(describing: bad.json["errors"] ?? "").contains("jobs[1].task"))
            let negative = try await api.call(.post, "/api/v1/jobs", json: ["task": "echo", "delay_seconds": -5])
            #expect(negative.status == .unprocessableContent)

            // The platform's worker works every queue.
            var done = false
            for _ in 0..<500 where !done {
                let list = try await api.call(.get, "/api/v1/jobs?state=succeeded")
                done = (list.json["items"] as? [[String: Any]])?.count == 3
                if !done { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(done)
            let job = try await api.call(.get, "/api/v1/jobs/\(id)")
            #expect(job.json["state"] as? String == "succeeded")
            #expect((job.json["result"] as? [String: Any])?["n"] as? Int == 1)
            let tagged = try await api.call(.get, "/api/v1/jobs?tag=nightly")
            #expect((tagged.json["items"] as? [[String: Any]])?.count == 1)
            #expect(try await api.call(.get, "/api/v1/jobs?state=bogus").status == .badRequest)
            #expect(try await api.call(.post, "/api/v1/jobs/\(id)/cancel").status == .conflict)

            let stats = try await api.call(.get, "/api/v1/queues/default/stats?window_seconds=600")
            #expect((stats.json["finished"] as? [String: Int])?["succeeded"] == 2)
            #expect((stats.json["wait_seconds"] as? [String: Double])?["p99"] != nil)
            #expect(stats.json["sample"] as? Int == 2)
            #expect(try await api.call(.get, "/api/v1/queues/default/stats?window_seconds=5").status == .badRequest)

            // Paused queues keep jobs waiting; a full queue refuses with 429; purge empties it.
            #expect(try await api.call(.post, "/api/v1/queues/reports/pause").json["paused"] as? Bool == true)
            let waiting = try await api.call(.post, "/api/v1/jobs", json: ["task": "echo", "queue": "reports"])
            try await Task.sleep(for: .milliseconds(300))
            let stillWaiting = try await api.call(.get, "/api/v1/jobs/\(try #require(waiting.json["id"] as? String))")
            #expect(stillWaiting.json["state"] as? String == "available")
            #expect(try await api.call(.patch, "/api/v1/queues/reports", json: ["max_length": 1]).status == .ok)
            let full = try await api.call(.post, "/api/v1/jobs", json: ["task": "echo", "queue": "reports"])
            #expect(full.status == .tooManyRequests)
            #expect(full.headers[.retryAfter] != nil)
            let queues = try await api.call(.get, "/api/v1/queues")
            let reports = try #require((queues.json["items"] as? [[String: Any]])?.first { $0["name"] as? String == "reports" })
            #expect((reports["counts"] as? [String: Int])?["available"] == 1 && reports["max_length"] as? Int == 1)
            #expect(try await api.call(.post, "/api/v1/queues/reports/purge").json["purged"] as? Int == 1)
            #expect(try await api.call(.post, "/api/v1/queues/reports/resume").json["paused"] as? Bool == false)

            // The platform's worker is registered, alive, with its queues.
            let workers = try await api.call(.get, "/api/v1/workers")
            let worker = try #require((workers.json["items"] as? [[String: Any]])?.first)
            #expect(worker["status"] as? String == "alive")
            #expect((worker["queues"] as? [String: Int])?["*"] == 4)
        }
    }

    @Test func workflowsOverHTTP() async throws {
        try await withJobsServer(.sqlite) { api in
            let chord: [String: Any] = ["name": "fan-out", "chord": ["group": [["task": "echo", "args": ["n": 1]], ["task": "echo", "args": ["n": 2]]],
                                                                     "callback": ["task": "echo", "args": ["n": 3]]]]
            let started = try await api.call(.post, "/api/v1/workflows", json: chord)
            #expect(started.status == .created && (started.json["steps"] as? [Any])?.count == 3)
            let id = try #require(started.json["id"] as? String)
            var workflow: [String: Any] = [:]
            for _ in 0..<500 where workflow["state"] as? String != "succeeded" {
                workflow = try await api.call(.get, "/api/v1/workflows/\(id)").json
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(workflow["state"] as? String == "succeeded" && workflow["name"] as? String == "fan-out")
            let steps = try #require(workflow["steps"] as? [[String: Any]])
            let callback = try #require(steps.last?["job"] as? [String: Any])
            #expect((callback["args"] as? [String: Any])?["results"] as? [[String: Int]] == [["n": 1], ["n": 2]])
            #expect((steps.last?["depends_on"] as? [String])?.count == 2)
            let listed = try await api.call(.get, "/api/v1/workflows?state=succeeded")
            #expect((listed.json["items"] as? [[String: Any]])?.count == 1)

            let bad = try await api.call(.post, "/api/v1/workflows", json: ["group": [["task": "echo"], ["task": "nope"]]])
            #expect(bad.status == .unprocessableContent && String(describing: bad.json["errors"] ?? "").contains("group[1].task"))
            #expect(try await api.call(.get, "/api/v1/workflows?state=sideways").status == .badRequest)
            #expect(try await api.call(.get, "/api/v1/workflows/wf_01jz0000000000000000000000").status == .notFound)
            #expect(try await api.call(.post, "/api/v1/workflows/\(id)/cancel").status == .conflict)
        }
    }
}
