import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Metrics
import KeelCore
import KeelServer
import NIOCore
import NIOHTTP1

/// The OpenAI-compatible surface: `POST /v1/chat/completions` (streaming too), `POST /v1/embeddings`,
/// `GET /v1/models`, for callers holding `ai:use`. Requests are checked before any upstream is called;
/// errors come back in OpenAI's shape (see ``OpenAIErrorMiddleware``).
struct OpenAIEndpoints {
    let ai: AIGateway
    /// Largest request body (a long conversation with images inline).
    static let maxBodyBytes = 16 << 20
    /// Largest non-streamed upstream answer read.
    static let maxResponseBytes = 32 << 20

    enum Endpoint: String {
        case chat = "chat/completions"
        case embeddings
    }

    func register(on routes: inout RouteRegistrar) {
        let ai = self.ai
        routes.add(.post, "/v1/chat/completions", access: .permission("ai:use")) { request, context in
            try await Self.forward(.chat, request: request, context: context, ai: ai)
        }
        routes.add(.post, "/v1/embeddings", access: .permission("ai:use")) { request, context in
            try await Self.forward(.embeddings, request: request, context: context, ai: ai)
        }
        routes.add(.get, "/v1/models", access: .permission("ai:use")) { _, context in
            let policy = try context.requirePrincipal().credentialID.flatMap(ai.policy(for:))
            let data: [JSONValue] = ai.models.keys.sorted().filter { policy?.allows($0) ?? true }.map { name in
                .object(["id": .string(name), "object": .string("model"), "created": .number(0), "owned_by": .string("keel")])
            }
            return try .json(JSONValue.object(["object": .string("list"), "data": .array(data)]))
        }
    }

