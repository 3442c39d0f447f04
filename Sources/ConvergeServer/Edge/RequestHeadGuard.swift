import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Watches one connection's requests between the HTTP/1 decoder and the rest of the
/// pipeline, and answers what Hummingbird's WebSocket-upgrade channel leaves unanswered.
///
/// Until a connection's first request head arrives, that channel has only the decoder and
/// NIO's upgrade handler in the pipeline: a parse error reaches no one (no answer, and the
/// connection stays open until the client leaves), and no idle timeout runs. This handler:
///
/// - answers a parse error with 400, or 431 for a head over the decoder's limits, then
///   closes (after the response in progress, if one is being written);
/// - answers 408 and closes when the first head has not arrived within `headTimeout`;
/// - tells the ``ConnectionRegistry`` when the connection serves a request and when it
///   waits for one, so that a connection beyond the limit displaces a waiting one.
///
/// Closing is lingering: the output is shut after the answer, what the client still sends
/// is read and dropped, and the connection closes when the client closes its side or after
/// `linger`. Closing with unread bytes would reset the connection, and a reset can destroy
/// the answer before the client reads it.
///
/// A head that asks for a WebSocket hands the connection over: NIO's upgrade handler
/// removes the decoder, and the bytes that follow are no longer HTTP, so this handler
/// leaves too (the connection then counts as busy until it closes).
final class RequestHeadGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    struct Limits {
        var headTimeout: TimeAmount
        var maxHeaderBytes: Int
        var linger: TimeAmount
    }

    private let id: ConnectionRegistry.ID
    private let registry: ConnectionRegistry
    private let limits: Limits
    private let logger: Logger

    private var headTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?
    private var headsReceived = 0
    /// Requests received and not yet answered in full.
    private var unanswered = 0
    /// The last request's head has arrived and its end not yet.
    private var readingBody = false
    /// A response head has gone out and its end not yet.
    private var writingResponse = false
    /// The error answer, to write once `after` more responses have ended (those of the
    /// requests received before the malformed one, which the client is owed in order).
    private var pendingAnswer: (error: ServiceError, after: Int)?
    /// The malformed request's own response was already under way: close after it.
    private var closeAfterResponse = false
    /// The error answer has been written: the connection is closing.
    private var answered = false

    /// An error is known: nothing more is read or served.
    private var closing: Bool { answered || pendingAnswer != nil || closeAfterResponse }

    init(id: ConnectionRegistry.ID, registry: ConnectionRegistry, limits: Limits, logger: Logger) {
        self.id = id
        self.registry = registry
        self.limits = limits
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        headTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.headTimeout) { [self] in
            headTimer = nil
            guard headsReceived == 0, !closing else { return }
            logger.debug("no request head in time, closing the connection")
            answer(ServiceError(
                status: 408, code: "request_timeout",
                message: "no complete request head within \(limits.headTimeout.nanoseconds / 1_000_000_000) seconds"), context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headTimer?.cancel()
        headTimer = nil
        lingerTimer?.cancel()
        lingerTimer = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let head: HTTPRequestHead
        switch unwrapInboundIn(data) {
        case .head(let value):
            head = value
        case .body:
            context.fireChannelRead(data)
            return
        case .end:
            readingBody = false
            context.fireChannelRead(data)
            return
        }
        headsReceived += 1
        unanswered += 1
        readingBody = true
        headTimer?.cancel()
        headTimer = nil
        registry.requestStarted(id)
        context.fireChannelRead(data)
        if head.headers["upgrade"].contains(where: { $0.lowercased().contains("websocket") }) {
            // The upgrade handler may now take the connection over, and a WebSocket keeps
            // it busy. (Other protocols have no upgrader: their requests stay HTTP.)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError, !closing {
            let answer: ServiceError
            if parserError == .headerOverflow {
                answer = ServiceError(
                    status: 431, code: "headers_too_large", message: "the request head exceeds the limit of \(limits.maxHeaderBytes) bytes")
            } else {
                answer = ServiceError(status: 400, code: "bad_request", message: "malformed HTTP request: \(parserError)")
            }
            logger.debug("malformed request, closing the connection", metadata: ["error": "\(parserError)"])
            // A malformed body belongs to a request already received: the error answer
            // takes that request's place. A malformed head comes after all of them.
            let owed = readingBody ? unanswered - 1 : unanswered
            if owed > 0 {
                pendingAnswer = (answer, owed)
            } else if writingResponse {
                closeAfterResponse = true
            } else {
                self.answer(answer, context: context)
            }
        }
        // Passed on, so that a request body being read fails instead of ending early
        // (Hummingbird's own answer to it is then dropped by `write`).
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if answered, let event = event as? ChannelEvent, event == .inputClosed {
            // The client has read the answer and closed: the linger is over.
            context.close(promise: nil)
        } else if event is ChannelShouldQuiesceEvent, headsReceived == 0 || answered {
            // Graceful shutdown: Hummingbird closes idle connections, but only once their
            // first head has arrived; this one has none, or is closing anyway.
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !answered else {
            // The error answer has replaced whatever the application still writes.
            promise?.fail(ChannelError.outputClosed)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head(let head):
            // Informational heads (100 Continue) are followed by the final one.
            if head.status.code >= 200 { writingResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            writingResponse = false
            unanswered = max(0, unanswered - 1)
            if closeAfterResponse {
                closeAfterResponse = false
                answered = true
                registry.closing(id)
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.cascade(to: promise)
                context.writeAndFlush(data, promise: written)
                lingerClose(after: written.futureResult, context: context)
                return
            }
            context.write(data, promise: promise)
            if let (error, after) = pendingAnswer {
                pendingAnswer = after > 1 ? (error, after - 1) : nil
                if after <= 1 { answer(error, context: context) }
            } else if unanswered == 0 {
                registry.requestsFinished(id)
            }
        }
    }

    // MARK: Answering and closing

    /// Writes `error` as a whole response with `Connection: close`, then closes lingering.
    private func answer(_ error: ServiceError, context: ChannelHandlerContext) {
        precondition(!answered && !writingResponse)
        pendingAnswer = nil
        answered = true
        headTimer?.cancel()
        headTimer = nil
        registry.closing(id)
        let response = error.response
        let headers = HTTPHeaders([
            ("Content-Type", response.contentType), ("Content-Length", "\(response.body.count)"), ("Connection", "close"),
        ])
        let head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        lingerClose(after: context.writeAndFlush(wrapOutboundOut(.end(nil))), context: context)
    }

    /// Once `written` (the last write) is out: shuts the output, then closes when the client
    /// closes its side or after `linger`.
    private func lingerClose(after written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        written.assumeIsolated().whenComplete { [self] result in
            guard case .success = result else {
                context.close(promise: nil)
                return
            }
            context.close(mode: .output, promise: nil)
            lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: limits.linger) {
                context.close(promise: nil)
            }
        }
    }
}

/// The whole pipeline of a connection refused for want of room: writes `bytes` (a 503
/// answer), then closes, lingering first when `linger` is not nil (see
/// ``RequestHeadGuard``); what the client sends is dropped.
final class RefusedConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let bytes: [UInt8]
    private let linger: TimeAmount?
    private var lingerTimer: Scheduled<Void>?

    init(bytes: [UInt8], linger: TimeAmount?) {
        self.bytes = bytes
        self.linger = linger
    }

    /// The raw HTTP answer for `maxConnections` in use.
    static func answer(maxConnections: Int) -> [UInt8] {
        let response = ServiceError(
            status: 503, code: "too_many_connections",
            message: "all \(maxConnections) connections of the server are serving requests; retry later").response
        let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(response.body.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + response.body
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let linger = self.linger
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: bytes))).assumeIsolated().whenComplete { [self] result in
            guard case .success = result, let linger else {
                context.close(promise: nil)
                return
            }
            context.close(mode: .output, promise: nil)
            lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: linger) {
                context.close(promise: nil)
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
    }
}
