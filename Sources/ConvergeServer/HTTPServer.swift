import CompressNIO
import ConvergeProtocol
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The HTTP face of a ``SyncService`` (Hummingbird 2).
///
/// - `POST /v1/sync`: a `SyncRequest` in, a `SyncResponse` out (binary, ConvergeProtocol).
/// - `GET /v1/status[?cursor=N]`: the namespace's status as JSON (`needsSync` with a cursor).
/// - `GET /v1/conflicts`: open conflicts as JSON, `{"conflicts": [{"table", "key",
///   "column", "siblings": [{"value", "replica", "hlc"}]}], "constraints": [{"table",
///   "index", "columns", "values", "holder", "held": [...]}]}`: critical fields, then
///   unique-index clashes (DESIGN §4), whose holder and held records are each `{"key",
///   "values": {column: value}, "stamp": {"replica", "hlc"}}`. Values are JSON's null,
///   numbers and strings, a blob is `{"blob": "<base64>"}`, and the reals JSON cannot
///   write as numbers are `{"real": "inf"}`, `{"real": "-inf"}` and `{"real": "nan"}`.
/// - `GET /v1/events`: server-sent events; `event: changes` whenever a push changed the
///   namespace, so that listening devices pull at once.
/// - `GET /v1/ws`: the same notifications over a WebSocket: text messages
///   `{"event":"connected"}` once subscribed, then `{"event":"changes","device":"<pusher>"}`;
///   the server pings every `heartbeatSeconds` and closes connections that do not answer.
///   The token is checked before the upgrade (a 401 answer refuses it); browsers, which
///   cannot set headers on a WebSocket, may pass it as `?access_token=<JWT>` instead (the
///   header wins; URLs may end up in proxy logs). Without an upgrade request: 426.
/// - `GET /health`: `{"status":"ok"}`.
/// - `GET /metrics`: Prometheus text format.
/// - `GET /admin`: the operator page (HTML, behind a login with the admin token), and
///   `/admin/v1/...`, the admin API (see ``SyncService/adminDevices(authorization:namespace:)``).
///
/// Sync request bodies may be gzip- or deflate-encoded (`Content-Encoding`; the limit
/// applies before and after decompression); answers are gzip- or deflate-encoded when the
/// client accepts it (URLSession does, and decodes transparently).
///
/// `/v1` endpoints need `Authorization: Bearer <JWT>` (HS256, claims `namespace` and
/// `device`). Errors are `{"error": {"code": …, "message": …}}` with 400 (undecodable
/// body, with the decoder's reason), 401, 403, 413 or 500.
///
/// The connection's edge (``ServerConfiguration``): a request the HTTP parser rejects gets
/// 400 (431 for a head over `maxHeaderBytes`), a first request head that has not arrived
/// within `requestHeadTimeoutSeconds` gets 408, and the connection is closed after either;
/// at most `maxConnections` are open, a new one displacing one that waits for a request
/// (one that never sent a head first), or getting 503 when every connection is serving one.
public enum ConvergeHTTPServer {
    /// The Hummingbird application serving `service` on `host:port` (port 0: any free
    /// port); `onListening` receives the bound port once the server runs.
    ///
    /// With ``ServerConfiguration/tls`` it serves HTTPS only; throws ``TLSFileError`` when
    /// the certificate or key cannot be used, before anything listens.
    public static func application(
        service: SyncService,
        host: String = "127.0.0.1",
        port: Int = 8080,
        logger: Logger = Logger(label: "converge-server"),
        onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) throws(TLSFileError) -> some ApplicationProtocol {
        let tls = try service.configuration.tls.map { settings throws(TLSFileError) in try TLSContextStore(settings: settings) }
        let router = Router()
        router.get("/health") { _, _ in
            response(ServiceResponse(status: 200, contentType: "application/json", body: Array(#"{"status":"ok"}"#.utf8)))
        }
        router.get("/metrics") { _, _ in
            response(ServiceResponse(status: 200, contentType: "text/plain; version=0.0.4", body: Array(service.metrics.exposition().utf8)))
        }
        router.post("/v1/sync") { request, _ -> Response in
            let authorization = request.headers[.authorization]
            let principal: Principal
            do {
                principal = try await service.authenticate(authorization)
            } catch let error as ServiceError {
                // Counted like the rounds that fail later (the operator page shows them).
                service.metrics.round(result: "unauthorized", duration: .zero, recordsIn: 0, fieldsIn: 0, recordsOut: 0, fieldsOut: 0)
                return response(error.response)
            }
            let limit = service.configuration.maxBodyBytes
            if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
                return response(tooLarge(length, limit))
            }
            var buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: limit)
            } catch is NIOTooManyBytesError {
                return response(tooLarge(nil, limit))
            }
            if let encoding = request.headers[.contentEncoding]?.lowercased().trimmingCharacters(in: .whitespaces), encoding != "identity" {
                let algorithm: CompressionAlgorithm
                switch encoding {
                case "gzip", "x-gzip": algorithm = .gzip()
                case "deflate": algorithm = .zlib()
                default:
                    return response(ServiceError(status: 415, code: "unsupported_encoding", message: "content encoding \(encoding) is not supported (gzip, deflate)").response)
                }
                do {
                    buffer = try buffer.decompress(with: algorithm, maxSize: limit)
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    return response(ServiceError(status: 413, code: "too_large", message: "decompressed request body exceeds the limit of \(limit) bytes").response)
                } catch {
                    return response(ServiceError(status: 400, code: "bad_request", message: "corrupt \(encoding) body: \(error)").response)
                }
            }
            let answer = await service.sync(body: Array(buffer.readableBytesView), principal: principal)
            return response(answer, acceptEncoding: request.headers[.acceptEncoding])
        }
        router.get("/v1/status") { request, _ in
            let cursor = request.uri.queryParameters.get("cursor").flatMap { UInt64($0) }
            return response(await service.status(authorization: request.headers[.authorization], cursor: cursor))
        }
        router.get("/v1/events") { request, _ -> Response in
            let principal: Principal
            do {
                principal = try await service.authenticate(request.headers[.authorization])
            } catch let error as ServiceError {
                return response(error.response)
            }
            let events = service.notifier.subscribe(principal.namespace)
            let heartbeat = service.configuration.heartbeatSeconds
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: ": connected\n\n"))
                    let (ticks, tick) = AsyncStream.makeStream(of: String?.self, bufferingPolicy: .bufferingNewest(8))
                    try await withGracefulShutdownHandler {
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask {
                                for await event in events { tick.yield(event.device) }
                                tick.finish()
                            }
                            // A comment now and then keeps proxies from closing the stream
                            // and reveals clients that are gone.
                            group.addTask {
                                while true {
                                    try await Task.sleep(for: .seconds(heartbeat))
                                    tick.yield(nil)
                                }
                            }
                            for await device in ticks {
                                if let device {
                                    let data = #"{"device":"# + jsonQuoted(device) + "}"
                                    try await writer.write(ByteBuffer(string: "event: changes\ndata: \(data)\n\n"))
                                } else {
                                    try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                                }
                            }
                            group.cancelAll()
                        }
                    } onGracefulShutdown: {
                        tick.finish()
                    }
                    try await writer.finish(nil)
                })
        }
        router.get("/admin/v1/namespaces/:namespace/devices") { request, context in
            response(await service.adminDevices(authorization: request.headers[.authorization], namespace: context.parameters.get("namespace") ?? ""))
        }
        router.post("/admin/v1/namespaces/:namespace/devices/:device/revoke") { request, context in
            response(await service.adminRevoke(
                authorization: request.headers[.authorization], namespace: context.parameters.get("namespace") ?? "",
                device: context.parameters.get("device") ?? ""))
        }
        router.post("/admin/v1/namespaces/:namespace/devices/:device/retire") { request, context in
            response(await service.adminRetire(
                authorization: request.headers[.authorization], namespace: context.parameters.get("namespace") ?? "",
                device: context.parameters.get("device") ?? ""))
        }
        OperatorPage.addRoutes(to: router, service: service)
        router.get("/v1/conflicts") { request, _ in
            response(await service.conflicts(authorization: request.headers[.authorization]))
        }
        router.get("/v1/ws") { request, _ -> Response in
            // Reached only by requests that do not ask for an upgrade.
            do {
                _ = try await service.authenticate(webSocketAuthorization(request.head))
            } catch let error as ServiceError {
                return response(error.response)
            }
            var answer = response(ServiceError(status: 426, code: "upgrade_required", message: "GET /v1/ws is a WebSocket endpoint").response)
            answer.headers[.upgrade] = "websocket"
            answer.headers[.connection] = "Upgrade"
            return answer
        }
        var services: [any Service] = []
        if let tls, let seconds = tls.settings.reloadCheckSeconds {
            services.append(TLSReloadService(store: tls, seconds: seconds, logger: logger))
        }
        return Application(
            router: router,
            server: server(service: service, tls: tls, logger: logger),
            configuration: .init(address: .hostname(host, port: port), serverName: "converge-server"),
            services: services,
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    // MARK: The connection's edge

    /// The HTTP/1 channel of `.http1(...)` that also takes WebSocket upgrades (requests that
    /// do not ask for one go to the router), behind the connection limits of the
    /// configuration: see ``GuardedHTTPChannel``.
    /// With `tls`, each connection starts with a TLS handshake on the context current when
    /// it opened.
    private static func server(service: SyncService, tls: TLSContextStore?, logger: Logger) -> HTTPServerBuilder {
        let configuration = service.configuration
        let maxConnections = ConnectionRegistry.effectiveMaxConnections(
            configured: configuration.maxConnections, openFilesLimit: ConnectionRegistry.openFilesLimit())
        if maxConnections < configuration.maxConnections {
            logger.warning(
                "maxConnections lowered to fit the limit of open files (raise it with ulimit -n)",
                metadata: ["configured": "\(configuration.maxConnections)", "effective": "\(maxConnections)"])
        }
        let registry = ConnectionRegistry(maxConnections: maxConnections)
        let limits = RequestHeadGuard.Limits(
            headTimeout: .seconds(Int64(configuration.requestHeadTimeoutSeconds)), maxHeaderBytes: configuration.maxHeaderBytes,
            linger: .seconds(2))
        let channel = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: .init(
                idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)),
                httpDecoderConfiguration: .init(maxHeaderFieldSize: configuration.maxHeaderBytes, maxHeaderListSize: configuration.maxHeaderBytes)),
            ws: .init(autoPing: .enabled(timePeriod: .seconds(configuration.heartbeatSeconds)), closeTimeout: .seconds(5)))
        return HTTPServerBuilder { responder in
            GuardedHTTPChannel(
                http: HTTP1WebSocketUpgradeChannel(responder: responder, configuration: channel) { request, channel, _ in
                    await webSocketUpgrade(request, channel: channel, service: service)
                },
                registry: registry, limits: limits, tls: tls)
        }
    }

    // MARK: WebSocket

    private typealias WebSocketDecision = ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>

    /// Decides an upgrade request before anything is accepted: only `/v1/ws` with a valid
    /// token is upgraded; anything else gets an error answer.
    private static func webSocketUpgrade(_ request: HTTPRequest, channel: any Channel, service: SyncService) async -> WebSocketDecision {
        let path = URLComponents(string: request.path ?? "/")?.path ?? ""
        guard path == "/v1/ws" else {
            return await refuse(channel, ServiceError(status: 404, code: "not_found", message: "no WebSocket endpoint at \(path)"))
        }
        let principal: Principal
        do {
            principal = try await service.authenticate(webSocketAuthorization(request))
        } catch {
            return await refuse(channel, error)
        }
        return .upgrade([:]) { inbound, outbound, _ in
            try await notify(principal.namespace, of: service.notifier, inbound: inbound, outbound: outbound)
        }
    }

    /// The `Authorization` header, or else a bearer authorization made of the
    /// `access_token` query parameter (browsers cannot set headers on a WebSocket).
    static func webSocketAuthorization(_ request: HTTPRequest) -> String? {
        if let header = request.headerFields[.authorization] { return header }
        let query = URLComponents(string: request.path ?? "/")?.queryItems ?? []
        guard let token = query.first(where: { $0.name == "access_token" })?.value, !token.isEmpty else { return nil }
        return "Bearer \(token)"
    }

    /// Refuses an upgrade with `error`'s answer (status and JSON body). Hummingbird answers
    /// a refused upgrade with an empty 400 and closes the connection; a handler put at the
    /// head of the connection's pipeline (just after the TLS handler, on HTTPS, so that the
    /// answer is encrypted) writes this answer in its place.
    private static func refuse(_ channel: any Channel, _ error: ServiceError) async -> WebSocketDecision {
        let answer = error.response
        let reason = switch answer.status {
        case 401: "Unauthorized"
        case 404: "Not Found"
        default: "Refused"
        }
        var head = "HTTP/1.1 \(answer.status) \(reason)\r\n"
        head += "Content-Type: \(answer.contentType)\r\nContent-Length: \(answer.body.count)\r\nConnection: close\r\n"
        if answer.status == 401 { head += "WWW-Authenticate: Bearer\r\n" }
        let bytes = Array((head + "\r\n").utf8) + answer.body
        // Fails only if the client is already gone.
        try? await channel.eventLoop.submit {
            let pipeline = channel.pipeline.syncOperations
            if let tls = try? pipeline.handler(type: NIOSSLServerHandler.self) {
                try pipeline.addHandler(RefusedUpgradeAnswer(bytes: bytes), position: .after(tls))
            } else {
                try pipeline.addHandler(RefusedUpgradeAnswer(bytes: bytes), position: .first)
            }
        }.get()
        return .dontUpgrade
    }

    /// Serves one WebSocket: `connected`, then a `changes` message per notification of
    /// `namespace`, until the client leaves, the notifier ends or the server shuts down.
    /// The subscription ends with the connection.
    private static func notify(
        _ namespace: String, of notifier: ChangeNotifier, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter
    ) async throws {
        let events = notifier.subscribe(namespace)
        let (messages, message) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(8))
        message.yield(#"{"event":"connected"}"#)
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in events { message.yield(changesMessage(device: event.device)) }
                    message.finish()
                }
                // Reading is what answers pings, takes pongs and sees the client's close; the
                // client has nothing else to say.
                group.addTask {
                    defer { message.finish() }
                    for try await _ in inbound {}
                }
                for await text in messages {
                    try await outbound.write(.text(text))
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            message.finish()
        }
    }

    /// `{"event":"changes","device":"<device>"}`.
    static func changesMessage(device: String) -> String {
        #"{"event":"changes","device":"# + jsonQuoted(device) + "}"
    }

    /// `text` as a JSON string. Written out here because, unlike an encoder, it cannot fail
    /// (and so needs no fallback that would send something else).
    static func jsonQuoted(_ text: String) -> String {
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case _ where scalar.value < 0x20: quoted += "\\u00" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    private static func tooLarge(_ length: Int?, _ limit: Int) -> ServiceResponse {
        ServiceError(
            status: 413, code: "too_large",
            message: "request body\(length.map { " of \($0) bytes" } ?? "") exceeds the limit of \(limit) bytes").response
    }

    /// The answer, gzip- or deflate-compressed when the client accepts it and it is worth it.
    private static func response(_ answer: ServiceResponse, acceptEncoding: String? = nil) -> Response {
        var headers: HTTPFields = [.contentType: answer.contentType]
        var body = ByteBuffer(bytes: answer.body)
        if answer.body.count >= 1_024, let accepted = acceptEncoding.map(acceptedEncodings) {
            let choice: (String, CompressionAlgorithm)? =
                accepted.contains("gzip") ? ("gzip", .gzip()) : accepted.contains("deflate") ? ("deflate", .zlib()) : nil
            if let (name, algorithm) = choice, let compressed = try? body.compress(with: algorithm) {
                body = compressed
                headers[.contentEncoding] = name
            }
            headers[.vary] = "Accept-Encoding"
        }
        return Response(status: HTTPResponse.Status(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: body))
    }

    /// The codings of an `Accept-Encoding` header, without those refused with `q=0`.
    static func acceptedEncodings(_ header: String) -> Set<String> {
        var result = Set<String>()
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let name = parts.first, !name.isEmpty else { continue }
            if parts.dropFirst().contains(where: { $0.replacingOccurrences(of: " ", with: "").hasPrefix("q=0") && Double($0.dropFirst(2)) == 0 }) { continue }
            result.insert(name)
        }
        return result
    }
}

