import Foundation
import KeelCore
import KeelServer
import KeelStore
import Logging

/// Who did something and from where, for the audit log.
public struct AuditActor: Sendable {
    public var kind: String
    public var id: String
    public var name: String
    public var clientIP: String
    public var requestID: String

    public init(kind: String, id: String, name: String, clientIP: String, requestID: String) {
        self.kind = kind
        self.id = id
        self.name = name
        self.clientIP = clientIP
        self.requestID = requestID
    }

    /// The caller of an HTTP request; anonymous on public routes.
    public init(_ context: KeelRequestContext) {
        let principal = context.principal
        self.init(kind: principal?.kind.rawValue ?? "anonymous", id: principal?.subject ?? "", name: principal?.name ?? "",
                  clientIP: context.clientIP, requestID: context.requestID)
    }

    /// The operator at a terminal running `keel users ...` and friends.
    public static func commandLine() -> AuditActor {
        AuditActor(kind: "cli", id: "", name: ProcessInfo.processInfo.environment["USER"] ?? "cli", clientIP: "local", requestID: "")
    }
}

/// One audit record as the API returns it.
public struct AuditRecord: Codable, Sendable, Equatable {
    public var id: String
    public var at: Date
    public var action: String
    public var outcome: String
    public var actorKind: String
    public var actorID: String
    public var actorName: String
    public var target: String
    public var clientIP: String
    public var requestID: String
    public var detail: [String: String]

    enum CodingKeys: String, CodingKey {
        case id, at, action, outcome, target, detail
        case actorKind = "actor_kind"
        case actorID = "actor_id"
        case actorName = "actor_name"
        case clientIP = "client_ip"
        case requestID = "request_id"
    }
}

/// The append-only audit log (the schema refuses updates and deletes). Writes never carry secrets:
/// callers pass ids, names and reasons, never tokens or passwords.
public struct AuditLog: Sendable {
    let store: any Store
    let clock: any KeelClock
    let logger = Logger(label: "keel.audit")

    public struct Filter: Sendable {
        public var action: String?
        public var outcome: String?
        public var actor: String?
        public var target: String?
        public var since: Date?
        public var until: Date?
        public init() {}
    }

    public func record(_ action: String, outcome: String = "success", actor: AuditActor, target: String = "",
                       detail: [String: String] = [:]) async throws {
        let now = clock.now()
        let id = KeelID.make(prefix: "aud", now: now)
        let detailJSON = String(decoding: try JSONEncoder.keel().encode(detail), as: UTF8.self)
        try await store.execute("""
            INSERT INTO keel_audit_log (id, at, action, outcome, actor_kind, actor_id, actor_name, target, client_ip, request_id, detail)
            VALUES (\(id), \(now), \(action), \(outcome), \(actor.kind), \(actor.id), \(actor.name), \(target), \(actor.clientIP), \(actor.requestID), \(detailJSON))
            """)
        logger.info("audit", metadata: [
            "action": .string(action), "outcome": .string(outcome), "actor_id": .string(actor.id),
            "target": .string(target), "client_ip": .string(actor.clientIP), "request_id": .string(actor.requestID),
        ])
    }

    /// Newest first; `after` is the last id of the previous page.
    public func list(_ filter: Filter, limit: Int, after: String?) async throws -> Page<AuditRecord> {
        var query: SQLQuery = "SELECT * FROM keel_audit_log WHERE 1 = 1"
        if let action = filter.action {
            // `login` matches `auth.login` and `auth.login.*`-style families too.
            query.append(" AND (action = \(action) OR action LIKE \(action.likeEscaped + ".%") ESCAPE '\\')")
        }
        if let outcome = filter.outcome { query.append(" AND outcome = \(outcome)") }
        if let actor = filter.actor { query.append(" AND (actor_id = \(actor) OR actor_name = \(actor))") }
        if let target = filter.target { query.append(" AND target = \(target)") }
        if let since = filter.since { query.append(" AND at >= \(since)") }
        if let until = filter.until { query.append(" AND at < \(until)") }
        if let after { query.append(" AND id < \(after)") }
        query.append(" ORDER BY id DESC LIMIT \(limit + 1)")
        let rows = try await store.query(query)
        var items = try rows.prefix(limit).map { row in
            AuditRecord(id: try row.string("id"), at: try row.date("at"), action: try row.string("action"),
                        outcome: try row.string("outcome"), actorKind: try row.string("actor_kind"),
                        actorID: try row.string("actor_id"), actorName: try row.string("actor_name"),
                        target: try row.string("target"), clientIP: try row.string("client_ip"),
                        requestID: try row.string("request_id"),
                        detail: (try? JSONDecoder.keel().decode([String: String].self, from: Data(try row.string("detail").utf8))) ?? [:])
        }
        let next = rows.count > limit ? items.last?.id : nil
        if items.count > limit { items.removeLast() }
        return Page(items: items, nextAfter: next)
    }
}

