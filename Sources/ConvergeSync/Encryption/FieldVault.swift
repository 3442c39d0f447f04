import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// A field of an encrypted column this device received but cannot read (DESIGN §11):
/// held, never dropped, and applied once the keys that open it are given.
public struct HeldEncryptedField: Sendable, Hashable {
    /// The replicated table of the held field.
    public var table: String
    /// The primary key of the record the field belongs to.
    public var key: Value
    /// The encrypted column whose value is held.
    public var column: String
    /// Why it did not open: most often ``FieldEncryptionError/unknownKeyID(_:)``.
    public var reason: FieldEncryptionError
}

/// The device's side tables of field-level encryption, beside the sync log:
///
/// - `converge_sync_held_fields`: pulled fields that did not open, one row per field,
///   joined with later arrivals of the same field (so a re-pulled page is idempotent);
/// - `converge_sync_sealed_keys`: the key id each live write of an encrypted field was
///   sealed with (received under, or first sent under). A write is relayed (a device pushes
///   the records it applied) and re-sent (a retry), possibly after the current key changed:
///   sealing it under its first key id again gives the same bytes, so the server sees one
///   value per stamp (another value would be a forgery to its authorship check). Rows of
///   superseded writes are pruned as their fields move on.
enum FieldVault {
    static func install(in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS converge_sync_held_fields(
                    tbl TEXT NOT NULL, key NOT NULL, col TEXT NOT NULL, state BLOB NOT NULL, reason TEXT NOT NULL,
                    PRIMARY KEY(tbl, key, col));
                CREATE TABLE IF NOT EXISTS converge_sync_sealed_keys(
                    tbl TEXT NOT NULL, key NOT NULL, col TEXT NOT NULL, stamp BLOB NOT NULL, key_id TEXT NOT NULL,
                    PRIMARY KEY(tbl, key, col, stamp)) WITHOUT ROWID;
                """)
        }
    }

    // MARK: Held fields

    /// Holds `fields`, joined with what is held already for the same fields.
    static func hold(_ fields: [HeldField], _ db: Database) throws {
        for field in fields {
            var state = field.state
            if let row = try Row.fetchOne(
                db, sql: "SELECT state FROM converge_sync_held_fields WHERE tbl = ? AND key = ? AND col = ?",
                arguments: [field.table, field.key.databaseValue, field.column]),
                let existing = decode(Array(row["state"] as Data), table: field.table, key: field.key, column: field.column)
            {
                state = existing.merging(state)
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO converge_sync_held_fields(tbl, key, col, state, reason) VALUES (?, ?, ?, ?, ?)",
                arguments: [field.table, field.key.databaseValue, field.column, Data(encode(state, field)), reasonText(field.reason)])
        }
    }

    /// Every held field as a one-field changeset of its record (sealed values included).
    static func held(_ db: Database) throws -> Changeset {
        var records = [RecordDelta]()
        for row in try Row.fetchAll(db, sql: "SELECT tbl, key, col, state FROM converge_sync_held_fields ORDER BY tbl, key, col") {
            let table: String = row["tbl"], column: String = row["col"]
            let key = Value(row["key"] as DatabaseValue)
            // An unreadable row is left in place (it still counts): nothing is dropped.
            guard let state = decode(Array(row["state"] as Data), table: table, key: key, column: column) else { continue }
            records.append(RecordDelta(table: table, key: key, state: RecordState(membership: ORSet(), fields: [column: state])))
        }
        return Changeset(records: records)
    }

    static func heldList(_ db: Database) throws -> [HeldEncryptedField] {
        try Row.fetchAll(db, sql: "SELECT tbl, key, col, reason FROM converge_sync_held_fields ORDER BY tbl, key, col").map { row in
            let reason: String = row["reason"]
            return HeldEncryptedField(
                table: row["tbl"], key: Value(row["key"] as DatabaseValue), column: row["col"],
                reason: (try? JSONDecoder().decode(FieldEncryptionError.self, from: Data(reason.utf8))) ?? .malformedEnvelope(reason))
        }
    }

    private static func reasonText(_ reason: FieldEncryptionError) -> String {
        (try? JSONEncoder().encode(reason)).map { String(decoding: $0, as: UTF8.self) } ?? "\(reason)"
    }

    static func updateReasons(of fields: [HeldField], _ db: Database) throws {
        for field in fields {
            try db.execute(
                sql: "UPDATE converge_sync_held_fields SET reason = ? WHERE tbl = ? AND key = ? AND col = ?",
                arguments: [reasonText(field.reason), field.table, field.key.databaseValue, field.column])
        }
    }

    static func heldCount(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_sync_held_fields") ?? 0
    }

    static func release(table: String, key: Value, column: String, _ db: Database) throws {
        try db.execute(
            sql: "DELETE FROM converge_sync_held_fields WHERE tbl = ? AND key = ? AND col = ?", arguments: [table, key.databaseValue, column])
    }

    /// Drops what is held of records the server collected: their deletes are causally
    /// stable, so a held write of theirs is superseded and would only revive a tombstone.
    static func dropHeld(of addresses: [RecordAddress], _ db: Database) throws {
        for address in addresses {
            try db.execute(sql: "DELETE FROM converge_sync_held_fields WHERE tbl = ? AND key = ?", arguments: [address.table, address.key.databaseValue])
            try db.execute(sql: "DELETE FROM converge_sync_sealed_keys WHERE tbl = ? AND key = ?", arguments: [address.table, address.key.databaseValue])
        }
    }

    private static func encode(_ state: FieldState, _ field: HeldField) -> [UInt8] {
        WireEncoder.encode(Changeset(records: [
            RecordDelta(table: field.table, key: field.key, state: RecordState(membership: ORSet(), fields: [field.column: state]))
        ]))
    }

    private static func decode(_ bytes: [UInt8], table: String, key: Value, column: String) -> FieldState? {
        guard let changeset = try? WireDecoder.decode(bytes), changeset.records.count == 1 else { return nil }
        return changeset.records[0].state.fields[column]
    }

    // MARK: Key ids of sealed writes

    /// The key ids `writes` were sealed with before, for those that have one.
    static func keyIDs(of writes: some Sequence<SealedWrite>, _ db: Database) throws -> [SealedWrite: String] {
        var result = [SealedWrite: String]()
        for write in writes {
            if let id = try String.fetchOne(
                db, sql: "SELECT key_id FROM converge_sync_sealed_keys WHERE tbl = ? AND key = ? AND col = ? AND stamp = ?",
                arguments: [write.table, write.key.databaseValue, write.column, Data(stampBytes(write.stamp))])
            {
                result[write] = id
            }
        }
        return result
    }

    /// Records the key id of each write in `keyIDs`, and forgets the writes of the same
    /// fields that `isSuperseded` says are gone.
    static func remember(_ keyIDs: [SealedWrite: String], isSuperseded: (SealedWrite) -> Bool, _ db: Database) throws {
        var fields = Set<RecordAddressAndColumn>()
        for (write, id) in keyIDs {
            fields.insert(RecordAddressAndColumn(table: write.table, key: write.key, column: write.column))
            try db.execute(
                sql: "INSERT OR REPLACE INTO converge_sync_sealed_keys(tbl, key, col, stamp, key_id) VALUES (?, ?, ?, ?, ?)",
                arguments: [write.table, write.key.databaseValue, write.column, Data(stampBytes(write.stamp)), id])
        }
        for field in fields {
            let stamps = try Data.fetchAll(
                db, sql: "SELECT stamp FROM converge_sync_sealed_keys WHERE tbl = ? AND key = ? AND col = ?",
                arguments: [field.table, field.key.databaseValue, field.column])
            for bytes in stamps {
                guard let stamp = stamp(Array(bytes)) else { continue }
                if isSuperseded(SealedWrite(table: field.table, key: field.key, column: field.column, stamp: stamp)) {
                    try db.execute(
                        sql: "DELETE FROM converge_sync_sealed_keys WHERE tbl = ? AND key = ? AND col = ? AND stamp = ?",
                        arguments: [field.table, field.key.databaseValue, field.column, bytes])
                }
            }
        }
    }

    private struct RecordAddressAndColumn: Hashable {
        var table: String
        var key: Value
        var column: String
    }

    /// Clock then replica, big-endian: byte order is stamp order.
    private static func stampBytes(_ stamp: Stamp) -> [UInt8] {
        withUnsafeBytes(of: stamp.hlc.rawValue.bigEndian) { Array($0) } + stamp.replica.bytes
    }

    private static func stamp(_ bytes: [UInt8]) -> Stamp? {
        guard bytes.count == 24, let replica = ReplicaID(bytes: bytes[8...]) else { return nil }
        return Stamp(hlc: HLC(rawValue: bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }), replica: replica)
    }
}
