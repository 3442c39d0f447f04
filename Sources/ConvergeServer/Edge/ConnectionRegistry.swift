import Foundation
import NIOCore

/// The server's open connections, at most `maxConnections` of them.
///
/// A connection beyond the limit takes the place of an open one that waits for a request
/// head: first one being closed after an error answer, then the one that has waited longest
/// for its first head (a silent or slow client), then the kept-alive connection idle the
/// longest. An attacker who opens many connections and says nothing only displaces his
/// own, while honest clients, which send their request at once, get in, and their
/// kept-alive connections, which have served a request already, are the last to go.
/// Only when every connection has a request in progress is the newcomer refused.
///
/// Connections live on several event loops; a lock guards the table.
final class ConnectionRegistry: @unchecked Sendable {
    /// What becomes of a new connection.
    enum Admission {
        /// It is served; `evicted`, when not nil, is to be closed to make room.
        case admitted(ID, evicted: (any Channel)?)
        /// It gets 503 and is closed; with `linger`, after the client's request has been
        /// read and dropped (closing with unread bytes resets the connection, and the reset
        /// can destroy the answer before the client reads it).
        case refused(linger: Bool)
    }

    typealias ID = UInt64

    private struct Entry {
        let channel: any Channel
        /// Since when it waits for a request head; nil while a request is in progress.
        var waitingSince: NIODeadline?
        /// It has served a request (and so speaks HTTP).
        var served = false

        /// Which waiting connection gives way first: the least.
        var evictionOrder: (served: Bool, since: NIODeadline)? {
            waitingSince.map { (served, $0) }
        }
    }

    let maxConnections: Int
    /// Refused connections that linger at once, at most: each holds a descriptor for a
    /// moment, and a flood of them must not exhaust the descriptors either.
    let maxLingering: Int

    private let lock = NSLock()
    private var entries: [ID: Entry] = [:]
    private var nextID: ID = 0
    private var lingering = 0

    init(maxConnections: Int) {
        precondition(maxConnections >= 1)
        self.maxConnections = maxConnections
        maxLingering = max(8, maxConnections / 8)
    }

    /// Admits `channel`, which is waiting for its first request head.
    ///
    /// - Complexity: O(1) below the limit; O(`maxConnections`) at it (the scan for the
    ///   connection that has waited longest).
    func admit(_ channel: any Channel, now: NIODeadline = .now()) -> Admission {
        lock.withLock {
            var evicted: (any Channel)?
            if entries.count >= maxConnections {
                var oldest: (id: ID, order: (served: Bool, since: NIODeadline))?
                for (id, entry) in entries {
                    guard let order = entry.evictionOrder else { continue }
                    if oldest.map({ Self.precedes(order, $0.order) }) ?? true { oldest = (id, order) }
                }
                guard let oldest else {
                    let linger = lingering < maxLingering
                    if linger { lingering += 1 }
                    return .refused(linger: linger)
                }
                evicted = entries.removeValue(forKey: oldest.id)?.channel
            }
            nextID += 1
            entries[nextID] = Entry(channel: channel, waitingSince: now)
            assert(entries.count <= maxConnections)
            return .admitted(nextID, evicted: evicted)
        }
    }

    private static func precedes(_ a: (served: Bool, since: NIODeadline), _ b: (served: Bool, since: NIODeadline)) -> Bool {
        a.served != b.served ? !a.served : a.since < b.since
    }

    /// A request head of `id` has arrived: it is not evicted while the request is served.
    func requestStarted(_ id: ID) {
        lock.withLock {
            entries[id]?.waitingSince = nil
            entries[id]?.served = true
        }
    }

    /// `id` has answered every request it received and waits for the next head.
    func requestsFinished(_ id: ID, now: NIODeadline = .now()) {
        lock.withLock { entries[id]?.waitingSince = now }
    }

    /// `id` is closing after an error answer: it is the first to give way.
    func closing(_ id: ID) {
        lock.withLock {
            entries[id]?.waitingSince = .distantPast
            entries[id]?.served = false
        }
    }

    func remove(_ id: ID) {
        lock.withLock { _ = entries.removeValue(forKey: id) }
    }

    /// A lingering refused connection has closed.
    func lingerEnded() {
        lock.withLock {
            assert(lingering > 0)
            lingering -= 1
        }
    }

    // MARK: Open files

    /// `configured`, capped so that the connections leave a quarter of the process's open
    /// files (at least 64) to everything else: databases, the listening socket, the event
    /// loops. Accepting while out of descriptors fails, and SwiftNIO then retries the accept
    /// at once, over and over, spinning a core until a descriptor frees up.
    static func effectiveMaxConnections(configured: Int, openFilesLimit: Int?) -> Int {
        guard let openFilesLimit else { return configured }
        return max(1, min(configured, openFilesLimit - max(64, openFilesLimit / 4)))
    }

    /// The process's current (soft) limit of open files, nil when unlimited or unknown.
    static func openFilesLimit() -> Int? {
        var limit = rlimit()
        #if os(Linux)
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        #else
        guard getrlimit(RLIMIT_NOFILE, &limit) == 0 else { return nil }
        #endif
        // RLIM_INFINITY is all ones on Linux and Int64.max on Darwin.
        guard limit.rlim_cur < rlim_t(Int.max) else { return nil }
        return Int(limit.rlim_cur)
    }
}

extension ConvergeHTTPServer {
    /// Raises this process's soft limit of open files to its hard limit (a server's
    /// connections each hold a descriptor, and the usual soft limit of 1,024 is low for one)
    /// and returns the new soft limit. For executables; a library embedding the server
    /// leaves process-wide limits to its host.
    @discardableResult
    public static func raiseOpenFilesLimit() -> Int? {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        var target = limit.rlim_max
        #if canImport(Darwin)
        // Darwin refuses a soft limit above OPEN_MAX, whatever the hard limit says.
        target = min(target, rlim_t(OPEN_MAX))
        #endif
        if target > limit.rlim_cur {
            limit.rlim_cur = target
            _ = setrlimit(resource, &limit)
        }
        return ConnectionRegistry.openFilesLimit()
    }
}
