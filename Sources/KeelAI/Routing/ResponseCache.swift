import Foundation
import KeelServer
import Metrics
import NIOCore
import Synchronization

/// Answers of models that turn caching on, kept for their TTL and served for the same request again without
/// calling an upstream. Keyed by the model and the request normalised (keys sorted, `stream` and `user` left
/// out); only whole (non-streamed) answers. Per process, bounded by total size; the oldest entries go first.
final class ResponseCache: Sendable {
    struct Entry: Sendable {
        let answer: JSONValue
        let expires: ContinuousClock.Instant
        let size: Int
    }

    static let maximumBytes = 64 << 20
    private let state = Mutex<(entries: [String: Entry], order: [String], bytes: Int)>(([:], [], 0))
    private let hits = Counter(label: "keel_ai_cache_hits_total")
    private let misses = Counter(label: "keel_ai_cache_misses_total")

    static func key(model: String, fields: [String: JSONValue]) -> String {
        var normalised = fields
        normalised["stream"] = nil
        normalised["stream_options"] = nil
        normalised["user"] = nil
        var buffer = ByteBuffer(string: model + "\n")
        JSONValue.object(normalised).writeCanonical(to: &buffer)
        return String(buffer: buffer)
    }

    func lookup(_ key: String, now: ContinuousClock.Instant = .now) -> JSONValue? {
        let answer: JSONValue? = state.withLock { state in
            guard let entry = state.entries[key], entry.expires > now else { return nil }
            return entry.answer
        }
        (answer == nil ? misses : hits).increment()
        return answer
    }

    func store(_ answer: JSONValue, for key: String, ttl: Duration, now: ContinuousClock.Instant = .now) {
        let size = key.utf8.count + answer.bytes.readableBytes
        guard size < Self.maximumBytes / 16 else { return }
        state.withLock { state in
            if let old = state.entries[key] { state.bytes -= old.size } else { state.order.append(key) }
            state.entries[key] = Entry(answer: answer, expires: now + ttl, size: size)
            state.bytes += size
            while state.bytes > Self.maximumBytes, !state.order.isEmpty {
                let oldest = state.order.removeFirst()
                if let removed = state.entries.removeValue(forKey: oldest) { state.bytes -= removed.size }
            }
        }
    }
}

extension JSONValue {
    /// JSON with object keys in sorted order, so equal values always give equal bytes.
    func writeCanonical(to buffer: inout ByteBuffer) {
        switch self {
        case .array(let items):
            buffer.writeInteger(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                item.writeCanonical(to: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let members):
            buffer.writeInteger(UInt8(ascii: "{"))
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                JSONValue.string(key).write(to: &buffer)
                buffer.writeInteger(UInt8(ascii: ":"))
                members[key]!.writeCanonical(to: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        default:
            write(to: &buffer)
        }
    }
}
