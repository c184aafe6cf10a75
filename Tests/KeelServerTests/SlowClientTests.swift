import Foundation
import KeelTestSupport
import Testing

/// Slow clients cannot hold connections: a head trickled in, a body that stalls and an idle kept-alive
/// connection are all closed at their deadlines; a request the server is still answering is not.
@Suite struct SlowClientTests {
    @Test func deadlinesCloseSlowAndIdleConnections() async throws {
        let keel = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_HTTP_HEADER_TIMEOUT_SECONDS": "1", "KEEL_HTTP_BODY_TIMEOUT_SECONDS": "1", "KEEL_HTTP_IDLE_TIMEOUT_SECONDS": "2",
            "KEEL_ADMIN_PASSWORD": "slow-client-passphrase-1", "KEEL_AUTH_BCRYPT_COST": "4",
        ])
        let port = try await keel.waitUntilReady()

        /// Seconds until the server closes `connection`, feeding it `drip` every 300 ms meanwhile (at most 10 s). The
        /// bounds below leave room for a loaded machine: what they tell apart is closed at the deadline from never closed.
        func secondsUntilClosed(_ connection: RawConnection, drip: String?) async throws -> Double {
            let started = ContinuousClock.now
            while ContinuousClock.now - started < .seconds(10) {
                if let drip {
                    guard (try? connection.send(drip)) != nil else { break }
                } else if connection.isClosed(within: .milliseconds(300)) {
                    break
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            let elapsed = ContinuousClock.now - started
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }

        // A head that never ends (slowloris): one header line every 300 ms.
        let slowloris = try RawConnection(port: port)
        try slowloris.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
        let headSeconds = try await secondsUntilClosed(slowloris, drip: "X-Drip: 1\r\n")
        #expect(headSeconds < 6, "head deadline: closed after \(headSeconds) s")

        // A body that stops arriving.
        let stalled = try RawConnection(port: port)
        try stalled.send("POST /api/v1/config/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
        let bodySeconds = try await secondsUntilClosed(stalled, drip: nil)
        #expect(bodySeconds < 6, "body deadline: closed after \(bodySeconds) s")

        // An answered request, then nothing: the kept-alive connection closes after the idle deadline, not before.
        let idle = try RawConnection(port: port)
        try idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(idle.readResponseHead().hasPrefix("HTTP/1.1 200"))
        let idleSeconds = try await secondsUntilClosed(idle, drip: nil)
        #expect(idleSeconds > 1.2 && idleSeconds < 7, "idle deadline: closed after \(idleSeconds) s")

        // A client that keeps sending whole requests is never cut off.
        let busy = try RawConnection(port: port)
        for _ in 0..<8 {
            try busy.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(busy.readResponseHead().hasPrefix("HTTP/1.1 200"))
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}
