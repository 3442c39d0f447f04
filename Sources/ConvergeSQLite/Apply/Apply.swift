import ConvergeCore
import GRDB
import Metrics

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
    ///   - changeset: The remote changeset to join.
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
    ///
    /// The store is a shell around `ApplyPlanner` (ConvergeCore): it loads the stored states of every
    /// record the changeset touches (one key-ordered query per table), lets the planner
    /// decide, and writes the plan back in key order.
    @discardableResult
    public func apply(_ changeset: Changeset, options: ApplyOptions) throws -> ApplyReport {
        let started = ContinuousClock.now
        do {
            let report = try applyMeasured(changeset, options: options)
            StoreMetrics.applySeconds.record(duration: ContinuousClock.now - started)
            if report.changedRecords > 0 { StoreMetrics.appliedRecords.increment(by: report.changedRecords) }
            if report.quarantinedRecords > 0 {
                StoreMetrics.quarantinedRecords.increment(by: report.quarantinedRecords)
                Self.logger.info("quarantined changes stamped too far ahead", metadata: ["records": "\(report.quarantinedRecords)"])
            }
            if report.releasedRecords > 0 { StoreMetrics.releasedRecords.increment(by: report.releasedRecords) }
            Self.logger.debug("applied", metadata: ["records": "\(changeset.records.count)", "changed": "\(report.changedRecords)"])
            return report
        } catch let error as ApplyError {
            Self.logger.info("changeset refused", metadata: ["reason": "\(error)"])
            throw error
        }
    }

    private func applyMeasured(_ changeset: Changeset, options: ApplyOptions) throws -> ApplyReport {
        var rewound = false
        var report = try withMetadata { metadata -> ApplyReport in
            try ReplicatedTable.checkAddresses(of: changeset, tables: metadata.tables)
            let (plan, entries) = try planned(changeset, releaseAll: false, author: options.author, collectedClock: options.collectedClock, in: metadata)
            var report = ApplyReport()
            report.feedBefore = metadata.sequence
            let settled = try write(plan, entries: entries, into: &metadata)
            rewound = plan.rewound
            report.changedRecords = plan.counts.changedRecords
            report.quarantinedRecords = plan.counts.quarantinedRecords
            report.releasedRecords = plan.counts.releasedRecords
            report.feedAfter = metadata.sequence
            if let validate = options.validate {
                report.rejections = try review(plan.changes, settled: settled, in: &metadata, origin: options.origin, validate: validate)
            }
            if report.quarantinedRecords > 0 { try checkQuarantineQuota(metadata.db) }
            if plan.changes.contains(where: { metadata.tables[$0.address.table] == nil && $0.before.isBottom }) {
                try checkParkedQuota(metadata.db, tables: metadata.tables)
            }
            try options.beforeCommit?(metadata.db)
            return report
        }
        if rewound {
            Self.logger.notice("a peer holds this replica's stamps beyond its clock (a rewound file): taking a new identity", metadata: ["replica": "\(source.replica)"])
            try resetIdentity()
            StoreMetrics.identityResets.increment()
            report.identityReset = true
        }
        return report
    }

    /// Applies quarantined records whose time has come (all of them when `force` is set;
    /// the clock then advances to them like any apply). Returns how many were applied.
    @discardableResult
    public func releaseQuarantine(force: Bool = false) throws -> Int {
        try withMetadata { metadata in
            let (plan, entries) = try planned(Changeset(), releaseAll: force, author: nil, collectedClock: CausalContext(), in: metadata)
            try write(plan, entries: entries, into: &metadata)
            return plan.counts.releasedRecords
        }
    }

    /// The number of records held in quarantine.
    public func quarantinedCount() throws -> Int {
        try writer.readKeepingStatements { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM converge_quarantine")) ?? 0 }
    }

    /// Loads what the planner needs (due quarantined records, those at the changeset's
    /// too-far-ahead addresses, the stored entries of every touched record) and plans.
    private func planned(
        _ changeset: Changeset, releaseAll: Bool, author: ReplicaID?, collectedClock: CausalContext,
        in metadata: MetadataStore
    ) throws -> (ApplyPlanner.Plan, [RecordAddress: RecordEntry]) {
        var context = ApplyPlanner.Context(
            replica: source.replica, clock: source.clock.latest, physicalMilliseconds: configuration.physicalTime(),
            maxDriftMilliseconds: configuration.maxDriftMilliseconds, schemas: metadata.tables.mapValues(\.schema),
            authority: metadata.authority, author: author, releaseAll: releaseAll)
        context.collectedClock = collectedClock
        var quarantined = try dueQuarantine(metadata.db, context: context)
        for delta in changeset.records where !context.isDue(delta.state) {
            let address = RecordAddress(table: delta.table, key: delta.key)
            if quarantined[address] == nil, let held = try quarantinedState(at: address, metadata.db) { quarantined[address] = held }
        }
        let entries = try metadata.load(ApplyPlanner.addresses(of: changeset, quarantineDue: quarantined.keys))
        do {
            return (try ApplyPlanner.plan(changeset, stored: entries.mapValues(\.state), quarantined: quarantined, context: context), entries)
        } catch {
            switch error {
            case .notAuthor(let address, let stamp): throw ApplyError(table: address.table, key: address.key, reason: .notAuthor(stamp))
            }
        }
    }

    /// Writes a plan: record states and rows in key order, the quarantine, the clock. The
    /// rows of tables with unique indexes are settled after every record is written
    /// (``MetadataStore/settleUnique()``), which returns what it showed and held.
    @discardableResult
    private func write(_ plan: ApplyPlanner.Plan, entries: [RecordAddress: RecordEntry], into metadata: inout MetadataStore) throws -> [UniquePlanner.Settled] {
        for change in plan.changes {
            try metadata.commit(entries[change.address] ?? .empty, changedTo: change.after, at: change.address, conflicts: change.conflicts)
            if let table = metadata.tables[change.address.table], table.schema.uniqueIndexes.isEmpty {
                try Materializer.write(change.row, key: change.address.key, in: table, metadata.db)
            }
        }
        let settled = try metadata.settleUnique()
        let db = metadata.db
        for address in plan.released {
            try db.cachedStatement(sql: "DELETE FROM converge_quarantine WHERE tbl = ? AND key = ?").execute(arguments: [address.table, address.key.databaseValue])
        }
        for (address, state) in plan.quarantine {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO converge_quarantine(tbl, key, max_hlc, state) VALUES (?, ?, ?, ?)").execute(arguments: [
                address.table, address.key.databaseValue, MetadataSchema.sortable(state.maxHLC),
                RecordEntry.encodeState(state).databaseValue,
            ])
        }
        if let receive = plan.receive { source.receive(receive) }
        return settled
    }

    /// The quarantined records that may be due: the index narrows them by `max_hlc`, the
    /// planner decides.
    private func dueQuarantine(_ db: Database, context: ApplyPlanner.Context) throws -> [RecordAddress: RecordState] {
        let limit = context.physicalMilliseconds.addingReportingOverflow(context.maxDriftMilliseconds)
        let boundary = MetadataSchema.sortable(HLC(rawValue: limit.overflow ? .max : (min(limit.partialValue, HLC.millisecondsMax) << 16) | 0xFFFF))
        var result = [RecordAddress: RecordState]()
        let rows = try Row.fetchCursor(
            db.cachedStatement(sql: "SELECT tbl, key, state FROM converge_quarantine WHERE ? OR max_hlc <= ?"), arguments: [context.releaseAll, boundary])
        while let row = try rows.next() {
            let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
            result[address] = try RecordEntryCodec.decodeState(row.bytes("state"), table: address.table, key: address.key)
        }
        return result
    }

    private func quarantinedState(at address: RecordAddress, _ db: Database) throws -> RecordState? {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT state FROM converge_quarantine WHERE tbl = ? AND key = ?"),
            arguments: [address.table, address.key.databaseValue])
        else { return nil }
        return try RecordEntryCodec.decodeState(row.bytes("state"), table: address.table, key: address.key)
    }

    private func checkQuarantineQuota(_ db: Database) throws {
        let held = try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM converge_quarantine")) ?? 0
        if held > configuration.maxQuarantinedRecords {
            throw ApplyError(table: "converge_quarantine", key: nil, reason: .quotaExceeded(what: "quarantine", limit: configuration.maxQuarantinedRecords))
        }
    }

    /// Counts only when the apply parked new records: a scan of the records' key index.
    private func checkParkedQuota(_ db: Database, tables: [String: ReplicatedTable]) throws {
        let names = tables.keys.sorted()
        let filter = names.isEmpty ? "" : " WHERE tbl NOT IN (\(names.map { _ in "?" }.joined(separator: ", ")))"
        let parked = try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM converge_records" + filter), arguments: StatementArguments(names)) ?? 0
        if parked > configuration.maxParkedRecords {
            throw ApplyError(table: "converge_records", key: nil, reason: .quotaExceeded(what: "parked", limit: configuration.maxParkedRecords))
        }
    }
}
