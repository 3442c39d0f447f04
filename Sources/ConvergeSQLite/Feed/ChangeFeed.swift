import ConvergeCore
import GRDB

extension ReplicatedDatabase {
    /// The per-field deltas of records that changed after `cursor`, in feed order.
    ///
    /// A page holds at most `maxRecords` records and stops once it reaches about
    /// `maxBytes` of metadata (it always holds at least one record, however large).
    /// Remote changes applied here are in the feed too, so a replica relays what it got.
    ///
    /// To read the next page, pass the *same* `cursor` and `after: batch.next`: the cursor
    /// stays fixed while paging because a record that changed again beyond a page may have
    /// older parts inside it, which are sent with the rest of the record when its turn
    /// comes. Once `hasMore` is false, `next` is the cursor of the following round.
    ///
    /// - Complexity: O(log n + k) for k records returned (the metadata table is keyed by
    ///   sequence number: a page is one range of it, read in order).
    public func changes(since cursor: UInt64, after position: UInt64? = nil, maxRecords: Int = 1_000, maxBytes: Int = 1 << 20) throws -> ChangeBatch {
        precondition(maxRecords > 0 && maxBytes > 0, "a feed page must allow at least one record")
        let start = max(position ?? cursor, cursor)
        // Reads never write (DESIGN §8): with nothing captured to fold, the page is read in a
        // read transaction. Its snapshot holds every local write committed before it, all
        // folded (the log is empty in it), so the page misses none. Only when the log holds
        // writes does the read fold them first, in a write transaction.
        let names = Array(tables.keys)  // any order: the check stops at the first log with a write
        if let batch = try writer.readKeepingStatements({ db -> ChangeBatch? in
            guard try !LogFold.hasCapturedWrites(db, tables: names) else { return nil }
            return try Self.page(MetadataStore(db, tables: tables, authority: nil), cursor: cursor, start: start, maxRecords: maxRecords, maxBytes: maxBytes)
        }) {
            return batch
        }
        return try withMetadata { metadata in
            try Self.page(metadata, cursor: cursor, start: start, maxRecords: maxRecords, maxBytes: maxBytes)
        }
    }

    /// A feed page read from `metadata`'s transaction (see ``changes(since:after:maxRecords:maxBytes:)``).
    private static func page(_ metadata: MetadataStore, cursor: UInt64, start: UInt64, maxRecords: Int, maxBytes: Int) throws -> ChangeBatch {
        let rows = try Row.fetchCursor(
            metadata.db.cachedStatement(sql: "SELECT tbl, key, seq, state, seqs FROM converge_records WHERE seq > ? ORDER BY seq LIMIT ?"),
            arguments: [Int64(bitPattern: start), maxRecords + 1])
        var records = [RecordDelta]()
        var bytes = 0
        var next = start
        var hasMore = false
        while let row = try rows.next() {
            // By position: tbl, key, seq, state, seqs.
            let size = Self.blobSize(row[3] as DatabaseValue)
            if records.count == maxRecords || (bytes + size > maxBytes && !records.isEmpty) {
                hasMore = true
                break
            }
            let address = RecordAddress(table: row[0], key: Value(row[1] as DatabaseValue))
            let entry = try metadata.decode(row, address, state: 3, seqs: 4)
            records.append(RecordDelta(table: address.table, key: address.key, state: entry.delta(after: cursor)))
            bytes += size
            next = UInt64(bitPattern: row[2])
        }
        if !hasMore { next = max(next, metadata.sequence) }
        return ChangeBatch(changeset: Changeset(records: records), next: next, hasMore: hasMore)
    }

    /// The size of a blob column's value (0 for anything else), without copying it.
    private static func blobSize(_ value: DatabaseValue) -> Int {
        if case .blob(let data) = value.storage { return data.count }
        return 0
    }

    /// The feed position that covers every local write committed so far: the captured log
    /// is folded first (a write transaction). A peer whose acknowledged cursor reaches it
    /// holds all of them: what an upload checkpoint waits for.
    public func capturedFeedPosition() throws -> UInt64 {
        try withMetadata { metadata in metadata.sequence }
    }

    /// The feed's position: the cursor a peer holds once it has everything (folded local
    /// writes included). Reads only.
    public func feedHead() throws -> UInt64 {
        try writer.readKeepingStatements { db in
            UInt64(bitPattern: try Int64.fetchOne(db.cachedStatement(sql: "SELECT coalesce(max(seq), 0) FROM converge_records")) ?? 0)
        }
    }

    /// How many records changed after `cursor` (the pending count for a sync status).
    ///
    /// Only reads: records whose metadata changed after `cursor`, and those with local
    /// writes captured but not folded yet, counted once each.
    public func changedRecordCount(since cursor: UInt64) throws -> Int {
        let tables = self.tables.keys.sorted()
        return try writer.readKeepingStatements { db in try Self.changedRecordCount(db, since: cursor, tables: tables) }
    }

    /// Every record's full merge state, sorted by table and key: comparable byte for byte
    /// between replicas, and with the core model's `ReplicaState.snapshot`.
    public func snapshot() throws -> Changeset {
        try withMetadata { metadata in
            var records = [RecordDelta]()
            let rows = try Row.fetchCursor(metadata.db, sql: "SELECT tbl, key, state, seqs FROM converge_records")
            while let row = try rows.next() {
                let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
                records.append(RecordDelta(table: address.table, key: address.key, state: try metadata.decode(row, address).state))
            }
            return Changeset(records: records).normalized
        }
    }

    /// The cursors kept for `peer`.
    public func cursor(for peer: String) throws -> PeerCursor {
        try writer.readKeepingStatements { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT sent, received FROM converge_peers WHERE peer = ?"), arguments: [peer]) else {
                return PeerCursor()
            }
            return PeerCursor(sent: UInt64(bitPattern: row["sent"]), received: UInt64(bitPattern: row["received"]))
        }
    }

    /// Records the cursors for `peer` (durably; call it only after the peer acknowledged,
    /// or after what it sent was applied).
    public func setCursor(_ cursor: PeerCursor, for peer: String) throws {
        try writer.write { db in
            try db.execute(
                sql: "INSERT INTO converge_peers(peer, sent, received) VALUES (?, ?, ?) ON CONFLICT(peer) DO UPDATE SET sent = excluded.sent, received = excluded.received",
                arguments: [peer, Int64(bitPattern: cursor.sent), Int64(bitPattern: cursor.received)])
        }
    }
}
