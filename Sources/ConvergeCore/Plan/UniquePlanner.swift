/// Which records a table with unique indexes shows, and how an apply or a capture changes
/// that (DESIGN §4, "Unique constraints").
///
/// The merge never looks at unique indexes, so convergence is untouched; only the app
/// table does. Among the live records that claim the same values on an index (a *group*),
/// the *holder* is the one whose claim has the smallest stamp (then the smallest key): the
/// first claim keeps it. A record is shown when it is alive and holds every group it
/// claims; the others are *held*: kept and merged as usual, absent from the app table,
/// listed as constraint conflicts. Being a function of the joined states alone, the shown
/// set is the same on every replica whatever the order of delivery.
///
/// A record held on one index does not show its values on its other indexes either, and
/// does not give them up: the holder of a group stays the first claim even when that record
/// is held elsewhere, so a group may show no record at all until its clash elsewhere is
/// resolved. That keeps the rule a plain function of each group, with no fixed point to
/// search, and never shows two records with one value.
public enum UniquePlanner {
    /// The records of one table that claim the same values on one index.
    public struct Group: Sendable, Hashable, Comparable {
        /// The table of the records.
        public var table: String
        /// The unique index.
        public var index: String
        /// The values claimed, one per index column.
        public var values: [Value]

        /// The group of `table`'s records claiming `values` on `index`.
        public init(table: String, index: String, values: [Value]) {
            self.table = table
            self.index = index
            self.values = values
        }

        public static func < (lhs: Group, rhs: Group) -> Bool {
            if lhs.table != rhs.table { return utf8Less(lhs.table, rhs.table) }
            if lhs.index != rhs.index { return utf8Less(lhs.index, rhs.index) }
            return lhs.values.lexicographicallyPrecedes(rhs.values)
        }
    }

    /// One record's claim in a group, ordered as the holder is chosen: stamp, then key.
    public struct Claimant: Sendable, Hashable, Comparable {
        /// When the record claimed the values: the smallest stamp holds them.
        public var stamp: Stamp
        /// The record's primary key (the tie-break).
        public var key: Value

        /// The claim of record `key`, made at `stamp`.
        public init(stamp: Stamp, key: Value) {
            self.stamp = stamp
            self.key = key
        }

        public static func < (lhs: Claimant, rhs: Claimant) -> Bool {
            lhs.stamp != rhs.stamp ? lhs.stamp < rhs.stamp : lhs.key < rhs.key
        }
    }

    /// Every claim of `state`, one per index it claims on.
    public static func claims(of state: RecordState, key: Value, schema: TableSchema, authority: ReplicaID?) -> [(group: Group, claimant: Claimant)] {
        schema.uniqueIndexes.compactMap { index in
            state.claim(on: index, schema: schema, authority: authority).map {
                (Group(table: schema.name, index: index.name, values: $0.values), Claimant(stamp: $0.stamp, key: key))
            }
        }
    }

    // MARK: Whole tables (the in-memory model, a table replicated anew)

    /// The live records of one table that are held: not shown, because an earlier claim
    /// holds one of their groups.
    public static func heldKeys(_ records: some Sequence<(key: Value, state: RecordState)>, schema: TableSchema, authority: ReplicaID?) -> Set<Value> {
        guard !schema.uniqueIndexes.isEmpty else { return [] }
        var held = Set<Value>()
        for (_, claimants) in groups(records, schema: schema, authority: authority) where claimants.count > 1 {
            for claimant in claimants.dropFirst() { held.insert(claimant.key) }
        }
        return held
    }

