/// Everything an apply decides, as one pure function (DESIGN §8).
///
/// A storage shell — the in-memory ``Replica``, the SQLite store, a server backend — loads
/// the stored states of the records a changeset touches (``ApplyPlanner/addresses(of:quarantineDue:)``
/// says which) and the quarantined states it holds for them and for whatever is due, calls
/// ``ApplyPlanner/plan(_:stored:quarantined:context:)``, and writes the plan back in one
/// transaction. The shells keep no merge, quarantine or materialization logic of their own,
/// so a fix here fixes every one of them, and the simulator and the fuzzers run the code the
/// stores run.
public enum ApplyPlanner {
    /// What the apply needs to know besides the states.
    public struct Context: Sendable {
        /// This replica.
        public var replica: ReplicaID
        /// The clock's committed high-water mark before the apply: a changeset holding this
        /// replica's own stamps above it shows the replica was rewound (restored or copied).
        public var clock: HLC
        /// Local physical time, in milliseconds since 1970.
        public var physicalMilliseconds: UInt64
        /// How far ahead of ``physicalMilliseconds`` a stamp may be before its record is
        /// quarantined.
        public var maxDriftMilliseconds: UInt64
        /// The replicated tables: records of other tables are kept (parked) but not shown.
        public var schemas: [String: TableSchema]
        /// The replica whose concurrent writes show in `.authority` columns.
        public var authority: ReplicaID?
        /// When set, every event of another replica in the changeset must already be held
        /// (``RecordState/firstUnheldStamp(notBy:against:seen:)``): the sender's bound replica.
        public var author: ReplicaID?
        /// The join of the membership contexts of every record the shell has collected
        /// (DESIGN §9; each store keeps it as it collects): the author check takes a
        /// foreign context entry within it as held, on any record
        /// (``RecordState/firstUnheldStamp(notBy:against:seen:)``).
        ///
        /// A device that saw a collected delete may still relay its context (a key it
        /// inserted again after the delete). Every event such an entry covers had reached
        /// the hub before the collection (the frontier passed it), so the entry can cover no
        /// event still on its way: accepting it forges nothing.
        public var collectedClock = CausalContext()
        /// Release every quarantined state, due or not (an explicit release).
        public var releaseAll: Bool
        /// Whether the shell keeps app rows and a conflict list, so that the plan must say
        /// how they change (``RecordChange/row``, ``RecordChange/conflicts``). The in-memory
        /// ``Replica`` keeps neither and skips that work.
        public var materializes: Bool

        /// The context of an apply by `replica`, whose clock stands at `clock`.
        public init(
            replica: ReplicaID, clock: HLC, physicalMilliseconds: UInt64,
            maxDriftMilliseconds: UInt64 = HybridClock.defaultMaxDriftMilliseconds,
            schemas: [String: TableSchema], authority: ReplicaID? = nil, author: ReplicaID? = nil, releaseAll: Bool = false,
            materializes: Bool = true
        ) {
            self.replica = replica
            self.clock = clock
            self.physicalMilliseconds = physicalMilliseconds
            self.maxDriftMilliseconds = maxDriftMilliseconds
            self.schemas = schemas
            self.authority = authority
            self.author = author
            self.releaseAll = releaseAll
            self.materializes = materializes
        }

        /// Whether `state` may be applied now: not stamped too far ahead (or released anyway).
        public func isDue(_ state: RecordState) -> Bool {
            releaseAll || !HybridClock.isTooFarAhead(state.maxHLC, physicalMilliseconds: physicalMilliseconds, maxDriftMilliseconds: maxDriftMilliseconds)
        }
    }

    /// What a plan does to one record's row in its app table.
    public enum RowChange: Sendable, Hashable {
        /// The visible row did not change (or the table is not replicated here).
        case none
        /// Insert or update the row: one value per schema column, `nil` where no write is
        /// visible (the column keeps its default on insert and its value on update).
        case upsert([Value?])
        /// The record is no longer alive: remove the row.
        case delete
    }

