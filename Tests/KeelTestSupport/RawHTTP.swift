import Foundation

/// A bare TCP connection for requests no HTTP client will send: a body that arrives in pieces,
/// with pauses, to hold a request in flight.
public final class RawConnection: @unchecked Sendable {
    private let fd: Int32

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            close(fd)
            throw TestSetupError("cannot connect to 127.0.0.1:\(port)")
        }
    }

    public func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw TestSetupError("send failed") }
            offset += sent
        }
    }

    /// Whether the peer closes the connection (nothing more to read) within `timeout`.
    public func isClosed(within timeout: Duration) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout / .milliseconds(1))) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0
    }

    /// Reads one response up to the end of its head, leaving the connection open.
    public func readResponseHead(timeout: Duration = .seconds(5)) -> String {
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var byte: UInt8 = 0
        while data.suffix(4) != [13, 10, 13, 10], recv(fd, &byte, 1, 0) == 1 { data.append(byte) }
        let head = String(decoding: data, as: UTF8.self)
        // Skip the body, so the next read starts at the next response.
        if let length = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") })
            .flatMap({ Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }) {
            var body = [UInt8](repeating: 0, count: length)
            var read = 0
            while read < length {
                let count = body[read...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                read += count
            }
        }
        return head
    }

    /// Reads until the peer closes or `timeout` passes; returns what arrived.
    public func readAll(timeout: Duration = .seconds(10)) -> String {
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            data += buffer[0..<count]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// A GET with exactly `headers` (an instrumented client in the test process would add its own
    /// `traceparent`); returns the whole response once the server closes the connection.
    public static func get(port: Int, path: String, headers: [String: String]) throws -> String {
        try exchange(port: port, method: "GET", path: path, headers: headers, body: nil)
    }

    /// Any request; returns the status code and the body.
    public static func request(port: Int, method: String, path: String, headers: [String: String] = [:],
                               body: String? = nil) throws -> (status: Int, body: String) {
        let response = try exchange(port: port, method: method, path: path, headers: headers, body: body)
        let status = response.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        let content = response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) } ?? ""
        return (status, content)
    }

    private static func exchange(port: Int, method: String, path: String, headers: [String: String], body: String?) throws -> String {
        let connection = try RawConnection(port: port)
        var headers = headers
        if let body { headers["Content-Length"] = String(body.utf8.count) }
        let lines = headers.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)\r\n" }.joined()
        try connection.send("\(method) \(path) HTTP/1.1\r\nHost: x\r\n\(lines)Connection: close\r\n\r\n" + (body ?? ""))
        return connection.readAll()
    }

    deinit { close(fd) }
}
