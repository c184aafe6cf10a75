import Foundation
import Hummingbird
import KeelCore
import KeelServer
import KeelStore
import Logging
import ServiceLifecycle

/// The AI gateway as a Keel module: its schema, `/api/v1/ai/providers|models` for operators and the
/// OpenAI-compatible `/v1/...` for callers, on the api role.
public struct AIModule: KeelModule {
    let ai: AIGateway

    public init(config: KeelConfig, store: any Store, clock: any KeelClock = SystemClock()) {
        let catalog = CatalogStore(store: store, clock: clock, box: SecretBox(secretKey: config.secretKey, purpose: "keel ai provider credentials v1"))
        ai = AIGateway(catalog: catalog, usage: UsageLog(store: store), tracing: config.otlpEndpoint != nil)
    }

    public static let migrations = AIMigrations.all

    public var migrations: [Migration] { Self.migrations }

    public func register(on routes: inout RouteRegistrar, context: ModuleContext) {
        guard context.config.roles.contains(.api) else { return }
        AIAdminRoutes(ai: ai, limits: context.limits).register(on: &routes)
        OpenAIEndpoints(ai: ai).register(on: &routes)
    }

    public func prepare(context: ModuleContext) async throws {
        if context.config.roles.contains(.api) { try await ai.reload(force: true) }
    }

    public func services(context: ModuleContext) -> [any Service] {
        context.config.roles.contains(.api)
            ? [CatalogRefresher(ai: ai, readiness: context.readiness), UsageWriter(usage: ai.usage, readiness: context.readiness),
               ProviderProber(ai: ai, readiness: context.readiness)] : []
    }

    /// Providers with their probed health, models with this process's view of each deployment, and usage from
    /// `since` to `until` (UTC days, `2026-11-26`) by day, model and key, as the admin API shows them.
    public func snapshot(usageSince since: String, until: String) async throws -> JSONValue {
        let providers = try await ai.catalog.providerViews().map { view in
            var view = view
            view.health = ai.probes.health(of: view.name).map(ProviderView.HealthView.init)
            return view
        }
        let models = try await ai.catalog.models().map { stored in
            var stored = stored
            stored.status = ai.status(of: stored.model)
            return stored
        }
        let usage = try await ai.usage.summary(since: since, until: until, groupBy: ["day", "model", "key"]).map(JSONValue.object)
        return .object(["providers": try JSONValue.encoding(providers), "models": try JSONValue.encoding(models), "usage": .array(usage)])
    }

    public func middlewares(context: ModuleContext) -> [any MiddlewareProtocol<Request, Response, KeelRequestContext>] {
        context.config.roles.contains(.api) ? [OpenAIErrorMiddleware()] : []
    }
}

/// Picks up provider and model changes made through any replica, about once a second.
struct CatalogRefresher: Service {
    let ai: AIGateway
    let readiness: Readiness
    let logger = Logger(label: "keel.ai")

    func run() async throws {
        guard await readiness.waitUntilMigrated() else { return }
        await cancelWhenGracefulShutdown {
            var lastPrune = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                do {
                    try await ai.reload(force: false)
                    if ContinuousClock.now - lastPrune > .seconds(600) {
                        lastPrune = .now
                        try await ai.minutes.prune()
                        try await ai.usage.prune(olderThanDays: UsageLog.retentionDays, now: Date())
                    }
                } catch {
                    logger.warning("cannot reload AI providers and models; keeping the current ones", metadata: ["error": "\(error)"])
                }
            }
        }
        await ai.shutdown()
    }
}

/// Writes recorded usage in batches, five times a second, and what is left at shutdown.
struct UsageWriter: Service {
    let usage: UsageLog
    let readiness: Readiness
    let logger = Logger(label: "keel.ai.usage")

    func run() async throws {
        guard await readiness.waitUntilMigrated() else { return }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                do {
                    try await usage.flush()
                } catch {
                    logger.warning("cannot write AI usage; keeping it for the next try", metadata: ["error": "\(error)"])
                }
            }
        }
        do {
            try await usage.flush()
        } catch {
            logger.error("AI usage not written at shutdown", metadata: ["error": "\(error)"])
        }
    }
}

/// `/api/v1/ai/providers` and `/api/v1/ai/models`: read with `ai:read`, change with `ai:admin`.
struct AIAdminRoutes {
    let ai: AIGateway
    let limits: RequestLimits

