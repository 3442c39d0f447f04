import ConvergeCore
import GRDB

extension ReplicatedDatabase {
    /// Joins a remote changeset, in one transaction.
    ///
    /// Changed records take new local sequence numbers (so this replica relays them) and
    /// their visible rows are written into the app tables without being captured as local
    /// writes. Applying the same changeset again changes nothing. Records stamped more
    /// than `maxDriftMilliseconds` ahead of local time are quarantined, durably, and applied
    /// by a later apply once time has caught up (or by ``releaseQuarantine(force:)``).
    /// Records of tables not replicated here, and fields of columns not known here, are
    /// kept and forwarded.
    ///
    /// - Throws: ``ApplyError`` for a changeset that cannot be meant (a table name that is
    ///   not a plain identifier or names Converge's own tables, a key of the wrong type, a
    ///   merged row the app table refuses); the database is then unchanged.
    @discardableResult
    public func apply(_ changeset: Changeset) throws -> ApplyReport {
        let now = configuration.physicalTime()
        let ownReplica = source.replica
        let clockBefore = source.clock.latest
        var received = HLC.zero
        var rewound = false
        var report = try withMetadata { metadata -> ApplyReport in
            var report = ApplyReport()
            report.feedBefore = metadata.sequence
            report.releasedRecords = try release(&metadata, now: now, force: false, received: &received)
            for delta in changeset.records {
                try validate(delta, tables: metadata.tables)
                let maxHLC = delta.state.maxHLC
                if HybridClock.isTooFarAhead(maxHLC, physicalMilliseconds: now, maxDriftMilliseconds: configuration.maxDriftMilliseconds) {
                    try hold(delta, in: metadata.db)
                    report.quarantinedRecords += 1
                    continue
                }
                if delta.state.maxHLC(of: ownReplica) > clockBefore { rewound = true }
                received = max(received, maxHLC)
                if try merge(delta, into: &metadata) { report.changedRecords += 1 }
            }
            // A changeset that changed nothing was seen before, and the clock with it.
            if received > .zero && report.changedRecords + report.releasedRecords > 0 { source.receive(received) }
            report.feedAfter = metadata.sequence
            return report
        }
        if rewound {
            try resetIdentity()
            report.identityReset = true
        }
        return report
    }

    /// Applies quarantined records whose time has come (all of them when `force` is set;
    /// the clock then advances to them like any apply). Returns how many were applied.
    @discardableResult
    public func releaseQuarantine(force: Bool = false) throws -> Int {
        let now = configuration.physicalTime()
        var received = HLC.zero
        return try withMetadata { metadata in
            let released = try release(&metadata, now: now, force: force, received: &received)
            if received > .zero { source.receive(received) }
            return released
        }
    }

    /// The number of records held in quarantine.
    public func quarantinedCount() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_quarantine") ?? 0 }
    }

    /// Joins `delta` into the record's quarantined state.
    private func hold(_ delta: RecordDelta, in db: Database) throws {
        let key = delta.key.databaseValue
        var state = delta.state
        if let row = try Row.fetchOne(db, sql: "SELECT state FROM converge_quarantine WHERE tbl = ? AND key = ?", arguments: [delta.table, key]) {
            state = try RecordEntryCodec.decodeState(row.bytes("state"), table: delta.table, key: delta.key).merging(state)
        }
        try db.execute(
            sql: "INSERT OR REPLACE INTO converge_quarantine(tbl, key, max_hlc, state) VALUES (?, ?, ?, ?)",
            arguments: [delta.table, key, Int64(bitPattern: state.maxHLC.rawValue),
                        RecordEntryCodec.encodeState(state, table: delta.table, key: delta.key).databaseValue])
    }

    private func release(_ metadata: inout MetadataStore, now: UInt64, force: Bool, received: inout HLC) throws -> Int {
        let limit = now.addingReportingOverflow(configuration.maxDriftMilliseconds)
        let boundary = limit.overflow ? Int64.max : Int64(bitPattern: (min(limit.partialValue, HLC.millisecondsMax) << 16) | 0xFFFF)
        let rows = try Row.fetchAll(
            metadata.db, sql: "SELECT tbl, key, state FROM converge_quarantine WHERE ? OR max_hlc <= ? ORDER BY tbl, key",
            arguments: [force, boundary])
        for row in rows {
            let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
            let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: address.table, key: address.key)
            received = max(received, state.maxHLC)
            try merge(RecordDelta(table: address.table, key: address.key, state: state), into: &metadata)
            try metadata.db.execute(sql: "DELETE FROM converge_quarantine WHERE tbl = ? AND key = ?", arguments: [address.table, address.key.databaseValue])
        }
        return rows.count
    }

    private func validate(_ delta: RecordDelta, tables: [String: ReplicatedTable]) throws {
        guard isPlainIdentifier(delta.table), !isReservedName(delta.table) else {
            throw ApplyError(table: delta.table, key: delta.key, reason: .invalidTableName)
        }
        guard delta.key != .null else { throw ApplyError(table: delta.table, key: delta.key, reason: .nullKey) }
        if let table = tables[delta.table], !table.accepts(delta.key) {
            throw ApplyError(table: delta.table, key: delta.key, reason: .keyTypeMismatch(expected: table.keyType, actual: delta.key.storageClassName))
        }
    }

    /// Joins one delta into its record; writes the visible row when it changed.
    @discardableResult
    func merge(_ delta: RecordDelta, into metadata: inout MetadataStore) throws -> Bool {
        let address = RecordAddress(table: delta.table, key: delta.key)
        let entry = try metadata.load(address)
        let merged = entry.state.merging(delta.state)
        guard merged != entry.state else { return false }
        try metadata.commit(entry, changedTo: merged, at: address)
        if let table = metadata.tables[address.table], visibleRow(entry.state, table) != visibleRow(merged, table) {
            try Materializer.materialize(merged, key: address.key, in: table, metadata.db)
        }
        return true
    }

    private func visibleRow(_ state: RecordState, _ table: ReplicatedTable) -> [Value?]? {
        guard state.isAlive else { return nil }
        return table.schema.columns.map { state.value(of: $0, policy: table.schema.policy(of: $0)) }
    }
}
