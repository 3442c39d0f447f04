/// Authorship: which events of a delta a sender may have made itself.
///
/// A sync server binds each device to one replica, and a device may only push writes of its
/// own replica (DESIGN §5). It may still carry other replicas' events, as a relay does or as
/// any write does in its causal context; those must be events the receiver already holds,
/// so that joining them changes nothing. Otherwise a device could write in another's name:
/// a new write under another replica's stamp, the *same* stamp with another value (the
/// corruption tie-break would let the forgery win), or a context entry claiming to have seen
/// another replica's future events, which would silently cover them when they arrive.
extension RecordState {
    /// The first event of `self` (a pushed delta) made by a replica other than `author`
    /// that `stored` does not already hold; `nil` when there is none.
    ///
    /// Held means: a foreign add-tag (or incarnation) is covered by the stored membership's
    /// context; a foreign context entry does not exceed the stored one; a foreign write is
    /// the stored register's own write (same stamp, same value), or one it has superseded.
    /// Registers of incarnations that the stored membership has removed are skipped: the
    /// join drops them.
    ///
    /// `seen` raises what counts as held for foreign *context entries* (not for writes or
    /// add-tags): an entry at or below `seen[replica]` passes. A server passes the join of
    /// the contexts of the records it has collected (DESIGN §9): a device that still held a
    /// tombstone re-inserts the record with a context covering the collected delete, which
    /// the server, having dropped the record, cannot check entry by entry. Every event such
    /// an entry covers reached the server before the collection, so it claims no future event.
    ///
    /// - Complexity: O(e log s) for e events in `self` and s in `stored`.
    public func firstUnheldStamp(notBy author: ReplicaID, against stored: RecordState, seen: CausalContext = CausalContext()) -> Stamp? {
        if let stamp = membership.firstUnheld(notBy: author, against: stored.membership, seen: seen) { return stamp }
        for (column, field) in fields {
            let held = stored.fields[column]
            switch field {
            case .plain(let register):
                let storedRegister: Register? = if case .plain(let existing)? = held { existing } else { nil }
                if let stamp = register.firstUnheld(notBy: author, against: storedRegister, seen: seen) { return stamp }
            case .incarnated(let entries):
                let storedEntries: [FieldState.Incarnated] = if case .incarnated(let existing)? = held { existing } else { [] }
                for entry in entries {
                    if stored.membership.isDead(entry.incarnation) { continue }
                    if entry.incarnation.replica != author, !stored.membership.context.covers(entry.incarnation) { return entry.incarnation }
                    let storedRegister = storedEntries.first { $0.incarnation == entry.incarnation }?.register
                    if let stamp = entry.register.firstUnheld(notBy: author, against: storedRegister, seen: seen) { return stamp }
                }
            }
        }
        return nil
    }
}

extension ORSet {
    func firstUnheld(notBy author: ReplicaID, against stored: ORSet, seen: CausalContext) -> Stamp? {
        for dot in dots where dot.replica != author && !stored.context.covers(dot) { return dot }
        return context.firstAbove(stored.context, notBy: author, seen: seen)
    }
}

extension CausalContext {
    /// The first entry of a replica other than `author` above what `stored` records (and
    /// above `seen`).
    func firstAbove(_ stored: CausalContext, notBy author: ReplicaID, seen: CausalContext) -> Stamp? {
        for entry in entries where entry.replica != author && entry.hlc > max(stored[entry.replica], seen[entry.replica]) {
            return Stamp(hlc: entry.hlc, replica: entry.replica)
        }
        return nil
    }
}

extension Register {
    func firstUnheld(notBy author: ReplicaID, against stored: Register?, seen: CausalContext) -> Stamp? {
        switch self {
        case .lww(let write):
            guard write.stamp.replica != author else { return nil }
            switch stored {
            case .lww(let existing)?:
                if existing.stamp > write.stamp || (existing.stamp == write.stamp && existing.value == write.value) { return nil }
                return write.stamp
            case .multi?:
                return nil  // a multi-value register ranks above: the join keeps it
            case nil:
                return write.stamp
            }
        case .multi(let register):
            // An LWW register below it is replaced by the join: nothing foreign is held then.
            let existing: MVRegister = if case .multi(let held)? = stored { held } else { MVRegister() }
            return register.firstUnheld(notBy: author, against: existing, seen: seen)
        }
    }
}

extension MVRegister {
    func firstUnheld(notBy author: ReplicaID, against stored: MVRegister, seen: CausalContext) -> Stamp? {
        for sibling in siblings where sibling.stamp.replica != author {
            if let held = stored.sibling(at: sibling.stamp) {
                if held.value != sibling.value { return sibling.stamp }
            } else if !stored.context.covers(sibling.stamp) {
                return sibling.stamp
            }
        }
        return context.firstAbove(stored.context, notBy: author, seen: seen)
    }

    /// The sibling written at `stamp`, if held.
    ///
    /// - Complexity: O(log n): siblings are sorted by stamp.
    func sibling(at stamp: Stamp) -> Sibling? {
        var low = 0, high = siblings.count
        while low < high {
            let middle = (low + high) / 2
            if siblings[middle].stamp < stamp { low = middle + 1 } else { high = middle }
        }
        return low < siblings.count && siblings[low].stamp == stamp ? siblings[low] : nil
    }
}
