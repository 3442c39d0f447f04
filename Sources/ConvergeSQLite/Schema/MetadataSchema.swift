import ConvergeCore
import GRDB

/// Converge's own tables, all named `converge_*`.
///
/// - `converge_identity`: the replica's ID, the clock's high-water mark, the last local
///   sequence number, the file fingerprint that detects copies, and the authority replica
///   (the sync server) whose concurrent writes show in `.authority` columns.
/// - `converge_tables`: the replicated tables and their policies.
/// - `converge_records`: one row per record (of replicated tables, and parked ones of tables
///   not replicated here yet): merge state and per-part sequence numbers, keyed by the
///   sequence number of its last change (so a changed row is appended, and the feed reads the
///   table in order) and found by `(tbl, key)` through a unique index.
/// - `converge_log_<table>`: local writes captured by triggers, appended in order and folded
///   into `converge_records` before the feed is read or a changeset applied. Appending costs
///   far less than updating a record's row at a random position on every write.
/// - `converge_quarantine`: remote changes stamped too far in the future, held back (one
///   joined state per record, so resending does not grow it).
/// - `converge_conflicts`: open conflicts on critical fields (observable).
/// - `converge_claims`: live records' claims on unique indexes (``ClaimIndex``): two rows
///   in one group are a constraint conflict (observable).
/// - `converge_rejections`: remote changes refused by a validator and undone (bounded).
/// - `converge_peers`: per-peer cursors.
/// - `converge_dead`: the deleted records and their sequence numbers: what tombstone
///   collection may drop once the delete is causally stable (``ReplicatedDatabase/collectableRecords(through:limit:)``).
/// - `converge_resync`: local writes kept across a reset for resync, re-applied once the
///   fresh snapshot is in (``ReplicatedDatabase/resetForResync(acknowledged:)``).
enum MetadataSchema {
    /// 2: `converge_quarantine.max_hlc` holds ``sortable(_:)`` readings.
    /// 3: the capture triggers keep `converge_conflicts` current and capture a write of a
    ///    conflicted critical field to its shown value.
    /// 4: `converge_dead` lists deleted records (for tombstone collection), filled from the
    ///    stored states.
    /// 5: state blobs in the metadata row's own format (``RecordEntry/encodeState(_:)``),
    ///    rewritten from the one-record wire changesets of earlier releases.
    /// 6: `converge_records` keyed by its sequence number (`seq INTEGER PRIMARY KEY`), with a
    ///    unique index on `(tbl, key)`, instead of a `WITHOUT ROWID` table keyed by
    ///    `(tbl, key)` with an index on `seq`. A record's row, the larger part, is now
    ///    appended at the end of the table's B-tree whenever it changes, and only the small
    ///    index entry lands at the key's random position; the feed reads the table in its
    ///    own order, and there is one index to keep instead of two.
    static let version = 6

    /// An HLC as an integer whose signed order is the HLC's unsigned order (the sign bit
    /// flipped), for columns SQL compares. The plain bit pattern would make every reading
    /// past 2^63 (beyond the year 6429, which a hostile peer can send) compare as negative,
    /// below every real one.
    static func sortable(_ hlc: HLC) -> Int64 { Int64(bitPattern: hlc.rawValue ^ (1 << 63)) }

