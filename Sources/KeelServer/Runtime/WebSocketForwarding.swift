import HTTPTypes
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1

/// Decides, for a request asking to upgrade to WebSocket, whether this process takes it (the gateway
/// forwarding it to an upstream). Upgrades are decided before routing, on the request head alone;
/// `.dontUpgrade` sends the request on through the normal middleware and routes, which answer it.
public protocol WebSocketForwarder: Sendable {
    func shouldUpgrade(_ head: HTTPRequest, channel: any Channel, logger: Logger) async throws
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>
}

/// The WebSocket-capable HTTP/1 channel, with malformed requests (such as `Content-Length` and
/// `Transfer-Encoding` together, how requests are smuggled past proxies) closing the connection: the
/// upgrade pipeline leaves parser errors unhandled, which would keep such a connection open forever.
struct WebSocketUpgradeChannel: ServerChildChannel {
    let base: HTTP1WebSocketUpgradeChannel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1WebSocketUpgradeChannel.Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try channel.pipeline.syncOperations.addHandler(CloseOnMalformedRequest())
            return value
        }
    }

    func handle(value: HTTP1WebSocketUpgradeChannel.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

final class CloseOnMalformedRequest: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            context.close(promise: nil)
        } else {
            context.fireErrorCaught(error)
        }
    }
}
