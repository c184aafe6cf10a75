import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWSClient
import HummingbirdWebSocket
import KeelServer
import Logging
import NIOCore
import NIOHTTP1

/// WebSocket upgrades on gateway routes (Grafana Live, notebooks, chat): the route, its auth policy,
/// the caller's origin and an instance are settled on the request head; once the client's upgrade is
/// accepted, a WebSocket to the instance carries the messages both ways until either side closes. An
/// upgrade the gateway refuses (no credentials, a foreign origin, no instance up) is answered 400 by
/// the WebSocket server without reaching any upstream; HummingbirdWebSocket gives no way to send the
/// 401/403/503 a plain request would get.
struct GatewayWebSocketForwarder: WebSocketForwarder {
    let gateway: Gateway

    /// Largest message passed through, either way.
    static let maxMessageBytes = 16 << 20

    func shouldUpgrade(_ head: HTTPRequest, channel: any Channel, logger: Logger) async throws
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
        let rawPath = request.uri.path
        guard !ReservedPaths.keel.owns(rawPath), let path = try? RequestPath.normalize(rawPath), !ReservedPaths.keel.owns(path),
              let active = gateway.routes.match(path: path, request: request)
        else { return .dontUpgrade }
        var context = KeelRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: logger))
        context.requestID = requestID(from: head.headerFields[.xRequestID])
        let route = active.route
        var principal: Principal?
        if active.access != .public {
            guard let caller = try? await RouteRegistrar.authorize(request, context: context, access: active.access, authenticator: gateway.authenticator)
            else { return .dontUpgrade }
            principal = caller
        }
        if let policy = route.rateLimit {
            let caller = ActiveRoute.rateLimitCaller(principal, clientIP: context.clientIP)
            guard (try? await gateway.limiter.take(route: route.name, caller: caller, policy: policy))?.allowed == true else { return .dontUpgrade }
        }
        guard Self.originAllowed(head, route: route) else { return .dontUpgrade }
        guard let index = active.pool.pick(stickyKey: active.stickyKey(for: request)) else { return .dontUpgrade }
        let pool = active.pool
        let instance = pool.instances[index]
        let target = (instance.url.secure ? "wss://" : "ws://") + instance.url.authority
            + ActiveRoute.join(instance.url.basePath, active.upstreamPath(for: path)) + (request.uri.query.map { "?" + $0 } ?? "")
        let headers = Self.upstreamHeaders(head.headerFields, forwarding: ForwardingContext(
            clientIP: context.clientIP, scheme: gateway.scheme, originalHost: head.authority, requestID: context.requestID,
            traceparent: Gateway.traceparent(head.headerFields[.traceparent]), upstreamHost: instance.url.hostHeader,
            subject: principal?.subject, roles: principal?.roles ?? [],
            dropCredentials: active.access != .public && !route.forwardToken))
        let exchange = Exchange(route: active, request: request, requestID: context.requestID, remote: context.clientIP, start: .now, path: path)
        let gateway = self.gateway
        await ReadDeadlines.stopWatching(channel)

        return .upgrade([.xRequestID: context.requestID]) { inbound, outbound, _ in
            var finished = exchange
            finished.upstream = instance.label
            finished.attempts = 1
            finished.status = 101
            var configuration = WebSocketClientConfiguration(maxFrameSize: Self.maxMessageBytes, additionalHeaders: headers)
            configuration.autoPing = .disabled
            do {
                try await WebSocketClient.connect(url: target, configuration: configuration, logger: logger) { upstreamInbound, upstreamOutbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await message in inbound.messages(maxSize: Self.maxMessageBytes) { try await upstreamOutbound.write(message.frame) }
                            try await upstreamOutbound.close(.normalClosure, reason: nil)
                        }
                        group.addTask {
                            for try await message in upstreamInbound.messages(maxSize: Self.maxMessageBytes) { try await outbound.write(message.frame) }
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                }
                pool.finish(index, outcome: .success)
            } catch {
                logger.warning("websocket to upstream failed", metadata: [
                    "request_id": .string(finished.requestID), "route": .string(route.name), "upstream": .string(instance.label), "error": "\(error)",
                ])
                pool.finish(index, outcome: .failure)
                active.metrics.upstreamError(instance.label, kind: "websocket")
                finished.interrupted = true
                // 1014: the gateway got no valid answer from the upstream (RFC 6455 registry, "Bad Gateway").
                try? await outbound.close(.unknown(1014), reason: "upstream unavailable")
            }
            gateway.finish(finished, bytes: 0)
        }
    }

    /// Browsers do not apply CORS to WebSockets; servers check `Origin` against cross-site hijacking. The
    /// upstream sees the gateway's own client's origin, so the gateway checks it: an origin the route's
    /// CORS policy allows, or else the host the request was sent to. Clients that are not browsers may send none.
    static func originAllowed(_ head: HTTPRequest, route: GatewayRoute) -> Bool {
        guard let origin = head.headerFields[.origin] else { return true }
        if let cors = route.cors { return cors.allowedOrigins.contains("*") || cors.allowedOrigins.contains(origin) }
        // Same host (ports aside: non-browser clients often leave the port out of their origin).
        guard let authority = head.authority, let host = URLComponents(string: origin)?.host else { return false }
        return host.lowercased() == ActiveRoute.hostWithoutPort(authority).lowercased()
    }

    /// The forwarding headers of a plain request, minus what the WebSocket client sets itself (it sends
    /// its own `Origin`, which the gateway has checked).
    static func upstreamHeaders(_ fields: HTTPFields, forwarding: ForwardingContext) -> HTTPFields {
        var headers = HTTPFields()
        let owned: Set<String> = ["host", "origin", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "content-length"]
        for (name, value) in HTTPHeaders(forwarding: fields, forwarding) where !owned.contains(name.lowercased()) {
            if let fieldName = HTTPField.Name(name) { headers.append(HTTPField(name: fieldName, value: value)) }
        }
        return headers
    }
}

private extension WebSocketMessage {
    var frame: WebSocketOutboundWriter.OutboundFrame {
        switch self {
        case .text(let text): .text(text)
        case .binary(let buffer): .binary(buffer)
        }
    }
}
