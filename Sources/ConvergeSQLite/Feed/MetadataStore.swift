import ConvergeCore
import GRDB

/// Reads and writes `converge_records` inside one write transaction, and keeps the local
/// sequence counter. Everything that changes metadata goes through `commit(_:at:)`.
struct MetadataStore {
    let db: Database
    let tables: [String: ReplicatedTable]
    /// The replica whose concurrent writes show in `.authority` columns, if known.
    let authority: ReplicaID?
    /// The last local sequence number taken.
    private(set) var sequence: UInt64
    /// The statement that writes a record's row, prepared on the first commit (found in
    /// the connection's cache once per transaction, not once per record).
    private var upsertRecord: Statement?
    /// Records of tables with unique indexes committed since the last ``settleUnique()``.
    private var unsettled = [RecordAddress: UniquePlanner.Change]()

    init(_ db: Database, tables: [String: ReplicatedTable], authority: ReplicaID?) throws {
        self.db = db
        self.tables = tables
        self.authority = authority
        // The counter never trails the table (a row's number is its key: taking it twice
        // would fail the commit). Reading the table's last number is one step down its B-tree.
        let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT sequence, clock, (SELECT coalesce(max(seq), 0) FROM converge_records) AS top FROM converge_identity
            """))
        storedSequence = UInt64(bitPattern: row?["sequence"] ?? 0)
        sequence = max(storedSequence, UInt64(bitPattern: row?["top"] ?? 0))
        storedClock = HLC(rawValue: UInt64(bitPattern: row?["clock"] ?? 0))
    }

    /// The clock's high-water mark as the database held it when the transaction began.
    private let storedClock: HLC
    /// The sequence number as the database held it when the transaction began.
    private let storedSequence: UInt64

    func load(_ address: RecordAddress) throws -> RecordEntry {
        let statement = try db.cachedStatement(sql: "SELECT state, seqs FROM converge_records WHERE tbl = ? AND key = ?")
        guard let row = try Row.fetchOne(statement, arguments: [address.table, address.key.databaseValue]) else { return .empty }
        return try decode(row, address, state: 0, seqs: 1)
    }

    /// The stored entries of `addresses` (sorted), absent ones left out: one query per table
    /// and chunk of keys, read in key order, instead of one point read per record.
    func load(_ addresses: [RecordAddress]) throws -> [RecordAddress: RecordEntry] {
        var result = [RecordAddress: RecordEntry]()
        result.reserveCapacity(addresses.count)
        var start = addresses.startIndex
        while start < addresses.endIndex {
            let table = addresses[start].table
            var end = start
            while end < addresses.endIndex, end - start < keysPerBatchedRead, addresses[end].table == table { end += 1 }
            let (marks, keys) = paddedInList(addresses[start..<end].map { $0.key.databaseValue })
            let statement = try db.cachedStatement(sql: "SELECT key, state, seqs FROM converge_records WHERE tbl = ? AND key IN (\(marks)) ORDER BY key")
            let rows = try Row.fetchCursor(statement, arguments: StatementArguments(converted: [table.databaseValue] + keys))
            try read(rows, of: table, asked: addresses[start..<end].map(\.key), into: &result)
            start = end
        }
        return result
    }

    /// The stored entries of the records whose writes the capture log `log` (of `table`)
    /// holds, absent ones left out; `keys` are the log's distinct keys. One query joins the
    /// log's keys to the records in key order: no list of keys to bind, and no chunks.
    func loadLogged(_ table: String, log: String, keys: [Value]) throws -> [RecordAddress: RecordEntry] {
        var result = [RecordAddress: RecordEntry]()
        result.reserveCapacity(keys.count)
        let statement = try db.cachedStatement(
            sql: "SELECT key, state, seqs FROM converge_records WHERE tbl = ? AND key IN (SELECT key FROM \(log)) ORDER BY key")
        let rows = try Row.fetchCursor(statement, arguments: [table])
        try read(rows, of: table, asked: keys, into: &result)
        return result
    }

    /// Decodes the `key, state, seqs` rows of a batched load into `result`. SQL's `IN`
    /// compares 3 and 3.0 as equal, as a point read does: each entry is filed under the key
    /// that was asked for.
    private func read(_ rows: RowCursor, of table: String, asked keys: @autoclosure () -> [Value], into result: inout [RecordAddress: RecordEntry]) throws {
        var asked: Set<Value>?  // built on the first row: a batch of new keys finds none
        while let row = try rows.next() {
            var key = Value(row[0] as DatabaseValue)
            if asked == nil { asked = Set(keys()) }
            if !asked!.contains(key), let match = asked!.first(where: { sqlKeysEqual($0, key) }) { key = match }
            let address = RecordAddress(table: table, key: key)
            result[address] = try decode(row, address, state: 1, seqs: 2)
        }
    }

    func decode(_ row: Row, _ address: RecordAddress) throws -> RecordEntry {
        try decode(stateValue: row["state"], seqsValue: row["seqs"], address)
    }

    /// ``decode(_:_:)`` of a row whose `state` and `seqs` are at these positions: the hot
    /// paths (a load, a feed page) read them by position, with no lookup by name per row.
    func decode(_ row: Row, _ address: RecordAddress, state: Int, seqs: Int) throws -> RecordEntry {
        try decode(stateValue: row[state], seqsValue: row[seqs], address)
    }

    private func decode(stateValue: DatabaseValue, seqsValue: DatabaseValue, _ address: RecordAddress) throws -> RecordEntry {
        let stateBytes: [UInt8] = try blob(stateValue, "state", address)
        let sequenceBytes: [UInt8] = try blob(seqsValue, "seqs", address)
        let state = try RecordEntryCodec.decodeState(stateBytes, table: address.table, key: address.key)
        let (membership, fields) = try RecordEntryCodec.decodeSequences(sequenceBytes, table: address.table, key: address.key)
        return RecordEntry(state: state, membershipSequence: membership, fieldSequences: fields)
    }

    private func blob(_ value: DatabaseValue, _ column: String, _ address: RecordAddress) throws -> [UInt8] {
        guard case .blob(let data) = value.storage else {
            throw MetadataCorruption(table: address.table, key: address.key, detail: "\(column) is not a blob")
        }
        return [UInt8](data)
    }

    /// Stores `entry` changed to `state`, taking the next local sequence number for the
    /// parts that changed, and refreshes the record's open conflicts (as the planner lists
    /// them: ``ApplyPlanner/openConflicts(_:_:)``).
    mutating func commit(_ entry: RecordEntry, changedTo state: RecordState, at address: RecordAddress, writtenByApp: Bool = false) throws {
        try commit(
            entry, changedTo: state, at: address, conflicts: tables[address.table].flatMap { ApplyPlanner.openConflicts(state, $0.schema) },
            writtenByApp: writtenByApp)
    }

    /// ``commit(_:changedTo:at:)`` with the conflicts a plan already listed (`nil`: the table
    /// has no critical column, there is nothing to keep).
    ///
    /// A record of a table with unique indexes waits for ``settleUnique()`` to decide its row
    /// (`writtenByApp`: a captured local write already made it).
    mutating func commit(
        _ entry: RecordEntry, changedTo state: RecordState, at address: RecordAddress, conflicts: [String]?, writtenByApp: Bool = false
    ) throws {
        if let table = tables[address.table], !table.schema.uniqueIndexes.isEmpty {
            if let earlier = unsettled[address] {
                assert(earlier.writtenByApp == writtenByApp, "settle a capture before an apply of the same record")
                unsettled[address]?.after = state
            } else {
                unsettled[address] = UniquePlanner.Change(address: address, before: entry.state, after: state, writtenByApp: writtenByApp)
            }
        }
        sequence += 1
        let wasDead = !entry.state.isAlive && !entry.state.isBottom
        var entry = entry
        entry.update(to: state, at: sequence)
        // The row moves to its new sequence number, the end of the table. A number some other
        // record's row holds fails the statement (an upsert, not a replace, which would
        // delete that row).
        if upsertRecord == nil {
            upsertRecord = try db.cachedStatement(sql: """
                INSERT INTO converge_records(seq, tbl, key, state, seqs) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(tbl, key) DO UPDATE SET seq = excluded.seq, state = excluded.state, seqs = excluded.seqs
                """)
        }
        // A literal: GRDB builds it in code specialized for the array (cheaper per value than
        // ``StatementArguments/init(converted:)``, which goes through a generic sequence).
        try upsertRecord!.execute(arguments: [
            Int64(bitPattern: sequence), address.table, address.key.databaseValue,
            RecordEntry.encodeState(state).databaseValue,
            RecordEntryCodec.encodeSequences(entry).databaseValue,
        ])
        // The deleted records, for tombstone collection: listed while dead, with the
        // sequence number of their last change. A live record that was never dead costs nothing.
        if !state.isAlive {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO converge_dead(tbl, key, seq) VALUES (?, ?, ?)")
                .execute(arguments: [address.table, address.key.databaseValue, Int64(bitPattern: sequence)])
        } else if wasDead {
            try db.cachedStatement(sql: "DELETE FROM converge_dead WHERE tbl = ? AND key = ?").execute(arguments: [address.table, address.key.databaseValue])
        }
        guard let conflicts else { return }
        try db.cachedStatement(sql: "DELETE FROM converge_conflicts WHERE tbl = ? AND key = ?")
            .execute(arguments: [address.table, address.key.databaseValue])
        for column in conflicts {
            try db.cachedStatement(sql: "INSERT INTO converge_conflicts(tbl, key, col) VALUES (?, ?, ?)")
                .execute(arguments: [address.table, address.key.databaseValue, column])
        }
    }

    /// The records committed since the last settlement, in address order; forgets them.
    mutating func takeUnsettled() -> [UniquePlanner.Change] {
        defer { unsettled.removeAll() }
        return unsettled.values.sorted { $0.address < $1.address }
    }

    /// Stores the sequence number and the clock's high-water mark, when either moved: a
    /// transaction that changed nothing (a feed read with nothing to fold) writes nothing,
    /// so its commit appends no page to the WAL.
    func saveSequence(clock: HLC) throws {
        let clock = max(storedClock, clock)
        guard sequence != storedSequence || clock != storedClock else { return }
        try db.cachedStatement(sql: "UPDATE converge_identity SET sequence = ?, clock = ?")
            .execute(arguments: [Int64(bitPattern: sequence), Int64(bitPattern: clock.rawValue)])
    }

}
