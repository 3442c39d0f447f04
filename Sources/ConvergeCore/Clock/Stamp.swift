/// The identity of one event: the clock reading and the replica that issued it.
///
/// Stamps are totally ordered, lexicographically by clock then replica, and unique:
/// a replica never issues the same clock reading twice. A stamp is also a *dot* in the
/// causal machinery of ``ORSet`` and ``MVRegister``.
public struct Stamp: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The clock reading.
    public let hlc: HLC
    /// The replica that issued it.
    public let replica: ReplicaID

    /// The stamp of `replica`'s event at `hlc`.
    public init(hlc: HLC, replica: ReplicaID) {
        self.hlc = hlc
        self.replica = replica
    }

    /// The bottom stamp, below every real one (real stamps have `hlc > 0`).
    public static let zero = Stamp(hlc: .zero, replica: .zero)

    public static func < (lhs: Stamp, rhs: Stamp) -> Bool {
        if lhs.hlc != rhs.hlc { return lhs.hlc < rhs.hlc }
        return lhs.replica < rhs.replica
    }

    public var description: String { "\(hlc)@\(replica)" }
}
