import Hummingbird
import NIOCore

/// The per-request context every Keel route receives.
public struct KeelRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's `X-Request-ID`: the client's when it sent a well-formed one, else generated.
    public var requestID: String = ""
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}
