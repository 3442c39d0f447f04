import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Carries one request of a sync round to a server and brings back its answer.
///
/// Implementations throw ``SyncTransportError``; the engine retries network failures,
/// timeouts and 5xx/408/429 answers, refreshes the token once on 401, and stops on other
/// 4xx answers. Any other error is treated as a network failure.
public protocol SyncTransport: Sendable {
    /// Sends `request` with `token` as bearer credential (nil: none) and returns the server's answer, or throws `SyncTransportError`.
    func send(_ request: SyncRequest, token: String?) async throws -> SyncResponse
}

/// How a sync request failed.
public enum SyncTransportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The connection failed or dropped before an answer arrived.
    case network(String)
    /// No answer within the timeout.
    case timeout
    /// The server answered with a status other than 200, and its message.
    case status(Int, String)
    /// The answer was not a valid sync response.
    case invalidResponse(String)

    public var description: String {
        switch self {
        case .network(let message): return "network error: \(message)"
        case .timeout: return "timed out"
        case .status(let code, let message): return "server answered \(code): \(message)"
        case .invalidResponse(let message): return "invalid response: \(message)"
        }
    }
}

/// A transport that hands requests to a function in the same process: for tests and the
/// simulator. The function answers as the HTTP endpoint would: a status and a body (a
/// `SyncResponse` on 200, an error message otherwise).
public struct InMemorySyncTransport: SyncTransport {
    /// Takes the encoded request and the `Authorization` header value (nil without a token), and returns an HTTP status and body.
    public typealias Handler = @Sendable (_ body: [UInt8], _ authorization: String?) async -> (status: Int, body: [UInt8])
    private let handler: Handler

    /// A transport that answers every request with `handler`.
    public init(handler: @escaping Handler) {
        self.handler = handler
    }

    /// Encodes `request`, hands it to the handler, and decodes a 200 answer; any other status throws `SyncTransportError.status`.
    public func send(_ request: SyncRequest, token: String?) async throws -> SyncResponse {
        let answer = await handler(request.encoded(), token.map { "Bearer \($0)" })
        guard answer.status == 200 else {
            throw SyncTransportError.status(answer.status, HTTPSyncTransport.message(from: answer.body))
        }
        do {
            return try SyncResponse(decoding: answer.body)
        } catch {
            throw SyncTransportError.invalidResponse(error.description)
        }
    }
}

/// The HTTP transport: `POST <baseURL>/v1/sync` through URLSession.
public final class HTTPSyncTransport: SyncTransport {
    /// Timeouts of the underlying URLSession.
    public struct Configuration: Sendable {
        /// How long to wait for data before giving up on a request.
        public var requestTimeout: TimeInterval
        /// The longest a whole request may take.
        public var resourceTimeout: TimeInterval

        /// Defaults: 30 s without data, 120 s for a whole request.
        public init(requestTimeout: TimeInterval = 30, resourceTimeout: TimeInterval = 120) {
            self.requestTimeout = requestTimeout
            self.resourceTimeout = resourceTimeout
        }
    }

    /// The server's root URL; requests go to `v1/sync` under it.
    public let baseURL: URL
    private let session: URLSession

    /// A transport posting to `baseURL` through an ephemeral session that never caches.
    public init(baseURL: URL, configuration: Configuration = Configuration()) {
        self.baseURL = baseURL
        let sessionConfiguration = URLSessionConfiguration.ephemeral
        sessionConfiguration.timeoutIntervalForRequest = configuration.requestTimeout
        sessionConfiguration.timeoutIntervalForResource = configuration.resourceTimeout
        sessionConfiguration.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: sessionConfiguration)
    }

    deinit { session.finishTasksAndInvalidate() }

    /// Posts `request` with `token` as bearer credential, and decodes the answer; throws `SyncTransportError`.
    public func send(_ request: SyncRequest, token: String?) async throws -> SyncResponse {
        var urlRequest = URLRequest(url: baseURL.appendingPathComponent("v1").appendingPathComponent("sync"))
        urlRequest.httpMethod = "POST"
        urlRequest.httpBody = Data(request.encoded())
        urlRequest.setValue(SyncProtocol.contentType, forHTTPHeaderField: "Content-Type")
        urlRequest.setValue(SyncProtocol.contentType, forHTTPHeaderField: "Accept")
        if let token { urlRequest.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await perform(urlRequest)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as URLError where error.code == .cancelled {
            throw CancellationError()
        } catch let error as URLError where error.code == .timedOut {
            throw SyncTransportError.timeout
        } catch {
            throw SyncTransportError.network("\(error)")
        }
        guard let http = response as? HTTPURLResponse else { throw SyncTransportError.invalidResponse("not an HTTP response") }
        let body = [UInt8](data)
        guard http.statusCode == 200 else { throw SyncTransportError.status(http.statusCode, Self.message(from: body)) }
        do {
            return try SyncResponse(decoding: body)
        } catch {
            throw SyncTransportError.invalidResponse(error.description)
        }
    }

    /// A data task bridged by hand rather than `URLSession.data(for:)`: on Linux,
    /// cancelling a task inside `data(for:)` while its answer arrives deadlocks
    /// (FoundationNetworking's cancel handler waits on the session's queue synchronously
    /// under the task's status lock). Here the cancel handler only schedules the cancel.
    private func perform(_ request: URLRequest) async throws -> (Data, URLResponse) {
        let holder = DataTaskHolder()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Data, URLResponse), any Error>) in
                let task = session.dataTask(with: request) { data, response, error in
                    if let error {
                        continuation.resume(throwing: error)
                    } else if let response {
                        continuation.resume(returning: (data ?? Data(), response))
                    } else {
                        continuation.resume(throwing: URLError(.badServerResponse))
                    }
                }
                holder.start(task)
            }
        } onCancel: {
            holder.cancel()
        }
    }

    /// The message of an error body `{"error": {"message": ...}}`, or the body as text.
    static func message(from body: [UInt8]) -> String {
        struct ErrorBody: Decodable {
            struct Detail: Decodable { let message: String }
            let error: Detail
        }
        if let decoded = try? JSONDecoder().decode(ErrorBody.self, from: Data(body)) { return decoded.error.message }
        return String(decoding: body.prefix(1_000), as: UTF8.self)
    }
}

/// The data task of one request, cancellable from any thread, before or after it starts.
private final class DataTaskHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var task: URLSessionDataTask?
    private var cancelled = false

    func start(_ task: URLSessionDataTask) {
        let cancelNow = lock.withLock {
            self.task = task
            return cancelled
        }
        task.resume()
        if cancelNow { DispatchQueue.global().async { task.cancel() } }
    }

    func cancel() {
        let task = lock.withLock {
            cancelled = true
            return self.task
        }
        if let task { DispatchQueue.global().async { task.cancel() } }
    }
}
