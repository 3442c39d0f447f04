/// A complete in-memory replica: identity, clock, schemas, state and drift quarantine.
///
/// It is the pure-model twin of a `ConvergeSQLite` store, used by the simulator's core
/// replicas, the tests and the fuzzers. Time is passed in; nothing here reads a clock.
public struct Replica: Sendable {
    /// One local operation; a batch of them is one transaction with one stamp.
    public enum Operation: Sendable, Hashable {
        /// Inserts the record (an add), or replaces it when it exists, with `values`.
        case insert(table: String, key: Value, values: [String: Value])
        /// Sets `values` on a live record (an edit); a record that is absent is left alone.
        case update(table: String, key: Value, values: [String: Value])
        /// Deletes the record: removes every add-tag it has seen.
        case delete(table: String, key: Value)
    }

    /// What an apply did: the report every replica kind returns.
    public typealias ApplyReport = ConvergeCore.ApplyReport

    /// This replica's identity; a reset for resync takes a new one (``resetForResync(acknowledged:newID:)``).
    public internal(set) var id: ReplicaID
    /// The replica's hybrid logical clock.
    public internal(set) var clock: HybridClock
    /// The replicated tables, by name.
    public private(set) var schemas: [String: TableSchema] = [:]
    /// Every record's merge state and the change feed.
    public internal(set) var state = ReplicaState()
    /// Deltas held back because their stamps were too far ahead of local time: one joined
    /// state per record, so a resent change does not grow it.
    public internal(set) var quarantine: [RecordAddress: RecordState] = [:]
    /// How far ahead of local time a remote stamp may be before its change is quarantined.
    public var maxDriftMilliseconds: UInt64
    /// The replica whose concurrent writes show in `.authority` columns (the server), once known.
    public var authority: ReplicaID?
    /// The local writes a reset for resync keeps, to be written again once a fresh snapshot
    /// is in (``reapplyKeptWrites(physicalMilliseconds:)``).
    public internal(set) var keptWrites: [(address: RecordAddress, operation: CapturePlanner.Operation)] = []
    /// How many changes a validator refused here (the last ``ChangeRejection/id``).
    public private(set) var rejectionCount: Int64 = 0

    /// A replica with identity `id` and no tables yet (see ``replicate(_:)``).
    public init(id: ReplicaID, clock: HybridClock = HybridClock(), maxDriftMilliseconds: UInt64 = HybridClock.defaultMaxDriftMilliseconds) {
        self.id = id
        self.clock = clock
        self.maxDriftMilliseconds = maxDriftMilliseconds
    }

    /// Starts replicating `schema`'s table (or updates its column list).
    public mutating func replicate(_ schema: TableSchema) {
        schemas[schema.name] = schema
    }

    /// Runs `operations` as one transaction: one stamp, taken only if something changes.
    /// Operations on unknown tables, updates of absent records, deletes of absent records
    /// and updates that change no value are skipped (an update that writes a critical field
    /// in conflict changes it: it resolves the conflict). Returns the changeset it produced.
    @discardableResult
    public mutating func perform(_ operations: [Operation], physicalMilliseconds: UInt64) -> Changeset {
        var stamp: Stamp?
        // What each touched record's delta must carry. The delta is cut from the final state,
        // not joined from per-operation deltas: two operations of one transaction share a
        // stamp, and the join would read the second as already seen.
        var touched = [RecordAddress: (membership: Bool, columns: Set<String>)]()
        func takeStamp() -> Stamp { transactionStamp(&stamp, physicalMilliseconds: physicalMilliseconds) }
        for operation in operations {
            let (table, key) = operation.address
            guard let schema = schemas[table] else { continue }
            let address = RecordAddress(table: table, key: key)
            var record = state.state(of: address) ?? RecordState()
            let delta: RecordState?
            switch operation {
            case .insert(_, _, let values):
                delta = CapturePlanner.apply(.insert(ColumnMap(values)), at: takeStamp(), to: &record, schema: schema)
            case .update(_, _, let values):
                // As SQL: an update that sets every field to the value shown changes nothing,
                // except that writing a critical field in conflict resolves it, even to the
                // value shown (DESIGN §2: choosing the provisional value is a choice).
                let changed = values.filter { column, value in
                    let policy = schema.policy(of: column)
                    if policy == .critical, record.multiValue(of: column)?.isConflicted == true { return true }
                    return record.value(of: column, policy: policy, authority: authority) != value
                }
                delta = record.isAlive && !changed.isEmpty ? CapturePlanner.apply(.update(changed: ColumnMap(changed), row: [:]), at: takeStamp(), to: &record, schema: schema) : nil
            case .delete:
                delta = record.isAlive ? CapturePlanner.apply(.delete, at: takeStamp(), to: &record, schema: schema) : nil
            }
            guard let delta else { continue }
            state.replace(record, at: address)
            var parts = touched[address] ?? (false, [])
            parts.membership = parts.membership || !delta.membership.isBottom
            parts.columns.formUnion(delta.fields.keys)
            touched[address] = parts
        }
        return Changeset(records: touched.sorted { $0.key < $1.key }.map { address, parts in
            let final = state.state(of: address)!
            var delta = RecordState()
            if parts.membership { delta.membership = final.membership }
            for column in parts.columns { delta.fields[column] = final.fields[column] }
            return RecordDelta(table: address.table, key: address.key, state: delta)
        })
    }

