import AsyncHTTPClient
import NIOCore
import NIOPosix
import Synchronization

/// The HTTP client a module calls upstreams with (the gateway's instances, the AI gateway's providers),
/// made on first use, so that processes that never call one (or only build the module) own no client to
/// shut down. Set for proxying: redirects are the caller's, bodies pass undecoded, a refused connection
/// fails at once (so the request can go elsewhere), and no client span is made without an exporter.
public final class UpstreamClient: Sendable {
    private let box = Mutex<HTTPClient?>(nil)
    private let configuration: HTTPClient.Configuration

    public init(connectTimeout: TimeAmount, connectionsPerHost: Int, http1Only: Bool, tracing: Bool) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: connectTimeout),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connectionsPerHost),
            decompression: .disabled)
        if http1Only { configuration.httpVersion = .http1Only }
        configuration.connectionPool.retryConnectionEstablishment = false
        if !tracing { configuration.tracing.tracer = nil }
        self.configuration = configuration
    }

    public var client: HTTPClient {
        box.withLock { box in
            if let client = box { return client }
            let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)
            box = client
            return client
        }
    }

    public func shutdown() async {
        let client = box.withLock { box in
            defer { box = nil }
            return box
        }
        try? await client?.shutdown()
    }
}
