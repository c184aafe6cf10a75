import Foundation
import HummingbirdWSClient
import KeelTestSupport
import Logging
import NIOCore
import Synchronization
import Testing

/// WebSockets through the gateway to a real WebSocket server (Python `websockets`).
@Suite struct GatewayWebSocketTests {
    @Test func messagesPassBothWaysAndProtectedRoutesRefuseAnonymousUpgrades() async throws {
        let echo = try PythonHelper("ws_echo_server.py", arguments: ["0"])
        defer { echo.stop() }
        let port = try await echo.listeningPort()
        let upstream: [[String: Any]] = [["url": "http://127.0.0.1:\(port)"]]
        let gateway = try await GatewayServer(routes: [
            "live": ["match": ["prefix": "/live"], "upstreams": upstream, "auth": "public", "strip_prefix": true],
            "private": ["match": ["prefix": "/private"], "upstreams": upstream, "auth": "authenticated", "strip_prefix": true],
        ], environment: ["KEEL_HTTP_IDLE_TIMEOUT_SECONDS": "1", "KEEL_HTTP_HEADER_TIMEOUT_SECONDS": "1"])

        let received = Mutex<[String]>([])
        var configuration = WebSocketClientConfiguration()
        configuration.additionalHeaders = [.init("X-Keel-Subject")!: "usr_spoofed"]
        try await WebSocketClient.connect(url: "ws://127.0.0.1:\(gateway.port)/live/socket?room=7", configuration: configuration,
                                          logger: Logger(label: "test")) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
            func next() async throws -> String {
                switch try await messages.next() {
                case .text(let text): text
                case .binary(let buffer): "binary:" + buffer.readableBytesView.map(String.init).joined(separator: ",")
                case nil: "closed"
                }
            }
            let hello = try await next()
            try await outbound.write(.text("ping"))
            let text = try await next()
            // Longer than HTTP's idle and head deadlines: an upgraded connection is no longer held to them.
            try await Task.sleep(for: .milliseconds(1500))
            try await outbound.write(.binary(ByteBuffer(bytes: [1, 2, 3])))
            let binary = try await next()
            try await outbound.close(.normalClosure, reason: nil)
            received.withLock { $0 = [hello, text, binary] }
        }
        let messages = received.withLock { $0 }
        #expect(messages.count == 3)
        guard messages.count == 3 else { return }
        let hello = try #require(try JSONSerialization.jsonObject(with: Data(messages[0].utf8)) as? [String: Any])
        #expect(hello["path"] as? String == "/socket?room=7")
        let headers = Dictionary((hello["headers"] as? [[String]] ?? []).map { ($0[0].lowercased(), $0[1]) }, uniquingKeysWith: { first, _ in first })
        #expect(headers["x-forwarded-for"] == "127.0.0.1")
        #expect(headers["x-keel-subject"] == nil)
        #expect(headers["x-request-id"] != nil)
        #expect(messages[1] == "ping")
        #expect(messages[2] == "binary:1,2,3")

        // Without credentials, or from a foreign origin, the upgrade is refused before any upstream sees it.
        for (path, origin) in [("/private/socket", "http://x"), ("/live/socket", "https://evil.example")] {
            let connection = try RawConnection(port: gateway.port)
            try connection.send("GET \(path) HTTP/1.1\r\nHost: x\r\nOrigin: \(origin)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            #expect(connection.readAll(timeout: .seconds(3)).hasPrefix("HTTP/1.1 400"), "\(path)")
        }
        #expect(echo.output.components(separatedBy: "connection open").count == 2, "only the first client reached the upstream")
    }
}