    /// Resolves a conflicted critical field to `value` (a write that observes every sibling).
    @discardableResult
    public mutating func resolve(table: String, key: Value, column: String, to value: Value, physicalMilliseconds: UInt64) -> Changeset {
        guard let schema = schemas[table] else { return Changeset() }
        let address = RecordAddress(table: table, key: key)
        guard var record = state.state(of: address), record.isAlive else { return Changeset() }
        let stamp = Stamp(hlc: clock.tick(physicalMilliseconds: physicalMilliseconds), replica: id)
        guard let delta = record.resolve(column, to: value, at: stamp, schema: schema) else { return Changeset() }
        state.merge(delta, into: address)
        return Changeset(records: [RecordDelta(table: table, key: key, state: delta)])
    }

    /// Joins a remote changeset. Deltas stamped too far ahead of `physicalMilliseconds` are
    /// quarantined (kept, counted) instead of dragging the clock forward; earlier
    /// quarantined deltas whose time has come are applied first. The decisions are the
    /// ``ApplyPlanner``'s, as for every store.
    @discardableResult
    public mutating func apply(_ changeset: Changeset, physicalMilliseconds: UInt64) -> ApplyReport {
        commit(plan(changeset, physicalMilliseconds: physicalMilliseconds, releaseAll: false), physicalMilliseconds: physicalMilliseconds)
    }

    /// Joins a remote changeset like ``apply(_:physicalMilliseconds:)``, and lets `validate`
    /// refuse what it did, as the SQLite store's `apply(_:origin:validate:)` does.
    ///
    /// `validate` sees each record whose visible row the changeset changed (a record a
    /// unique index holds has none), before and after, in key order. A refused change is
    /// undone by a compensating write of this replica stamped after everything it received
    /// (``ValidationPlanner``; one stamp for the apply's compensations, as a transaction
    /// takes one), listed in the report's `rejections`.
    ///
    /// - Throws: What `validate` throws; the replica is then unchanged.
    /// - Complexity: A validated apply copies the replica's state once, and reads every
    ///   record of the touched tables that have unique indexes.
    @discardableResult
    public mutating func apply(
        _ changeset: Changeset, physicalMilliseconds: UInt64, origin: String?, validate: (ProposedChange) throws -> String?
    ) rethrows -> ApplyReport {
        let plan = plan(changeset, physicalMilliseconds: physicalMilliseconds, releaseAll: false)
        let uniqueTables = Set(plan.changes.map(\.address.table)).filter { schemas[$0]?.uniqueIndexes.isEmpty == false }.sorted()
        let shownBefore = uniqueTables.map(visibleRecords(of:))
        var next = self
        var report = next.commit(plan, physicalMilliseconds: physicalMilliseconds)
        var shown = plan.changes.compactMap { change -> ValidationPlanner.Shown? in
            guard schemas[change.address.table]?.uniqueIndexes.isEmpty == true else { return nil }
            return ValidationPlanner.Shown(address: change.address, before: change.before, after: change.after, current: change.after)
        }
        for (table, before) in zip(uniqueTables, shownBefore) {
            let after = next.visibleRecords(of: table)
            for key in Set(before.keys).union(after.keys) where before[key] != after[key] {
                let address = RecordAddress(table: table, key: key)
                shown.append(ValidationPlanner.Shown(address: address, before: before[key], after: after[key], current: next.state.state(of: address) ?? RecordState()))
            }
        }
        // One stamp for every compensation, taken on first use: an apply is one transaction,
        // as in ``perform(_:physicalMilliseconds:)`` and the SQLite store.
        var stamp: Stamp?
        let compensations = try ValidationPlanner.plan(shown, schemas: schemas, authority: authority, stamp: {
            next.transactionStamp(&stamp, physicalMilliseconds: physicalMilliseconds)
        }, validate: validate)
        for compensation in compensations {
            next.state.replace(compensation.after, at: compensation.address)
            next.rejectionCount += 1
            report.rejections.append(ChangeRejection(
                id: next.rejectionCount, table: compensation.address.table, key: compensation.address.key, reason: compensation.reason,
                origin: origin, physicalMilliseconds: physicalMilliseconds))
        }
        // `feedAfter` stays where the merge left it: the compensations lie beyond it, so the
        // sender pulls them.
        self = next
        return report
    }

    /// The stamp of one local transaction: `taken`, or a tick of the clock on first use,
    /// kept in `taken` for the transaction's next write.
    mutating func transactionStamp(_ taken: inout Stamp?, physicalMilliseconds: UInt64) -> Stamp {
        if let taken { return taken }
        let fresh = Stamp(hlc: clock.tick(physicalMilliseconds: physicalMilliseconds), replica: id)
        taken = fresh
        return fresh
    }

