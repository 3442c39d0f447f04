/// Every record a replica holds, with local sequence numbers that order its change feed.
///
/// This is the in-memory form of what `ConvergeSQLite` keeps in its metadata tables: the
/// simulator's core replicas, the fuzzers and the tests use it. Records of tables the
/// replica does not know are held all the same, so they are forwarded, not dropped.
public struct ReplicaState: Sendable {
    struct Entry: Sendable {
        /// The state and the positions its parts last changed at, kept as every store keeps
        /// them (one ``RecordEntry/update(to:at:)`` and one ``RecordEntry/delta(after:)``).
        var record: RecordEntry
        /// The local sequence number at which the record last changed.
        var sequence: UInt64

        static let empty = Entry(record: .empty, sequence: 0)

        var state: RecordState { record.state }
        var membershipSequence: UInt64 { record.membershipSequence }
        var fieldSequences: ColumnMap<UInt64> { record.fieldSequences }
    }

    private(set) var records: [RecordAddress: Entry] = [:]
    /// Addresses in the order they changed; an element is stale when its record changed
    /// again later (then its sequence is not the record's).
    private var feed: [(sequence: UInt64, address: RecordAddress)] = []
    private var staleFeedCount = 0
    /// The last local sequence number taken.
    public private(set) var sequence: UInt64 = 0

    /// An empty state: no records, sequence 0.
    public init() {}

    /// The number of records held, deleted ones included.
    public var recordCount: Int { records.count }

    /// The merge state of the record at `address`, if held.
    public func state(of address: RecordAddress) -> RecordState? { records[address]?.state }

    /// All records, sorted by address.
    public var allRecords: [(address: RecordAddress, state: RecordState)] {
        records.map { ($0.key, $0.value.state) }.sorted { $0.address < $1.address }
    }

    /// Joins `delta` into the record at `address`; returns whether anything changed.
    /// A change takes a new local sequence number, for the membership and for each field
    /// that changed, so this replica relays what it received.
    @discardableResult
    public mutating func merge(_ delta: RecordState, into address: RecordAddress) -> Bool {
        var entry = records[address] ?? .empty
        let merged = entry.state.merging(delta)
        guard merged != entry.state else { return false }
        commit(entry: &entry, changedTo: merged, at: address)
        return true
    }

    private mutating func commit(entry: inout Entry, changedTo state: RecordState, at address: RecordAddress) {
        sequence += 1
        entry.record.update(to: state, at: sequence)
        if entry.sequence != 0 { staleFeedCount += 1 }
        entry.sequence = sequence
        records[address] = entry
        feed.append((sequence, address))
        if staleFeedCount > 1024 && staleFeedCount > feed.count / 2 { compactFeed() }
    }

    /// Stores a record's state after a local mutation (which may reuse the transaction's
    /// stamp, so it cannot go through the join).
    public mutating func replace(_ record: RecordState, at address: RecordAddress) {
        var entry = records[address] ?? .empty
        commit(entry: &entry, changedTo: record, at: address)
    }

    /// Applies a changeset: the join of each delta. Returns how many records changed.
    @discardableResult
    public mutating func apply(_ changeset: Changeset) -> Int {
        var changed = 0
        for delta in changeset.records where merge(delta.state, into: RecordAddress(table: delta.table, key: delta.key)) {
            changed += 1
        }
        return changed
    }

    /// The per-field deltas after `cursor`, at most `limit` records, and where to continue.
    ///
    /// Records are taken in the order they last changed. A page cut by `limit` ends at
    /// `next`, the last record's sequence; continue with the *same* `cursor` and
    /// `after: next`. The cursor stays fixed while paging because a record that changed
    /// again beyond the page may have older parts inside it: they are sent, with the rest
    /// of the record, when the record's turn comes. Once `hasMore` is false, `next` is the
    /// cursor of the following round.
    ///
    /// - Complexity: O(log n + k) for k feed entries read.
    public func changes(since cursor: UInt64, after position: UInt64? = nil, limit: Int = .max)
        -> (changeset: Changeset, next: UInt64, hasMore: Bool)
    {
        let start = max(position ?? cursor, cursor)
        var low = 0, high = feed.count
        while low < high {
            let middle = (low + high) / 2
            if feed[middle].sequence <= start { low = middle + 1 } else { high = middle }
        }
        var result = [RecordDelta]()
        var next = start
        var index = low
        var hasMore = false
        while index < feed.count {
            let (sequence, address) = feed[index]
            index += 1
            guard let entry = records[address], entry.sequence == sequence else { continue }
            if result.count == limit {
                hasMore = true
                break
            }
            next = sequence
            result.append(RecordDelta(table: address.table, key: address.key, state: entry.record.delta(after: cursor)))
        }
        if !hasMore { next = max(next, sequence) }
        return (Changeset(records: result), next, hasMore)
    }

    /// The local sequence number at which the record last changed, if it is held.
    public func sequence(of address: RecordAddress) -> UInt64? { records[address]?.sequence }

    /// Drops the record (tombstone collection, DESIGN §9): it is no longer held, and no feed
    /// page shows it (its feed entry goes stale). Nothing else changes: the sequence does
    /// not move, since dropping a deleted record is not a change anyone must receive.
    public mutating func remove(_ address: RecordAddress) {
        guard records.removeValue(forKey: address) != nil else { return }
        staleFeedCount += 1
        if staleFeedCount > 1024 && staleFeedCount > feed.count / 2 { compactFeed() }
    }

    /// Every record as one changeset (a full-state transfer).
    public var snapshot: Changeset {
        Changeset(records: allRecords.map { RecordDelta(table: $0.address.table, key: $0.address.key, state: $0.state) })
    }

    private mutating func compactFeed() {
        feed.removeAll { records[$0.address]?.sequence != $0.sequence }
        staleFeedCount = 0
    }

    /// Checks every record's state and that no record is ahead of the sequence; throws the
    /// first broken invariant.
    public func checkInvariants() throws(InvariantViolation) {
        for (address, entry) in records {
            try entry.state.checkInvariants()
            guard entry.sequence <= sequence else { throw InvariantViolation("record \(address) ahead of the sequence") }
        }
    }
}