    /// The groups of one table that more than one live record claims: its constraint
    /// conflicts, sorted by index and values.
    public static func conflicts(_ records: some Sequence<(key: Value, state: RecordState)>, schema: TableSchema, authority: ReplicaID?) -> [(group: Group, claimants: [Claimant])] {
        groups(records, schema: schema, authority: authority).filter { $0.value.count > 1 }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Every group of the table with its claimants, holder first.
    static func groups(_ records: some Sequence<(key: Value, state: RecordState)>, schema: TableSchema, authority: ReplicaID?) -> [Group: [Claimant]] {
        var result = [Group: [Claimant]]()
        for (key, state) in records {
            for (group, claimant) in claims(of: state, key: key, schema: schema, authority: authority) { result[group, default: []].append(claimant) }
        }
        return result.mapValues { $0.sorted() }
    }

    // MARK: One apply or capture

    /// What a storage shell answers: its index of claims, and stored states.
    public protocol Lookup {
        /// The claimants of each group as the shell's claim index holds them now, before
        /// the changes being settled are reflected there.
        func claimants(of groups: [Group]) throws -> [Group: [Claimant]]
        /// The stored states of `addresses` (records the changes did not touch).
        func states(of addresses: [RecordAddress]) throws -> [RecordAddress: RecordState]
    }

    /// One record whose state changed.
    public struct Change: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// Its state before the change.
        public var before: RecordState
        /// Its state after the change.
        public var after: RecordState
        /// Whether the app table already holds the row of `after` (a captured local write
        /// made it) rather than what the unique rules showed for `before` (an apply).
        public var writtenByApp: Bool

        /// A change of the record at `address`.
        public init(address: RecordAddress, before: RecordState, after: RecordState, writtenByApp: Bool) {
            self.address = address
            self.before = before
            self.after = after
            self.writtenByApp = writtenByApp
        }
    }

