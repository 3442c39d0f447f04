import ConvergeCore
import Foundation

/// What one pushed changeset may carry, and the typed refusals when it carries more.
///
/// Everything here runs before storage is touched: a refused request costs the server
/// the decoding of its body up to the limit it exceeded, and changes nothing.
extension ServerConfiguration {
    /// The bounds the wire decoder enforces as it reads a pushed changeset.
    public var wireLimits: WireDecoder.Limits {
        WireDecoder.Limits(
            maxReplicas: maxReplicasPerRequest, maxRecords: maxRecordsPerRequest, maxFields: maxFieldsPerRequest,
            maxKeyBytes: maxKeyBytes, maxValueBytes: maxValueBytes, maxDotsPerRecord: maxDotsPerRecord,
            maxNameBytes: maxNameBytes)
    }

    /// The latest stamp a push may carry now, in milliseconds since 1970: the server's
    /// physical time plus ``maxClockAheadMilliseconds`` (never less than the store's drift
    /// limit, so that quarantine keeps handling moderately fast clocks), and never later
    /// than ``clockCeilingMilliseconds``.
    func latestPlausibleMilliseconds() -> UInt64 {
        let ahead = max(maxClockAheadMilliseconds, store.maxDriftMilliseconds)
        let (sum, overflow) = store.physicalTime().addingReportingOverflow(ahead)
        return min(overflow ? .max : sum, clockCeilingMilliseconds)
    }

    /// Refuses (400 `implausible_clock`) a changeset with a stamp that no real clock could
    /// have issued yet. Quarantine would hold such a change for years, and releasing it
    /// would carry the server's clock, and every replica's after it, to the stamp's time.
    ///
    /// - Complexity: O(n) in the changeset's size.
    func checkPlausibleClocks(_ changeset: Changeset) throws(ServiceError) {
        let latest = latestPlausibleMilliseconds()
        let highest = changeset.maxHLC
        guard highest.milliseconds <= latest else {
            throw ServiceError(
                status: 400, code: "implausible_clock",
                message: "the push carries a stamp at \(highest.milliseconds) ms since 1970, later than any real clock can read now "
                    + "(the server's time plus maxClockAheadMilliseconds \(max(maxClockAheadMilliseconds, store.maxDriftMilliseconds)), "
                    + "at most clockCeilingMilliseconds \(clockCeilingMilliseconds): \(latest))")
        }
    }
}

extension ServiceError {
    /// The refusal of a changeset that exceeded one of the decoder's limits: 413 for the
    /// sizes and counts, named by the configuration property (and server flag) to raise.
    static func limitExceeded(_ limit: WireDecoder.Limit, bound: Int, actual: Int) -> ServiceError {
        let (code, property, what): (String, String, String)
        switch limit {
        case .replicas: (code, property, what) = ("too_many_replicas", "maxReplicasPerRequest", "replicas")
        case .records: (code, property, what) = ("too_many_records", "maxRecordsPerRequest", "records")
        case .fields: (code, property, what) = ("too_many_fields", "maxFieldsPerRequest", "field states")
        case .keyBytes: (code, property, what) = ("key_too_large", "maxKeyBytes", "bytes in a record key")
        case .valueBytes: (code, property, what) = ("value_too_large", "maxValueBytes", "bytes in a value")
        case .dotsPerRecord: (code, property, what) = ("too_many_dots", "maxDotsPerRecord", "add-tags in a record")
        case .nameBytes: (code, property, what) = ("name_too_large", "maxNameBytes", "bytes in a table or column name")
        }
        return ServiceError(status: 413, code: code, message: "the changeset carries at least \(actual) \(what), beyond \(property) \(bound)")
    }
}
