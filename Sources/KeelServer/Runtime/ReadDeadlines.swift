import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Slow clients may not hold connections open: a request's head must arrive within `head` of its first
/// byte, and a body may not pause longer than `bodyIdle` between chunks; a connection with no request in
/// flight closes after `idle`. Without this a slowloris client (one header byte every few seconds) keeps
/// a connection, and its memory, for ever.
///
/// Two handlers share one clock: ``RequestStartWatcher`` first in the pipeline sees bytes arrive,
/// ``RequestProgressWatcher`` after the HTTP codec sees heads, body parts and ends.
public struct ReadDeadlines: Sendable {
    public var head: TimeAmount
    public var bodyIdle: TimeAmount
    public var idle: TimeAmount

    public init(head: TimeAmount, bodyIdle: TimeAmount, idle: TimeAmount) {
        self.head = head
        self.bodyIdle = bodyIdle
        self.idle = idle
    }

    /// The first watcher, at the front of a new connection's pipeline; the HTTP channel adds the second
    /// (``progressWatcher``) after its codec, where it finds the first.
    func watchStart(of channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(RequestStartWatcher(clock: RequestClock(deadlines: self)), position: .first)
    }

    static func progressWatcher() -> any RemovableChannelHandler { RequestProgressWatcher() }

    /// A connection upgraded to WebSocket leaves HTTP's deadlines (WebSocket pings and closes take over).
    public static func stopWatching(_ channel: any Channel) async {
        guard let watcher = try? await channel.pipeline.handler(type: RequestStartWatcher.self).get() else { return }
        try? await channel.pipeline.removeHandler(watcher).get()
    }
}

/// Per connection, on its event loop only. Requests move the deadline often, so one timer serves them
/// all: when it fires early (the deadline moved later) it sleeps again until the deadline.
final class RequestClock: @unchecked Sendable {
    enum Phase { case idle, awaitingHead, readingBody, answering }

    let deadlines: ReadDeadlines
    var phase = Phase.idle
    private var deadline: NIODeadline?
    private var timer: Scheduled<Void>?
    private var timerFiresAt: NIODeadline?

    init(deadlines: ReadDeadlines) { self.deadlines = deadlines }

    func arm(_ after: TimeAmount, context: ChannelHandlerContext) {
        let due = NIODeadline.now() + after
        deadline = due
        if let firesAt = timerFiresAt, firesAt <= due { return }
        schedule(at: due, on: context.eventLoop, channel: context.channel)
    }

    func disarm() {
        deadline = nil
    }

    func stop() {
        deadline = nil
        timer?.cancel()
        timer = nil
        timerFiresAt = nil
    }

    private func schedule(at due: NIODeadline, on eventLoop: any EventLoop, channel: any Channel) {
        timer?.cancel()
        timerFiresAt = due
        timer = eventLoop.scheduleTask(deadline: due) { [self] in
            timer = nil
            timerFiresAt = nil
            guard let deadline else { return }
            if deadline <= .now() {
                channel.close(promise: nil)
            } else {
                schedule(at: deadline, on: eventLoop, channel: channel)
            }
        }
    }
}

/// First in the pipeline: the first bytes after an idle stretch start a request, and its head deadline.
final class RequestStartWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let clock: RequestClock

    init(clock: RequestClock) { self.clock = clock }

    func channelActive(context: ChannelHandlerContext) {
        clock.arm(clock.deadlines.idle, context: context)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { clock.arm(clock.deadlines.idle, context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if clock.phase == .idle {
            clock.phase = .awaitingHead
            clock.arm(clock.deadlines.head, context: context)
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        clock.stop()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        clock.stop()
    }
}

/// A server channel with the read deadlines watched from its first byte.
struct DeadlineWatchingChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let deadlines: ReadDeadlines

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try deadlines.watchStart(of: channel)
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// After the HTTP codec: a complete head stops the head deadline, body parts keep pushing the body
/// deadline, the end of the request leaves the answer to the application (no deadline while it works),
/// and the end of the answer starts the idle deadline of a kept-alive connection.
final class RequestProgressWatcher: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    private var clock: RequestClock?

    func handlerAdded(context: ChannelHandlerContext) {
        clock = try? context.pipeline.syncOperations.handler(type: RequestStartWatcher.self).clock
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let clock {
            switch unwrapInboundIn(data) {
            case .head: clock.phase = .readingBody; clock.arm(clock.deadlines.bodyIdle, context: context)
            case .body: clock.arm(clock.deadlines.bodyIdle, context: context)
            case .end: clock.phase = .answering; clock.disarm()
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let clock, case .end = unwrapOutboundIn(data), clock.phase == .answering {
            clock.phase = .idle
            clock.arm(clock.deadlines.idle, context: context)
        }
        context.write(data, promise: promise)
    }
}
