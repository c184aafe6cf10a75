import Hummingbird
import NIOCore

/// The per-request context every Keel route receives.
public struct KeelRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request's `X-Request-ID`: the client's when it sent a well-formed one, else generated.
    public var requestID: String = ""
    public let remoteAddress: SocketAddress?
    /// The authenticated caller; set for every route that is not public.
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}

extension KeelRequestContext {
    /// The caller of a non-public route (the router has checked it before the handler runs).
    public func requirePrincipal() throws -> Principal {
        guard let principal else { throw Problem.unauthorized("This route needs credentials.") }
        return principal
    }

    /// The client's IP address as the socket saw it.
    public var clientIP: String { remoteAddress?.ipAddress ?? "unknown" }
}
