import ConvergeCore
import Foundation
import GRDB

/// A record that was not found where an operation needed it.
public struct RecordNotFound: Error, Sendable, Hashable, CustomStringConvertible {
    /// The table searched.
    public let table: String
    /// The key not found (or found deleted).
    public let key: Value
    /// An error for the record at `table` and `key`.
    public init(table: String, key: Value) {
        self.table = table
        self.key = key
    }
    public var description: String { "no live record \(key) in \(table)" }
}

extension ReplicatedDatabase {
    /// Open conflicts: critical fields of live records holding concurrent values, each with
    /// every value (by table, key and column), then unique-index clashes, each with its
    /// holder and held records (by table, index and values), as `Conflict` cases.
    ///
    /// Only reads: local writes that resolve a field conflict take it off the list as they
    /// happen (see the capture triggers), so nothing needs folding first. A clash resolved by
    /// an SQL write of the holder leaves the list once the write is folded (by the next sync,
    /// feed read or Converge write); resolving through ``update(table:key:values:)`` or
    /// ``delete(table:key:)`` settles it at once.
    public func conflicts() throws -> [Conflict] {
        try writer.readKeepingStatements { db in try Self.conflicts(db) }
    }

    /// Open conflicts, read in `db`: use it in a GRDB `ValueObservation` to observe them.
    ///
    /// ```swift
    /// let observation = ValueObservation.tracking(ReplicatedDatabase.conflicts)
    /// ```
    public static func conflicts(_ db: Database) throws -> [Conflict] {
        let rows = try Row.fetchAll(db.cachedStatement(sql: """
            SELECT c.tbl AS tbl, c.key AS key, c.col AS col, r.state AS state
            FROM converge_conflicts c JOIN converge_records r ON r.tbl = c.tbl AND r.key = c.key
            ORDER BY c.tbl, c.key, c.col
            """))
        var result: [Conflict] = try rows.compactMap { row in
            let table: String = row["tbl"]
            let key = Value(row["key"] as DatabaseValue)
            let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: table, key: key)
            guard let register = state.multiValue(of: row["col"]), register.isConflicted else { return nil }
            return .field(FieldConflict(table: table, key: key, column: row["col"], siblings: register.siblings))
        }
        let clashes = try ClaimIndex.clashes(db)
        guard !clashes.isEmpty else { return result }
        let tables = try ReplicatedTable.load(db)
        let authority = try Data.fetchOne(db, sql: "SELECT authority FROM converge_identity").flatMap { ReplicaID(bytes: [UInt8]($0)) }
        for (group, claimants) in clashes.sorted(by: { $0.key < $1.key }) {
            guard let schema = tables[group.table]?.schema else { continue }
            var states = [Value: RecordState]()
            for claimant in claimants {
                if let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT state FROM converge_records WHERE tbl = ? AND key = ?"),
                    arguments: [group.table, claimant.key.databaseValue]) {
                    states[claimant.key] = try RecordEntryCodec.decodeState(row.bytes("state"), table: group.table, key: claimant.key)
                }
            }
            result.append(.constraint(ConstraintConflict(group: group, claimants: claimants, schema: schema, authority: authority) { states[$0] }))
        }
        return result
    }

    /// An observation of the open conflicts, for SwiftUI or Combine, or `values(in:)`.
    public func observeConflicts() -> ValueObservation<ValueReducers.Fetch<[Conflict]>> {
        ValueObservation.tracking(Self.conflicts)
    }

    /// Resolves a field by writing the chosen value: the write observes every concurrent
    /// value, so once it has reached every replica the conflict is gone everywhere.
    ///
    /// Writing the column through SQL resolves too, even to the value already shown
    /// (`UPDATE item SET qty = qty` while `qty` is in conflict): choosing the provisional
    /// value is a choice. Outside a conflict, writing the shown value changes nothing, as
    /// everywhere else. Throws ``RecordNotFound``, changing nothing (the clock included),
    /// when the record is absent or deleted.
    public func resolve(table: String, key: Value, column: String, to value: Value) throws {
        guard let replicated = tables[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
        guard replicated.schema.columns.contains(column) else { throw SchemaError(table: table, reason: .unknownColumn(column)) }
        try withMetadata { metadata in
            let address = RecordAddress(table: table, key: key)
            let entry = try metadata.load(address)
            var state = entry.state
            // Refused before a stamp is taken: a refusal changes nothing, the clock included.
            guard state.isAlive else { throw RecordNotFound(table: table, key: key) }
            let written = state.resolve(column, to: value, at: source.stamp(), schema: replicated.schema)
            assert(written != nil, "a live record takes the write")
            try metadata.commit(entry, changedTo: state, at: address)
            if replicated.schema.uniqueIndexes.isEmpty {
                try Materializer.materialize(state, key: key, in: replicated, authority: metadata.authority, metadata.db)
            } else {
                _ = try metadata.settleUnique()
            }
        }
    }

    /// Writes `values` into a record through Converge, as a local write: the way to edit a
    /// record a unique index holds out of the app table (see `ConstraintConflict`), which
    /// SQL cannot reach. Its row, and the rows of the records its new values clash with or
    /// give way to, are settled at once. Columns not named keep their values; writing the
    /// values shown changes nothing.
    ///
    /// - Throws: ``SchemaError`` for an unknown table or column; ``RecordNotFound`` when the
    ///   record is absent or deleted (nothing changes, the clock included).
    public func update(table: String, key: Value, values: [String: Value]) throws {
        guard let replicated = tables[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
        for column in values.keys where !replicated.schema.columns.contains(column) {
            throw SchemaError(table: table, reason: .unknownColumn(column))
        }
        try write(table: replicated, key: key) { state in
            let changed = values.filter { column, value in
                let policy = replicated.schema.policy(of: column)
                if policy == .critical, state.multiValue(of: column)?.isConflicted == true { return true }
                return state.value(of: column, policy: policy, authority: authority) != value
            }
            return changed.isEmpty ? nil : .update(changed: ColumnMap(changed), row: [:])
        }
    }

    /// Deletes a record through Converge, as a local write: the way to delete a record a
    /// unique index holds out of the app table. Deleting a shown record this way is the same
    /// as deleting its row with SQL.
    ///
    /// - Throws: ``SchemaError`` for an unknown table; ``RecordNotFound`` when the record is
    ///   absent or already deleted.
    public func delete(table: String, key: Value) throws {
        guard let replicated = tables[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
        try write(table: replicated, key: key) { _ in .delete }
    }

    /// One local write of a live record, planned by ``CapturePlanner`` and settled at once.
    private func write(table: ReplicatedTable, key: Value, _ operation: (RecordState) -> CapturePlanner.Operation?) throws {
        let name = table.schema.name
        try withMetadata { metadata in
            let address = RecordAddress(table: name, key: key)
            let entry = try metadata.load(address)
            var state = entry.state
            guard state.isAlive else { throw RecordNotFound(table: name, key: key) }
            guard let operation = operation(state) else { return }
            // A held record has no row: the store writes every row of the table itself.
            let before = ApplyPlanner.visibleRow(state, table.schema, metadata.authority)
            CapturePlanner.apply(operation, at: source.stamp(), to: &state, schema: table.schema)
            guard state != entry.state else { return }
            try metadata.commit(entry, changedTo: state, at: address)
            if table.schema.uniqueIndexes.isEmpty {
                let after = ApplyPlanner.visibleRow(state, table.schema, metadata.authority)
                if after != before { try Materializer.write(after.map(ApplyPlanner.RowChange.upsert) ?? .delete, key: key, in: table, metadata.db) }
            } else {
                _ = try metadata.settleUnique()
            }
        }
    }
}
