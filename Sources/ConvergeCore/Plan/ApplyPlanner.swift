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
        var seen = Set<RecordAddress>()
        var result = [RecordAddress]()
        for address in changeset.records.lazy.map({ RecordAddress(table: $0.table, key: $0.key) }) + Array(quarantineDue)
        where seen.insert(address).inserted {
            result.append(address)
        }
        return result.sorted()
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
        var current = [RecordAddress: RecordState]()  // states as the plan moves them
        var order = [RecordAddress]()
        func state(_ address: RecordAddress) -> RecordState {
            if let state = current[address] { return state }
            let state = stored[address] ?? RecordState()
            current[address] = state
            order.append(address)
            return state
        }
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

        // Release what is due, in address order.
        for (address, held) in quarantined.sorted(by: { $0.key < $1.key }) where context.isDue(held) {
            received = max(received, held.maxHLC)
            current[address] = state(address).merging(held)
            plan.released.append(address)
        }
        plan.counts.releasedRecords = plan.released.count

        var holding = [RecordAddress: RecordState]()
        let released = Set(plan.released)
        for delta in changeset.records {
            let address = RecordAddress(table: delta.table, key: delta.key)
            let maxHLC = delta.state.maxHLC
            if !context.isDue(delta.state) {
                let earlier = holding[address] ?? (released.contains(address) ? nil : quarantined[address])
                holding[address] = earlier.map { $0.merging(delta.state) } ?? delta.state
                plan.counts.quarantinedRecords += 1
                continue
            }
            if delta.state.maxHLC(of: context.replica) > context.clock { plan.rewound = true }
            received = max(received, maxHLC)
            let before = state(address)
            let merged = before.merging(delta.state)
            if merged != before {
                current[address] = merged
                plan.counts.changedRecords += 1
            }
        }
        plan.quarantine = holding.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }

        for address in order.sorted() {
            let before = stored[address] ?? RecordState()
            let after = current[address]!
            guard after != before else { continue }
            var change = RecordChange(address: address, before: before, after: after, row: .none, conflicts: nil)
            if context.materializes, let schema = context.schemas[address.table] {
                let oldRow = visibleRow(before, schema, context.authority), newRow = visibleRow(after, schema, context.authority)
                if oldRow != newRow { change.row = newRow.map(RowChange.upsert) ?? .delete }
                change.conflicts = openConflicts(after, schema)
            }
            plan.changes.append(change)
        }
        if received > .zero && plan.counts.changedRecords + plan.counts.releasedRecords > 0 { plan.receive = received }
        assert(plan.isValid, "the plan breaks an invariant")
        return plan
    }

    /// The critical columns of `state` in conflict (none when the record is not alive), or
    /// `nil` when the table has no critical column: what a store's conflict list holds for it.
    public static func openConflicts(_ state: RecordState, _ schema: TableSchema) -> [String]? {
        let critical = schema.columns.filter { schema.policy(of: $0) == .critical }
        guard !critical.isEmpty else { return nil }
        return state.isAlive ? critical.filter { state.multiValue(of: $0)?.isConflicted == true } : []
    }

    /// The row the app sees: one value per schema column (`nil`: no write), or `nil` when
    /// the record is not alive.
    public static func visibleRow(_ state: RecordState, _ schema: TableSchema, _ authority: ReplicaID?) -> [Value?]? {
        guard state.isAlive else { return nil }
        return schema.columns.map { state.value(of: $0, policy: schema.policy(of: $0), authority: authority) }
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
