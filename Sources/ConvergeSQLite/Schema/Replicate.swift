import ConvergeCore
import GRDB

extension ReplicatedDatabase {
    /// Starts replicating an existing app table, or takes in a migration of it.
    ///
    /// The table is checked first: it needs a single-column primary key that is not an
    /// auto-incremented integer, no UNIQUE index beyond the key (unless
    /// `allowUniqueIndexes`), and a default for every NOT NULL column; otherwise a
    /// ``SchemaError`` says why it could not converge.
    ///
    /// With `allowUniqueIndexes`, the table's UNIQUE indexes (single or multi-column; not
    /// partial, on expressions, or with a collation other than BINARY) become *constraint
    /// conflicts* (DESIGN §4): a clash between replicas never fails an apply. The earliest
    /// claim of a value is shown, the later ones are held out of the table, listed by
    /// ``conflicts()`` and resolved with ``update(table:key:values:)`` or
    /// ``delete(table:key:)``, or by changing the holder. A local SQL write that collides
    /// with a shown row fails with SQLite's own error, as without Converge. Existing rows become replicated
    /// records. Changes received earlier for this table (parked while it was not
    /// replicated), and values of columns this replica did not have yet, are written into
    /// the table now.
    ///
    /// Call it on every launch, after the app's migrations: when nothing changed it only
    /// checks.
    ///
    /// - Parameters:
    ///   - table: The name of an existing table of the app's database.
    ///   - policies: Column policies; columns not named are `.lww`.
    ///   - deletePolicy: What wins when an edit races a delete. Fixed once replicated.
    ///   - allowUniqueIndexes: Keep the table's UNIQUE indexes beyond the key, as constraint
    ///     conflicts; without it such an index is a ``SchemaError``.
    ///   - encrypted: Columns whose values leave the device only encrypted (DESIGN §11),
    ///     with either register policy: the sync engine seals them with the app's keys, so
    ///     the server stores and forwards ciphertext it cannot read. This table keeps
    ///     plaintext. An encrypted `.authority` column, key or UNIQUE-indexed column is a
    ///     ``SchemaError``: the server would have to read it.
    public func replicate(
        table: String,
        policies: [String: ColumnPolicy] = [:],
        deletePolicy: DeletePolicy = .updateWins,
        allowUniqueIndexes: Bool = false,
        encrypted: Set<String> = []
    ) throws {
        let previous = tables[table]
        let inspected = try writer.read { db in
            try ReplicatedTable.inspect(
                db, table: table, policies: policies, deletePolicy: deletePolicy, allowUniqueIndexes: allowUniqueIndexes, encrypted: encrypted)
        }
        if let previous, previous.schema.deletePolicy != deletePolicy {
            throw SchemaError(table: table, reason: .deletePolicyChanged(from: previous.schema.deletePolicy, to: deletePolicy))
        }
        if previous == inspected { return }
        var updated = tables
        updated[table] = inspected
        try withMetadata { metadata in
            try inspected.save(metadata.db)
            try CaptureTriggers.install(metadata.db, table: inspected)
            var metadata2 = try MetadataStore(metadata.db, tables: updated, authority: metadata.authority)
            try register(table: inspected, metadata: &metadata2)
            metadata = metadata2
        }
        tables = updated
    }

    /// Makes existing rows records (a local insert each, one stamp for all) and writes the
    /// merged view of every record of the table into it.
    private func register(table: ReplicatedTable, metadata: inout MetadataStore) throws {
        let schema = table.schema
        let keyColumn = quoted(schema.primaryKey)
        var stamp: Stamp?
        let rows = try Row.fetchCursor(metadata.db, sql: "SELECT \(([keyColumn] + schema.columns.map(quoted)).joined(separator: ", ")) FROM \(quoted(schema.name))")
        var pending = [(RecordAddress, RecordEntry, RecordState)]()
        while let row = try rows.next() {
            let key = Value(row[0] as DatabaseValue)
            let address = RecordAddress(table: schema.name, key: key)
            let entry = try metadata.load(address)
            guard !entry.state.isAlive else { continue }
            var values = [String: Value]()
            for (index, column) in schema.columns.enumerated() { values[column] = Value(row[index + 1] as DatabaseValue) }
            var state = entry.state
            let rowStamp = stamp ?? source.stamp()
            stamp = rowStamp
            state.insert(values, at: rowStamp, schema: schema)
            pending.append((address, entry, state))
        }
        for (address, entry, state) in pending { try metadata.commit(entry, changedTo: state, at: address) }
        let records = try Row.fetchCursor(metadata.db, sql: "SELECT key, state, seqs FROM converge_records WHERE tbl = ?", arguments: [schema.name])
        var states = [(Value, RecordState)]()
        while let row = try records.next() {
            let key = Value(row["key"] as DatabaseValue)
            states.append((key, try metadata.decode(row, RecordAddress(table: schema.name, key: key)).state))
        }
        if schema.uniqueIndexes.isEmpty {
            for (key, state) in states { try Materializer.materialize(state, key: key, in: table, authority: metadata.authority, metadata.db) }
        } else {
            // The whole table is decided here, the rows just registered included.
            _ = metadata.takeUnsettled()
            try Materializer.rewrite(table, states: states, authority: metadata.authority, metadata.db)
        }
    }
}
