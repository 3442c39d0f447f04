/// The merge state of one field of one record.
///
/// Under `.updateWins` a field has one register (`.plain`): its value survives a delete
/// and comes back with a revival. Under `.deleteWins` values belong to the *incarnation*
/// (the add dot) they were written under (`.incarnated`): a value written under an
/// incarnation that a delete removed never shows again, whatever its stamp, so a skewed
/// clock's edit of a deleted row cannot overwrite the re-inserted row's value.
public enum FieldState: Sendable, Hashable, Codable {
    /// One register for the field, whatever the record's incarnation (`.updateWins`).
    case plain(Register)
    /// Registers keyed by incarnation, sorted by incarnation, one per incarnation.
    case incarnated([Incarnated])

    /// The field's register under one incarnation of the record.
    public struct Incarnated: Sendable, Hashable, Codable {
        /// The add dot of the incarnation.
        public let incarnation: Stamp
        /// The field's register under it.
        public let register: Register
        /// The register `register` under `incarnation`.
        public init(incarnation: Stamp, register: Register) {
            self.incarnation = incarnation
            self.register = register
        }
    }

    /// Whether the field keeps registers by incarnation (`.deleteWins`).
    public var isIncarnated: Bool {
        if case .incarnated = self { return true }
        return false
    }

    /// The join. Plain and incarnated states meet only when a table's delete policy
    /// changed; incarnated ones rank above plain ones (an ordered sum), which keeps the
    /// join a semilattice.
    public func merging(_ other: FieldState) -> FieldState {
        switch (self, other) {
        case (.plain(let a), .plain(let b)): return .plain(a.merging(b))
        case (.incarnated(let a), .incarnated(let b)): return .incarnated(FieldState.merge(a, b))
        case (.incarnated, .plain): return self
        case (.plain, .incarnated): return other
        }
    }

    private static func merge(_ a: [Incarnated], _ b: [Incarnated]) -> [Incarnated] {
        if b.isEmpty { return a }
        if a.isEmpty { return b }
        var result = [Incarnated]()
        result.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i].incarnation < b[j].incarnation) {
                result.append(a[i]); i += 1
            } else if i == a.count || b[j].incarnation < a[i].incarnation {
                result.append(b[j]); j += 1
            } else {
                result.append(Incarnated(incarnation: a[i].incarnation, register: a[i].register.merging(b[j].register)))
                i += 1; j += 1
            }
        }
        return result
    }

    /// Drops the registers of incarnations that `membership` has seen removed.
    ///
    /// An emptied field stays `.incarnated([])` rather than disappearing: it still ranks
    /// above a `.plain` state, and dropping it would make the record join non-associative
    /// when the two kinds meet (found by the Coq model, `FieldState_pruned_nil_not_assoc`).
    func pruned(by membership: ORSet) -> FieldState {
        guard case .incarnated(let entries) = self, entries.contains(where: { membership.isDead($0.incarnation) }) else { return self }
        return .incarnated(entries.filter { !membership.isDead($0.incarnation) })
    }

    /// The register the app sees: the plain one, or the join of the live incarnations'.
    public func visibleRegister(membership: ORSet) -> Register? {
        switch self {
        case .plain(let register): return register
        case .incarnated(let entries):
            var result: Register?
            for entry in entries where membership.holds(entry.incarnation) {
                result = result.map { $0.merging(entry.register) } ?? entry.register
            }
            return result
        }
    }

    /// The largest clock reading anywhere in this state.
    public var maxHLC: HLC {
        switch self {
        case .plain(let register): return register.maxHLC
        case .incarnated(let entries):
            return entries.reduce(.zero) { max($0, $1.register.maxHLC, $1.incarnation.hlc) }
        }
    }

    /// Checks every register's invariants and that incarnations are sorted without
    /// duplicates; throws the first broken invariant.
    public func checkInvariants() throws(InvariantViolation) {
        switch self {
        case .plain(let register): try register.checkInvariants()
        case .incarnated(let entries):
            for index in entries.indices {
                try entries[index].register.checkInvariants()
                if index > 0, !(entries[index - 1].incarnation < entries[index].incarnation) {
                    throw InvariantViolation("incarnations not strictly sorted")
                }
            }
        }
    }
}
