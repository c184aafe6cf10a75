import Foundation
@testable import KeelAI
import KeelCore
import KeelPlatform
import KeelServer
import KeelStore
import KeelTestSupport
import Testing

@Suite struct CatalogTests {
    @Test func modelsNameEveryMistake() throws {
        let model = AIModel(name: "bad name", deployments: [
            .init(provider: "nowhere", model: "m m", weight: 0, priority: 101, timeoutSeconds: 0),
        ], price: .init(inputPerMillion: -1, outputPerMillion: 1))
        do throws(ValidationFailure) {
            _ = try model.validated(providers: ["local"])
            Issue.record("accepted an invalid model")
        } catch {
            #expect(Set(error.errors.map(\.field)) == ["name", "deployments[0].provider", "deployments[0].model", "deployments[0].weight",
                                                       "deployments[0].priority", "deployments[0].timeout_seconds", "price"])
        }
        #expect(throws: ValidationFailure.self) { try AIProvider(name: "p", kind: .openai, baseURL: "ftp://x").validated() }
        #expect(try AIProvider(name: "p", kind: .openai, baseURL: "http://x:8000/v1/").validated().baseURL == "http://x:8000/v1")
    }

    @Test func periodsAreUTCDaysAndMonths() {
        for (seconds, day, month) in [(0.0, "d:1970-01-01", "m:1970-01"), (951_782_400, "d:2000-02-29", "m:2000-02"),
                                      (1_795_656_000, "d:2026-11-26", "m:2026-11"), (4_102_444_799, "d:2099-12-31", "m:2099-12")] {
            let periods = SpendLedger.periods(at: Date(timeIntervalSince1970: seconds))
            #expect(periods.day == day && periods.month == month, "\(seconds)")
        }
    }

    @Test func plansFollowPriorityAndPutCoolingDeploymentsLast() async throws {
        try await withScratchStore(.sqlite) { store in
            try await store.migrate(Platform.migrations)
            let ai = AIGateway(catalog: CatalogStore(store: store, clock: SystemClock(), box: SecretBox(secretKey: nil, purpose: "test")),
                               usage: UsageLog(store: store), tracing: false)
            let model = AIModel(name: "m", deployments: [
                .init(provider: "b", model: "second", priority: 1), .init(provider: "a", model: "first", priority: 0),
                .init(provider: "c", model: "third", priority: 2),
            ])
            #expect(ai.plan(for: model).map(\.model) == ["first", "second", "third"])
            let first = model.deployments[1]
            ai.started(first)
            ai.finished(first, failure: "answered 503")
            #expect(ai.plan(for: model).map(\.model) == ["second", "third", "first"])
            let status = ai.status(of: model).first { $0["model"] == .string("first") }
            #expect(status?["failures"] == .number(1) && status?["cooling_down"] == .bool(true))
            #expect(status?["last_failure"]?["reason"] == .string("answered 503"))
            #expect(ai.plan(for: model, now: .now + .seconds(11)).map(\.model) == ["first", "second", "third"])
        }
    }

    @Test func credentialsNeedTheSecretKeyAndAreStoredSealed() async throws {
        try await withScratchStore(.sqlite) { store in
            try await store.migrate(Platform.migrations)
            let unsealed = CatalogStore(store: store, clock: SystemClock(), box: SecretBox(secretKey: nil, purpose: "test"))
            await #expect(throws: Problem.self) {
                try await unsealed.saveProvider(AIProvider(name: "p", kind: .openai, baseURL: "http://x/v1", apiKey: "sk-secret"), createOnly: true)
            }
            let sealed = CatalogStore(store: store, clock: SystemClock(), box: SecretBox(secretKey: Secret("a-secret-key-of-enough-length-1234"), purpose: "test"))
            _ = try await sealed.saveProvider(AIProvider(name: "p", kind: .openai, baseURL: "http://x/v1", apiKey: "sk-secret"), createOnly: true)
            let stored = try await store.query("SELECT api_key FROM keel_ai_providers").first?.string("api_key")
            #expect(stored?.hasPrefix("aesgcm:") == true && stored?.contains("sk-secret") == false)
            #expect(try await sealed.providers().first?.apiKey == "sk-secret")
            // A replacement without a key keeps the stored one.
            _ = try await sealed.saveProvider(AIProvider(name: "p", kind: .openai, baseURL: "http://y/v1"), createOnly: false)
            #expect(try await sealed.providers().first?.apiKey == "sk-secret")
        }
    }
}
