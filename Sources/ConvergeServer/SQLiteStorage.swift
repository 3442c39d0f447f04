import ConvergeCore
import ConvergeSQLite
import Foundation

/// A push would create a namespace beyond the server's bound (HTTP 403).
public struct NamespaceLimitExceeded: Error, Sendable, Hashable, CustomStringConvertible {
    /// The namespace that could not be created.
    public let namespace: String
    /// The server's bound on namespaces, already reached.
    public let maxNamespaces: Int
    /// The error for `namespace` on a server bounded to `maxNamespaces`.
    public init(namespace: String, maxNamespaces: Int) {
        self.namespace = namespace
        self.maxNamespaces = maxNamespaces
    }
    public var description: String { "namespace \(namespace) cannot be created: the server holds its maximum of \(maxNamespaces) namespaces (maxNamespaces)" }
}

/// The embedded storage: `<directory>/<namespace>.sqlite`, each a `ReplicatedDatabase`
/// on a GRDB `DatabasePool`.
///
/// Open stores are cached, at most `maxOpenNamespaces` of them; the least recently used
/// beyond that, and any unused for `idleTimeout`, are dropped from the cache. A dropped
/// store closes its files when its last user lets go of it (GRDB closes a pool when it is
/// released), so a running operation never loses its database. Until then it stays
/// reachable through a weak reference, and a request for its namespace gets that same
/// store back: one namespace never has two open stores, whose pushes would not be
/// serialized with each other.
public actor SQLiteStorage: NamespaceStorage {
    /// Where the namespace files live, one `<namespace>.sqlite` each.
    public nonisolated let directory: URL
    /// The tables every namespace replicates.
    public nonisolated let schema: ServerSchema
    /// The configuration of each namespace's `ReplicatedDatabase` (quotas and limits).
    public nonisolated let configuration: ReplicatedDatabase.Configuration
    /// The most stores kept open in the cache (at least 1); the least recently used go first.
    public nonisolated let maxOpenNamespaces: Int
    /// How long an unused store stays in the cache (at least 1 ms).
    public nonisolated let idleTimeout: Duration
    /// The most namespaces this server creates; nil for no bound. Beyond it, a push to a new namespace throws `NamespaceLimitExceeded`.
    public nonisolated let maxNamespaces: Int?

    private enum Slot {
        case opening(Task<SQLiteNamespaceStore, any Error>)
        case open(SQLiteNamespaceStore)
    }

    private final class WeakStore {
        weak var store: SQLiteNamespaceStore?
        init(_ store: SQLiteNamespaceStore) { self.store = store }
    }

    private let clock = ContinuousClock()
    private var slots: [String: Slot] = [:]
    private var lastUsed: [String: ContinuousClock.Instant] = [:]
    /// Stores dropped from the cache that a request may still be using.
    private var released: [String: WeakStore] = [:]
    /// Namespaces on disk, counted once at the first creation (only with `maxNamespaces`).
    private var namespaceCount: Int?
    private var sweeper: Task<Void, Never>?

    /// Stores dropped from the cache so far (LRU or idle), for tests and metrics.
    public private(set) var releasedStoreCount = 0

    /// Creates `directory` if needed. Defaults keep 256 stores open, each for 5 minutes unused, with no bound on namespaces.
    public init(
        directory: URL, schema: ServerSchema = ServerSchema(), store configuration: ReplicatedDatabase.Configuration = .init(),
        maxOpenNamespaces: Int = 256, idleTimeout: Duration = .seconds(300), maxNamespaces: Int? = nil
    ) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.schema = schema
        self.configuration = configuration
        self.maxOpenNamespaces = max(1, maxOpenNamespaces)
        self.idleTimeout = max(.milliseconds(1), idleTimeout)
        self.maxNamespaces = maxNamespaces
    }

    deinit { sweeper?.cancel() }

    public func store(for namespace: String) async throws -> any NamespaceStore {
        try await cachedStore(for: namespace, create: true)!
    }

    public func existingStore(for namespace: String) async throws -> (any NamespaceStore)? {
        try await cachedStore(for: namespace, create: false)
    }

    /// Namespaces whose store the cache holds (open or opening).
    public var cachedNamespaces: Set<String> { Set(slots.keys) }

    /// Drops from the cache every store unused for `idleTimeout` (the background sweep
    /// does this periodically too).
    public func releaseIdleStores() {
        let now = clock.now
        for (namespace, used) in lastUsed where now - used >= idleTimeout { release(namespace) }
        released = released.filter { $0.value.store != nil }
    }

    private func path(of namespace: String) -> String {
        directory.appendingPathComponent("\(namespace).sqlite").path
    }

    private func cachedStore(for namespace: String, create: Bool) async throws -> SQLiteNamespaceStore? {
        precondition(Namespace.isValid(namespace))
        lastUsed[namespace] = clock.now
        switch slots[namespace] {
        case .open(let store):
            return store
        case .opening(let task):
            return try await task.value
        case nil:
            break
        }
        if let store = released[namespace]?.store {
            released[namespace] = nil
            slots[namespace] = .open(store)
            evictBeyondBound()
            return store
        }
        let path = path(of: namespace)
        let exists = FileManager.default.fileExists(atPath: path)
        if !exists {
            guard create else {
                lastUsed[namespace] = nil
                return nil
            }
            if let maxNamespaces {
                let count = try namespaceCount ?? countNamespacesOnDisk()
                guard count < maxNamespaces else {
                    lastUsed[namespace] = nil
                    throw NamespaceLimitExceeded(namespace: namespace, maxNamespaces: maxNamespaces)
                }
                namespaceCount = count + 1
            }
        }
        let schema = self.schema
        let configuration = self.configuration
        let opening = Task { try await SQLiteNamespaceStore.open(path: path, schema: schema, configuration: configuration) }
        slots[namespace] = .opening(opening)
        startSweeperIfNeeded()
        do {
            let store = try await opening.value
            // Requests that came meanwhile waited on this opening; nothing else replaces
            // or releases a slot that is still opening.
            slots[namespace] = .open(store)
            evictBeyondBound()
            return store
        } catch {
            if case .opening = slots[namespace] { slots[namespace] = nil }
            lastUsed[namespace] = nil
            if !exists, namespaceCount != nil, !FileManager.default.fileExists(atPath: path) { namespaceCount? -= 1 }
            throw error
        }
    }

    private func countNamespacesOnDisk() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sqlite") }.count
    }

    /// Drops the least recently used open stores while more than `maxOpenNamespaces` are
    /// cached (stores still opening are not counted out: they are about to be used).
    private func evictBeyondBound() {
        guard slots.count > maxOpenNamespaces else { return }
        let candidates = slots.compactMap { namespace, slot -> (String, ContinuousClock.Instant)? in
            guard case .open = slot else { return nil }
            return (namespace, lastUsed[namespace] ?? clock.now)
        }.sorted { $0.1 < $1.1 }
        for (namespace, _) in candidates.prefix(slots.count - maxOpenNamespaces) { release(namespace) }
    }

    private func release(_ namespace: String) {
        guard case .open(let store) = slots[namespace] else { return }
        slots[namespace] = nil
        lastUsed[namespace] = nil
        released[namespace] = WeakStore(store)
        releasedStoreCount += 1
    }

    private func startSweeperIfNeeded() {
        guard sweeper == nil else { return }
        let interval = min(idleTimeout / 2, .seconds(30))
        sweeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                await self.releaseIdleStores()
            }
        }
    }
}
