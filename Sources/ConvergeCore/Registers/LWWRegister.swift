/// A last-writer-wins register: the value written with the largest stamp.
///
/// Join keeps the larger stamp. Equal stamps mean the same write; should the values
/// differ anyway (only corruption can do that) the larger value in ``Value``'s order wins,
/// so that every replica still picks the same one.
public struct LWWRegister: Sendable, Hashable, Codable {
    /// The value written.
    public var value: Value
    /// The stamp of the write.
    public var stamp: Stamp

    /// The register holding one write: `value` at `stamp`.
    public init(value: Value, stamp: Stamp) {
        self.value = value
        self.stamp = stamp
    }

    /// The join.
    ///
    /// - Complexity: O(1) (O(n) in the value's size on a stamp tie).
    @inlinable
    public func merging(_ other: LWWRegister) -> LWWRegister {
        if stamp != other.stamp { return stamp < other.stamp ? other : self }
        return value < other.value ? other : self
    }

    /// Joins `other` into this register (``merging(_:)`` in place).
    public mutating func merge(_ other: LWWRegister) {
        if stamp < other.stamp || (stamp == other.stamp && value < other.value) { self = other }
    }

    /// Whether joining with `other` meets a stamp tie with different values: corruption,
    /// resolved deterministically but worth reporting.
    public func isCorruptTie(with other: LWWRegister) -> Bool {
        stamp == other.stamp && value != other.value
    }
}
