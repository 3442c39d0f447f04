/// The one walk over every stamp of a state: add-tags, context entries, register writes,
/// siblings and incarnations. The wire encoder's replica table, the clock's receive, the
/// rewound-identity check and the server's claim guard all read stamps through it.
extension FieldState {
    /// Calls `body` with every stamp in the field: each write, each sibling, each causal
    /// context entry (as the stamp it records) and each incarnation.
    @inlinable
    public func forEachStamp(_ body: (Stamp) -> Void) {
        switch self {
        case .plain(let register): register.forEachStamp(body)
        case .incarnated(let entries):
            for entry in entries {
                body(entry.incarnation)
                entry.register.forEachStamp(body)
            }
        }
    }
}

extension Register {
    /// Calls `body` with every stamp in the register (a multi-value one's siblings, then its
    /// context's marks).
    @inlinable
    public func forEachStamp(_ body: (Stamp) -> Void) {
        switch self {
        case .lww(let lww): body(lww.stamp)
        case .multi(let mv):
            for sibling in mv.siblings { body(sibling.stamp) }
            mv.context.forEachStamp(body)
        }
    }
}

extension CausalContext {
    /// Calls `body` with each entry's high-water mark, as a stamp.
    @inlinable
    public func forEachStamp(_ body: (Stamp) -> Void) {
        for entry in entries { body(Stamp(hlc: entry.hlc, replica: entry.replica)) }
    }
}

extension RecordState {
    /// Calls `body` with every stamp in the state (membership first, then the fields in
    /// no particular order).
    @inlinable
    public func forEachStamp(_ body: (Stamp) -> Void) {
        for dot in membership.dots { body(dot) }
        membership.context.forEachStamp(body)
        for field in fields.values { field.forEachStamp(body) }
    }

    /// The largest clock reading of `replica`'s events in this state.
    ///
    /// - Complexity: O(e) for e stamps in the state.
    public func maxHLC(of replica: ReplicaID) -> HLC {
        var result = HLC.zero
        forEachStamp { stamp in if stamp.replica == replica && stamp.hlc > result { result = stamp.hlc } }
        return result
    }
}

extension Changeset {
    /// The highest clock reading of each replica in the changeset.
    ///
    /// - Complexity: O(e log r) for e stamps of r replicas.
    public var maxHLCByReplica: [ReplicaID: HLC] {
        var result = [ReplicaID: HLC]()
        for delta in records {
            delta.state.forEachStamp { stamp in
                if stamp.hlc > result[stamp.replica, default: .zero] { result[stamp.replica] = stamp.hlc }
            }
        }
        return result
    }
}
