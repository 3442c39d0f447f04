/// The merge state of one record: membership × one register per field.
///
/// A product of semilattices, joined component-wise; under `.deleteWins` the join then
/// drops the registers of incarnations the joined membership has removed. Field states
/// outlive a delete under `.updateWins`, so a concurrent edit that revives the record
/// restores all of it, not only the edited field.
///
/// A *delta* is a record state too (typically with few fields, and a bottom membership
/// when membership did not change), so applying a delta is the same join.
public struct RecordState: Sendable, Hashable, Codable {
    /// Whether the record exists: its add-tags and what it has seen.
    public var membership: ORSet
    /// One state per column written (columns never written are absent), in column order.
    public var fields: ColumnMap<FieldState>

    /// The bottom state: nothing known.
    public init() {
        membership = ORSet()
        fields = ColumnMap()
    }

    /// A state from parts; under `.deleteWins`, registers of removed incarnations are dropped.
    public init(membership: ORSet, fields: ColumnMap<FieldState>) {
        self.membership = membership
        self.fields = fields
        prune()
    }

    /// A state from parts, its fields given as a dictionary.
    public init(membership: ORSet, fields: [String: FieldState]) {
        self.init(membership: membership, fields: ColumnMap(fields))
    }

    /// Whether the record exists (some add-tag is live).
    public var isAlive: Bool { membership.isAlive }
    /// Whether nothing is known (the bottom of the lattice).
    public var isBottom: Bool { membership.isBottom && fields.isEmpty }
    /// Whether tombstone collection may drop this state once its delete is causally stable
    /// (DESIGN §9): it holds something but shows nothing.
    public var isCollectable: Bool { !isAlive && !isBottom }

    /// The join.
    ///
    /// - Complexity: O(f + g) for f and g fields in the two states (plus the registers' joins).
    public func merging(_ other: RecordState) -> RecordState {
        var result = self
        result.merge(other)
        return result
    }

    /// Joins `other` into this state (``merging(_:)`` in place).
    public mutating func merge(_ other: RecordState) {
        if isBottom {
            // The join's identity: the other state, pruned as the general path would (a
            // record's first delta, the common case of an insert or a first sync).
            self = other
            prune()
            return
        }
        let membershipChanged = !other.membership.isBottom && other.membership != membership
        if membershipChanged { membership = membership.mergingUnequal(other.membership) }
        fields.join(other.fields, changing: { existing, state in
            // The common case, two last-writer-wins writes: the stamps decide, no compare of values.
            if case .plain(.lww(let mine)) = existing, case .plain(.lww(let theirs)) = state, mine.stamp != theirs.stamp {
                return mine.stamp < theirs.stamp ? state : nil
            }
            if existing == state { return nil }
            let merged = existing.merging(state)
            return merged == existing ? nil : merged
        })
        if membershipChanged || other.fields.values.contains(where: \.isIncarnated) { prune() }
    }

    /// Drops registers of removed incarnations (a no-op for `.updateWins` fields).
    mutating func prune() {
        // Only a field that holds a dead incarnation is written: a write would copy values
        // shared with another state.
        for index in fields.values.indices {
            guard case .incarnated(let entries) = fields.values[index],
                  entries.contains(where: { membership.isDead($0.incarnation) }) else { continue }
            fields.values[index] = .incarnated(entries.filter { !membership.isDead($0.incarnation) })
        }
    }

    /// The value the app sees in `column`, or `nil` when no write is visible.
    ///
    /// - Parameters:
    ///   - column: The column's name.
    ///   - policy: The column's merge policy (how its register shows a value).
    ///   - authority: the replica whose concurrent writes win in `.authority`
    ///     columns (the sync server); `nil` while unknown.
    public func value(of column: String, policy: ColumnPolicy = .lww, authority: ReplicaID? = nil) -> Value? {
        guard let register = fields[column]?.visibleRegister(membership: membership) else { return nil }
        switch register {
        case .lww(let lww): return lww.value
        case .multi(let mv):
            if policy == .authority, let authority { return mv.value(preferring: authority) }
            return mv.provisionalValue
        }
    }

    /// The visible multi-value register of a critical column, to list its siblings.
    public func multiValue(of column: String) -> MVRegister? {
        guard case .multi(let register)? = fields[column]?.visibleRegister(membership: membership) else { return nil }
        return register
    }

    /// The largest clock reading anywhere in this state (membership, stamps, contexts).
    public var maxHLC: HLC {
        var result = membership.context.maxHLC
        for state in fields.values { result = max(result, state.maxHLC) }
        return result
    }

    /// Every part's invariant, and no register of a removed incarnation left behind.
    public func checkInvariants() throws(InvariantViolation) {
        try membership.checkInvariants()
        try fields.checkInvariants()
        for (column, state) in fields {
            try state.checkInvariants()
            if case .incarnated(let entries) = state {
                if let dead = entries.first(where: { membership.isDead($0.incarnation) }) {
                    throw InvariantViolation("field \(column) keeps a register of removed incarnation \(dead.incarnation)")
                }
            }
        }
    }
}
