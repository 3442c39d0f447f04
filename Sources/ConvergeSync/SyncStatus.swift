import Foundation

/// Why a sync round failed.
public enum SyncError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server refused the token, even after one refresh (HTTP 401).
    case unauthorized(String)
    /// The server refused what was pushed: a write stamped by another replica, or a
    /// device bound to another replica (HTTP 403).
    case forbidden(String)
    /// Any other 4xx answer (for example a changeset the server could not decode: 400,
    /// or a push larger than the server accepts: 413). Retrying would not help.
    case rejected(status: Int, message: String)
    /// The server could not be reached (network errors, timeouts) after every retry.
    case offline(String)
    /// The server kept failing (5xx, 408, 429) after every retry.
    case serverError(status: Int, message: String)
    /// The server's answer did not make sense.
    case invalidResponse(String)
    /// The local store failed.
    case local(String)
    /// The round was cancelled.
    case cancelled
    /// A wait (``SyncEngine/waitUntilUploaded(timeout:)``) ran out of time; the last round's
    /// error, if any, is in the message.
    case timedOut(String)
    /// The server retired this device (410 `reset_required`: it was away longer than the
    /// server's retention window, or an admin retired it). The engine resets and resyncs
    /// by itself (``SyncStatus/lastReset``); this is seen only if that reset fails.
    case resetRequired(String)

    public var description: String {
        switch self {
        case .unauthorized(let message): return "unauthorized: \(message)"
        case .forbidden(let message): return "forbidden: \(message)"
        case .rejected(let status, let message): return "rejected (\(status)): \(message)"
        case .offline(let message): return "offline: \(message)"
        case .serverError(let status, let message): return "server error (\(status)): \(message)"
        case .invalidResponse(let message): return "invalid response: \(message)"
        case .local(let message): return "local store error: \(message)"
        case .cancelled: return "cancelled"
        case .timedOut(let message): return "timed out: \(message)"
        case .resetRequired(let message): return "reset required: \(message)"
        }
    }
}

/// What an app shows about synchronization.
public struct SyncStatus: Sendable, Hashable {
    /// What the engine is doing now.
    public enum Phase: Sendable, Hashable {
        /// No round is running, and the last one (if any) succeeded.
        case idle
        /// A round is running; records pushed and pulled so far.
        case syncing(pushed: Int, pulled: Int)
        /// The server could not be reached (a round is retrying, or gave up).
        case offline
        /// The last round failed (see ``SyncStatus/lastError``).
        case error
    }

    /// What the engine is doing now; starts `.idle`.
    public var phase: Phase = .idle
    /// Local records changed since the server last acknowledged (the pending uploads).
    public var pendingChanges = 0
    /// The local feed position the server has acknowledged: every local change at or below
    /// it is on the server (see ``SyncEngine/waitUntilUploaded(timeout:)``).
    public var acknowledgedPosition: UInt64 = 0
    /// When a round last completed.
    public var lastSuccess: Date?
    /// The error of the last round, `nil` once a round succeeds.
    public var lastError: SyncError?
    /// Open conflicts: critical fields with concurrent values, and unique-index clashes.
    public var conflicts = 0
    /// Remote changes held back because they were stamped too far in the future.
    public var quarantined = 0
    /// Changes of this device the server refused and undid, kept until dismissed (see
    /// ``SyncEngine/rejections()`` for their reasons).
    public var rejected = 0
    /// Fields of encrypted columns received but not readable here (sealed with a key this
    /// device lacks, or damaged): held, not dropped, and applied when a key opens them
    /// (``SyncEngine/heldFields()``, ``SyncEngine/setFieldKeys(_:)``).
    public var heldFields = 0
    /// The last time the server retired this device and the engine reset it: it took a new
    /// identity, pulled a fresh copy of the data, and wrote its user's unsent changes again
    /// as new writes. Tell the user when it happens (nothing they typed was lost, but a
    /// record someone else deleted long ago may reappear if they had edited it).
    public var lastReset: SyncReset?

    /// The status before any round: idle, nothing pending, no error.
    public init() {}
}

/// What a reset for resync did (DESIGN §9).
public struct SyncReset: Sendable, Hashable {
    /// When the reset happened.
    public var date: Date
    /// The records whose unsent local changes were written again as new writes.
    public var reappliedRecords: Int

    /// Describes a reset at `date`.
    public init(date: Date, reappliedRecords: Int) {
        self.date = date
        self.reappliedRecords = reappliedRecords
    }
}

/// What one round did.
public struct SyncReport: Sendable, Hashable {
    /// Requests sent (retries not counted).
    public var requests = 0
    /// Records pushed to the server.
    public var pushedRecords = 0
    /// Bytes of changesets pushed.
    public var pushedBytes = 0
    /// Records pulled from the server.
    public var pulledRecords = 0
    /// Bytes of changesets pulled.
    public var pulledBytes = 0
    /// Pulled records that changed the local store.
    public var appliedRecords = 0
    /// Pulled records quarantined (stamped too far in the future).
    public var quarantinedRecords = 0
    /// This device's changes the server refused and undid, reported in this round.
    public var rejections: [SyncRejection] = []
    /// Requests retried after a transient failure.
    public var retries = 0
    /// Deleted records dropped because the server collected them (their delete was
    /// causally stable).
    public var collectedRecords = 0
    /// Fields of encrypted columns pulled this round that did not open, and were held.
    public var heldFields = 0
    /// Held fields that opened this round (their key had arrived) and were applied.
    public var releasedFields = 0
    /// Set when the server had retired this device and the round reset it (see
    /// ``SyncStatus/lastReset``).
    public var reset: SyncReset?
    /// How long the round took.
    public var duration: Duration = .zero

    /// An empty report: nothing done yet.
    public init() {}
}
