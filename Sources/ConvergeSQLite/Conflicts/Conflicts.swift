import ConvergeCore
import GRDB

/// A record that was not found where an operation needed it.
public struct RecordNotFound: Error, Sendable, Hashable, CustomStringConvertible {
    public let table: String
    public let key: Value
    public var description: String { "no live record \(key) in \(table)" }
}

extension ReplicatedDatabase {
    /// Open conflicts on critical fields of live records, each with every concurrent value.
    ///
    /// Only reads: local writes that resolve a conflict take it off the list as they
    /// happen (see the capture triggers), so nothing needs folding first.
    public func conflicts() throws -> [Conflict] {
        try writer.read { db in try Self.conflicts(db) }
    }

    /// Open conflicts, read in `db`: use it in a GRDB `ValueObservation` to observe them.
    ///
    /// ```swift
    /// let observation = ValueObservation.tracking(ReplicatedDatabase.conflicts)
    /// ```
    public static func conflicts(_ db: Database) throws -> [Conflict] {
        let rows = try Row.fetchAll(db, sql: """
            SELECT c.tbl AS tbl, c.key AS key, c.col AS col, r.state AS state
            FROM converge_conflicts c JOIN converge_records r ON r.tbl = c.tbl AND r.key = c.key
            ORDER BY c.tbl, c.key, c.col
            """)
        return try rows.compactMap { row in
            let table: String = row["tbl"]
            let key = Value(row["key"] as DatabaseValue)
            let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: table, key: key)
            guard let register = state.multiValue(of: row["col"]), register.isConflicted else { return nil }
            return Conflict(table: table, key: key, column: row["col"], siblings: register.siblings)
        }
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
            try Materializer.materialize(state, key: key, in: replicated, authority: metadata.authority, metadata.db)
        }
    }
}
