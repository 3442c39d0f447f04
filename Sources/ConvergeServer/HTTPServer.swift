import CompressNIO
import ConvergeSync
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The HTTP face of a ``SyncService`` (Hummingbird 2).
///
/// - `POST /v1/sync`: a ``SyncRequest`` in, a ``SyncResponse`` out (binary).
/// - `GET /v1/status[?cursor=N]`: the namespace's status as JSON (`needsSync` with a cursor).
/// - `GET /v1/conflicts`: open conflicts as JSON.
/// - `GET /v1/events`: server-sent events; `event: changes` whenever a push changed the
///   namespace, so that listening devices pull at once.
/// - `GET /health`: `{"status":"ok"}`.
/// - `GET /metrics`: Prometheus text format.
///
/// Sync request bodies may be gzip- or deflate-encoded (`Content-Encoding`; the limit
/// applies before and after decompression); answers are gzip- or deflate-encoded when the
/// client accepts it (URLSession does, and decodes transparently).
///
/// `/v1` endpoints need `Authorization: Bearer <JWT>` (HS256, claims `namespace` and
/// `device`). Errors are `{"error": {"code": …, "message": …}}` with 400 (undecodable
/// body, with the decoder's reason), 401, 403, 413 or 500.
public enum ConvergeHTTPServer {
    /// The Hummingbird application serving `service` on `host:port` (port 0: any free
    /// port); `onListening` receives the bound port once the server runs.
    public static func application(
        service: SyncService,
        host: String = "127.0.0.1",
        port: Int = 8080,
        logger: Logger = Logger(label: "converge-server"),
        onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
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
                principal = try await service.authenticator.authenticate(authorization)
            } catch let error as ServiceError {
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
                principal = try await service.authenticator.authenticate(request.headers[.authorization])
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
                                    let data = (try? JSONEncoder().encode(["device": device])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
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
        router.get("/v1/conflicts") { request, _ in
            response(await service.conflicts(authorization: request.headers[.authorization]))
        }
        return Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(service.configuration.idleTimeoutSeconds)))),
            configuration: .init(address: .hostname(host, port: port), serverName: "converge-server"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? port) },
            logger: logger)
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
    public let service: SyncService
    /// The port it listens on.
    public let port: Int
    public let host: String
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    public var baseURL: URL { URL(string: "http://\(host):\(port)")! }

    private init(service: SyncService, host: String, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.service = service
        self.host = host
        self.port = port
        self.group = group
        self.task = task
    }

    /// Starts serving `service` and returns once it listens.
    public static func start(
        service: SyncService, host: String = "127.0.0.1", port: Int = 0, logger: Logger = Logger(label: "converge-server")
    ) async throws -> RunningServer {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = ConvergeHTTPServer.application(service: service, host: host, port: port, logger: logger) { port in
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
