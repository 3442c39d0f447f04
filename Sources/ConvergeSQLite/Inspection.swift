import ConvergeCore
import Foundation
import GRDB

/// Read-only access to the metadata, for tools that inspect a database file (the `converge`
/// command line) rather than replicate it.
///
/// Each reads through a plain GRDB `Database`, so that it runs on a read-only connection:
/// opening a ``ReplicatedDatabase`` writes (it creates missing metadata tables, records the
/// file's fingerprint, and takes a new identity when the file turns out to be a copy, which
/// an inspected file often is). None of these folds the captured log, writes or moves a clock.
extension ReplicatedDatabase {
    /// The identity row as stored.
    public struct StoredIdentity: Sendable, Hashable {
        /// The replica identity.
        public var replica: ReplicaID
        /// The clock's saved high-water mark (local writes captured but not folded yet may
        /// carry larger stamps: see ``ReplicatedDatabase/capturedWrites(_:table:replica:)``).
        public var clock: HLC
        /// The last local sequence number taken: the feed's head once the log is folded.
        public var sequence: UInt64
        /// The version of Converge's metadata schema the file holds.
        public var schemaVersion: Int
        /// The replica whose concurrent writes show in `.authority` columns, once learned.
        public var authority: ReplicaID?
        /// `path|device|inode` of the file the identity was made for.
        public var fingerprint: String?
    }

    /// A replicated table as recorded: its merge schema and its key's declared SQL type.
    public struct StoredTable: Sendable, Hashable {
        /// The table's merge schema: columns, policies, delete policy, unique indexes.
        public var schema: TableSchema
        /// Upper-cased, as declared ("TEXT", "BLOB", ...; empty when undeclared).
        public var keyType: String
    }

    /// One record's metadata row.
    public struct StoredRecord: Sendable, Hashable {
        /// The record's table.
        public var table: String
        /// The record's primary key.
        public var key: Value
        /// The record's merge state.
        public var state: RecordState
        /// The local sequence number at which anything in the record last changed.
        public var sequence: UInt64
        /// The sequence at which the membership last changed.
        public var membershipSequence: UInt64
        /// The sequence at which each field last changed.
        public var fieldSequences: [String: UInt64]
    }

    /// A remote record state held back because it was stamped too far ahead.
    public struct QuarantinedRecord: Sendable, Hashable {
        /// The record's table.
        public var table: String
        /// The record's primary key.
        public var key: Value
        /// The held state, joined over everything quarantined for the record.
        public var state: RecordState
    }

    /// What one metadata table holds.
    public struct MetadataSize: Sendable, Hashable {
        /// Records per table name, parked ones (of tables not replicated here) included.
        public var recordsByTable: [String: Int]
        /// Bytes of stored merge states and sequence lists, over all records.
        public var recordBytes: Int
        /// Local writes captured and not yet folded, per replicated table.
        public var capturedWritesByTable: [String: Int]
        /// Records held in quarantine.
        public var quarantinedRecords: Int
        /// Rejections recorded (see ``ReplicatedDatabase/rejections(origin:after:limit:)``).
        public var rejections: Int
        /// Open conflicts, field and constraint ones.
        public var openConflicts: Int
    }

    /// Whether `db` holds Converge's metadata (its identity table).
    public static func hasConvergeMetadata(_ db: Database) throws -> Bool {
        try db.tableExists("converge_identity")
    }

