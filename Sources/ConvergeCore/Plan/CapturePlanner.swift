/// Turning local writes into record states, as one pure function (DESIGN §8).
///
/// The SQLite store's capture triggers log each local INSERT, UPDATE and DELETE with its
/// transaction's stamp; the in-memory ``Replica`` performs operations directly. Both replay
/// them here, so a local write means the same on every replica kind.
public enum CapturePlanner {
    /// One captured local write.
    ///
    /// The values are column maps, not dictionaries: a store's log reader builds them in
    /// column order with one shared key array per table, and the record's fields are
    /// written from them without hashing or sorting a name.
    public enum Operation: Sendable, Hashable {
        /// An insert (or `INSERT OR REPLACE`) with the row's values.
        case insert(ColumnMap<Value>)
        /// An update: the columns it changed (or resolved), and the whole row after it, in
        /// case the record turns out not to be alive (then the row is re-added whole).
        case update(changed: ColumnMap<Value>, row: ColumnMap<Value>)
        /// A delete.
        case delete
    }

    /// One captured local write, as the capture log holds it.
    public struct Write: Sendable, Hashable {
        /// The record's primary key.
        public var key: Value
        /// The stamp of the transaction that made it.
        public var stamp: Stamp
        /// What it did.
        public var operation: Operation

        /// The write `operation` of the record `key`, stamped `stamp`.
        public init(key: Value, stamp: Stamp, operation: Operation) {
            self.key = key
            self.stamp = stamp
            self.operation = operation
        }
    }

    /// One record the fold changed.
    public struct Change: Sendable, Hashable {
        /// The record's primary key.
        public var key: Value
        /// Its state before the fold.
        public var before: RecordState
        /// Its state after the fold.
        public var after: RecordState
    }

    /// Applies one local write to `state`; returns the delta it produced, or `nil` when it
    /// changed nothing (an update or delete of a record that is not alive).
    @discardableResult
    public static func apply(_ operation: Operation, at stamp: Stamp, to state: inout RecordState, schema: TableSchema) -> RecordState? {
        switch operation {
        case .insert(let values):
            return state.insert(values, at: stamp, schema: schema)
        case .update(let changed, let row):
            if let delta = state.update(changed, at: stamp, schema: schema) { return delta }
            // The row exists in the app table, so the record is alive; should the metadata
            // disagree (it cannot, short of outside tampering) the whole row is re-added.
            return row.isEmpty ? nil : state.insert(row, at: stamp, schema: schema)
        case .delete:
            return state.delete(at: stamp, schema: schema)
        }
    }

    /// Replays `writes` (one table's, in capture order) onto the stored states and returns
    /// the records that changed, sorted by key: write them back in this order.
    ///
    /// - Parameters:
    ///   - writes: One table's captured writes, in capture order.
    ///   - schema: The table's merge schema.
    ///   - stored: The stored state of every key in `writes` (absent: none).
    ///   - keys: `touchedKeys(writes)`, when the caller already has them (a store sorts them
    ///     to load the stored states in key order): the fold then sorts nothing.
    /// - Complexity: O(w + k log k) for w writes over k keys, plus the mutations.
    public static func fold(_ writes: [Write], schema: TableSchema, stored: [Value: RecordState], keys: [Value]? = nil) -> [Change] {
        let keys = keys ?? touchedKeys(writes)
        assert(keys == touchedKeys(writes), "keys are not the sorted distinct keys of the writes")
        var states = [Value: RecordState](minimumCapacity: keys.count)
        for write in writes {
            var state = states.removeValue(forKey: write.key) ?? stored[write.key] ?? RecordState()
            apply(write.operation, at: write.stamp, to: &state, schema: schema)
            states[write.key] = state
        }
        var changes = [Change]()
        changes.reserveCapacity(keys.count)
        for key in keys {
            guard let after = states[key] else { continue }
            let before = stored[key] ?? RecordState()
            assert((try? after.checkInvariants()) != nil, "a local write broke an invariant of record \(key)")
            if after != before { changes.append(Change(key: key, before: before, after: after)) }
        }
        return changes
    }

    /// The distinct keys `writes` touch, ascending.
    public static func touchedKeys(_ writes: [Write]) -> [Value] {
        var keys = writes.map(\.key)
        keys.sort()
        var distinct = [Value]()
        distinct.reserveCapacity(keys.count)
        for key in keys where distinct.last != key { distinct.append(key) }
        return distinct
    }

    /// The local write that carries `replica`'s own unacknowledged changes of a record into
    /// a fresh start (DESIGN §9: a device the server retired resets, pulls a snapshot, and
    /// re-applies what the server never received as new writes), or `nil` when it has none.
    ///
    /// - Parameters:
    ///   - state: The record's merged state.
    ///   - replica: The replica whose own writes are carried over (the one being reset).
    ///   - membershipChanged: Whether the membership changed after the acknowledged position.
    ///   - changedColumns: The columns changed after it.
    ///   - schema: The table's merge schema.
    ///   - authority: The replica whose concurrent writes show in `.authority` columns.
    /// - Returns: the whole visible row as an insert when `replica` (re)created the record
    ///   (an insert writes every column);
    ///   the columns it wrote as an update (carrying the whole row, so that a record gone
    ///   from the snapshot comes back whole), none of them when only its add still shows
    ///   (the record stays alive); a delete when it deleted the record.
    public static func unacknowledgedWrite(
        of state: RecordState, by replica: ReplicaID, membershipChanged: Bool, changedColumns: Set<String>,
        schema: TableSchema, authority: ReplicaID?
    ) -> Operation? {
        var row = ColumnMap<Value>()
        for column in schema.columns {
            row[column] = state.value(of: column, policy: schema.policy(of: column), authority: authority) ?? .null
        }
        if state.isAlive {
            var changed = ColumnMap<Value>()
            for column in schema.columns where changedColumns.contains(column) {
                if let register = state.fields[column]?.visibleRegister(membership: state.membership), register.latestStamp.replica == replica {
                    changed[column] = row[column]
                }
            }
            // An insert wrote every column; an edit (an add too, under `.updateWins`) some.
            let added = membershipChanged && state.membership.dots.contains(where: { $0.replica == replica })
            if added && changed.count == schema.columns.count { return .insert(row) }
            // Its own add may keep the record alive when later writes of others show in
            // every column (another live incarnation's, under `.deleteWins`): the record
            // must stay, as it shows (re-added whole should the snapshot not have it).
            if changed.isEmpty { return added ? .update(changed: [:], row: row) : nil }
            return .update(changed: changed, row: row)
        }
        // Its own delete is the latest event the context saw: it was stamped after all it had seen.
        let own = state.membership.context[replica]
        if membershipChanged && own > .zero && own == state.membership.context.maxHLC { return .delete }
        return nil
    }
}
