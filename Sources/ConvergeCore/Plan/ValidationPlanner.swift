/// What a remote changeset did to one row, shown to a validator before it commits.
public struct ProposedChange: Sendable, Hashable {
    /// The row's table.
    public let table: String
    /// The row's primary key.
    public let key: Value
    /// The row before, or `nil` when there was none (or it was deleted).
    public let before: [String: Value]?
    /// The row after, or `nil` when the change deletes it.
    public let after: [String: Value]?

    /// A change of the row at `table` and `key` from `before` to `after`.
    public init(table: String, key: Value, before: [String: Value]?, after: [String: Value]?) {
        self.table = table
        self.key = key
        self.before = before
        self.after = after
    }

    /// The columns whose value differs (every column for an insert or a delete).
    public var changedColumns: [String] {
        let columns = Set((before ?? [:]).keys).union((after ?? [:]).keys)
        return columns.filter { before?[$0] != after?[$0] }.sorted()
    }
}

/// Validation of an apply, as one pure function (DESIGN §8): which rows a validator sees,
/// and the compensating writes that undo the ones it refuses.
///
/// A refused change is undone by a local write of the replica that refused it, stamped
/// after everything it received, which writes the row back as it was: every replica that
/// syncs converges to it, the sender included. The SQLite store, the server's PostgreSQL
/// storage and the in-memory ``Replica`` all validate here; a shell stores what it returns
/// (the states, the rows, its own record of the rejections) in the apply's transaction.
public enum ValidationPlanner {
    /// A record whose row an apply may have changed.
    public struct Shown: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// Its state before the apply, when its row was visible then (`nil`: no row).
        public var before: RecordState?
        /// Its state after the apply, when its row is visible now (`nil`: no row).
        public var after: RecordState?
        /// Its state after the apply, visible or not: what a compensation is written over.
        public var current: RecordState

        /// A record at `address`, its rows seen in `before` and `after`, its state `current`.
        public init(address: RecordAddress, before: RecordState?, after: RecordState?, current: RecordState) {
            self.address = address
            self.before = before
            self.after = after
            self.current = current
        }
    }

    /// A change the validator refused, and the write that undoes it.
    public struct Compensation: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// The refused change, as the validator saw it.
        public var change: ProposedChange
        /// The validator's reason.
        public var reason: String
        /// The record's state before the compensating write (what the apply left).
        public var before: RecordState
        /// Its state with the compensating write: store this.
        public var after: RecordState
        /// The app row of ``after`` (the row as it was before the apply). A table with
        /// unique indexes settles its rows instead (``UniquePlanner``).
        public var row: ApplyPlanner.RowChange
    }

    /// The records an apply shows a validator: the changed records whose row changed, of
    /// tables without unique indexes, and the records a settlement of the others showed
    /// or hid (a held record is not visible; one a resolved clash shows, unchanged itself,
    /// is seen arriving). Sorted by address.
    public static func shown(_ changes: [ApplyPlanner.RecordChange], settled: [UniquePlanner.Settled], schemas: [String: TableSchema]) -> [Shown] {
        var shown = changes.compactMap { change -> Shown? in
            guard change.row != .none, let schema = schemas[change.address.table], schema.uniqueIndexes.isEmpty else { return nil }
            return Shown(address: change.address, before: change.before, after: change.after, current: change.after)
        }
        shown += settled.map {
            Shown(address: $0.address, before: $0.shownBefore ? $0.before : nil, after: $0.shownAfter ? $0.after : nil, current: $0.after)
        }
        shown.sort { $0.address < $1.address }
        return shown
    }

    /// Shows each record of `shown` whose visible row differs to `validate`, in address
    /// order, and plans a compensating write for each one it refuses.
    ///
    /// - Parameters:
    ///   - shown: The records the apply changed (``shown(_:settled:schemas:)``); records of
    ///     tables not in `schemas` are not shown.
    ///   - schemas: The replicated tables.
    ///   - authority: The replica whose concurrent writes show in `.authority` columns.
    ///   - stamp: The stamp of the next compensating write: this replica's own, after
    ///     everything the apply received. It is called once per refused change.
    ///   - validate: Returns why a change is refused, or `nil` to accept it.
    /// - Returns: One compensation per refused record, sorted by address.
    /// - Complexity: O(*n*) in the records shown, times the validator's cost.
    public static func plan(
        _ shown: [Shown], schemas: [String: TableSchema], authority: ReplicaID?, stamp: () -> Stamp,
        validate: (ProposedChange) throws -> String?
    ) rethrows -> [Compensation] {
        var compensations = [Compensation]()
        var index = [RecordAddress: Int]()
        for record in shown.sorted(by: { $0.address < $1.address }) {
            guard let schema = schemas[record.address.table] else { continue }
            let before = record.before.flatMap { namedRow($0, schema, authority: authority) }
            let after = record.after.flatMap { namedRow($0, schema, authority: authority) }
            guard before != after else { continue }
            let change = ProposedChange(table: record.address.table, key: record.address.key, before: before, after: after)
            guard let reason = try validate(change) else { continue }
            let position = index[record.address]
            var state = position.map { compensations[$0].after } ?? record.current
            let original = position.map { compensations[$0].before } ?? record.current
            CapturePlanner.apply(compensatingWrite(for: change), at: stamp(), to: &state, schema: schema)
            let row = ApplyPlanner.visibleRow(state, schema, authority).map(ApplyPlanner.RowChange.upsert) ?? .delete
            let compensation = Compensation(address: record.address, change: change, reason: reason, before: original, after: state, row: row)
            if let position {
                compensations[position] = compensation
            } else {
                index[record.address] = compensations.count
                compensations.append(compensation)
            }
        }
        return compensations
    }

    /// The row a validator sees: ``ApplyPlanner/visibleRow(_:_:_:)`` by column name, a
    /// column without any write as NULL; `nil` when the record is not alive.
    public static func namedRow(_ state: RecordState, _ schema: TableSchema, authority: ReplicaID?) -> [String: Value]? {
        ApplyPlanner.visibleRow(state, schema, authority).map { Dictionary(uniqueKeysWithValues: zip(schema.columns, $0.map { $0 ?? .null })) }
    }

    /// The local write that puts `change.before` back: delete an inserted row, insert a
    /// deleted one again, set the changed columns of an updated one.
    static func compensatingWrite(for change: ProposedChange) -> CapturePlanner.Operation {
        switch (change.before, change.after) {
        case (nil, _):
            return .delete
        case (let before?, nil):
            return .insert(ColumnMap(before))
        case (let before?, _?):
            let changed = Set(change.changedColumns)
            return .update(changed: ColumnMap(before.filter { changed.contains($0.key) }), row: ColumnMap(before))
        }
    }
}
