import Foundation
import KeelCore
import KeelServer
import KeelStore
import Synchronization

/// What one API key may do with the AI gateway: which models, how many requests and tokens per minute,
/// and how much it may spend per UTC day and month (in the models' price units). Keys without a policy
/// may use every model without limits.
public struct KeyPolicy: Codable, Sendable, Equatable {
    public var allowedModels: [String]?
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var dailyBudget: Double?
    public var monthlyBudget: Double?

    public init(allowedModels: [String]? = nil, requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil,
                dailyBudget: Double? = nil, monthlyBudget: Double? = nil) {
        self.allowedModels = allowedModels
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.dailyBudget = dailyBudget
        self.monthlyBudget = monthlyBudget
    }

    enum CodingKeys: String, CodingKey {
        case allowedModels = "allowed_models"
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case dailyBudget = "daily_budget"
        case monthlyBudget = "monthly_budget"
    }

    var limitsPerMinute: Bool { requestsPerMinute != nil || tokensPerMinute != nil }

    func allows(_ model: String) -> Bool { allowedModels?.contains(model) ?? true }

    func validated() throws(ValidationFailure) -> KeyPolicy {
        var errors: [FieldError] = []
        for (index, model) in (allowedModels ?? []).enumerated() where !AIModel.isValidName(model) {
            errors.append(FieldError(field: "allowed_models[\(index)]", message: AIModel.nameRule))
        }
        if (allowedModels?.count ?? 0) > 500 { errors.append(FieldError(field: "allowed_models", message: "must list at most 500 models")) }
        for (field, limit) in [("requests_per_minute", requestsPerMinute), ("tokens_per_minute", tokensPerMinute)] {
            if let limit, !(1...100_000_000).contains(limit) { errors.append(FieldError(field: field, message: "must be from 1 to 100000000")) }
        }
        for (field, budget) in [("daily_budget", dailyBudget), ("monthly_budget", monthlyBudget)] {
            if let budget, !(0...1_000_000_000).contains(budget) { errors.append(FieldError(field: field, message: "must be from 0 to 1000000000")) }
        }
        guard errors.isEmpty else { throw ValidationFailure(errors: errors) }
        return self
    }
}

/// Budgets that hold under concurrency: before an upstream is called, the request's worst-case cost
/// is reserved against the key's day and month under a row lock, and refused when spent + reserved +
/// this reservation would pass a budget; once the answer is in, the reservation becomes the actual cost.
/// Spend can pass a budget only by what requests already in flight were reserved for, never more.
struct SpendLedger: Sendable {
    let store: any Store
    let clock: any KeelClock

    struct Reservation: Sendable {
        let credentialID: String
        let periods: [String]
        let amount: Double
    }

    enum Verdict: Sendable {
        case reserved(Reservation)
        case refused(period: String, budget: Double, spent: Double)
    }

    /// Seconds until `period` (`d:…` or `m:…`) is over and its budget starts afresh.
    static func secondsUntilNext(period: String, now: Date) -> Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let start = calendar.dateInterval(of: period.hasPrefix("d:") ? .day : .month, for: now)
        return max(1, Int((start?.end.timeIntervalSince(now) ?? 60).rounded(.up)))
    }

    /// `d:2026-11-26` and `m:2026-11`, in UTC (the civil date from days since 1970, without a Calendar:
    /// this runs for every AI request).
    static func periods(at date: Date) -> (day: String, month: String) {
        let days = Int((date.timeIntervalSince1970 / 86_400).rounded(.down))
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int) -> String { value < 10 ? "0" + String(value) : String(value) }
        let monthText = String(year) + "-" + two(month)
        return ("d:" + monthText + "-" + two(day), "m:" + monthText)
    }

    func reserve(_ amount: Double, for credentialID: String, policy: KeyPolicy) async throws -> Verdict {
        let (day, month) = Self.periods(at: clock.now())
        let limits = [(day, policy.dailyBudget), (month, policy.monthlyBudget)].compactMap { period, budget in budget.map { (period, $0) } }
        let dialect = store.dialect
        return try await store.transaction { tx in
            for (period, budget) in limits {
                try await tx.execute("""
                    INSERT INTO keel_ai_spend (credential_id, period, spent, reserved) VALUES (\(credentialID), \(period), \(0.0), \(0.0))
                    ON CONFLICT (credential_id, period) DO NOTHING
                    """)
                let select: SQLQuery = dialect == .postgres
                    ? "SELECT spent, reserved FROM keel_ai_spend WHERE credential_id = \(credentialID) AND period = \(period) FOR UPDATE"
                    : "SELECT spent, reserved FROM keel_ai_spend WHERE credential_id = \(credentialID) AND period = \(period)"
                guard let row = try await tx.query(select).first else { continue }
                let spent = try row.double("spent"), reserved = try row.double("reserved")
                // A nano-unit of slack, so that float rounding of prices never refuses the request that fills a budget exactly.
                if spent + reserved + amount > budget + 1e-9 { return .refused(period: period, budget: budget, spent: spent) }
            }
            for (period, _) in limits {
                try await tx.execute("""
                    UPDATE keel_ai_spend SET reserved = reserved + \(amount) WHERE credential_id = \(credentialID) AND period = \(period)
                    """)
            }
            return .reserved(Reservation(credentialID: credentialID, periods: limits.map(\.0), amount: amount))
        }
    }

    /// The reservation gives way to what the request cost (nothing, when it failed).
    func settle(_ reservation: Reservation, cost: Double) async throws {
        guard reservation.amount > 0 || cost > 0 else { return }
        guard !reservation.periods.isEmpty else { return }
        try await store.transaction { tx in
            for period in reservation.periods {
                try await tx.execute("""
                    UPDATE keel_ai_spend SET reserved = reserved - \(reservation.amount), spent = spent + \(cost)
                    WHERE credential_id = \(reservation.credentialID) AND period = \(period)
                    """)
            }
        }
    }

    /// Spent and reserved today and this month.
    func current(for credentialID: String) async throws -> [String: [String: Double]] {
        let (day, month) = Self.periods(at: clock.now())
        var result: [String: [String: Double]] = [:]
        for (name, period) in [("today", day), ("this_month", month)] {
            let row = try await store.query("SELECT spent, reserved FROM keel_ai_spend WHERE credential_id = \(credentialID) AND period = \(period)").first
            result[name] = ["spent": try row?.double("spent") ?? 0, "reserved": try row?.double("reserved") ?? 0]
        }
        return result
    }
}