    /// A record whose shown row the settlement touches.
    public struct Settled: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// Its state before the settlement.
        public var before: RecordState
        /// Its state after it.
        public var after: RecordState
        /// Whether the record was shown before (by the unique rules) and is shown after.
        public var shownBefore: Bool
        /// Whether it is shown after the settlement (see ``shownBefore``).
        public var shownAfter: Bool
        /// What to write into the app table.
        public var row: ApplyPlanner.RowChange
    }

    /// What settling a batch of changes decides.
    public struct Settlement: Sendable {
        /// Row writes, every removal first (in address order), then every upsert: a record
        /// taking over a value never meets the row that gave it up.
        public var rows: [Settled] = []
        /// Claims to remove from and add to the shell's claim index.
        public var removedClaims: [(group: Group, claimant: Claimant)] = []
        /// Claims to add to the shell's claim index (after ``removedClaims``).
        public var addedClaims: [(group: Group, claimant: Claimant)] = []
    }

    /// Settles the changes of one transaction for the tables in `schemas` that have unique
    /// indexes: which records become shown or held, and how the claim index changes.
    ///
    /// The shell answers two rounds of lookups: the claimants of every group a change
    /// leaves or enters, then (for the records found there) their stored states and the
    /// claimants of their other groups, which decide whether they may show.
    public static func settle(_ changes: [Change], schemas: [String: TableSchema], authority: ReplicaID?, lookup: some Lookup) throws -> Settlement {
        var settlement = Settlement()
        let changes = changes.filter { schemas[$0.address.table].map { !$0.uniqueIndexes.isEmpty } ?? false }
        guard !changes.isEmpty else { return settlement }
        var beforeClaims = [RecordAddress: [(group: Group, claimant: Claimant)]]()
        var afterClaims = [RecordAddress: [(group: Group, claimant: Claimant)]]()
        var touched = Set<Group>()
        var changed = [RecordAddress: Change]()
        for change in changes {
            let schema = schemas[change.address.table]!
            let before = claims(of: change.before, key: change.address.key, schema: schema, authority: authority)
            let after = claims(of: change.after, key: change.address.key, schema: schema, authority: authority)
            beforeClaims[change.address] = before
            afterClaims[change.address] = after
            for claim in before where !after.contains(where: { $0 == claim }) { settlement.removedClaims.append(claim) }
            for claim in after where !before.contains(where: { $0 == claim }) { settlement.addedClaims.append(claim) }
            for claim in before + after { touched.insert(claim.group) }
            changed[change.address] = change
        }

        // Round one: who else claims what the changes touch.
        var membersBefore = try lookup.claimants(of: touched.sorted())
        var others = Set<RecordAddress>()
        for (group, claimants) in membersBefore {
            for claimant in claimants {
                let address = RecordAddress(table: group.table, key: claimant.key)
                if changed[address] == nil { others.insert(address) }
            }
        }
        // Round two: their states, and the groups they claim beyond the touched ones.
        let otherStates = try lookup.states(of: others.sorted())
        var otherClaims = [RecordAddress: [(group: Group, claimant: Claimant)]]()
        var untouched = Set<Group>()
        for (address, state) in otherStates {
            let claims = claims(of: state, key: address.key, schema: schemas[address.table]!, authority: authority)
            otherClaims[address] = claims
            for claim in claims where !touched.contains(claim.group) { untouched.insert(claim.group) }
        }
        for (group, claimants) in try lookup.claimants(of: untouched.sorted()) { membersBefore[group] = claimants }

        // The changed records' before-claims, as the index holds them; then their after-claims.
        for (address, claims) in beforeClaims {
            for (group, claimant) in claims where !(membersBefore[group] ?? []).contains(claimant) {
                assertionFailure("the claim index misses \(address) in \(group)")
                membersBefore[group, default: []].append(claimant)
            }
        }
        var membersAfter = membersBefore
        for (group, claimant) in settlement.removedClaims { membersAfter[group]?.removeAll { $0 == claimant } }
        for (group, claimant) in settlement.addedClaims { membersAfter[group, default: []].append(claimant) }
        let holdersBefore = membersBefore.compactMapValues { $0.min() }
        let holdersAfter = membersAfter.compactMapValues { $0.min() }
        func shown(_ state: RecordState, _ claims: [(group: Group, claimant: Claimant)], _ holders: [Group: Claimant]) -> Bool {
            state.isAlive && claims.allSatisfy { holders[$0.group] == $0.claimant }
        }

        var removals = [Settled](), upserts = [Settled]()
        func decide(_ address: RecordAddress, before: RecordState, after: RecordState, shownBefore: Bool, shownAfter: Bool, tableRow: [Value?]?) {
            let schema = schemas[address.table]!
            let newRow = shownAfter ? ApplyPlanner.visibleRow(after, schema, authority) : nil
            var settled = Settled(address: address, before: before, after: after, shownBefore: shownBefore, shownAfter: shownAfter, row: .none)
            guard newRow != tableRow else { return }
            if let newRow { settled.row = .upsert(newRow); upserts.append(settled) } else { settled.row = .delete; removals.append(settled) }
        }
        for change in changes {
            let schema = schemas[change.address.table]!
            let shownBefore = shown(change.before, beforeClaims[change.address]!, holdersBefore)
            let shownAfter = shown(change.after, afterClaims[change.address]!, holdersAfter)
            let tableRow = change.writtenByApp
                ? ApplyPlanner.visibleRow(change.after, schema, authority)
                : (shownBefore ? ApplyPlanner.visibleRow(change.before, schema, authority) : nil)
            decide(change.address, before: change.before, after: change.after, shownBefore: shownBefore, shownAfter: shownAfter, tableRow: tableRow)
        }
        for (address, state) in otherStates {
            let claims = otherClaims[address]!
            let shownBefore = shown(state, claims, holdersBefore), shownAfter = shown(state, claims, holdersAfter)
            guard shownBefore != shownAfter else { continue }
            decide(address, before: state, after: state, shownBefore: shownBefore, shownAfter: shownAfter,
                   tableRow: shownBefore ? ApplyPlanner.visibleRow(state, schemas[address.table]!, authority) : nil)
        }
        settlement.rows = removals.sorted { $0.address < $1.address } + upserts.sorted { $0.address < $1.address }
        settlement.removedClaims.sort { ($0.group, $0.claimant) < ($1.group, $1.claimant) }
        settlement.addedClaims.sort { ($0.group, $0.claimant) < ($1.group, $1.claimant) }
        return settlement
    }
}
