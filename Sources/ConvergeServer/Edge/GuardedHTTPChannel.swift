import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Hummingbird's HTTP/1 channel with WebSocket upgrades, behind the server's connection
/// limits: a ``ConnectionRegistry`` admits each connection (or refuses it with 503), and a
/// ``RequestHeadGuard`` after the HTTP decoder answers malformed and late request heads.
/// On HTTPS a TLS handler comes first in every connection's pipeline, refused ones too (their
/// 503 is encrypted like any answer); the head timeout then also bounds the handshake.
struct GuardedHTTPChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// The upgrade handler's decision; nil for a refused connection, which answers and
        /// closes by itself.
        let negotiation: EventLoopFuture<HTTP1WebSocketUpgradeChannel.UpgradeResult>?
    }

    let http: HTTP1WebSocketUpgradeChannel
    let registry: ConnectionRegistry
    let limits: RequestHeadGuard.Limits
    /// The certificate new connections are served with; `nil`: plain HTTP.
    let tls: TLSContextStore?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let registry = self.registry
        if let tls {
            do {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
        switch registry.admit(channel) {
        case .refused(let linger):
            logger.debug("connection limit reached, refusing a connection", metadata: ["limit": "\(registry.maxConnections)"])
            if linger { channel.closeFuture.whenComplete { _ in registry.lingerEnded() } }
            let bytes = RefusedConnection.answer(maxConnections: registry.maxConnections)
            let lingerTime = linger ? limits.linger : nil
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(RefusedConnection(bytes: bytes, linger: lingerTime))
                return Value(channel: channel, negotiation: nil)
            }
        case .admitted(let id, let evicted):
            if let evicted {
                logger.debug("connection limit reached, closing the connection that waited longest for a request")
                evicted.close(promise: nil)
            }
            channel.closeFuture.whenComplete { _ in registry.remove(id) }
            let limits = self.limits
            return http.setup(channel: channel, logger: logger).flatMapThrowing { _ in
                let pipeline = channel.pipeline.syncOperations
                let upgrader = try pipeline.handler(type: NIOTypedHTTPServerUpgradeHandler<HTTP1WebSocketUpgradeChannel.UpgradeResult>.self)
                try pipeline.addHandler(
                    RequestHeadGuard(id: id, registry: registry, limits: limits, logger: logger), position: .before(upgrader))
                return Value(channel: channel, negotiation: upgrader.upgradeResultFuture)
            }
        }
    }

    /// Serves the connection as Hummingbird's channel does (`HTTP1WebSocketUpgradeChannel`'s
    /// `handle`, whose value type hides the upgrade's future), except that a connection
    /// closed before its first request head is not logged as an error: that is what the
    /// head timeout, the answers to malformed heads and the connection limit do.
    func handle(value: Value, logger: Logger) async {
        guard let negotiation = value.negotiation else { return }
        let result: HTTP1WebSocketUpgradeChannel.UpgradeResult
        do {
            result = try await negotiation.get()
        } catch {
            logger.trace("connection closed before a request head", metadata: ["error": "\(error)"])
            return
        }
        switch result {
        case .notUpgraded(let http1):
            await http.handleHTTP(asyncChannel: http1, logger: logger)
        case .failedUpgrade(let http1, let logger):
            // As Hummingbird answers a refused upgrade: an empty 400, then close (the
            // server's `refuse` swaps in its own answer at the head of the pipeline).
            do {
                try await http1.executeThenClose { _, outbound in
                    try await outbound.write(contentsOf: [
                        .head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])),
                        .end(nil),
                    ])
                }
            } catch {
                logger.trace("failed to answer a refused upgrade", metadata: ["error": "\(error)"])
            }
        case .websocket(let asyncChannel, let handler, let logger):
            await handler(asyncChannel, logger)
        }
    }
}
