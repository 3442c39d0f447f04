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
        try apply(changeset, origin: nil, validate: nil)
    }

    /// Joins a remote changeset like ``apply(_:)``, and lets `validate` refuse what it did.
    ///
    /// `validate` sees each record of a replicated table whose visible row the changeset
    /// changed, before and after, and returns a reason to refuse it (or `nil`). A refused
    /// change is undone by a *compensating write*: this replica writes the row as it was,
    /// as a local write stamped after everything it received, so every replica that syncs
    /// converges to it, the device that made the change included. The merge, the
    /// compensations and the recorded rejections (see ``rejections(origin:after:limit:)``)
    /// commit together or not at all. This is how a sync server enforces rules.
    ///
    /// Only visible rows are validated: a concurrent value kept as a sibling of a critical
    /// field is checked when someone resolves the conflict with it.
    ///
    /// - Parameters:
    ///   - origin: Who sent the changeset (a device name); recorded with each rejection.
    ///   - validate: Returns why `change` is refused, or `nil` to accept it. Throwing aborts
    ///     the whole apply, leaving the database unchanged.
    @discardableResult
    public func apply(_ changeset: Changeset, origin: String?, validate: ((ProposedChange) throws -> String?)?) throws -> ApplyReport {
        try apply(changeset, options: ApplyOptions(origin: origin, validate: validate))
    }

    /// Joins a remote changeset like ``apply(_:origin:validate:)``, with the checks and the
    /// extra work of `options` in the same transaction: the events a sender may not have made
    /// (``ApplyOptions/author``) and writes that must commit with the merge
    /// (``ApplyOptions/beforeCommit``).
    @discardableResult
    public func apply(_ changeset: Changeset, options: ApplyOptions) throws -> ApplyReport {
        let validate = options.validate
        let now = configuration.physicalTime()
        let ownReplica = source.replica
        let clockBefore = source.clock.latest
        var received = HLC.zero
        var rewound = false
        var report = try withMetadata { metadata -> ApplyReport in
            var report = ApplyReport()
            report.feedBefore = metadata.sequence
            var touched: ChangeTracker? = validate == nil ? nil : ChangeTracker()
            report.releasedRecords = try release(&metadata, now: now, force: false, received: &received, tracker: &touched)
            var parkedRecordsAdded = false
            for delta in changeset.records {
                try checkAddress(delta, tables: metadata.tables)
                if options.author != nil || metadata.tables[delta.table] == nil {
                    let stored = try metadata.load(RecordAddress(table: delta.table, key: delta.key)).state
                    if let author = options.author, let stamp = delta.state.firstUnheldStamp(notBy: author, against: stored) {
                        throw ApplyError(table: delta.table, key: delta.key, reason: .notAuthor(stamp))
                    }
                    if metadata.tables[delta.table] == nil && stored.isBottom { parkedRecordsAdded = true }
                }
                let maxHLC = delta.state.maxHLC
                if HybridClock.isTooFarAhead(maxHLC, physicalMilliseconds: now, maxDriftMilliseconds: configuration.maxDriftMilliseconds) {
                    try hold(delta, in: metadata.db)
                    report.quarantinedRecords += 1
                    continue
                }
                if delta.state.maxHLC(of: ownReplica) > clockBefore { rewound = true }
                received = max(received, maxHLC)
                if try merge(delta, into: &metadata, tracker: &touched) { report.changedRecords += 1 }
            }
            // A changeset that changed nothing was seen before, and the clock with it.
            if received > .zero && report.changedRecords + report.releasedRecords > 0 { source.receive(received) }
            report.feedAfter = metadata.sequence
            if let validate, let touched {
                report.rejections = try review(touched, in: &metadata, origin: options.origin, validate: validate)
            }
            if report.quarantinedRecords > 0 { try checkQuarantineQuota(metadata.db) }
            if parkedRecordsAdded { try checkParkedQuota(metadata.db, tables: metadata.tables) }
            try options.beforeCommit?(metadata.db)
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
            var none: ChangeTracker?
            let released = try release(&metadata, now: now, force: force, received: &received, tracker: &none)
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
            arguments: [delta.table, key, MetadataSchema.sortable(state.maxHLC),
                        RecordEntryCodec.encodeState(state, table: delta.table, key: delta.key).databaseValue])
    }

    private func release(_ metadata: inout MetadataStore, now: UInt64, force: Bool, received: inout HLC, tracker: inout ChangeTracker?) throws -> Int {
        let limit = now.addingReportingOverflow(configuration.maxDriftMilliseconds)
        let boundary = MetadataSchema.sortable(HLC(rawValue: limit.overflow ? .max : (min(limit.partialValue, HLC.millisecondsMax) << 16) | 0xFFFF))
        let rows = try Row.fetchAll(
            metadata.db, sql: "SELECT tbl, key, state FROM converge_quarantine WHERE ? OR max_hlc <= ? ORDER BY tbl, key",
            arguments: [force, boundary])
        for row in rows {
            let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
            let state = try RecordEntryCodec.decodeState(row.bytes("state"), table: address.table, key: address.key)
            received = max(received, state.maxHLC)
            try merge(RecordDelta(table: address.table, key: address.key, state: state), into: &metadata, tracker: &tracker)
            try metadata.db.execute(sql: "DELETE FROM converge_quarantine WHERE tbl = ? AND key = ?", arguments: [address.table, address.key.databaseValue])
        }
        return rows.count
    }

    private func checkQuarantineQuota(_ db: Database) throws {
        let held = try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_quarantine") ?? 0
        if held > configuration.maxQuarantinedRecords {
            throw ApplyError(table: "converge_quarantine", key: nil, reason: .quotaExceeded(what: "quarantine", limit: configuration.maxQuarantinedRecords))
        }
    }

    /// Counts only when the apply parked new records: a scan of the records' key index.
    private func checkParkedQuota(_ db: Database, tables: [String: ReplicatedTable]) throws {
        let names = tables.keys.sorted()
        let filter = names.isEmpty ? "" : " WHERE tbl NOT IN (\(names.map { _ in "?" }.joined(separator: ", ")))"
        let parked = try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_records" + filter, arguments: StatementArguments(names)) ?? 0
        if parked > configuration.maxParkedRecords {
            throw ApplyError(table: "converge_records", key: nil, reason: .quotaExceeded(what: "parked", limit: configuration.maxParkedRecords))
        }
    }

    private func checkAddress(_ delta: RecordDelta, tables: [String: ReplicatedTable]) throws {
        guard isPlainIdentifier(delta.table), !isReservedName(delta.table) else {
            throw ApplyError(table: delta.table, key: delta.key, reason: .invalidTableName)
        }
        if tables[delta.table] == nil, let replicated = tables.keys.first(where: { $0.lowercased() == delta.table.lowercased() }) {
            throw ApplyError(table: delta.table, key: delta.key, reason: .tableNameCase(replicated: replicated))
        }
        guard delta.key != .null else { throw ApplyError(table: delta.table, key: delta.key, reason: .nullKey) }
        if let table = tables[delta.table], !table.accepts(delta.key) {
            throw ApplyError(table: delta.table, key: delta.key, reason: .keyTypeMismatch(expected: table.keyType, actual: delta.key.storageClassName))
        }
    }

    /// Joins one delta into its record; writes the visible row when it changed.
    @discardableResult
    func merge(_ delta: RecordDelta, into metadata: inout MetadataStore, tracker: inout ChangeTracker?) throws -> Bool {
        let address = RecordAddress(table: delta.table, key: delta.key)
        let entry = try metadata.load(address)
        let merged = entry.state.merging(delta.state)
        guard merged != entry.state else { return false }
        tracker?.note(address, before: entry.state)
        try metadata.commit(entry, changedTo: merged, at: address)
        if let table = metadata.tables[address.table], visibleRow(entry.state, table, metadata.authority) != visibleRow(merged, table, metadata.authority) {
            try Materializer.materialize(merged, key: address.key, in: table, authority: metadata.authority, metadata.db)
        }
        return true
    }

    func visibleRow(_ state: RecordState, _ table: ReplicatedTable, _ authority: ReplicaID?) -> [Value?]? {
        guard state.isAlive else { return nil }
        return table.schema.columns.map { state.value(of: $0, policy: table.schema.policy(of: $0), authority: authority) }
    }
}