    static func create(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE IF NOT EXISTS converge_identity (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                replica BLOB NOT NULL,
                clock INTEGER NOT NULL,
                sequence INTEGER NOT NULL,
                fingerprint TEXT,
                schema_version INTEGER NOT NULL,
                authority BLOB
            );
            CREATE TABLE IF NOT EXISTS converge_tables (
                name TEXT PRIMARY KEY NOT NULL,
                schema TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS converge_records (
                seq INTEGER PRIMARY KEY,
                tbl TEXT NOT NULL,
                key NOT NULL,
                state BLOB NOT NULL,
                seqs BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS converge_quarantine (
                tbl TEXT NOT NULL,
                key NOT NULL,
                max_hlc INTEGER NOT NULL,
                state BLOB NOT NULL,
                PRIMARY KEY (tbl, key)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS converge_conflicts (
                tbl TEXT NOT NULL,
                key NOT NULL,
                col TEXT NOT NULL,
                PRIMARY KEY (tbl, key, col)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS converge_claims (
                tbl TEXT NOT NULL,
                idx TEXT NOT NULL,
                vals BLOB NOT NULL,
                key NOT NULL,
                hlc INTEGER NOT NULL,
                replica BLOB NOT NULL,
                PRIMARY KEY (tbl, idx, vals, key)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS converge_rejections (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                tbl TEXT NOT NULL,
                key NOT NULL,
                reason TEXT NOT NULL,
                origin TEXT,
                at REAL NOT NULL
            );
            CREATE INDEX IF NOT EXISTS converge_rejections_by_origin ON converge_rejections(origin, id);
            CREATE TABLE IF NOT EXISTS converge_dead (
                tbl TEXT NOT NULL,
                key NOT NULL,
                seq INTEGER NOT NULL,
                PRIMARY KEY (tbl, key)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS converge_dead_by_seq ON converge_dead(seq);
            CREATE TABLE IF NOT EXISTS converge_resync (
                id INTEGER PRIMARY KEY,
                tbl TEXT NOT NULL,
                key NOT NULL,
                write BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS converge_peers (
                peer TEXT PRIMARY KEY NOT NULL,
                sent INTEGER NOT NULL DEFAULT 0,
                received INTEGER NOT NULL DEFAULT 0
            );
            """)
        // Databases created before `authority` existed.
        if try !db.columns(in: "converge_identity").contains(where: { $0.name == "authority" }) {
            try db.execute(sql: "ALTER TABLE converge_identity ADD COLUMN authority BLOB")
        }
        try migrate(db)
        // After the migration, which rebuilds the table of an older layout: indexing that
        // one first would be wasted work.
        try db.execute(sql: "CREATE UNIQUE INDEX IF NOT EXISTS converge_records_by_key ON converge_records(tbl, key)")
    }

    /// Brings a database made by an earlier release up to ``version`` (a fresh one gets
    /// the current version when its identity is created).
    private static func migrate(_ db: Database) throws {
        guard let stored = try Int.fetchOne(db, sql: "SELECT schema_version FROM converge_identity"), stored < version else { return }
        if stored < 2 {
            // Plain bit patterns to sortable ones: flipping the sign bit, written so that
            // no intermediate value overflows SQLite's 64-bit integers.
            try db.execute(sql: """
                UPDATE converge_quarantine SET max_hlc = CASE WHEN max_hlc < 0
                    THEN max_hlc + 9223372036854775807 + 1 ELSE max_hlc - 9223372036854775807 - 1 END
                """)
        }
        if stored < 3 {
            for table in try ReplicatedTable.load(db).values { try CaptureTriggers.installTriggers(db, table: table) }
        }
        if stored < 4 {
            let rows = try Row.fetchCursor(db, sql: "SELECT tbl, key, seq, state FROM converge_records")
            var dead = [(String, DatabaseValue, Int64)]()
            while let row = try rows.next() {
                let table: String = row["tbl"]
                let key = Value(row["key"] as DatabaseValue)
                let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: table, key: key)
                if !state.isAlive { dead.append((table, key.databaseValue, row["seq"])) }
            }
            for (table, key, seq) in dead {
                try db.execute(sql: "INSERT OR REPLACE INTO converge_dead(tbl, key, seq) VALUES (?, ?, ?)", arguments: [table, key, seq])
            }
        }
        if stored < 5 {
            for table in ["converge_records", "converge_quarantine"] {
                try rewriteLegacyStates(db, in: table)
            }
        }
        if stored < 6 {
            try rekeyRecordsBySequence(db)
        }
        try db.execute(sql: "UPDATE converge_identity SET schema_version = ?", arguments: [version])
    }

    /// Rewrites every state blob of `table` still in the wire format of earlier releases in
    /// the current one; a blob that reads in neither is reported as the record's corruption.
    private static func rewriteLegacyStates(_ db: Database, in table: String) throws {
        let rows = try Row.fetchCursor(db, sql: "SELECT tbl, key, state FROM \(table)")
        var rewritten = [(String, DatabaseValue, [UInt8])]()
        while let row = try rows.next() {
            let bytes = row.bytes("state")
            guard RecordEntry.isLegacyState(bytes) else { continue }
            let name: String = row["tbl"]
            let key = Value(row["key"] as DatabaseValue)
            let state = try RecordEntryCodec.decodeState(bytes, table: name, key: key)
            rewritten.append((name, key.databaseValue, RecordEntry.encodeState(state)))
        }
        let statement = try db.makeStatement(sql: "UPDATE \(table) SET state = ? WHERE tbl = ? AND key = ?")
        for (name, key, bytes) in rewritten { try statement.execute(arguments: [bytes.databaseValue, name, key]) }
    }

    /// Rebuilds a `converge_records` of the layout before version 6 (keyed by `(tbl, key)`)
    /// keyed by `seq`, in sequence order. Each commit takes a sequence number of its own, so
    /// two rows never share one; should a damaged file hold such rows anyway, every one after
    /// the first takes a new number past the last (its fields keep their positions, so a peer
    /// is sent nothing it has, and nothing is dropped).
    private static func rekeyRecordsBySequence(_ db: Database) throws {
        guard try db.indexes(on: "converge_records").contains(where: { $0.name == "converge_records_by_seq" }) else { return }
        try db.execute(sql: """
            CREATE TABLE converge_records_rekeyed (
                seq INTEGER PRIMARY KEY,
                tbl TEXT NOT NULL,
                key NOT NULL,
                state BLOB NOT NULL,
                seqs BLOB NOT NULL
            )
            """)
        // Renumbered rows go past every number taken, the table's and the counter's.
        var sequence = max(
            UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT sequence FROM converge_identity") ?? 0),
            UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT coalesce(max(seq), 0) FROM converge_records") ?? 0))
        let insert = try db.makeStatement(sql: "INSERT INTO converge_records_rekeyed(seq, tbl, key, state, seqs) VALUES (?, ?, ?, ?, ?)")
        let rows = try Row.fetchCursor(db, sql: "SELECT seq, tbl, key, state, seqs FROM converge_records ORDER BY seq, tbl, key")
        var previous: Int64?
        var renumbered = false
        while let row = try rows.next() {
            var seq: Int64 = row["seq"]
            if seq == previous || seq <= 0 {
                sequence += 1
                seq = Int64(bitPattern: sequence)
                renumbered = true
            } else {
                previous = seq
            }
            try insert.execute(arguments: [seq, row["tbl"], row["key"], row["state"], row["seqs"]])
        }
        if renumbered {
            try db.execute(sql: "UPDATE converge_identity SET sequence = ?", arguments: [Int64(bitPattern: sequence)])
        }
        try db.execute(sql: "DROP TABLE converge_records")
        try db.execute(sql: "ALTER TABLE converge_records_rekeyed RENAME TO converge_records")
    }

    static func logTable(_ table: String) -> String { "converge_log_\(table)" }
}