    /// The live records of `table` that show a row (those a unique index holds do not), by key.
    private func visibleRecords(of table: String) -> [Value: RecordState] {
        let held = heldKeys(table: table)
        var result = [Value: RecordState]()
        for (key, record) in records(of: table) where !held.contains(key) { result[key] = record }
        return result
    }

    /// Applies quarantined deltas whose stamps local time has reached (all of them when
    /// `force` is set, advancing the clock like any apply). Returns how many were applied.
    @discardableResult
    public mutating func releaseQuarantine(physicalMilliseconds: UInt64, force: Bool) -> Int {
        commit(plan(Changeset(), physicalMilliseconds: physicalMilliseconds, releaseAll: force), physicalMilliseconds: physicalMilliseconds).releasedRecords
    }

    private func plan(_ changeset: Changeset, physicalMilliseconds: UInt64, releaseAll: Bool) -> ApplyPlanner.Plan {
        let context = ApplyPlanner.Context(
            replica: id, clock: clock.latest, physicalMilliseconds: physicalMilliseconds, maxDriftMilliseconds: maxDriftMilliseconds,
            schemas: schemas, authority: authority, releaseAll: releaseAll, materializes: false)
        var stored = [RecordAddress: RecordState]()
        for address in ApplyPlanner.addresses(of: changeset, quarantineDue: quarantine.keys) {
            if let state = state.state(of: address) { stored[address] = state }
        }
        do {
            return try ApplyPlanner.plan(changeset, stored: stored, quarantined: quarantine, context: context)
        } catch {
            preconditionFailure("a plan without an author refuses nothing: \(error)")
        }
    }

    private mutating func commit(_ plan: ApplyPlanner.Plan, physicalMilliseconds: UInt64) -> ApplyReport {
        var report = ApplyReport(plan)
        report.feedBefore = state.sequence
        for change in plan.changes { state.replace(change.after, at: change.address) }
        for address in plan.released { quarantine[address] = nil }
        for (address, held) in plan.quarantine { quarantine[address] = held }
        if let receive = plan.receive { clock.receive(receive, physicalMilliseconds: physicalMilliseconds) }
        report.feedAfter = state.sequence
        return report
    }

    /// The record's row, or `nil` when the record is absent or deleted. A record a unique
    /// index holds (``heldKeys(table:)``) has a row here but none in an app table.
    public func row(table: String, key: Value) -> [String: Value]? {
        guard let schema = schemas[table], let record = state.state(of: RecordAddress(table: table, key: key)), record.isAlive else { return nil }
        var row = [String: Value]()
        for column in schema.columns {
            row[column] = record.value(of: column, policy: schema.policy(of: column), authority: authority) ?? .null
        }
        return row
    }

    /// Every visible row of `table`, sorted by key: live records, less those a unique
    /// index holds (``heldKeys(table:)``).
    public func rows(table: String) -> [(key: Value, values: [String: Value])] {
        let held = heldKeys(table: table)
        return state.allRecords.compactMap { address, _ in
            guard address.table == table, !held.contains(address.key), let row = row(table: table, key: address.key) else { return nil }
            return (address.key, row)
        }
    }

    /// Open conflicts: critical fields of live records holding concurrent values (by
    /// address and column), then unique-index clashes (by table, index and values).
    public func conflicts() -> [Conflict] {
        var result = [Conflict]()
        for (address, record) in state.allRecords where record.isAlive {
            guard let schema = schemas[address.table] else { continue }
            for column in schema.columns where schema.policy(of: column) == .critical {
                if let register = record.multiValue(of: column), register.isConflicted {
                    result.append(.field(FieldConflict(table: address.table, key: address.key, column: column, siblings: register.siblings)))
                }
            }
        }
        for (table, schema) in schemas.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) where !schema.uniqueIndexes.isEmpty {
            let records = records(of: table)
            let states = Dictionary(uniqueKeysWithValues: records.map { ($0.key, $0.state) })
            for (group, claimants) in UniquePlanner.conflicts(records, schema: schema, authority: authority) {
                result.append(.constraint(ConstraintConflict(group: group, claimants: claimants, schema: schema, authority: authority) { states[$0] }))
            }
        }
        return result
    }

    /// The live records of `table`, by key.
    private func records(of table: String) -> [(key: Value, state: RecordState)] {
        state.allRecords.compactMap { address, record in address.table == table && record.isAlive ? (address.key, record) : nil }
    }

    /// The keys of `table`'s live records that a unique index holds out of the app table.
    public func heldKeys(table: String) -> Set<Value> {
        guard let schema = schemas[table], !schema.uniqueIndexes.isEmpty else { return [] }
        return UniquePlanner.heldKeys(records(of: table), schema: schema, authority: authority)
    }
}

extension Replica.Operation {
    var address: (String, Value) {
        switch self {
        case .insert(let table, let key, _), .update(let table, let key, _), .delete(let table, let key):
            return (table, key)
        }
    }
}
