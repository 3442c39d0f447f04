import ConvergeCore
import GRDB

/// Folds the captured local writes of the log tables into the record metadata.
///
/// Each log row replays a local mutation of the core model (`insert`, `update`, `delete`)
/// at the stamp its transaction took. A record touched several times is written back once,
/// with one new sequence number. Runs inside the write transaction of whatever needs the
/// metadata current: the feed, an apply, a conflict query.
enum LogFold {
    static func fold(_ metadata: inout MetadataStore, replica: ReplicaID) throws -> HLC {
        var latest = HLC.zero
        for (name, table) in metadata.tables.sorted(by: { $0.key < $1.key }) {
            latest = max(latest, try fold(table, name: name, into: &metadata, replica: replica))
        }
        return latest
    }

    private static func fold(_ table: ReplicatedTable, name: String, into metadata: inout MetadataStore, replica: ReplicaID) throws -> HLC {
        let log = quoted(MetadataSchema.logTable(name))
        let schema = table.schema
        var touched = [Value: (before: RecordEntry, state: RecordState)]()
        var order = [Value]()
        var latest = HLC.zero
        // Columns by position: id, hlc, op, mask, key, c0, c1, ...
        let rows = try Row.fetchCursor(metadata.db, sql: "SELECT * FROM \(log) ORDER BY id")
        while let row = try rows.next() {
            let hlc = HLC(rawValue: UInt64(bitPattern: row[1]))
            latest = max(latest, hlc)
            let stamp = Stamp(hlc: hlc, replica: replica)
            let key = Value(row[4] as DatabaseValue)
            let operation = CaptureTriggers.Operation(rawValue: row[2]) ?? .update
            let mask: Int64 = row[3]
            if touched[key] == nil {
                let entry = try metadata.load(RecordAddress(table: name, key: key))
                touched[key] = (entry, entry.state)
                order.append(key)
            }
            var state = touched[key]!.state
            var values = [String: Value]()
            var changed = [String: Value]()
            if operation != .delete {
                for (index, column) in schema.columns.enumerated() {
                    let value = Value(row[5 + index] as DatabaseValue)
                    values[column] = value
                    if mask & (1 << Int64(index)) != 0 { changed[column] = value }
                }
            }
            switch operation {
            case .insert:
                state.insert(values, at: stamp, schema: schema)
            case .update:
                // The row exists in the app table, so the record is alive; should metadata
                // disagree (it cannot, short of outside tampering) the whole row is re-added.
                if state.update(changed, at: stamp, schema: schema) == nil { state.insert(values, at: stamp, schema: schema) }
            case .delete:
                state.delete(at: stamp, schema: schema)
            }
            touched[key]!.state = state
        }
        guard !order.isEmpty else { return latest }
        for key in order {
            let (before, state) = touched[key]!
            if state != before.state {
                try metadata.commit(before, changedTo: state, at: RecordAddress(table: name, key: key))
            }
        }
        try metadata.db.execute(sql: "DELETE FROM \(log)")
        return latest
    }
}
