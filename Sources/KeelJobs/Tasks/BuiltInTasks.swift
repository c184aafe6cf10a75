import AsyncHTTPClient
import Crypto
import Foundation
import KeelCore
import KeelMail
import KeelServer
import KeelStore
import NIOCore
import NIOHTTP1

/// The tasks every Keel binary can run: HTTP calls (webhooks, payment providers, data sync), email, pruning
/// of finished jobs, backups of the store with retention, and a no-op for smoke tests and benchmarks.
public enum BuiltInTasks {
    /// - Parameters:
    ///   - mail: the mail server of `email.send`.
    ///   - store: the store `keel.backup` copies, and how to reach it.
    public static func register(in registry: inout JobRegistry, mail: MailSettings = MailSettings(),
                                store: (location: DatabaseLocation, tls: DatabaseTLS)? = nil) {
        registry.register("keel.noop") { (_: JSONValue, _: JobContext) in JSONValue.null }
        registry.register("http.request", backoffSeconds: 5) { (args: HTTPRequestArgs, _: JobContext) in try await performHTTPRequest(args) }
        let mailer = SMTPClient(settings: mail)
        registry.register("email.send", backoffSeconds: 30) { (args: EmailArgs, _: JobContext) in try await sendEmail(args, with: mailer) }
        registry.register("keel.prune") { (args: PruneArgs, context: JobContext) in try await context.queue.prune(args) }
        if let store {
            registry.register("keel.backup", backoffSeconds: 300) { (args: BackupArgs, _: JobContext) in
                let made = try await StoreBackup.backupIntoDirectory(store.location, tls: store.tls, directory: args.directory, keep: args.keep ?? 7)
                return BackupResult(path: made.path, bytes: made.summary.bytes, removed: made.removed)
            }
        }
    }

    // MARK: - keel.backup

    /// A verified backup into `directory`, keeping the newest `keep` (default 7): schedule it daily for a week of backups.
    public struct BackupArgs: Codable, Sendable {
        public var directory: String
        public var keep: Int?
    }

    public struct BackupResult: Codable, Sendable {
        public var path: String
        public var bytes: Int
        public var removed: [String]
    }

    // MARK: - email.send

    public struct EmailArgs: Codable, Sendable {
        /// One address or a list.
        public var to: Recipients
        public var cc: Recipients?
        public var bcc: Recipients?
        /// Default: `smtp_from`.
        public var from: String?
        public var replyTo: String?
        public var subject: String
        public var text: String?
        public var html: String?
        public var headers: [String: String]?

        enum CodingKeys: String, CodingKey {
            case to, cc, bcc, from, subject, text, html, headers
            case replyTo = "reply_to"
        }
    }

    /// `"a@x"` or `["a@x", "b@y"]`.
    public struct Recipients: Codable, Sendable {
        public var addresses: [String]

        public init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let list = try? container.decode([String].self) { addresses = list } else { addresses = [try container.decode(String.self)] }
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(addresses)
        }
    }

    /// Sends over SMTP. A refusal the server means (5xx) or a message that cannot be sent fails the job permanently;
    /// an unreachable or busy server (4xx) is a failed attempt, retried with backoff.
    static func sendEmail(_ args: EmailArgs, with mailer: SMTPClient) async throws -> MailDelivery {
        guard let from = args.from ?? mailer.settings.from else { throw PermanentJobFailure("from: none given and smtp_from is not set") }
        let message = MailMessage(from: from, to: args.to.addresses, cc: args.cc?.addresses ?? [], bcc: args.bcc?.addresses ?? [],
                                  replyTo: args.replyTo, subject: args.subject, text: args.text, html: args.html, headers: args.headers ?? [:])
        do {
            return try await mailer.send(message)
        } catch let error as SMTPError where error.isPermanent {
            throw PermanentJobFailure(error.description)
        }
    }

    // MARK: - http.request

    public struct HTTPRequestArgs: Codable, Sendable {
        public var method: String?
        public var url: String
        public var headers: [String: String]?
        public var body: String?
        public var timeoutSeconds: Int?
        /// Status codes that count as success; default any 2xx.
        public var expectedStatus: [Int]?
        /// Signs the body: `X-Keel-Signature: sha256=<hex HMAC-SHA256>` and `X-Keel-Timestamp`.
        public var hmacSecret: String?

        enum CodingKeys: String, CodingKey {
            case method, url, headers, body
            case timeoutSeconds = "timeout_seconds"
            case expectedStatus = "expected_status"
            case hmacSecret = "hmac_secret"
        }
    }

    public struct HTTPResponseResult: Codable, Sendable {
        public var status: Int
        public var body: String
        public var truncated: Bool
    }

    static let maxResponseBytes = 64 * 1024

    static func performHTTPRequest(_ args: HTTPRequestArgs) async throws -> HTTPResponseResult {
        guard let url = URL(string: args.url), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            throw PermanentJobFailure("url must be an http:// or https:// URL, got \(args.url)")
        }
        let method = HTTPMethod(rawValue: (args.method ?? "GET").uppercased())
        var request = HTTPClientRequest(url: args.url)
        request.method = method
        for (name, value) in args.headers ?? [:] { request.headers.add(name: name, value: value) }
        let body = Data((args.body ?? "").utf8)
        if args.body != nil { request.body = .bytes(ByteBuffer(bytes: body)) }
        if let secret = args.hmacSecret {
            let timestamp = String(Int(Date().timeIntervalSince1970))
            let mac = HMAC<SHA256>.authenticationCode(for: Data((timestamp + ".").utf8) + body, using: SymmetricKey(data: Data(secret.utf8)))
            request.headers.add(name: "X-Keel-Timestamp", value: timestamp)
            request.headers.add(name: "X-Keel-Signature", value: "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
        }
        let timeout = TimeAmount.seconds(Int64(args.timeoutSeconds ?? 30))
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        var collected = ByteBuffer()
        var truncated = false
        for try await var chunk in response.body {
            let room = maxResponseBytes - collected.readableBytes
            if chunk.readableBytes > room {
                truncated = true
                if room > 0, let slice = chunk.readSlice(length: room) { collected.writeImmutableBuffer(slice) }
                break
            }
            collected.writeBuffer(&chunk)
        }
        let status = Int(response.status.code)
        let result = HTTPResponseResult(status: status, body: String(decoding: collected.readableBytesView, as: UTF8.self), truncated: truncated)
        let expected = args.expectedStatus.map { $0.contains(status) } ?? (200...299).contains(status)
        guard expected else { throw HTTPStatusFailure(status: status, body: String(result.body.prefix(500))) }
        return result
    }

    struct HTTPStatusFailure: Error, CustomStringConvertible {
        let status: Int
        let body: String
        var description: String { "unexpected HTTP status \(status): \(body)" }
    }

    // MARK: - keel.prune

    public struct PruneArgs: Codable, Sendable {
        /// Succeeded jobs older than this are deleted (default 7 days).
        public var succeededAfterSeconds: Int?
        /// Dead, cancelled and expired jobs older than this are deleted (default 30 days).
        public var failedAfterSeconds: Int?
        /// At most this many finished jobs are kept per state (default 100,000).
        public var keepPerState: Int?

        enum CodingKeys: String, CodingKey {
            case succeededAfterSeconds = "succeeded_after_seconds"
            case failedAfterSeconds = "failed_after_seconds"
            case keepPerState = "keep_per_state"
        }
    }
}

