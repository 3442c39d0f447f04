/// Local mutations. Each takes a fresh stamp (one per local transaction), changes the
/// state by an inflation (`old.merging(new) == new`), and returns the delta it produced:
/// the smallest state whose join into any replica has the same effect.
extension RecordState {
    /// An insert (or an `INSERT OR REPLACE`): a new add-tag, and the given values.
    ///
    /// Under `.deleteWins` the insert starts a new incarnation: the values of earlier
    /// incarnations are dropped with the tags the insert supersedes.
    @discardableResult
    public mutating func insert(_ values: ColumnMap<Value>, at stamp: Stamp, schema: TableSchema) -> RecordState {
        membership.add(at: stamp)
        var delta = RecordState()
        delta.membership = membership
        switch schema.deletePolicy {
        case .updateWins:
            delta.fields = written(values) { column, value in
                .plain(writeRegister(fields[column].flatMap(plainRegister), value, stamp, schema.policy(of: column)))
            }
            fields.merge(delta.fields) { _, written in written }
        case .deleteWins:
            prune()
            delta.fields = written(values) { column, value in
                .incarnated([FieldState.Incarnated(incarnation: stamp, register: .written(value, at: stamp, policy: schema.policy(of: column)))])
            }
            fields.merge(delta.fields) { existing, written in
                guard case .incarnated(let entries) = written else { return written }
                return Self.replacing(entries, in: existing)
            }
        }
        return delta
    }

    /// ``insert(_:at:schema:)-(ColumnMap<Value>,_,_)`` of a dictionary's values.
    @discardableResult
    public mutating func insert(_ values: [String: Value], at stamp: Stamp, schema: TableSchema) -> RecordState {
        insert(ColumnMap(values), at: stamp, schema: schema)
    }

    /// An edit of some fields of a live record (an `UPDATE`, or an upsert's update branch).
    ///
    /// Under `.updateWins` the edit is also an add, so it keeps the record alive against a
    /// delete it did not see. Under `.deleteWins` it writes into every live incarnation.
    /// Returns `nil`, changing nothing, when the record is not alive (SQL's `UPDATE` of a
    /// missing row does nothing either).
    @discardableResult
    public mutating func update(_ values: ColumnMap<Value>, at stamp: Stamp, schema: TableSchema) -> RecordState? {
        guard isAlive else { return nil }
        var delta = RecordState()
        switch schema.deletePolicy {
        case .updateWins:
            membership.add(at: stamp)
            delta.membership = membership
            delta.fields = written(values) { column, value in
                .plain(writeRegister(fields[column].flatMap(plainRegister), value, stamp, schema.policy(of: column)))
            }
            fields.merge(delta.fields) { _, written in written }
        case .deleteWins:
            delta.fields = written(values) { column, value in
                let policy = schema.policy(of: column)
                let current = fields[column]
                return .incarnated(membership.dots.map { incarnation in
                    FieldState.Incarnated(incarnation: incarnation, register: writeRegister(
                        current.flatMap { Self.register(in: $0, incarnation: incarnation) }, value, stamp, policy))
                })
            }
            fields.merge(delta.fields) { existing, written in
                guard case .incarnated(let entries) = written else { return written }
                return Self.replacing(entries, in: existing)
            }
        }
        return delta
    }

    /// ``update(_:at:schema:)-(ColumnMap<Value>,_,_)`` of a dictionary's values.
    @discardableResult
    public mutating func update(_ values: [String: Value], at stamp: Stamp, schema: TableSchema) -> RecordState? {
        update(ColumnMap(values), at: stamp, schema: schema)
    }

    /// The field states `write` makes of `values`, in their columns' order: the keys are
    /// shared, not sorted again.
    private func written(_ values: ColumnMap<Value>, _ write: (String, Value) -> FieldState) -> ColumnMap<FieldState> {
        var states = [FieldState]()
        states.reserveCapacity(values.count)
        for (column, value) in values { states.append(write(column, value)) }
        return ColumnMap(ascendingKeys: values.keys, values: states)
    }

    /// A delete of a live record. Returns `nil` when the record is not alive.
    @discardableResult
    public mutating func delete(at stamp: Stamp, schema: TableSchema) -> RecordState? {
        guard isAlive else { return nil }
        membership.remove(at: stamp)
        if schema.deletePolicy == .deleteWins { prune() }
        var delta = RecordState()
        delta.membership = membership
        return delta
    }

    /// Resolves a critical field by writing the chosen value: the write observes every
    /// sibling, so after it reaches everyone the conflict is gone everywhere.
    @discardableResult
    public mutating func resolve(_ column: String, to value: Value, at stamp: Stamp, schema: TableSchema) -> RecordState? {
        update(ColumnMap(ascendingKeys: [column], values: [value]), at: stamp, schema: schema)
    }

    /// `state` with the registers of `written`'s incarnations replaced (not joined: a
    /// second write of one transaction reuses its stamp, and the join would keep the
    /// larger value rather than the later one).
    private static func replacing(_ written: [FieldState.Incarnated], in state: FieldState?) -> FieldState {
        guard case .incarnated(let entries)? = state else { return .incarnated(written) }
        let replaced = Set(written.map(\.incarnation))
        return .incarnated((entries.filter { !replaced.contains($0.incarnation) } + written).sorted { $0.incarnation < $1.incarnation })
    }

    private func plainRegister(_ state: FieldState) -> Register? {
        if case .plain(let register) = state { return register }
        return nil
    }

    private static func register(in state: FieldState, incarnation: Stamp) -> Register? {
        guard case .incarnated(let entries) = state else { return nil }
        return entries.first { $0.incarnation == incarnation }?.register
    }

    /// A write observing `current` (for multi-value registers: all its siblings).
    private func writeRegister(_ current: Register?, _ value: Value, _ stamp: Stamp, _ policy: ColumnPolicy) -> Register {
        if let current, case .multi = current, policy != .lww {
            return current.writing(value, at: stamp)
        }
        return .written(value, at: stamp, policy: policy)
    }
}
