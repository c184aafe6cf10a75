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

/// The WebSocket-capable HTTP/1 channel, with malformed requests answered and the connection closed
/// (`Content-Length` with `Transfer-Encoding`, how requests are smuggled past proxies, is one): the
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

/// 431 for a head over the decoder's limits, 400 for any other malformed request; then the connection closes.
final class CloseOnMalformedRequest: ChannelDuplexHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let error = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        let status: HTTPResponseStatus = error == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: ["Connection": "close", "Content-Length": "0"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
