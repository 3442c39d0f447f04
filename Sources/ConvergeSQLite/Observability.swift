import Logging
import Metrics

/// The store's metrics, through swift-metrics (the app bootstraps a backend as usual:
/// Prometheus, StatsD, OpenTelemetry…; without one they cost next to nothing). Handles
/// are made at each use, so a backend bootstrapped after the first apply still sees them.
///
/// - `converge_apply_seconds` (timer): one apply's transaction, planning and writing.
/// - `converge_applied_records_total`, `converge_quarantined_records_total`,
///   `converge_released_records_total` (counters): what applies did.
/// - `converge_identity_resets_total` (counter): copied or rewound files detected.
/// - `converge_fold_seconds` (timer), `converge_folded_records_total` (counter): local
///   writes turned into metadata.
/// - `converge_collected_records_total` (counter): deleted records dropped by tombstone
///   collection.
enum StoreMetrics {
    static var applySeconds: Timer { Timer(label: "converge_apply_seconds") }
    static var appliedRecords: Counter { Counter(label: "converge_applied_records_total") }
    static var quarantinedRecords: Counter { Counter(label: "converge_quarantined_records_total") }
    static var releasedRecords: Counter { Counter(label: "converge_released_records_total") }
    static var identityResets: Counter { Counter(label: "converge_identity_resets_total") }
    static var foldSeconds: Timer { Timer(label: "converge_fold_seconds") }
    static var foldedRecords: Counter { Counter(label: "converge_folded_records_total") }
    static var collectedRecords: Counter { Counter(label: "converge_collected_records_total") }
}

extension ReplicatedDatabase {
    /// Where the store logs (label `converge.sqlite`): identity resets at notice, quarantined
    /// changes and refused changesets at info, applies at debug.
    static let logger = Logger(label: "converge.sqlite")
}
