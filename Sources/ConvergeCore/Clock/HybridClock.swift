/// A hybrid logical clock: physical time where it can, a counter where it must.
///
/// The core never reads the system clock; callers pass physical time in, so that the
/// simulator can drive virtual time and the proofs can reason about the same functions.
///
/// With the packed layout of ``HLC`` the rules of Kulkarni et al. (Fig. 5) have a closed
/// form: a local event gives `max(latest + 1, pt << 16)` and a receive gives
/// `max(max(latest, remote) + 1, pt << 16)`. Adding one to the packed value increments the
/// counter and, when the counter is full, rolls into the next millisecond.
public struct HybridClock: Sendable, Hashable, Codable {
    /// The largest reading issued or received so far: the clock's high-water mark.
    public private(set) var latest: HLC

    /// A clock whose high-water mark is `latest`.
    public init(latest: HLC = .zero) {
        self.latest = latest
    }

    /// A local event: returns a reading strictly greater than every earlier one.
    ///
    /// - Complexity: O(1)
    @discardableResult
    public mutating func tick(physicalMilliseconds: UInt64) -> HLC {
        let physical = min(physicalMilliseconds, HLC.millisecondsMax) << 16
        latest = HLC(rawValue: max(latest.rawValue + 1, physical))
        return latest
    }

    /// Receipt of a remote reading: the clock moves above both its own and the remote one.
    ///
    /// Callers check ``isTooFarAhead(_:physicalMilliseconds:maxDriftMilliseconds:)`` first:
    /// a far-future remote reading would drag this replica's clock, and every stamp it issues
    /// later, into the future.
    @discardableResult
    public mutating func receive(_ remote: HLC, physicalMilliseconds: UInt64) -> HLC {
        let physical = min(physicalMilliseconds, HLC.millisecondsMax) << 16
        latest = HLC(rawValue: max(max(latest.rawValue, remote.rawValue) + 1, physical))
        return latest
    }

    /// Moves the high-water mark up to `floor` without counting an event (used on open, to
    /// start above every stamp already stored).
    public mutating func raise(to floor: HLC) {
        latest = max(latest, floor)
    }

    /// Whether `remote` is more than `maxDriftMilliseconds` ahead of local physical time.
    ///
    /// Such a reading must not advance the clock: its change is quarantined until local
    /// time catches up.
    public static func isTooFarAhead(
        _ remote: HLC, physicalMilliseconds: UInt64, maxDriftMilliseconds: UInt64
    ) -> Bool {
        let (limit, overflow) = physicalMilliseconds.addingReportingOverflow(maxDriftMilliseconds)
        return !overflow && remote.milliseconds > limit
    }

    /// Five minutes, the default drift allowance.
    public static let defaultMaxDriftMilliseconds: UInt64 = 5 * 60 * 1000
}