    /// The request's JSON object, checked for what the endpoint needs.
    static func parse(_ endpoint: Endpoint, request: Request) async throws -> (fields: [String: JSONValue], bytes: Int) {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw Problem.contentTooLarge(limit: maxBodyBytes)
        }
        guard case .object(let fields)? = try? JSONValue.parse(buffer) else {
            throw Problem.malformedJSON("The body must be a JSON object.")
        }
        func invalid(_ param: String, _ message: String) -> Problem {
            Problem.validation(message, errors: [FieldError(field: param, message: message)])
        }
        guard fields["model"]?.string?.isEmpty == false else { throw invalid("model", "model is required: the name of a model (see GET /v1/models).") }
        if let stream = fields["stream"] {
            guard case .bool = stream else { throw invalid("stream", "stream must be true or false.") }
            if endpoint == .embeddings { throw invalid("stream", "Embeddings cannot be streamed.") }
        }
        switch endpoint {
        case .chat:
            guard case .array(let messages)? = fields["messages"], !messages.isEmpty else {
                throw invalid("messages", "messages must be a non-empty array of {role, content}.")
            }
            let roles: Set<String> = ["system", "developer", "user", "assistant", "tool", "function"]
            for (index, message) in messages.enumerated() {
                guard case .object(let members) = message, case .string(let role)? = members["role"], roles.contains(role) else {
                    throw invalid("messages[\(index)].role", "messages[\(index)].role must be one of \(roles.sorted().joined(separator: ", ")).")
                }
                switch members["content"] {
                case .string?, .array?, .null?: break
                case nil where role == "assistant": break
                default: throw invalid("messages[\(index)].content", "messages[\(index)].content must be a string or an array of content parts.")
                }
            }
        case .embeddings:
            switch fields["input"] {
            case .string(let text)? where !text.isEmpty: break
            case .array(let items)? where !items.isEmpty: break
            default: throw invalid("input", "input must be a non-empty string or array.")
            }
        }
        return (fields, buffer.readableBytes)
    }

    static func forward(_ endpoint: Endpoint, request: Request, context: KeelRequestContext, ai: AIGateway) async throws -> Response {
        let principal = try context.requirePrincipal()
        let (fields, bodyBytes) = try await parse(endpoint, request: request)
        let policy = principal.credentialID.flatMap(ai.policy(for:))
        guard case .string(let name)? = fields["model"], let model = ai.models[name], policy?.allows(name) ?? true else {
            let requested = fields["model"]?.string ?? ""
            if ai.models[requested] != nil {
                throw Problem(status: .forbidden, slug: "model-not-allowed", title: "Model not allowed",
                              detail: "This API key may not use the model \(requested).")
            }
            throw Problem(status: .notFound, slug: "model-not-found", title: "Model not found",
                          detail: "The model \(requested) does not exist (see GET /v1/models).")
        }
        var minute: Int64?
        if let policy, let credential = principal.credentialID, policy.limitsPerMinute {
            switch try await ai.minutes.admit(credential, policy: policy) {
            case .refused(let limit, let retryAfter):
                throw Problem.tooManyRequests("This API key's limit of \(limit) is reached; retry in \(retryAfter) s.", retryAfterSeconds: retryAfter)
            case .admitted(let current):
                minute = current
            }
        }
        var settlement: Settlement?
        if let policy, let credential = principal.credentialID, policy.dailyBudget != nil || policy.monthlyBudget != nil {
            let estimate = worstCaseCost(model, endpoint: endpoint, fields: fields, bodyBytes: bodyBytes)
            switch try await ai.ledger.reserve(estimate, for: credential, policy: policy) {
            case .refused(let period, let budget, let spent):
                let span = period.hasPrefix("d:") ? "daily" : "monthly"
                Counter(label: "keel_ai_budget_refusals_total", dimensions: [("period", span)]).increment()
                throw Problem(status: .tooManyRequests, slug: "budget-exceeded", title: "Budget exceeded",
                              detail: "This API key's \(span) budget of \(budget) is spent (\(spent) so far, with requests in flight reserved).",
                              headers: [.retryAfter: String(SpendLedger.secondsUntilNext(period: period, now: Date()))])
            case .reserved(let reservation):
                settlement = Settlement(ledger: ai.ledger, reservation: reservation)
            }
        }
        do {
            return try await attempt(endpoint, fields: fields, name: name, model: model, principal: principal, settlement: settlement,
                                     minute: minute.map { (ai.minutes, $0) }, ai: ai)
        } catch {
            await settlement?.settle(cost: 0)
            throw error
        }
    }

    /// The most a request can cost: its body's size as input tokens (a token is rarely less than a
    /// byte), and its `max_tokens` (else 4096) as output; embeddings have no output.
    static func worstCaseCost(_ model: AIModel, endpoint: Endpoint, fields: [String: JSONValue], bodyBytes: Int) -> Double {
        guard model.price != nil else { return 0 }
        var output = 0
        if endpoint == .chat {
            output = 4096
            for key in ["max_completion_tokens", "max_tokens"] {
                if case .number(let value)? = fields[key], value >= 0 { output = Int(value) }
            }
        }
        return cost(model, tokensIn: bodyBytes, tokensOut: output)
    }

    static func attempt(_ endpoint: Endpoint, fields: [String: JSONValue], name: String, model: AIModel, principal: Principal,
                        settlement: Settlement?, minute: (limits: MinuteLimits, minute: Int64)?, ai: AIGateway) async throws -> Response {
        var fields = fields
        let streamed = fields["stream"] == .bool(true)
        let clientWantsUsage = fields["stream_options"]?["include_usage"] == .bool(true)
        let started = ContinuousClock.now
        var record = UsageRecord(at: Date(), credentialID: principal.credentialID, subject: principal.subject, model: name,
                                 endpoint: endpoint.rawValue, status: 0, tokensIn: 0, tokensOut: 0, cost: 0, latency: .zero, streamed: streamed,
                                 settlement: settlement, minute: minute)
        let cacheKey = model.cache != nil && !streamed ? ResponseCache.key(model: name, fields: fields) : nil
        if let cacheKey, let cached = ai.cache.lookup(cacheKey) {
            record.status = 200
            record.latency = .now - started
            record.timeToFirstToken = record.latency
            ai.usage.record(record)
            var headers: HTTPFields = [.contentType: "application/json"]
            headers[HTTPField.Name("X-Keel-Cache")!] = "hit"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: cached.bytes))
        }
        var lastFailure = "no deployment could be tried"
        var attempts = 0
        let plan = ai.plan(for: model)
        // Each deployment in plan order; a model with fewer than three gets another round after a backoff.
        while attempts < max(plan.count, 3) {
            let deployment = plan[attempts % plan.count]
            if attempts >= plan.count { try await Task.sleep(for: .milliseconds(100 << min(attempts - plan.count, 3))) }
            attempts += 1
            guard let provider = ai.provider(named: deployment.provider) else { continue }
            fields["model"] = .string(deployment.model)
            let dialect = provider.kind.dialect
            let outgoing: HTTPClientRequest
            do {
                outgoing = try dialect.request(endpoint, fields: fields, provider: provider)
            } catch {
                lastFailure = "\(provider.name) (\(provider.kind.rawValue)) does not serve \(endpoint.rawValue)"
                continue
            }
            record.provider = provider.name
            record.deploymentModel = deployment.model

            ai.started(deployment)
            let response: HTTPClientResponse
            do {
                response = try await ai.client.execute(outgoing, timeout: .nanoseconds(Int64(deployment.timeoutSeconds * 1e9)))
            } catch {
                lastFailure = "\(provider.name): \(error is HTTPClientError ? String(describing: error) : "connection failed")"
                ai.finished(deployment, failure: lastFailure)
                continue
            }
            let status = Int(response.status.code)
            if status == 429 || status >= 500 {
                _ = try? await response.body.collect(upTo: 1 << 20)
                lastFailure = "\(provider.name) answered \(status)"
                ai.finished(deployment, failure: lastFailure)
                continue
            }
            if status >= 400 {
                // The upstream refused the request itself (bad parameters): the caller sees why, in OpenAI's shape.
                ai.finished(deployment, failure: nil)
                let body = try await response.body.collect(upTo: maxResponseBytes)
                record.status = status
                record.latency = .now - started
                ai.usage.record(record)
                return upstreamRefusal(status: status, body: body, kind: provider.kind)
            }
            if streamed {
                return stream(response, translator: dialect.streamTranslator(model: name, includeUsage: clientWantsUsage),
                              model: model, deployment: deployment, record: record, started: started, ai: ai)
            }
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: maxResponseBytes)
            } catch {
                lastFailure = "\(provider.name) broke off its answer"
                ai.finished(deployment, failure: lastFailure)
                continue
            }
            ai.finished(deployment, failure: nil)
            let (answer, tokensIn, tokensOut) = dialect.answer(endpoint, body: body, model: name)
            record.status = status
            record.tokensIn = tokensIn
            record.tokensOut = tokensOut
            record.cost = Self.cost(model, tokensIn: tokensIn, tokensOut: tokensOut)
            record.latency = .now - started
            record.timeToFirstToken = record.latency
            ai.usage.record(record)
            if let cacheKey, let ttl = model.cache?.ttlSeconds { ai.cache.store(answer, for: cacheKey, ttl: .seconds(ttl)) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer.bytes))
        }
        record.status = 502
        record.latency = .now - started
        ai.usage.record(record)
        throw Problem(status: .badGateway, slug: "upstream-failed", title: "Upstream failed",
                      detail: "Every deployment of \(name) failed (\(attempts) attempts; last: \(lastFailure)).")
    }

    /// An upstream's 4xx: OpenAI's own error passes as it is; another provider's becomes OpenAI's shape.
    static func upstreamRefusal(status: Int, body: ByteBuffer, kind: AIProvider.Kind) -> Response {
        var buffer = body
        if kind != .openai {
            let reply = try? JSONValue.parse(body)
            let message = reply?["error"]?["message"]?.string ?? reply?["error"]?.string ?? String(buffer: body)
            let error: JSONValue = .object(["error": .object([
                "message": .string("The upstream refused the request: \(message)"), "type": .string("invalid_request_error"),
                "param": .null, "code": .string("upstream_refused"),
            ])])
            buffer = error.bytes
        }
        return Response(status: .init(code: status), headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
    }

    /// Passes the upstream's stream on as OpenAI's server-sent events as they come, counting its tokens.
    static func stream(_ upstream: HTTPClientResponse, translator: any StreamTranslator, model: AIModel, deployment: AIModel.Deployment,
                       record: UsageRecord, started: ContinuousClock.Instant, ai: AIGateway) -> Response {
        let body = ResponseBody { writer in
            var record = record
            var translator = translator
            var failed = false
            do {
                for try await chunk in upstream.body {
                    let events = translator.feed(chunk)
                    guard events.readableBytes > 0 else { continue }
                    if record.timeToFirstToken == nil { record.timeToFirstToken = .now - started }
                    try await writer.write(events)
                }
                let tail = translator.finish()
                if tail.readableBytes > 0 { try await writer.write(tail) }
                try await writer.finish(nil)
            } catch {
                failed = true
            }
            ai.finished(deployment, failure: failed ? "the stream broke off" : nil)
            record.status = failed ? 499 : 200
            record.tokensIn = translator.tokensIn
            record.tokensOut = translator.tokensOut
            record.cost = cost(model, tokensIn: translator.tokensIn, tokensOut: translator.tokensOut)
            record.latency = .now - started
            ai.usage.record(record)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    static func cost(_ model: AIModel, tokensIn: Int, tokensOut: Int) -> Double {
        guard let price = model.price else { return 0 }
        return (Double(tokensIn) * price.inputPerMillion + Double(tokensOut) * price.outputPerMillion) / 1_000_000
    }
}
