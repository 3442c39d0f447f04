/// An open conflict the app can show its user: switch over it.
///
/// ```swift
/// for conflict in try database.conflicts() {
///     switch conflict {
///     case .field(let field): ask(field.column, choosing: field.siblings)
///     case .constraint(let clash): ask(clash.index, holder: clash.holder, held: clash.held)
///     }
/// }
/// ```
public enum Conflict: Sendable, Hashable, Codable {
    /// A critical field holding concurrent values.
    case field(FieldConflict)
    /// Live records whose values clash on a unique index: one is shown, the others held.
    case constraint(ConstraintConflict)

    /// The table the conflict is in.
    public var table: String {
        switch self {
        case .field(let conflict): return conflict.table
        case .constraint(let conflict): return conflict.table
        }
    }

    /// The field conflict, if this is one.
    public var field: FieldConflict? {
        if case .field(let conflict) = self { return conflict }
        return nil
    }

    /// The constraint conflict, if this is one.
    public var constraint: ConstraintConflict? {
        if case .constraint(let conflict) = self { return conflict }
        return nil
    }
}

/// A critical field holding two or more concurrent values, waiting for someone to choose.
public struct FieldConflict: Sendable, Hashable, Codable {
    /// The record's table.
    public var table: String
    /// The record's primary key.
    public var key: Value
    /// The critical column in conflict.
    public var column: String
    /// Every concurrent write, oldest first; the last one's value is shown meanwhile.
    public var siblings: [MVRegister.Sibling]

    /// A conflict of `column` in the record at `table` and `key`.
    public init(table: String, key: Value, column: String, siblings: [MVRegister.Sibling]) {
        self.table = table
        self.key = key
        self.column = column
        self.siblings = siblings
    }
}

/// Live records whose values clash on a unique index (DESIGN §4): the first claim is shown
/// (the *holder*), the others are *held*: kept and merged, but absent from the app table.
///
/// Resolve it by editing or deleting a held record through Converge (it has no row to
/// write with SQL), or by changing or deleting the holder; then the next claim in stamp
/// order shows, on every replica alike.
public struct ConstraintConflict: Sendable, Hashable, Codable {
    /// One record in the clash.
    public struct Claimant: Sendable, Hashable, Codable {
        /// The record's primary key.
        public var key: Value
        /// Every column of the record as it would show (NULL where nothing was written).
        public var values: [String: Value]
        /// When the record last wrote one of the index's columns: the earliest claim holds.
        public var stamp: Stamp

        /// A record in the clash.
        public init(key: Value, values: [String: Value], stamp: Stamp) {
            self.key = key
            self.values = values
            self.stamp = stamp
        }
    }

    /// The table of the records.
    public var table: String
    /// The unique index's name and columns.
    public var index: String
    /// The index's columns, in index order.
    public var columns: [String]
    /// The values the records clash on, one per column.
    public var values: [Value]
    /// The earliest claim. It is in the app table unless a clash on another index holds it.
    public var holder: Claimant
    /// The later claims, in the order they would take over.
    public var held: [Claimant]

    /// A clash on `index` of `table`.
    public init(table: String, index: String, columns: [String], values: [Value], holder: Claimant, held: [Claimant]) {
        self.table = table
        self.index = index
        self.columns = columns
        self.values = values
        self.holder = holder
        self.held = held
    }

    /// The conflict of `group`, whose `claimants` (two or more, holder first) have the
    /// states `state` returns.
    public init(
        group: UniquePlanner.Group, claimants: [UniquePlanner.Claimant], schema: TableSchema, authority: ReplicaID?,
        state: (Value) -> RecordState?
    ) {
        func claimant(_ claim: UniquePlanner.Claimant) -> Claimant {
            let row = state(claim.key).flatMap { ApplyPlanner.visibleRow($0, schema, authority) } ?? schema.columns.map { _ in nil }
            return Claimant(key: claim.key, values: Dictionary(uniqueKeysWithValues: zip(schema.columns, row.map { $0 ?? .null })), stamp: claim.stamp)
        }
        self.init(
            table: group.table, index: group.index,
            columns: schema.uniqueIndexes.first { $0.name == group.index }?.columns ?? [],
            values: group.values, holder: claimant(claimants[0]), held: claimants.dropFirst().map(claimant))
    }
}
