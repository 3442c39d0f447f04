import ConvergeCore
import Foundation
import GRDB

/// Starting over as a new replica when the sync server has retired this one (DESIGN §9).
///
/// A device not seen for the server's retention window no longer holds its frontier back,
/// so the server may have collected deletes it never saw; merging its old state again could
/// bring back, field by field, what others deleted long ago. Instead it resets: it keeps
/// the local writes the server never acknowledged, drops every record and row of its
/// replicated tables, takes a new identity, pulls a fresh snapshot, and writes what it kept
/// again as new local writes. Nothing the user typed is lost; an edit of a record deleted
/// elsewhere meanwhile comes back as a new write (the record reappears whole).
extension ReplicatedDatabase {
    /// The local writes kept across a reset, in the order they will be written again.
    struct KeptWrite: Codable {
        var kind: String  // "insert", "update", "delete"
        // Dictionaries, as stored since the first release (ColumnMap encodes alike).
        var changed: [String: Value]
        var row: [String: Value]

        init(_ operation: CapturePlanner.Operation) {
            switch operation {
            case .insert(let row): (kind, changed, self.row) = ("insert", [:], row.dictionary)
            case .update(let changed, let row): (kind, self.changed, self.row) = ("update", changed.dictionary, row.dictionary)
            case .delete: (kind, changed, row) = ("delete", [:], [:])
            }
        }

        var operation: CapturePlanner.Operation {
            switch kind {
            case "insert": return .insert(ColumnMap(row))
            case "update": return .update(changed: ColumnMap(changed), row: ColumnMap(row))
            default: return .delete
            }
        }
    }

    /// Resets for a resync: keeps this replica's local writes made after local feed
    /// position `acknowledged` (what the server acknowledged), then drops the metadata of
    /// every record, every row of the replicated tables, the quarantine and the peer
    /// cursors, and takes a new identity; all in one transaction. Returns how many records'
    /// writes it kept. Pull the server's snapshot next, then call ``reapplyKeptWrites()``.
    ///
    /// The kept writes are stored in the database, so a crash before they are written again
    /// loses nothing: ``reapplyKeptWrites()`` finds them on the next launch.
    @discardableResult
    public func resetForResync(acknowledged: UInt64) throws -> Int {
        let old = source.replica
        let new = configuration.makeReplicaID()
        do {
            return try withMetadata { metadata in
                let db = metadata.db
                var kept = 0
                let rows = try Row.fetchAll(db, sql: "SELECT tbl, key, state, seqs FROM converge_records WHERE seq > ? ORDER BY tbl, key", arguments: [Int64(clamping: acknowledged)])
                for row in rows {
                    let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
                    guard let table = metadata.tables[address.table] else { continue }
                    let entry = try metadata.decode(row, address)
                    let changed = Set(entry.fieldSequences.filter { $0.value > acknowledged }.keys)
                    guard let write = CapturePlanner.unacknowledgedWrite(
                        of: entry.state, by: old, membershipChanged: entry.membershipSequence > acknowledged, changedColumns: changed,
                        schema: table.schema, authority: metadata.authority)
                    else { continue }
                    let bytes = try JSONEncoder().encode(KeptWrite(write))
                    try db.execute(
                        sql: "INSERT INTO converge_resync(tbl, key, write) VALUES (?, ?, ?)",
                        arguments: [address.table, address.key.databaseValue, bytes])
                    kept += 1
                }
                for name in metadata.tables.keys.sorted() { try db.execute(sql: "DELETE FROM \(quoted(name))") }
                for table in ["converge_records", "converge_dead", "converge_conflicts", "converge_claims", "converge_quarantine", "converge_peers"] {
                    try db.execute(sql: "DELETE FROM \(table)")
                }
                source.replica = new
                try db.execute(
                    sql: "UPDATE converge_identity SET replica = ?, fingerprint = ?",
                    arguments: [Data(new.bytes), Identity.fingerprint(path: writer.path)])
                return kept
            }
        } catch {
            source.replica = old  // the transaction rolled back: the old identity stands
            throw error
        }
    }

    /// The records whose local writes a reset keeps for ``reapplyKeptWrites()``.
    public func keptWriteCount() throws -> Int {
        try writer.readKeepingStatements { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_resync") ?? 0 }
    }

    /// Writes the writes kept by ``resetForResync(acknowledged:)`` again, as this replica's
    /// new local writes (one transaction, one stamp: after everything pulled since, so they
    /// win as the user's latest), and forgets them. Returns how many records it wrote.
    @discardableResult
    public func reapplyKeptWrites() throws -> Int {
        try withMetadata { metadata in
            let db = metadata.db
            let rows = try Row.fetchAll(db, sql: "SELECT tbl, key, write FROM converge_resync ORDER BY id")
            guard !rows.isEmpty else { return 0 }
            var written = 0
            for row in rows {
                let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
                guard let table = metadata.tables[address.table] else { continue }
                let kept: KeptWrite
                do {
                    kept = try JSONDecoder().decode(KeptWrite.self, from: row["write"] as Data)
                } catch {
                    throw MetadataCorruption(table: address.table, key: address.key, detail: "an unreadable kept write: \(error)")
                }
                let entry = try metadata.load(address)
                var state = entry.state
                let before = ApplyPlanner.visibleRow(state, table.schema, metadata.authority)
                CapturePlanner.apply(kept.operation, at: source.stamp(), to: &state, schema: table.schema)
                guard state != entry.state else { continue }
                try metadata.commit(entry, changedTo: state, at: address)
                if table.schema.uniqueIndexes.isEmpty {
                    let after = ApplyPlanner.visibleRow(state, table.schema, metadata.authority)
                    if after != before { try Materializer.write(after.map(ApplyPlanner.RowChange.upsert) ?? .delete, key: address.key, in: table, db) }
                }
                written += 1
            }
            _ = try metadata.settleUnique()
            try db.execute(sql: "DELETE FROM converge_resync")
            return written
        }
    }
}
