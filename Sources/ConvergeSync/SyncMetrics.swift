import Logging
import Metrics

/// The engine's metrics, through swift-metrics (the app bootstraps the backend). Handles
/// are made at each use, so a backend bootstrapped after the first round still sees them.
///
/// - `converge_sync_rounds_total` (counter, dimension `result`: `ok`, `offline`,
///   `unauthorized`, `forbidden`, `rejected`, `server_error`, `invalid_response`, `local`,
///   `cancelled`), `converge_sync_round_seconds` (timer);
/// - `converge_sync_pushed_records_total`, `converge_sync_pulled_records_total`,
///   `converge_sync_pushed_bytes_total`, `converge_sync_pulled_bytes_total`,
///   `converge_sync_retries_total`, `converge_sync_rejections_total` (counters);
/// - `converge_sync_pending_changes`, `converge_sync_conflicts`, `converge_sync_quarantined`,
///   `converge_sync_held_fields`
///   (gauges, refreshed with the status).
enum SyncMetrics {
    static var roundSeconds: Timer { Timer(label: "converge_sync_round_seconds") }
    static var pushedRecords: Counter { Counter(label: "converge_sync_pushed_records_total") }
    static var pulledRecords: Counter { Counter(label: "converge_sync_pulled_records_total") }
    static var pushedBytes: Counter { Counter(label: "converge_sync_pushed_bytes_total") }
    static var pulledBytes: Counter { Counter(label: "converge_sync_pulled_bytes_total") }
    static var retries: Counter { Counter(label: "converge_sync_retries_total") }
    static var rejections: Counter { Counter(label: "converge_sync_rejections_total") }
    static var pendingChanges: Gauge { Gauge(label: "converge_sync_pending_changes") }
    static var conflicts: Gauge { Gauge(label: "converge_sync_conflicts") }
    static var quarantined: Gauge { Gauge(label: "converge_sync_quarantined") }
    static var heldFields: Gauge { Gauge(label: "converge_sync_held_fields") }

    static func round(_ result: String) -> Counter {
        Counter(label: "converge_sync_rounds_total", dimensions: [("result", result)])
    }

    static func record(_ report: SyncReport, result: String) {
        round(result).increment()
        roundSeconds.record(duration: report.duration)
        if report.pushedRecords > 0 { pushedRecords.increment(by: report.pushedRecords) }
        if report.pulledRecords > 0 { pulledRecords.increment(by: report.pulledRecords) }
        if report.pushedBytes > 0 { pushedBytes.increment(by: report.pushedBytes) }
        if report.pulledBytes > 0 { pulledBytes.increment(by: report.pulledBytes) }
        if report.retries > 0 { retries.increment(by: report.retries) }
        if !report.rejections.isEmpty { rejections.increment(by: report.rejections.count) }
    }

    static func status(_ status: SyncStatus) {
        pendingChanges.record(status.pendingChanges)
        conflicts.record(status.conflicts)
        quarantined.record(status.quarantined)
        heldFields.record(status.heldFields)
    }
}

extension SyncError {
    /// The `result` dimension of a failed round.
    var metricLabel: String {
        switch self {
        case .unauthorized: return "unauthorized"
        case .forbidden: return "forbidden"
        case .rejected: return "rejected"
        case .offline: return "offline"
        case .serverError: return "server_error"
        case .invalidResponse: return "invalid_response"
        case .local: return "local"
        case .cancelled: return "cancelled"
        case .timedOut: return "timed_out"
        case .resetRequired: return "reset_required"
        }
    }
}