extension JobQueue {
    /// Retention of finished jobs by age and by count per state, plus the bookkeeping that expires with
    /// them (spent unique keys, old fire records, long-gone workers). Returns what it deleted.
    func prune(_ args: BuiltInTasks.PruneArgs) async throws -> [String: Int] {
        let now = clock.now()
        var deleted: [String: Int] = [:]
        let succeededBefore = now.addingTimeInterval(-TimeInterval(args.succeededAfterSeconds ?? 7 * 86_400))
        let failedBefore = now.addingTimeInterval(-TimeInterval(args.failedAfterSeconds ?? 30 * 86_400))
        for state in [JobState.succeeded, .dead, .cancelled, .expired] {
            let before = state == .succeeded ? succeededBefore : failedBefore
            var count = try await store.execute(
                "DELETE FROM keel_jobs WHERE state = \(state.rawValue) AND finished_at < \(before) RETURNING id").count
            let keep = args.keepPerState ?? 100_000
            // Beyond the newest `keep` of the state (ids are time-ordered).
            var overflow: SQLQuery = "DELETE FROM keel_jobs WHERE state = \(state.rawValue) AND id IN (SELECT id FROM keel_jobs WHERE state = \(state.rawValue) ORDER BY id DESC"
            overflow.append(store.dialect == .postgres ? " OFFSET \(keep)) RETURNING id" : " LIMIT -1 OFFSET \(keep)) RETURNING id")
            count += try await store.execute(overflow).count
            deleted[state.rawValue] = count
        }
        deleted["unique_keys"] = try await store.execute("DELETE FROM keel_job_unique_keys WHERE until < \(now) RETURNING key").count
        deleted["schedule_fires"] = try await store.execute(
            "DELETE FROM keel_schedule_fires WHERE fire_at < \(now.addingTimeInterval(-7 * 86_400)) RETURNING schedule").count
        deleted["workers"] = try await store.execute(
            "DELETE FROM keel_workers WHERE heartbeat_at < \(now.addingTimeInterval(-86_400)) RETURNING id").count
        deleted["workflows"] = try await store.execute("""
            DELETE FROM keel_workflows WHERE (state = 'succeeded' AND finished_at < \(succeededBefore))
                OR (state IN ('failed', 'cancelled') AND finished_at < \(failedBefore)) RETURNING id
            """).count
        try await store.execute("DELETE FROM keel_workflow_edges WHERE NOT EXISTS (SELECT 1 FROM keel_jobs WHERE keel_jobs.id = keel_workflow_edges.child_id)")
        // Windows are at most a day long.
        try await store.execute("DELETE FROM keel_queue_starts WHERE started_at < \(now.addingTimeInterval(-86_400))")
        return deleted
    }

    /// The default retention schedule: `keel.prune` every hour, created once, then the operator's to change.
    func ensurePruneSchedule() async throws {
        guard tasks.knows("keel.prune"), (try? await schedule(named: "keel.prune")) == nil else { return }
        do {
            _ = try await saveSchedule(named: "keel.prune", ScheduleInput(cron: "@hourly", task: "keel.prune"))
        } catch let error as StoreError where error.isConstraintViolation {
            return  // another process created it at the same moment
        }
    }
}