    /// The identity row; throws ``MetadataCorruption`` when it is missing or unreadable.
    public static func storedIdentity(_ db: Database) throws -> StoredIdentity {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM converge_identity") else {
            throw MetadataCorruption(table: "converge_identity", key: nil, detail: "no identity row")
        }
        func replica(_ column: String) throws -> ReplicaID? {
            let value: DatabaseValue = row[column]
            switch value.storage {
            case .null: return nil
            case .blob(let data):
                if let id = ReplicaID(bytes: [UInt8](data)) { return id }
                fallthrough
            default: throw MetadataCorruption(table: "converge_identity", key: nil, detail: "\(column) is not a 16-byte replica id")
            }
        }
        guard let id = try replica("replica") else {
            throw MetadataCorruption(table: "converge_identity", key: nil, detail: "no replica id")
        }
        let hasAuthority = row.hasColumn("authority")
        return StoredIdentity(
            replica: id, clock: HLC(rawValue: UInt64(bitPattern: row["clock"])), sequence: UInt64(bitPattern: row["sequence"]),
            schemaVersion: row["schema_version"], authority: hasAuthority ? try replica("authority") : nil, fingerprint: row["fingerprint"])
    }

    /// The replicated tables as recorded, by name.
    public static func storedTables(_ db: Database) throws -> [String: StoredTable] {
        try ReplicatedTable.load(db).mapValues { StoredTable(schema: $0.schema, keyType: $0.keyType) }
    }

    /// The metadata row of one record, or `nil` when none is stored.
    public static func storedRecord(_ db: Database, table: String, key: Value) throws -> StoredRecord? {
        let row = try Row.fetchOne(
            db, sql: "SELECT tbl, key, seq, state, seqs FROM converge_records WHERE tbl = ? AND key = ?", arguments: [table, key.databaseValue])
        return try row.map(storedRecord)
    }

    /// Every metadata row of `table` (parked tables too), sorted by key.
    ///
    /// - Complexity: O(n) reads for n records, plus the sort.
    public static func storedRecords(_ db: Database, table: String) throws -> [StoredRecord] {
        var records = [StoredRecord]()
        let rows = try Row.fetchCursor(db, sql: "SELECT tbl, key, seq, state, seqs FROM converge_records WHERE tbl = ?", arguments: [table])
        while let row = try rows.next() { records.append(try storedRecord(row)) }
        // Sorted by ``Value``'s order, not SQLite's (which compares 3 and 3.0 as equal).
        return records.sorted { $0.key < $1.key }
    }

    /// The keys of `table`'s metadata rows, sorted, without decoding them: to read the
    /// records one by one (``storedRecord(_:table:key:)``) and find the ones that are corrupt.
    public static func storedKeys(_ db: Database, table: String) throws -> [Value] {
        try DatabaseValue.fetchAll(db, sql: "SELECT key FROM converge_records WHERE tbl = ?", arguments: [table]).map(Value.init).sorted()
    }

    private static func storedRecord(_ row: Row) throws -> StoredRecord {
        let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
        // The same checks as the store's own decoding: a state that is not a blob, or does
        // not decode, is corruption, not an empty record.
        func blob(_ column: String) throws -> [UInt8] {
            let value: DatabaseValue = row[column]
            guard case .blob(let data) = value.storage else {
                throw MetadataCorruption(table: address.table, key: address.key, detail: "\(column) is not a blob")
            }
            return [UInt8](data)
        }
        let state = try RecordEntryCodec.decodeState(try blob("state"), table: address.table, key: address.key)
        let (membership, fields) = try RecordEntryCodec.decodeSequences(try blob("seqs"), table: address.table, key: address.key)
        return StoredRecord(
            table: address.table, key: address.key, state: state, sequence: UInt64(bitPattern: row["seq"]),
            membershipSequence: membership, fieldSequences: fields.dictionary)
    }

    /// The local writes of `table` captured by the triggers and not yet folded into the
    /// metadata, in capture order, as the fold would replay them (`CapturePlanner.fold(_:schema:stored:keys:)`
    /// on the stored states gives the states the next fold will store).
    ///
    /// - Parameters:
    ///   - db: A database connection to read from.
    ///   - table: The replicated table, as ``storedTables(_:)`` lists it.
    ///   - replica: the replica the stamps belong to (``storedIdentity(_:)``).
    public static func capturedWrites(_ db: Database, table: StoredTable, replica: ReplicaID) throws -> [CapturePlanner.Write] {
        let log = MetadataSchema.logTable(table.schema.name)
        guard try db.tableExists(log) else { return [] }
        return try CaptureLog.writes(db, schema: table.schema, replica: replica).writes
    }

    /// The cursors kept for every peer, by peer name.
    public static func peerCursors(_ db: Database) throws -> [String: PeerCursor] {
        var result = [String: PeerCursor]()
        for row in try Row.fetchAll(db, sql: "SELECT peer, sent, received FROM converge_peers") {
            result[row["peer"]] = PeerCursor(sent: UInt64(bitPattern: row["sent"]), received: UInt64(bitPattern: row["received"]))
        }
        return result
    }

    /// How many records a peer whose cursor is `cursor` has still to receive: as
    /// ``changedRecordCount(since:)``, captured local writes counted once per record.
    public static func changedRecordCount(_ db: Database, since cursor: UInt64, tables: [String]) throws -> Int {
        var parts = ["SELECT tbl, key FROM converge_records WHERE seq > ?"]
        var arguments: [DatabaseValueConvertible] = [Int64(bitPattern: cursor)]
        for table in tables.sorted() where try db.tableExists(MetadataSchema.logTable(table)) {
            parts.append("SELECT ?, key FROM \(quoted(MetadataSchema.logTable(table)))")
            arguments.append(table)
        }
        let sql = "SELECT count(*) FROM (" + parts.joined(separator: " UNION ") + ")"
        return try Int.fetchOne(db.cachedStatement(sql: sql), arguments: StatementArguments(arguments)) ?? 0
    }

    /// The quarantined record states, sorted by table and key.
    public static func quarantinedRecords(_ db: Database) throws -> [QuarantinedRecord] {
        var result = [QuarantinedRecord]()
        let rows = try Row.fetchCursor(db, sql: "SELECT tbl, key, state FROM converge_quarantine")
        while let row = try rows.next() {
            let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
            let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: address.table, key: address.key)
            result.append(QuarantinedRecord(table: address.table, key: address.key, state: state))
        }
        return result.sorted { RecordAddress(table: $0.table, key: $0.key) < RecordAddress(table: $1.table, key: $1.key) }
    }

    /// The recorded rejections after `id`, oldest first (as ``rejections(origin:after:limit:)``).
    public static func rejections(_ db: Database, after id: Int64 = 0, limit: Int = 100) throws -> [ChangeRejection] {
        let rows = try Row.fetchAll(
            db, sql: "SELECT id, tbl, key, reason, origin, at FROM converge_rejections WHERE id > ? ORDER BY id LIMIT ?",
            arguments: [id, max(0, limit)])
        return rows.map { row in
            ChangeRejection(
                id: row["id"], table: row["tbl"], key: Value(row["key"] as DatabaseValue), reason: row["reason"],
                origin: row["origin"], date: Date(timeIntervalSince1970: row["at"]))
        }
    }

    /// Counts and sizes of the metadata.
    public static func metadataSize(_ db: Database) throws -> MetadataSize {
        var records = [String: Int]()
        for row in try Row.fetchAll(db, sql: "SELECT tbl, count(*) AS n FROM converge_records GROUP BY tbl") { records[row["tbl"]] = row["n"] }
        let bytes = try Int.fetchOne(db, sql: "SELECT coalesce(sum(length(state) + length(seqs)), 0) FROM converge_records") ?? 0
        var captured = [String: Int]()
        for table in try String.fetchAll(db, sql: "SELECT name FROM converge_tables") where try db.tableExists(MetadataSchema.logTable(table)) {
            captured[table] = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(quoted(MetadataSchema.logTable(table)))") ?? 0
        }
        return MetadataSize(
            recordsByTable: records, recordBytes: bytes, capturedWritesByTable: captured,
            quarantinedRecords: try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_quarantine") ?? 0,
            rejections: try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_rejections") ?? 0,
            openConflicts: try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_conflicts") ?? 0)
    }
}
