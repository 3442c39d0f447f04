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

    /// Whether the capture log of any of `tables` holds a write not folded yet: one step
    /// into each log's B-tree, no write lock.
    static func hasCapturedWrites(_ db: Database, tables: [String]) throws -> Bool {
        for name in tables {
            let log = quoted(MetadataSchema.logTable(name))
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM \(log))")) == true { return true }
        }
        return false
    }

    private static func fold(_ table: ReplicatedTable, name: String, into metadata: inout MetadataStore, replica: ReplicaID) throws -> HLC {
        let log = quoted(MetadataSchema.logTable(name))
        let schema = table.schema
        let (writes, latest) = try CaptureLog.writes(metadata.db, schema: schema, replica: replica)
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
