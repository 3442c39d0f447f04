import ConvergeCore

/// The fixed world the fuzzers play in: two tables (one per delete policy, each with a
/// critical column), three replicas, a small key space so that writes collide, and values
/// that cover every storage class and the codec's special forms.
public enum FuzzFixtures {
    public static let notes = TableSchema(
        name: "notes", primaryKey: "id", columns: ["title", "body", "amount"],
        policies: ["amount": .critical], deletePolicy: .updateWins)
    public static let items = TableSchema(
        name: "items", primaryKey: "id", columns: ["name", "qty", "status"],
        policies: ["qty": .critical], deletePolicy: .deleteWins)
    public static let schemas = [notes, items]

    public static let replicaCount = 3

    /// Version-4-shaped identities, distinct and in a known order.
    public static func replicaID(_ index: Int) -> ReplicaID {
        ReplicaID(high: 0x4000 | UInt64(index + 1) << 20, low: 0x8000_0000_0000_0000 | UInt64(index))
    }

    public static func makeReplicas() -> [Replica] {
        (0..<replicaCount).map { index in
            var replica = Replica(id: replicaID(index))
            for schema in schemas { replica.replicate(schema) }
            return replica
        }
    }

    public static let keys: [Value] = [.text("k0"), .text("k1"), .integer(2)]

    /// Values a write may carry. No NaN: SQLite stores it as NULL, and so does the codec.
    public static let values: [Value] = [
        .null, .integer(0), .integer(1), .integer(-1), .integer(.max), .real(0.5), .real(-0.0), .real(.infinity),
        .real(0.1), .text("a"), .text("b"), .text("é"), .text("e\u{301}"),
        .text("5f0c8e1a-3b2d-4c6e-8f90-123456789abc"), .text("5F0C8E1A-3B2D-4C6E-8F90-123456789ABC"),
        .blob([0, 255]),
    ]

    /// Physical time where every replica starts (milliseconds), well above zero.
    public static let startMilliseconds: UInt64 = 1_000_000_000
    /// Physical times stay below this, so that every HLC stays valid.
    public static let physicalMillisecondsLimit: UInt64 = 1 << 40
}