/// Requests and tokens per minute for each key, counted in the store so that every replica shares them:
/// a request is admitted while the key's current minute has requests and tokens left, and its tokens are
/// added once its answer says how many it used (a request may so pass the token limit once; the next
/// waits for the next minute).
struct MinuteLimits: Sendable {
    let store: any Store
    let clock: any KeelClock

    enum Verdict: Sendable {
        case admitted(minute: Int64)
        case refused(String, retryAfterSeconds: Int)
    }

    func admit(_ credentialID: String, policy: KeyPolicy) async throws -> Verdict {
        let now = clock.now().timeIntervalSince1970
        let minute = Int64(now / 60)
        let retryAfter = max(1, Int((Double(minute + 1) * 60 - now).rounded(.up)))
        let dialect = store.dialect
        return try await store.transaction { tx in
            try await tx.execute("""
                INSERT INTO keel_ai_minutes (credential_id, minute, requests, tokens) VALUES (\(credentialID), \(minute), \(0), \(0))
                ON CONFLICT (credential_id, minute) DO NOTHING
                """)
            let select: SQLQuery = dialect == .postgres
                ? "SELECT requests, tokens FROM keel_ai_minutes WHERE credential_id = \(credentialID) AND minute = \(minute) FOR UPDATE"
                : "SELECT requests, tokens FROM keel_ai_minutes WHERE credential_id = \(credentialID) AND minute = \(minute)"
            guard let row = try await tx.query(select).first else { return .admitted(minute: minute) }
            if let limit = policy.requestsPerMinute, try row.int("requests") >= limit {
                return .refused("\(limit) requests per minute", retryAfterSeconds: retryAfter)
            }
            if let limit = policy.tokensPerMinute, try row.int("tokens") >= limit {
                return .refused("\(limit) tokens per minute", retryAfterSeconds: retryAfter)
            }
            try await tx.execute("UPDATE keel_ai_minutes SET requests = requests + 1 WHERE credential_id = \(credentialID) AND minute = \(minute)")
            return .admitted(minute: minute)
        }
    }

    func addTokens(_ tokens: Int, for credentialID: String, minute: Int64) async throws {
        guard tokens > 0 else { return }
        try await store.execute("UPDATE keel_ai_minutes SET tokens = tokens + \(tokens) WHERE credential_id = \(credentialID) AND minute = \(minute)")
    }

    func prune() async throws {
        try await store.execute("DELETE FROM keel_ai_minutes WHERE minute < \(Int64(clock.now().timeIntervalSince1970 / 60) - 60)")
    }
}

/// Settles one reservation exactly once, whichever way the request ends.
final class Settlement: Sendable {
    let ledger: SpendLedger
    let reservation: SpendLedger.Reservation
    private let done = Mutex(false)

    init(ledger: SpendLedger, reservation: SpendLedger.Reservation) {
        self.ledger = ledger
        self.reservation = reservation
    }

    func settle(cost: Double) async {
        guard done.withLock({ done in defer { done = true }; return !done }) else { return }
        try? await ledger.settle(reservation, cost: cost)
    }
}

extension CatalogStore {
    func policies() async throws -> [String: KeyPolicy] {
        var policies: [String: KeyPolicy] = [:]
        for row in try await store.query("SELECT credential_id, policy FROM keel_ai_key_policies") {
            policies[try row.string("credential_id")] = try JSONDecoder().decode(KeyPolicy.self, from: Data(try row.string("policy").utf8))
        }
        return policies
    }

    func savePolicy(_ policy: KeyPolicy, for credentialID: String) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = String(decoding: try encoder.encode(policy), as: UTF8.self)
        let now = clock.now()
        try await store.transaction { tx in
            try await tx.execute("""
                INSERT INTO keel_ai_key_policies (credential_id, policy, updated_at) VALUES (\(credentialID), \(text), \(now))
                ON CONFLICT (credential_id) DO UPDATE SET policy = \(text), updated_at = \(now)
                """)
            try await tx.execute("UPDATE keel_ai_revision SET revision = revision + 1 WHERE id = 1")
        }
    }
}