/// A server running in the background of this process (embedding, tests, the simulator's
/// hub mode): started on a port (0: any free one), stopped gracefully.
public final class RunningServer: Sendable {
    /// The service answering the server's requests.
    public let service: SyncService
    /// The port it listens on.
    public let port: Int
    /// The host or address it listens on.
    public let host: String
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    /// `https://host:port` when the service's configuration has ``ServerConfiguration/tls``,
    /// else `http://host:port`.
    public var baseURL: URL { URL(string: "\(service.configuration.tls == nil ? "http" : "https")://\(host):\(port)")! }

    private init(service: SyncService, host: String, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.service = service
        self.host = host
        self.port = port
        self.group = group
        self.task = task
    }

    /// Starts serving `service` and returns once it listens; throws ``TLSFileError`` when its
    /// TLS certificate or key cannot be used.
    public static func start(
        service: SyncService, host: String = "127.0.0.1", port: Int = 0, logger: Logger = Logger(label: "converge-server")
    ) async throws -> RunningServer {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = try ConvergeHTTPServer.application(service: service, host: host, port: port, logger: logger) { port in
            continuation.yield(port)
            continuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task {
            defer { continuation.finish() }
            try await group.run()
        }
        var iterator = ports.makeAsyncIterator()
        guard let bound = await iterator.next() else {
            try await task.value
            throw CancellationError()
        }
        return RunningServer(service: service, host: host, port: bound, group: group, task: task)
    }

    /// Stops accepting requests, lets those in flight finish, and returns when stopped.
    public func stop() async {
        service.notifier.finishAll()
        await group.triggerGracefulShutdown()
        _ = await task.result
    }
}

/// Put first in the pipeline of a connection whose WebSocket upgrade is refused: the first
/// bytes written (Hummingbird's empty 400) become `bytes`, a whole HTTP answer, and what
/// follows is dropped (the connection closes after it).
private final class RefusedUpgradeAnswer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = ByteBuffer

    private let bytes: [UInt8]
    private var written = false

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !written else {
            promise?.succeed()
            return
        }
        written = true
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: promise)
    }
}
