/// A hybrid logical clock reading (Kulkarni et al. 2014), packed in 64 bits:
/// `milliseconds since 1970 << 16 | counter`.
///
/// Packing makes the clock's order the integer order, so comparisons, storage in SQLite
/// (`INTEGER`) and varint encoding all use the raw value directly.
public struct HLC: RawRepresentable, Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// - Precondition: `counter` fits in 16 bits and `milliseconds` in 48.
    public init(milliseconds: UInt64, counter: UInt16 = 0) {
        precondition(milliseconds <= HLC.millisecondsMax, "HLC milliseconds beyond 48 bits")
        self.rawValue = milliseconds << 16 | UInt64(counter)
    }

    /// Physical milliseconds since 1970.
    public var milliseconds: UInt64 { rawValue >> 16 }
    /// The logical counter within one millisecond.
    public var counter: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    /// The clock before any event. No stamp carries it.
    public static let zero = HLC(rawValue: 0)

    /// The largest millisecond value a 48-bit field holds.
    public static let millisecondsMax: UInt64 = (1 << 48) - 1

    /// The latest time Converge accepts from outside (the end of year 9999).
    ///
    /// Anything beyond is refused when decoded, which leaves the clock 28 bits of
    /// headroom so that ticking can never wrap the 64-bit value.
    public static let acceptedMillisecondsMax: UInt64 = 253_402_300_799_999

    public static func < (lhs: HLC, rhs: HLC) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(milliseconds).\(counter)" }
}
