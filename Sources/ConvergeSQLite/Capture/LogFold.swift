import ConvergeCore
import GRDB
import Metrics

/// Folds the captured local writes of the log tables into the record metadata.
///
/// Each log row is a local write of the core model (``CapturePlanner``) at the stamp its
/// transaction took: this shell reads the log, loads the touched records in one key-ordered
/// query, lets the planner replay the writes, and writes the changed records back in key
/// order. A record touched several times is written back once, with one new sequence number. Runs inside the write transaction of whatever needs the
/// metadata current: the feed, an apply, a conflict query.
enum LogFold {
    static func fold(_ metadata: inout MetadataStore, replica: ReplicaID) throws -> HLC {
        var latest = HLC.zero
        for (name, table) in metadata.tables.sorted(by: { $0.key < $1.key }) {
            latest = max(latest, try fold(table, name: name, into: &metadata, replica: replica))
        }
        _ = try metadata.settleUnique()
        return latest
    }

    private static func fold(_ table: ReplicatedTable, name: String, into metadata: inout MetadataStore, replica: ReplicaID) throws -> HLC {
        let log = quoted(MetadataSchema.logTable(name))
        let schema = table.schema
        var writes = [CapturePlanner.Write]()
        var latest = HLC.zero
        // Columns by position: id, hlc, op, mask, key, c0, c1, ...
        // Cached: every fold reads every log, and compiling a statement costs more than reading
        // an empty table.
        let rows = try Row.fetchCursor(metadata.db.cachedStatement(sql: "SELECT * FROM \(log) ORDER BY id"))
        while let row = try rows.next() {
            let hlc = HLC(rawValue: UInt64(bitPattern: row[1]))
            latest = max(latest, hlc)
            let key = Value(row[4] as DatabaseValue)
            let mask: Int64 = row[3]
            let operation = CaptureTriggers.Operation(rawValue: row[2]) ?? .update
            var values = [String: Value]()
            var changed = [String: Value]()
            if operation != .delete {
                values.reserveCapacity(schema.columns.count)
                if operation == .update { changed.reserveCapacity(mask.nonzeroBitCount) }
                for (index, column) in schema.columns.enumerated() {
                    let value = Value(row[5 + index] as DatabaseValue)
                    values[column] = value
                    if mask & (1 << Int64(index)) != 0 { changed[column] = value }
                }
            }
            let captured: CapturePlanner.Operation = switch operation {
            case .insert: .insert(values)
            case .update: .update(changed: changed, row: values)
            case .delete: .delete
            }
            writes.append(CapturePlanner.Write(key: key, stamp: Stamp(hlc: hlc, replica: replica), operation: captured))
        }
        guard !writes.isEmpty else { return latest }
        let started = ContinuousClock.now
        defer { StoreMetrics.foldSeconds.record(duration: ContinuousClock.now - started) }
        // One batched, key-ordered read of the touched records, one key-ordered write back.
        let keys = CapturePlanner.touchedKeys(writes)
        let entries = try metadata.loadLogged(name, log: log, keys: keys)
        var stored = [Value: RecordState](minimumCapacity: entries.count)
        for (address, entry) in entries { stored[address.key] = entry.state }
        let changes = CapturePlanner.fold(writes, schema: schema, stored: stored, keys: keys)
        for change in changes {
            let address = RecordAddress(table: name, key: change.key)
            try metadata.commit(entries[address] ?? .empty, changedTo: change.after, at: address, writtenByApp: true)
        }
        StoreMetrics.foldedRecords.increment(by: changes.count)
        try metadata.db.cachedStatement(sql: "DELETE FROM \(log)").execute()
        return latest
    }
}
