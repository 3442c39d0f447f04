import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A transport that can also tell when the server has new changes (realtime), so the
/// engine pulls at once. ``SyncEngine/start()`` listens when its transport conforms.
public protocol SyncNotificationSource: Sendable {
    /// Yields each time the server announces new changes; finishes or throws when the
    /// connection ends (the engine reconnects with backoff).
    func notifications(token: String?) -> AsyncThrowingStream<Void, any Error>
}

extension HTTPSyncTransport: SyncNotificationSource {
    /// `GET <baseURL>/v1/events`, a server-sent event stream, read as it arrives.
    ///
    /// Not the server's WebSocket (`/v1/ws`): on Linux, FoundationNetworking's
    /// `URLSessionWebSocketTask` needs a libcurl built with WebSocket support, which older
    /// ones (Debian 12's 7.88, for one) lack: the task fails with "WebSockets not supported
    /// by libcurl". Server-sent events work with URLSession everywhere.
    public func notifications(token: String?) -> AsyncThrowingStream<Void, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Void.self)
        var request = URLRequest(url: baseURL.appendingPathComponent("v1").appendingPathComponent("events"))
        request.setValue("text/event-stream", forHTTPHeaderField: "Accept")
        request.timeoutInterval = 3_600  // the engine reconnects when it ends
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let reader = EventStreamReader(continuation: continuation)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 120  // heartbeats arrive well within this
        let session = URLSession(configuration: configuration, delegate: reader, delegateQueue: nil)
        let task = session.dataTask(with: request)
        continuation.onTermination = { _ in
            // Scheduled, never waited for: see `perform(_:)` on cancelling in FoundationNetworking.
            DispatchQueue.global().async {
                task.cancel()
                session.invalidateAndCancel()
            }
        }
        task.resume()
        return stream
    }
}

/// Parses `text/event-stream` bytes and yields on each `changes` event.
private final class EventStreamReader: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<Void, any Error>.Continuation
    private let lock = NSLock()
    private var pending = [UInt8]()
    private var event = ""

    init(continuation: AsyncThrowingStream<Void, any Error>.Continuation) {
        self.continuation = continuation
    }

    func urlSession(
        _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
    ) {
        guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            continuation.finish(throwing: SyncTransportError.status(status, "event stream refused"))
            completionHandler(.cancel)
            return
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let events = lock.withLock { () -> Int in
            pending.append(contentsOf: data)
            var count = 0
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                var line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if line.hasSuffix("\r") { line.removeLast() }
                if line.isEmpty {
                    if event == "changes" { count += 1 }
                    event = ""
                } else if line.hasPrefix("event:") {
                    event = line.dropFirst("event:".count).trimmingCharacters(in: .whitespaces)
                }
            }
            return count
        }
        for _ in 0..<events { continuation.yield() }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        if let error { continuation.finish(throwing: SyncTransportError.network("\(error)")) } else { continuation.finish() }
        session.finishTasksAndInvalidate()
    }
}
