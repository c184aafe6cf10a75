import AsyncHTTPClient
import Foundation
import KeelCore
import KeelTestSupport
import NIOCore
import NIOHTTP1
import Testing

/// The AI gateway in a real `keel up`, in front of fake OpenAI-compatible providers, driven by the
/// official `openai` Python package.
@Suite(.serialized) struct OpenAICompatibilityTests {
    final class FakeProvider: @unchecked Sendable {
        let port: Int
        let helper: PythonHelper
        init(_ name: String) async throws {
            helper = try PythonHelper("fake_llm.py", arguments: ["0", name])
            port = try await helper.listeningPort()
        }
        var baseURL: String { "http://127.0.0.1:\(port)/v1" }
        func force(_ status: Int) async throws { _ = try await send("POST", "http://127.0.0.1:\(port)/control/mode?status=\(status)") }
        func seen() async throws -> [[String: Any]] {
            let body = try await send("GET", "http://127.0.0.1:\(port)/control/seen").body
            return (try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]]) ?? []
        }
    }

    static func send(_ method: String, _ url: String, headers: [String: String] = [:], body: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 22)))
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    /// `keel up` with its first admin signed in: the process (keep it alive), its URL and the admin's headers.
    static func startKeel(_ environment: [String: String] = [:]) async throws -> (KeelProcess, String, [String: String]) {
        let process = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_ADMIN_EMAIL": "admin@example.com", "KEEL_ADMIN_PASSWORD": "ai-admin-passphrase-1", "KEEL_AUTH_BCRYPT_COST": "4",
        ].merging(environment) { _, new in new })
        let url = "http://127.0.0.1:\(try await process.waitUntilReady())"
        let login = try await send("POST", url + "/api/v1/auth/login", headers: ["Content-Type": "application/json"],
                                   body: #"{"email": "admin@example.com", "password": "ai-admin-passphrase-1"}"#)
        let token = try #require(json(login.body)["access_token"] as? String)
        return (process, url, ["Authorization": "Bearer \(token)", "Content-Type": "application/json"])
    }

    /// Runs a scenario of `Tests/Support/openai_client.py` and returns what it printed.
    static func openai(_ base: String, key: String, model: String, _ scenario: String) async throws -> Any {
        let client = try PythonHelper("openai_client.py", arguments: [base, key, model, scenario])
        let status = try await client.waitForExit()
        #expect(status == 0, "\(client.output)")
        return try JSONSerialization.jsonObject(with: Data(client.output.utf8), options: [.fragmentsAllowed])
    }

    @Test func openAIClientsChatStreamAndEmbedThroughRoutingAndFallback() async throws {
        let (primary, backup) = (try await FakeProvider("primary"), try await FakeProvider("backup"))
        let (keel, keelURL, admin) = try await Self.startKeel(["KEEL_SECRET_KEY": "ai-test-secret-key-0123456789abcdef"])
        defer { withExtendedLifetime(keel) {} }
        func create(_ path: String, _ body: String) async throws -> (status: Int, body: String) {
            try await Self.send("POST", keelURL + path, headers: admin, body: body)
        }

        #expect(try await create("/api/v1/ai/providers", #"{"name": "primary", "kind": "openai", "base_url": "\#(primary.baseURL)", "api_key": "sk-upstream-primary"}"#).status == 201)
        #expect(try await create("/api/v1/ai/providers", #"{"name": "backup", "kind": "openai", "base_url": "\#(backup.baseURL)"}"#).status == 201)
        let listed = try await Self.send("GET", keelURL + "/api/v1/ai/providers", headers: admin)
        #expect(!listed.body.contains("sk-upstream-primary"))
        #expect(listed.body.contains(#""api_key_set":true"#))
        let badModel = try await create("/api/v1/ai/models", #"{"name": "x", "deployments": [{"provider": "nowhere", "model": "m"}]}"#)
        #expect(badModel.status == 422 && badModel.body.contains("deployments[0].provider"))
        #expect(try await create("/api/v1/ai/models", """
            {"name": "chat-small", "deployments": [{"provider": "primary", "model": "gpt-primary", "priority": 0},
             {"provider": "backup", "model": "gpt-backup", "priority": 1}], "price": {"input_per_million": 1, "output_per_million": 2}}
            """).status == 201)
        #expect(try await create("/api/v1/ai/models", #"{"name": "embed", "deployments": [{"provider": "primary", "model": "text-embed"}]}"#).status == 201)
        let keyAnswer = try await create("/api/v1/apikeys", #"{"name": "app", "permissions": ["ai:use"]}"#)
        let key = try #require(Self.json(keyAnswer.body)["key"] as? String, "\(keyAnswer.body)")
        let base = keelURL + "/v1"

        let chat = try #require(try await Self.openai(base, key: key, model: "chat-small", "chat") as? [String: Any])
        #expect(chat["content"] as? String == "hello from primary")
        #expect(chat["model"] as? String == "chat-small")
        #expect(chat["usage"] as? [Int] == [11, 7])
        let seen = try await primary.seen()
        #expect(seen.last?["model"] as? String == "gpt-primary")
        #expect(seen.last?["authorization"] as? String == "Bearer sk-upstream-primary")

        let stream = try #require(try await Self.openai(base, key: key, model: "chat-small", "stream") as? [String: Any])
        #expect(stream["content"] as? String == "hello from primary")
        let gaps = stream["gaps"] as? [Double] ?? []
        #expect(gaps.contains { $0 > 0.1 }, "chunks arrived together: \(gaps)")

        let embed = try #require(try await Self.openai(base, key: key, model: "embed", "embed") as? [String: Any])
        #expect((embed["vectors"] as? [[Double]])?.count == 2)
        #expect(embed["usage"] as? Int == 10)
        #expect(try await Self.openai(base, key: key, model: "-", "models") as? [String] == ["chat-small", "embed"])

        // Probes: each provider answered its model list when it was added (read before the primary is made to fail: a
        // periodic probe on a slow machine would see that).
        let health = (Self.json(try await Self.send("GET", keelURL + "/api/v1/ai/providers", headers: admin).body)["items"] as? [[String: Any]] ?? [])
            .compactMap { $0["health"] as? [String: Any] }
        #expect(health.count == 2 && health.allSatisfy { $0["healthy"] as? Bool == true }, "\(health)")
        // The primary fails: the next deployment answers, and the primary is left alone for a while.
        try await primary.force(500)
        let fallback = try #require(try await Self.openai(base, key: key, model: "chat-small", "chat") as? [String: Any])
        #expect(fallback["content"] as? String == "hello from backup")
        let modelView = Self.json(try await Self.send("GET", keelURL + "/api/v1/ai/models/chat-small", headers: admin).body)
        let primaryStatus = (modelView["status"] as? [[String: Any]])?.first { $0["provider"] as? String == "primary" }
        #expect(primaryStatus?["cooling_down"] as? Bool == true && primaryStatus?["failures"] as? Int == 1, "\(modelView)")
        #expect(try await backup.seen().last?["authorization"] as? String == nil)

        // Every failure comes back in OpenAI's error shape, without calling an upstream.
        let before = try await primary.seen().count + backup.seen().count
        let unknown = try #require(try await Self.openai(base, key: key, model: "no-such-model", "error") as? [String: Any])
        #expect(unknown["status"] as? Int == 404)
        #expect(unknown["code"] as? String == "model_not_found")
        let badStream = try await Self.send("POST", base + "/chat/completions", headers: ["Authorization": "Bearer \(key)", "Content-Type": "application/json"],
                                            body: #"{"model": "chat-small", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}"#)
        #expect(badStream.status == 422)
        let error = Self.json(badStream.body)["error"] as? [String: Any]
        #expect(error?["param"] as? String == "stream" && error?["type"] as? String == "invalid_request_error")
        let noMessages = try await Self.send("POST", base + "/chat/completions", headers: ["Authorization": "Bearer \(key)", "Content-Type": "application/json"],
                                             body: #"{"model": "chat-small", "messages": [{"role": "robot", "content": "hi"}]}"#)
        #expect((Self.json(noMessages.body)["error"] as? [String: Any])?["param"] as? String == "messages[0].role")
        let anonymous = try await Self.send("POST", base + "/chat/completions", headers: ["Content-Type": "application/json"], body: "{}")
        #expect(anonymous.status == 401 && (Self.json(anonymous.body)["error"] as? [String: Any])?["type"] as? String == "authentication_error")
        #expect(try await primary.seen().count + backup.seen().count == before)

        // Usage exact to the token: three chats of 11 in / 7 out, two embeddings of 5.
        let metrics = try await Self.send("GET", keelURL + "/metrics").body
        #expect(metrics.contains(#"keel_ai_tokens_total{model="chat-small",direction="input"} 33"#), "\(metrics.split(separator: "\n").filter { $0.contains("keel_ai_tokens") })")
        #expect(metrics.contains(#"keel_ai_tokens_total{model="chat-small",direction="output"} 21"#))
        #expect(metrics.contains(#"keel_ai_tokens_total{model="embed",direction="input"} 10"#))

        // The same from the store's daily rollup, by model.
        var usage: [String: Any] = [:]
        for _ in 0..<30 {
            usage = Self.json(try await Self.send("GET", keelURL + "/api/v1/ai/usage?group_by=model", headers: admin).body)
            if (usage["items"] as? [[String: Any]])?.count == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let byModel = Dictionary(((usage["items"] as? [[String: Any]]) ?? []).map { ($0["model"] as? String ?? "?", $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byModel["chat-small"]?["requests"] as? Double == 3)
        #expect(byModel["chat-small"]?["tokens_in"] as? Double == 33 && byModel["chat-small"]?["tokens_out"] as? Double == 21)
        #expect(abs((byModel["chat-small"]?["cost"] as? Double ?? 0) - (33 * 1 + 21 * 2) / 1e6) < 1e-12)
        #expect(byModel["embed"]?["tokens_in"] as? Double == 10)
        #expect(try await Self.send("GET", keelURL + "/api/v1/ai/usage?group_by=week", headers: admin).status == 400)
    }

    @Test(arguments: [StoreKind.sqlite, .postgres])
    func budgetsHoldUnderConcurrencyAndKeysSeeOnlyTheirModels(_ kind: StoreKind) async throws {
        try await withScratchDatabase(kind) { location in
            var environment: [String: String] = [:]
            if case .postgres(let url) = location {
                environment["KEEL_DATABASE_URL"] = url.connectionString()
                environment["KEEL_DATABASE_TLS"] = "disable"
            }
            try await budgets(environment)
        }
    }

    func budgets(_ environment: [String: String]) async throws {
        let provider = try await FakeProvider("metered")
        let (keel, keelURL, admin) = try await Self.startKeel(environment)
        defer { withExtendedLifetime(keel) {} }
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/providers", headers: admin,
                                body: #"{"name": "fake", "kind": "openai", "base_url": "\#(provider.baseURL)"}"#)
        // 7 output tokens at 1e6/7 per million: every answer costs exactly 1.
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin, body: """
            {"name": "metered", "deployments": [{"provider": "fake", "model": "m"}], "price": {"input_per_million": 0, "output_per_million": \(1e6 / 7)}}
            """)
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin, body: #"{"name": "other", "deployments": [{"provider": "fake", "model": "o"}]}"#)
        let created = Self.json(try await Self.send("POST", keelURL + "/api/v1/apikeys", headers: admin, body: #"{"name": "app", "permissions": ["ai:use"]}"#).body)
        let (key, keyID) = (try #require(created["key"] as? String), try #require(created["id"] as? String))
        let policy = try await Self.send("PUT", keelURL + "/api/v1/ai/keys/\(keyID)", headers: admin,
                                         body: #"{"daily_budget": 10, "allowed_models": ["metered"]}"#)
        #expect(policy.status == 200, "\(policy.body)")

        #expect(try await Self.openai(keelURL + "/v1", key: key, model: "-", "models") as? [String] == ["metered"])
        let forbidden = try #require(try await Self.openai(keelURL + "/v1", key: key, model: "other", "error") as? [String: Any])
        #expect(forbidden["status"] as? Int == 403 && forbidden["code"] as? String == "model_not_allowed")

        // 50 at once against a budget that covers 10.
        let statuses = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for _ in 0..<50 {
                group.addTask {
                    let answer = try await Self.send("POST", keelURL + "/v1/chat/completions", headers: ["Authorization": "Bearer \(key)", "Content-Type": "application/json"],
                                                     body: #"{"model": "metered", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}"#)
                    return (answer.status, answer.body)
                }
            }
            return try await group.reduce(into: [(Int, String)]()) { $0.append($1) }
        }
        #expect(statuses.filter { $0.0 == 200 }.count == 10)
        let refused = statuses.filter { $0.0 == 429 }
        #expect(refused.count == 40)
        #expect(refused.allSatisfy { ((Self.json($0.1)["error"] as? [String: Any])?["code"] as? String) == "budget_exceeded" })
        try await Task.sleep(for: .milliseconds(500))
        let view = Self.json(try await Self.send("GET", keelURL + "/api/v1/ai/keys/\(keyID)", headers: admin).body)
        let today = (view["spend"] as? [String: Any])?["today"] as? [String: Double]
        #expect(abs((today?["spent"] ?? 0) - 10) < 1e-6, "\(view)")
        #expect(abs(today?["reserved"] ?? 1) < 1e-6)
        #expect(try await provider.seen().count == 10)
    }

    @Test func ollamaAndAnthropicAreTranslatedBothWays() async throws {
        let native = try await FakeProvider("native")
        let (keel, keelURL, admin) = try await Self.startKeel(["KEEL_SECRET_KEY": "ai-test-secret-key-0123456789abcdef"])
        defer { withExtendedLifetime(keel) {} }
        let server = "http://127.0.0.1:\(native.port)"
        for body in [#"{"name": "ollama", "kind": "ollama", "base_url": "\#(server)"}"#,
                     #"{"name": "claude", "kind": "anthropic", "base_url": "\#(server)", "api_key": "sk-ant-test"}"#] {
            #expect(try await Self.send("POST", keelURL + "/api/v1/ai/providers", headers: admin, body: body).status == 201)
        }
        for body in [#"{"name": "local", "deployments": [{"provider": "ollama", "model": "llama3.1:8b"}]}"#,
                     #"{"name": "local-embed", "deployments": [{"provider": "ollama", "model": "nomic-embed-text"}]}"#,
                     #"{"name": "sonnet", "deployments": [{"provider": "claude", "model": "claude-sonnet"}]}"#] {
            #expect(try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin, body: body).status == 201)
        }
        let key = try #require(Self.json(try await Self.send("POST", keelURL + "/api/v1/apikeys", headers: admin,
                                                              body: #"{"name": "app", "permissions": ["ai:use"]}"#).body)["key"] as? String)
        let base = keelURL + "/v1"
        for model in ["local", "sonnet"] {
            let chat = try #require(try await Self.openai(base, key: key, model: model, "chat") as? [String: Any])
            #expect(chat["content"] as? String == "hello from native", "\(model)")
            #expect(chat["usage"] as? [Int] == [11, 7], "\(model)")
            let stream = try #require(try await Self.openai(base, key: key, model: model, "stream") as? [String: Any])
            #expect(stream["content"] as? String == "hello from native", "\(model)")
            #expect((stream["gaps"] as? [Double] ?? []).contains { $0 > 0.1 }, "\(model) arrived in one piece")
        }
        let embed = try #require(try await Self.openai(base, key: key, model: "local-embed", "embed") as? [String: Any])
        #expect((embed["vectors"] as? [[Double]])?.count == 2 && embed["usage"] as? Int == 10)

        let seen = try await native.seen()
        let anthropic = seen.filter { $0["path"] as? String == "/v1/messages" }
        #expect(anthropic.count == 2)
        #expect(anthropic.allSatisfy { $0["system"] as? String == "Be brief." && $0["x_api_key"] as? String == "sk-ant-test" && $0["max_tokens"] as? Int == 4096 })
        #expect(seen.filter { $0["path"] as? String == "/api/chat" }.allSatisfy { $0["model"] as? String == "llama3.1:8b" })

        let metrics = try await Self.send("GET", keelURL + "/metrics").body
        for model in ["local", "sonnet"] {
            #expect(metrics.contains(#"keel_ai_tokens_total{model="\#(model)",direction="input"} 22"#), "\(model)")
            #expect(metrics.contains(#"keel_ai_tokens_total{model="\#(model)",direction="output"} 14"#), "\(model)")
        }
    }

    @Test func perMinuteLimitsRefuseWithRetryAfter() async throws {
        let provider = try await FakeProvider("limited")
        let (keel, keelURL, admin) = try await Self.startKeel()
        defer { withExtendedLifetime(keel) {} }
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/providers", headers: admin, body: #"{"name": "fake", "kind": "openai", "base_url": "\#(provider.baseURL)"}"#)
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin, body: #"{"name": "chat", "deployments": [{"provider": "fake", "model": "m"}]}"#)
        func key(_ policy: String) async throws -> String {
            let created = Self.json(try await Self.send("POST", keelURL + "/api/v1/apikeys", headers: admin, body: #"{"name": "app", "permissions": ["ai:use"]}"#).body)
            let id = try #require(created["id"] as? String)
            #expect(try await Self.send("PUT", keelURL + "/api/v1/ai/keys/\(id)", headers: admin, body: policy).status == 200)
            return try #require(created["key"] as? String)
        }
        let (requests, tokens) = (try await key(#"{"requests_per_minute": 3}"#), try await key(#"{"tokens_per_minute": 20}"#))
        // Stay inside one minute: the counts start afresh at the next.
        while Int(Date().timeIntervalSince1970) % 60 > 45 { try await Task.sleep(for: .seconds(1)) }
        func chat(_ key: String) async throws -> [String: Any] {
            try #require(try await Self.openai(keelURL + "/v1", key: key, model: "chat", "error") as? [String: Any])
        }
        for _ in 0..<3 { #expect(try await chat(requests)["status"] as? Int == 200) }
        let refused = try await chat(requests)
        #expect(refused["status"] as? Int == 429 && refused["code"] as? String == "rate_limit_exceeded", "\(refused)")
        // 18 tokens an answer against 20 a minute: the second request is still under, the third is not.
        for _ in 0..<2 {
            #expect(try await chat(tokens)["status"] as? Int == 200)
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(try await chat(tokens)["status"] as? Int == 429)
        let raw = try await Self.send("POST", keelURL + "/v1/chat/completions", headers: ["Authorization": "Bearer \(tokens)", "Content-Type": "application/json"],
                                      body: #"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#)
        #expect(raw.status == 429)
        #expect(try await provider.seen().count == 5)
    }

    @Test func cachedModelsAnswerRepeatsWithoutTheUpstream() async throws {
        let provider = try await FakeProvider("cached")
        let (keel, keelURL, admin) = try await Self.startKeel()
        defer { withExtendedLifetime(keel) {} }
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/providers", headers: admin, body: #"{"name": "fake", "kind": "openai", "base_url": "\#(provider.baseURL)"}"#)
        #expect(try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin,
                                    body: #"{"name": "faq", "deployments": [{"provider": "fake", "model": "m"}], "cache": {"ttl_seconds": 0}}"#).status == 422)
        _ = try await Self.send("POST", keelURL + "/api/v1/ai/models", headers: admin,
                                body: #"{"name": "faq", "deployments": [{"provider": "fake", "model": "m"}], "cache": {"ttl_seconds": 60}}"#)
        let key = try #require(Self.json(try await Self.send("POST", keelURL + "/api/v1/apikeys", headers: admin,
                                                              body: #"{"name": "app", "permissions": ["ai:use"]}"#).body)["key"] as? String)
        let headers = ["Authorization": "Bearer \(key)", "Content-Type": "application/json"]
        // The same request with its keys in another order is the same request.
        let first = try await Self.send("POST", keelURL + "/v1/chat/completions", headers: headers,
                                        body: #"{"model": "faq", "temperature": 0, "messages": [{"role": "user", "content": "hours?"}]}"#)
        let second = try await Self.send("POST", keelURL + "/v1/chat/completions", headers: headers,
                                         body: #"{"messages": [{"content": "hours?", "role": "user"}], "temperature": 0, "model": "faq"}"#)
        #expect(first.status == 200 && second.status == 200)
        #expect(Self.json(first.body)["choices"] as? [[String: Any]] != nil)
        #expect((Self.json(second.body)["choices"] as? [[String: Any]])?.first?["message"] as? [String: String] == ["role": "assistant", "content": "hello from cached"])
        #expect(try await provider.seen().count == 1)
        _ = try await Self.send("POST", keelURL + "/v1/chat/completions", headers: headers,
                                body: #"{"model": "faq", "messages": [{"role": "user", "content": "address?"}]}"#)
        _ = try await Self.openai(keelURL + "/v1", key: key, model: "faq", "stream")
        #expect(try await provider.seen().count == 3)
        let metrics = try await Self.send("GET", keelURL + "/metrics").body
        #expect(metrics.contains("keel_ai_cache_hits_total 1"))
        #expect(metrics.contains("keel_ai_cache_misses_total 2"))
    }
}
