/// Tombstone collection and reset for resync on the in-memory replica (DESIGN §9): the
/// pure-model twin of `ConvergeSQLite`'s `collect` and `resetForResync`, deciding through
/// ``CollectionPlanner`` and ``CapturePlanner`` as the store does.
extension Replica {
    /// Deleted records last changed at or below local sequence `position`, oldest change
    /// first, at most `limit`, none with a change waiting in quarantine: on a hub, what the
    /// frontier allows it to drop (``CollectionPlanner/collectable(_:through:limit:)``).
    ///
    /// - Complexity: O(n log n) over the n records held.
    public func collectableRecords(through position: UInt64, limit: Int = 10_000) -> [RecordAddress] {
        let candidates = state.records.compactMap { address, entry -> CollectionPlanner.Candidate? in
            guard entry.sequence <= position, entry.state.isCollectable else { return nil }
            return CollectionPlanner.Candidate(address: address, state: entry.state, sequence: entry.sequence, quarantined: quarantine[address] != nil)
        }
        return CollectionPlanner.collectable(candidates, through: position, limit: limit)
    }

    /// Drops the records at `addresses` that ``CollectionPlanner/mayDrop(_:sequence:quarantined:unchangedAfter:)``
    /// allows (deleted here, unchanged after `unchangedAfter` when given, and with
    /// `keepingQuarantined`, a hub's rule, no change waiting in quarantine); returns the ones
    /// dropped, in address order. A quarantined change of a dropped record stays in
    /// quarantine (on a device it belongs to a later life of the key). What the replica
    /// shows does not change: only records that show nothing go.
    @discardableResult
    public mutating func collect(_ addresses: [RecordAddress], unchangedAfter: UInt64? = nil, keepingQuarantined: Bool = true) -> [RecordAddress] {
        var dropped = [RecordAddress]()
        for address in Set(addresses).sorted() {
            guard let entry = state.records[address],
                  CollectionPlanner.mayDrop(
                    entry.state, sequence: entry.sequence, quarantined: keepingQuarantined && quarantine[address] != nil, unchangedAfter: unchangedAfter)
            else { continue }
            state.remove(address)
            dropped.append(address)
        }
        return dropped
    }

    /// The number of deleted records whose metadata this replica still holds.
    public var tombstoneCount: Int { state.records.values.lazy.filter { $0.state.isCollectable }.count }

    /// Starts over as replica `newID` after the hub retired this one: keeps this replica's
    /// own local writes made after local feed position `acknowledged` (what the hub
    /// acknowledged; ``CapturePlanner/unacknowledgedWrite(of:by:membershipChanged:changedColumns:schema:authority:)``
    /// says what each record's is), then drops every record and the quarantine. The clock,
    /// the schemas and the authority stay. Returns how many records' writes it kept; apply
    /// a fresh snapshot of the hub next, then ``reapplyKeptWrites(physicalMilliseconds:)``.
    ///
    /// Merging the old state again could bring back, field by field, records others
    /// deleted and the hub collected since this replica stopped holding its frontier back;
    /// writing what its user typed again as new writes loses nothing of it instead.
    @discardableResult
    public mutating func resetForResync(acknowledged: UInt64, newID: ReplicaID) -> Int {
        var kept = keptWrites
        for (address, entry) in state.records.sorted(by: { $0.key < $1.key }) where entry.sequence > acknowledged {
            guard let schema = schemas[address.table] else { continue }
            let changed = Set(entry.fieldSequences.filter { $0.value > acknowledged }.keys)
            guard let write = CapturePlanner.unacknowledgedWrite(
                of: entry.state, by: id, membershipChanged: entry.membershipSequence > acknowledged, changedColumns: changed,
                schema: schema, authority: authority)
            else { continue }
            kept.append((address, write))
        }
        let count = kept.count - keptWrites.count
        keptWrites = kept
        state = ReplicaState()
        quarantine = [:]
        id = newID
        return count
    }

    /// Writes the writes kept by ``resetForResync(acknowledged:newID:)`` again, as this
    /// replica's new local writes, all under one stamp taken now (after everything the
    /// snapshot brought, so they win as the user's latest), and forgets them. Returns the
    /// deltas, in the order written.
    @discardableResult
    public mutating func reapplyKeptWrites(physicalMilliseconds: UInt64) -> Changeset {
        guard !keptWrites.isEmpty else { return Changeset() }
        var stamp: Stamp?
        var deltas = [RecordDelta]()
        for (address, operation) in keptWrites {
            guard let schema = schemas[address.table] else { continue }
            var record = state.state(of: address) ?? RecordState()
            let taken = transactionStamp(&stamp, physicalMilliseconds: physicalMilliseconds)
            guard let delta = CapturePlanner.apply(operation, at: taken, to: &record, schema: schema) else { continue }
            state.replace(record, at: address)
            deltas.append(RecordDelta(table: address.table, key: address.key, state: delta))
        }
        keptWrites = []
        return Changeset(records: deltas)
    }
}
