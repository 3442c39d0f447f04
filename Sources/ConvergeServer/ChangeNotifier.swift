import Foundation

/// Tells the devices listening on a namespace that new changes exist (a notification, not
/// the data): they then pull at once.
public final class ChangeNotifier: @unchecked Sendable {
    /// One notification: the device whose push brought the changes.
    public struct Event: Sendable, Hashable {
        /// The device whose push brought the changes (sent along to listeners).
        public var device: String
        /// A notification of changes pushed by `device`.
        public init(device: String) { self.device = device }
    }

    private let lock = NSLock()
    private var listeners: [String: [UUID: AsyncStream<Event>.Continuation]] = [:]

    /// A notifier with no listeners.
    public init() {}

    /// The notifications of `namespace` from now on, until the stream is dropped.
    public func subscribe(_ namespace: String) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        lock.withLock { listeners[namespace, default: [:]][id] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.lock.withLock { _ = self?.listeners[namespace]?.removeValue(forKey: id) }
        }
        return stream
    }

    /// How many devices listen on `namespace`.
    public func listenerCount(_ namespace: String) -> Int {
        lock.withLock { listeners[namespace]?.count ?? 0 }
    }

    /// Tells the devices listening on `namespace` (storage that relays other instances'
    /// changes calls it too).
    public func publish(_ event: Event, in namespace: String) {
        let targets = lock.withLock { Array(listeners[namespace]?.values ?? [:].values) }
        for continuation in targets { continuation.yield(event) }
    }

    /// Ends every stream (before a shutdown).
    public func finishAll() {
        let all = lock.withLock { listeners.values.flatMap(\.values) }
        for continuation in all { continuation.finish() }
    }
}