    /// One record the apply changed.
    public struct RecordChange: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// Its stored state before the apply (bottom when it was not held).
        public var before: RecordState
        /// Its state after the apply: store this.
        public var after: RecordState
        /// What happens to its row in the app table.
        public var row: RowChange
        /// The critical columns in conflict after the apply, for tables that have critical
        /// columns (`nil` otherwise): the shell's conflict list for this record.
        public var conflicts: [String]?
    }

    /// What the counts of an apply say.
    public struct Counts: Sendable, Hashable {
        /// Deltas (of the changeset) whose join changed their record.
        public var changedRecords = 0
        /// Deltas held back because they were stamped too far ahead.
        public var quarantinedRecords = 0
        /// Earlier quarantined records applied now.
        public var releasedRecords = 0
    }

    /// The decisions of one apply.
    public struct Plan: Sendable {
        /// Changed records, sorted by address: write them (and their rows) in this order.
        public var changes: [RecordChange] = []
        /// Quarantined states to store, joined with what was held, sorted by address.
        public var quarantine: [(address: RecordAddress, state: RecordState)] = []
        /// Quarantined records released (applied): remove them from the quarantine.
        public var released: [RecordAddress] = []
        /// The reading the clock receives, or `nil` when the apply changed nothing (an apply
        /// that changes nothing moves no clock).
        public var receive: HLC?
        /// The changeset holds this replica's own stamps beyond its clock: take a new identity.
        public var rewound = false
        /// The figures of the apply, for its report.
        public var counts = Counts()
    }

    /// Why a plan was refused: the changeset must not be applied at all.
    public enum Refusal: Error, Sendable, Hashable {
        /// An event of another replica than the author that is not held here.
        case notAuthor(address: RecordAddress, stamp: Stamp)
    }

    /// The addresses whose stored states ``plan(_:stored:quarantined:context:)`` reads: every
    /// delta's, and every due quarantined record's, sorted and without duplicates.
    public static func addresses(of changeset: Changeset, quarantineDue: some Sequence<RecordAddress> = []) -> [RecordAddress] {
        // Sorted, then the repeats dropped: cheaper than hashing every address into a set.
        var result = changeset.records.map { RecordAddress(table: $0.table, key: $0.key) }
        result.append(contentsOf: quarantineDue)
        result.sort()
        var kept = result.startIndex
        for index in result.indices where index == result.startIndex || result[index] != result[kept - 1] {
            if index != kept { result.swapAt(index, kept) }
            kept += 1
        }
        result.removeSubrange(kept...)
        return result
    }

    /// Plans the apply of `changeset`.
    ///
    /// - Parameters:
    ///   - changeset: The remote changeset to join, decoded and checked.
    ///   - stored: The stored state of each address in ``addresses(of:quarantineDue:)``
    ///     (absent: nothing stored).
    ///   - quarantined: The quarantine's states the shell loaded: at least every due one
    ///     (released first, in address order) and those at the changeset's addresses (joined
    ///     with the deltas held now).
    ///   - context: The replica, its clock and time, the schemas and the apply's options.
    /// - Complexity: O(n log n) for n deltas, plus the joins.
    public static func plan(
        _ changeset: Changeset, stored: [RecordAddress: RecordState], quarantined: [RecordAddress: RecordState], context: Context
    ) throws(Refusal) -> Plan {
        var plan = Plan()
        var received = HLC.zero

        // Refuse first, before anything is decided: a forged event anywhere refuses all.
        if let author = context.author {
            for delta in changeset.records {
                let address = RecordAddress(table: delta.table, key: delta.key)
                if let stamp = delta.state.firstUnheldStamp(notBy: author, against: stored[address] ?? RecordState(), seen: context.collectedClock) {
                    throw .notAuthor(address: address, stamp: stamp)
                }
            }
        }

        // Every step of the apply, sorted by address: each due quarantined state (released)
        // first, then the record's deltas in changeset order. A record's steps then run
        // together, in the order an apply takes them (releases, then the changeset), and the
        // changes come out in address order, with one lookup of the stored state per record
        // instead of a dictionary of states the plan moves.
        let releasing = -1
        var steps = [(address: RecordAddress, delta: Int)]()
        steps.reserveCapacity(changeset.records.count + quarantined.count)
        for (address, held) in quarantined where context.isDue(held) { steps.append((address, releasing)) }
        for (index, delta) in changeset.records.enumerated() { steps.append((RecordAddress(table: delta.table, key: delta.key), index)) }
        steps.sort { a, b in
            if a.address < b.address { return true }
            if b.address < a.address { return false }
            return a.delta < b.delta
        }

        var view: (table: String, schema: SchemaView?)?
        var first = steps.startIndex
        while first < steps.endIndex {
            let address = steps[first].address
            var end = first + 1
            while end < steps.endIndex, steps[end].address == address { end += 1 }
            defer { first = end }
            let before = stored[address] ?? RecordState()
            var state = before
            var holding: RecordState?  // the deltas quarantined now, joined with what was held
            var released = false
            for step in steps[first..<end] {
                guard step.delta != releasing else {
                    let held = quarantined[address]!
                    received = max(received, held.maxHLC)
                    state.merge(held)
                    plan.released.append(address)
                    released = true
                    continue
                }
                let delta = changeset.records[step.delta].state
                if !context.isDue(delta) {
                    let earlier = holding ?? (released ? nil : quarantined[address])
                    holding = earlier.map { $0.merging(delta) } ?? delta
                    plan.counts.quarantinedRecords += 1
                    continue
                }
                if delta.maxHLC(of: context.replica) > context.clock { plan.rewound = true }
                received = max(received, delta.maxHLC)
                let merged = state.merging(delta)
                if merged != state {
                    state = merged
                    plan.counts.changedRecords += 1
                }
            }
            if let holding { plan.quarantine.append((address, holding)) }
            guard state != before else { continue }
            var change = RecordChange(address: address, before: before, after: state, row: .none, conflicts: nil)
            if context.materializes {
                if view?.table != address.table { view = (address.table, context.schemas[address.table].map(SchemaView.init)) }
                if let schema = view!.schema {
                    let oldRow = schema.visibleRow(before, context.authority), newRow = schema.visibleRow(state, context.authority)
                    if oldRow != newRow { change.row = newRow.map(RowChange.upsert) ?? .delete }
                    change.conflicts = schema.openConflicts(state)
                }
            }
            plan.changes.append(change)
        }
        plan.counts.releasedRecords = plan.released.count
        if received > .zero && plan.counts.changedRecords + plan.counts.releasedRecords > 0 { plan.receive = received }
        assert(plan.isValid, "the plan breaks an invariant")
        return plan
    }

    /// The critical columns of `state` in conflict (none when the record is not alive), or
    /// `nil` when the table has no critical column: what a store's conflict list holds for it.
    public static func openConflicts(_ state: RecordState, _ schema: TableSchema) -> [String]? {
        SchemaView(schema).openConflicts(state)
    }

    /// The row the app sees: one value per schema column (`nil`: no write), or `nil` when
    /// the record is not alive.
    public static func visibleRow(_ state: RecordState, _ schema: TableSchema, _ authority: ReplicaID?) -> [Value?]? {
        SchemaView(schema).visibleRow(state, authority)
    }

    /// A table's columns with their policies worked out once, for the rows and conflicts of
    /// every record of a plan (not a policy lookup per column per record).
    struct SchemaView {
        let columns: [(name: String, policy: ColumnPolicy)]
        let critical: [String]

        init(_ schema: TableSchema) {
            columns = schema.columns.map { ($0, schema.policy(of: $0)) }
            critical = columns.filter { $0.policy == .critical }.map(\.name)
        }

        func visibleRow(_ state: RecordState, _ authority: ReplicaID?) -> [Value?]? {
            guard state.isAlive else { return nil }
            return columns.map { state.value(of: $0.name, policy: $0.policy, authority: authority) }
        }

        func openConflicts(_ state: RecordState) -> [String]? {
            guard !critical.isEmpty else { return nil }
            return state.isAlive ? critical.filter { state.multiValue(of: $0)?.isConflicted == true } : []
        }
    }
}

extension ApplyPlanner.Plan {
    /// The plan's postconditions, checked after every plan in debug builds and tests: each
    /// new state is valid and an inflation of the stored one (an apply is a join), records
    /// are listed once in address order, and every quarantined state is valid.
    var isValid: Bool {
        for (index, change) in changes.enumerated() {
            if (try? change.after.checkInvariants()) == nil { return false }
            if change.before.merging(change.after) != change.after { return false }
            if index > 0, !(changes[index - 1].address < change.address) { return false }
        }
        for (_, state) in quarantine where (try? state.checkInvariants()) == nil { return false }
        return true
    }
}
