/// The change to one record: a state of the record lattice, usually partial.
public struct RecordDelta: Sendable, Hashable, Codable {
    /// The record's table.
    public var table: String
    /// The record's primary key.
    public var key: Value
    /// The part of the record's state the delta carries; joining it is the apply.
    public var state: RecordState

    /// A delta of the record at `table` and `key`.
    public init(table: String, key: Value, state: RecordState) {
        self.table = table
        self.key = key
        self.state = state
    }
}

/// What one replica sends another: a list of record deltas.
///
/// Each delta is a state of the same lattice, so applying a changeset is a join: changesets
/// may arrive in any order, twice, or in part, and replicas that applied the same ones hold
/// the same state.
public struct Changeset: Sendable, Hashable, Codable {
    /// The record deltas, in no required order (a record may appear more than once).
    public var records: [RecordDelta]

    /// A changeset of `records` (empty by default).
    public init(records: [RecordDelta] = []) {
        self.records = records
    }

    /// Whether it carries no record.
    public var isEmpty: Bool { records.isEmpty }

    /// The number of field states carried (the unit of the throughput figures).
    public var fieldCount: Int { records.reduce(0) { $0 + $1.state.fields.count } }

    /// The largest clock reading anywhere in the changeset (for the receiver's clock).
    public var maxHLC: HLC { records.reduce(.zero) { max($0, $1.state.maxHLC) } }

    /// The join of two changesets: one delta per record, the join of both sides', sorted
    /// by table then key. Two changesets that a replica would apply to the same effect
    /// have the same normalized form.
    public func merging(_ other: Changeset) -> Changeset {
        var byRecord = [RecordAddress: RecordState]()
        for delta in records + other.records {
            let address = RecordAddress(table: delta.table, key: delta.key)
            byRecord[address] = byRecord[address].map { $0.merging(delta.state) } ?? delta.state
        }
        return Changeset(records: byRecord.sorted { $0.key < $1.key }.map {
            RecordDelta(table: $0.key.table, key: $0.key.key, state: $0.value)
        })
    }

    /// The normalized form (``merging(_:)`` with the empty changeset).
    public var normalized: Changeset { merging(Changeset()) }

    /// Checks every delta's state (see ``RecordState/checkInvariants()``); throws the first
    /// broken invariant.
    public func checkInvariants() throws(InvariantViolation) {
        for delta in records { try delta.state.checkInvariants() }
    }
}

/// A record's address: its table and primary key.
public struct RecordAddress: Sendable, Hashable, Comparable, Codable {
    /// The record's table.
    public var table: String
    /// The record's primary key.
    public var key: Value

    /// The address of the record at `table` and `key`.
    public init(table: String, key: Value) {
        self.table = table
        self.key = key
    }

    public static func < (lhs: RecordAddress, rhs: RecordAddress) -> Bool {
        if lhs.table != rhs.table { return utf8Less(lhs.table, rhs.table) }
        return lhs.key < rhs.key
    }
}