    func register(on routes: inout RouteRegistrar) {
        let (ai, limits) = (self.ai, self.limits)
        let catalog = ai.catalog
        routes.add(.get, "/api/v1/ai/providers", access: .permission("ai:read")) { _, _ in
            let views = try await catalog.providerViews().map { view in
                var view = view
                view.health = ai.probes.health(of: view.name).map(ProviderView.HealthView.init)
                return view
            }
            return try .json(["items": views])
        }
        routes.add(.post, "/api/v1/ai/providers", access: .permission("ai:admin")) { request, _ in
            let provider = try Self.validated(try await request.decodeJSON(AIProvider.self, limits: limits))
            let view = try await catalog.saveProvider(provider, createOnly: true)
            try await ai.reload(force: true)
            ai.probeSoon(provider.name)
            return try .json(view, status: .created)
        }
        routes.add(.put, "/api/v1/ai/providers/{name}", access: .permission("ai:admin")) { request, context in
            let name = try context.parameters.require("name")
            var provider = try await request.decodeJSON(AIProvider.self, limits: limits)
            guard provider.name == name else {
                throw Problem.validation("The provider's name must match the path.", errors: [FieldError(field: "name", message: "must be \(name)")])
            }
            provider = try Self.validated(provider)
            let view = try await catalog.saveProvider(provider, createOnly: false)
            try await ai.reload(force: true)
            ai.probeSoon(provider.name)
            return try .json(view)
        }
        routes.add(.delete, "/api/v1/ai/providers/{name}", access: .permission("ai:admin")) { _, context in
            try await catalog.deleteProvider(named: try context.parameters.require("name"))
            try await ai.reload(force: true)
            return Response(status: .noContent)
        }
        routes.add(.get, "/api/v1/ai/models", access: .permission("ai:read")) { _, _ in
            try .json(["items": try await catalog.models()])
        }
        routes.add(.post, "/api/v1/ai/models", access: .permission("ai:admin")) { request, _ in
            let model = try await Self.validated(try await request.decodeJSON(AIModel.self, limits: limits), catalog: catalog)
            let stored = try await catalog.saveModel(model, createOnly: true)
            try await ai.reload(force: true)
            return try .json(stored, status: .created)
        }
        routes.add(.get, "/api/v1/ai/models/{name}", access: .permission("ai:read")) { _, context in
            let name = try context.parameters.require("name")
            guard var stored = try await catalog.model(named: name) else { throw Problem.notFound("No AI model is named \(name).") }
            stored.status = ai.status(of: stored.model)
            return try .json(stored)
        }
        routes.add(.put, "/api/v1/ai/models/{name}", access: .permission("ai:admin")) { request, context in
            let name = try context.parameters.require("name")
            var model = try await request.decodeJSON(AIModel.self, limits: limits)
            if model.name.isEmpty { model.name = name }
            guard model.name == name else {
                throw Problem.validation("The model's name must match the path.", errors: [FieldError(field: "name", message: "must be \(name) or left out")])
            }
            let stored = try await catalog.saveModel(try await Self.validated(model, catalog: catalog), createOnly: false)
            try await ai.reload(force: true)
            return try .json(stored)
        }
        routes.add(.delete, "/api/v1/ai/models/{name}", access: .permission("ai:admin")) { _, context in
            try await catalog.deleteModel(named: try context.parameters.require("name"))
            try await ai.reload(force: true)
            return Response(status: .noContent)
        }
        routes.add(.get, "/api/v1/ai/usage", access: .permission("ai:read")) { request, _ in
            let parameters = request.uri.queryParameters
            var errors: [FieldError] = []
            let today = String(SpendLedger.periods(at: Date()).day.dropFirst(2))
            func day(_ name: String, default value: String) -> String {
                guard let text = parameters.get(name) else { return value }
                if text.count == 10, text.split(separator: "-").map(\.count) == [4, 2, 2], text.allSatisfy({ $0.isNumber || $0 == "-" }) { return text }
                errors.append(FieldError(field: name, message: "must be a UTC day like 2026-11-26"))
                return value
            }
            let since = day("since", default: String(SpendLedger.periods(at: Date().addingTimeInterval(-29 * 86_400)).day.dropFirst(2)))
            let until = day("until", default: today)
            let groupBy = Set((parameters.get("group_by") ?? "day,model").split(separator: ",").map(String.init))
            if groupBy.isEmpty || !groupBy.isSubset(of: ["day", "model", "key"]) {
                errors.append(FieldError(field: "group_by", message: "must list day, model and/or key, comma-separated"))
            }
            guard errors.isEmpty else { throw Problem.invalidParameters(errors) }
            return try .json(JSONValue.object(["since": .string(since), "until": .string(until),
                                               "items": .array(try await ai.usage.summary(since: since, until: until, groupBy: groupBy).map(JSONValue.object))]))
        }
        routes.add(.get, "/api/v1/ai/keys/{id}", access: .permission("ai:read")) { _, context in
            let id = try context.parameters.require("id")
            return try .json(KeyView(credentialID: id, policy: try await catalog.policies()[id], spend: try await ai.ledger.current(for: id)))
        }
        routes.add(.put, "/api/v1/ai/keys/{id}", access: .permission("ai:admin")) { request, context in
            let id = try context.parameters.require("id")
            guard id.hasPrefix("key_"), id.utf8.count <= 64 else {
                throw Problem.invalidParameters([FieldError(field: "id", message: "must be an API key id (key_...)")])
            }
            let body = try await request.decodeJSON(KeyPolicy.self, limits: limits)
            let policy: KeyPolicy
            do throws(ValidationFailure) {
                policy = try body.validated()
            } catch {
                throw Problem.validation("The key policy is not valid.", errors: error.errors)
            }
            try await catalog.savePolicy(policy, for: id)
            try await ai.reload(force: true)
            return try .json(KeyView(credentialID: id, policy: policy, spend: try await ai.ledger.current(for: id)))
        }
    }

    /// A key's policy and what it has spent.
    struct KeyView: Encodable {
        let credentialID: String
        let policy: KeyPolicy?
        let spend: [String: [String: Double]]

        enum CodingKeys: String, CodingKey {
            case policy, spend
            case credentialID = "credential_id"
        }
    }

    static func validated(_ provider: AIProvider) throws -> AIProvider {
        do throws(ValidationFailure) {
            return try provider.validated()
        } catch {
            throw Problem.validation("The provider is not valid.", errors: error.errors)
        }
    }

    static func validated(_ model: AIModel, catalog: CatalogStore) async throws -> AIModel {
        let providers = try await catalog.providerNames()
        do throws(ValidationFailure) {
            return try model.validated(providers: providers)
        } catch {
            throw Problem.validation("The model is not valid.", errors: error.errors)
        }
    }
}
