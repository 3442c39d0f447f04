/// Tombstone collection's decisions, as pure functions (DESIGN §9).
///
/// A deleted record keeps its metadata so that an edit made without seeing the delete
/// revives all of it. Once no such edit can arrive any more the record may go, on every
/// replica, and nothing visible changes. Only a hub can know when that is: it hears from
/// every device. These functions say how it decides; a shell (the in-memory ``Replica``, the
/// simulator's hub, a server's store) keeps the positions and the records and calls them,
/// so that each shell collects by the same rules.
///
/// The vocabulary, in the hub's feed positions:
/// - a device's *stable position*: it had applied the hub's feed up to there before it
///   began a push that then completed, so every write it made before seeing that position
///   is at the hub;
/// - the *frontier*: the smallest stable position over the devices still active;
/// - a record is *collectable* once it is deleted at a position at or below the frontier
///   and unchanged since: every active device has seen the delete and sent everything it
///   wrote before seeing it, so nothing concurrent with the delete can still come (except
///   from a device retired meanwhile, which resets instead of merging its old state).
public enum CollectionPlanner {
    /// Where a device stands, as the hub keeps it.
    public struct Standing: Sendable, Hashable {
        /// The replica it last synced as (a reset device comes back as another one).
        public var replica: ReplicaID
        /// Its stable position (see ``CollectionPlanner``).
        public var stablePosition: UInt64
        /// The serial number of the last request of `replica` whose push the hub applied
        /// (``isStale(requestSerial:appliedSerial:)``).
        public var appliedSerial: UInt64
        /// When the hub last heard from it, in the hub's retention clock.
        public var lastSeenMilliseconds: UInt64
        /// Retired devices no longer hold the frontier back; they must reset.
        public var retired: Bool
        /// The last entry of the hub's collected log it has dropped.
        public var collectedAfter: UInt64

        /// A device syncing as `replica`, last heard from at `lastSeenMilliseconds`.
        public init(replica: ReplicaID, stablePosition: UInt64 = 0, appliedSerial: UInt64 = 0, lastSeenMilliseconds: UInt64,
                    retired: Bool = false, collectedAfter: UInt64 = 0) {
            self.replica = replica
            self.stablePosition = stablePosition
            self.appliedSerial = appliedSerial
            self.lastSeenMilliseconds = lastSeenMilliseconds
            self.retired = retired
            self.collectedAfter = collectedAfter
        }
    }

    /// A device's stable position after a round it made with pull cursor `pullCursor`.
    ///
    /// Only a push that completes (nothing left in the device's feed after its batch) proves
    /// anything: then every write made before the device had applied `pullCursor` is at the
    /// hub. The claim is clamped to the hub's `head` (a device's word may only hold the
    /// frontier back, never push it forward), and a stable position never goes down (a
    /// late copy of an old request claims less than what the hub already knows).
    public static func stablePosition(previous: UInt64, pullCursor: UInt64, pushComplete: Bool, head: UInt64) -> UInt64 {
        guard pushComplete else { return previous }
        return max(previous, min(pullCursor, head))
    }

    /// Whether a device last seen at `lastSeenMilliseconds` is retired at `nowMilliseconds`:
    /// away longer than the retention window. Time that runs backwards retires nobody.
    public static func isRetired(lastSeenMilliseconds: UInt64, nowMilliseconds: UInt64, retentionMilliseconds: UInt64) -> Bool {
        let (horizon, overflow) = nowMilliseconds.subtractingReportingOverflow(retentionMilliseconds)
        return !overflow && lastSeenMilliseconds < horizon
    }

    /// The frontier: the smallest stable position over the active devices' `standings`
    /// (retired ones left out), 0 — nothing collectable — when none is active. A device
    /// that has not completed a push yet stands at 0 and holds everything back.
    public static func frontier<S: Sequence>(_ standings: S) -> UInt64 where S.Element == Standing {
        standings.lazy.filter { !$0.retired }.map(\.stablePosition).min() ?? 0
    }

    /// Whether a request carrying a push, numbered `requestSerial` by its replica (each
    /// request a new number, counting up), must be refused because the hub has applied the
    /// push of request `appliedSerial` of that replica: a push is applied at most once, and
    /// never after a later one.
    ///
    /// A request delayed or duplicated on the way carries states as they were when it was
    /// sent; the hub may have collected a record since, deleted by a replica that had seen
    /// the very edit the old request carries. Joined then, the old state would bring the
    /// record back without its other fields. Feed positions cannot tell such a request from
    /// a fresh one: a device whose paged push was cut short starts again from its
    /// acknowledged cursor, below the pages the hub applied, with current states.
    public static func isStale(requestSerial: UInt64, appliedSerial: UInt64) -> Bool { requestSerial <= appliedSerial }

    /// One record as the collection sees it.
    public struct Candidate: Sendable, Hashable {
        /// The record.
        public var address: RecordAddress
        /// Its merge state.
        public var state: RecordState
        /// The local sequence number (the hub's feed position) of its last change.
        public var sequence: UInt64
        /// A change of it waits in quarantine: that change may be an edit concurrent with
        /// the delete, so the record stays until it is applied.
        public var quarantined: Bool

        /// A record at `address`, last changed at feed position `sequence`.
        public init(address: RecordAddress, state: RecordState, sequence: UInt64, quarantined: Bool) {
            self.address = address
            self.state = state
            self.sequence = sequence
            self.quarantined = quarantined
        }
    }

    /// The records the hub may drop at `frontier`: deleted, last changed at or below it, no
    /// change waiting in quarantine; oldest change first, at most `limit`.
    ///
    /// - Complexity: O(n log n) for n candidates.
    public static func collectable(_ candidates: [Candidate], through frontier: UInt64, limit: Int) -> [RecordAddress] {
        candidates
            .filter { $0.sequence <= frontier && !$0.quarantined && $0.state.isCollectable }
            .sorted { ($0.sequence, $0.address) < ($1.sequence, $1.address) }
            .prefix(max(0, limit))
            .map(\.address)
    }

    /// Whether a replica told that the hub collected a record drops its own copy of it.
    ///
    /// Only a state that shows nothing goes (a record revived here since is kept, and the
    /// revival reaches the hub like any write), never one with a change waiting in
    /// quarantine, and, when `unchangedAfter` is given, never one changed after that feed
    /// position (a local change the hub has not acknowledged yet).
    public static func mayDrop(_ state: RecordState, sequence: UInt64, quarantined: Bool, unchangedAfter: UInt64?) -> Bool {
        guard state.isCollectable, !quarantined else { return false }
        if let unchangedAfter, sequence > unchangedAfter { return false }
        return true
    }

    /// Whether `state` is the life of its record that the hub collected when the record's
    /// membership context was `collected`, or a part of it: every event it holds (add-tags,
    /// context entries, field writes and their contexts) is one that context covers.
    ///
    /// A record's key outlives its collection: it may be inserted again, and the new life
    /// may come from a replica that never saw the old one (a device back from a reset, or
    /// one that never synced). So an entry of the collected log names a *life*, not a key:
    /// a replica drops its copy only if that copy is the collected life (a new life carries
    /// add-tags the collected context never saw), and a hub takes back no part of it that a
    /// device still relays (merged into a new life, the old one's fields and siblings would
    /// show again where the new life's writer never saw them).
    public static func isCollectedLife(_ state: RecordState, collectedContext: CausalContext) -> Bool {
        func covered(_ register: Register) -> Bool {
            switch register {
            case .lww(let register): return collectedContext.covers(register.stamp)
            case .multi(let register):
                return register.siblings.allSatisfy { collectedContext.covers($0.stamp) }
                    && register.context.entries.allSatisfy { $0.hlc <= collectedContext[$0.replica] }
            }
        }
        guard state.membership.context.entries.allSatisfy({ $0.hlc <= collectedContext[$0.replica] }),
              state.membership.dots.allSatisfy(collectedContext.covers)
        else { return false }
        for field in state.fields.values {
            switch field {
            case .plain(let register): if !covered(register) { return false }
            case .incarnated(let entries):
                for entry in entries where !collectedContext.covers(entry.incarnation) || !covered(entry.register) { return false }
            }
        }
        return true
    }

    /// The last entry of the collected log that every active device has dropped (`nil`:
    /// none active): entries up to it need not be listed again. A retired device is not
    /// waited for: it resets and drops everything anyway.
    public static func droppedEverywhere<S: Sequence>(_ standings: S) -> UInt64? where S.Element == Standing {
        standings.lazy.filter { !$0.retired }.map(\.collectedAfter).min()
    }

    /// The pushed deltas a hub still applies, given the lives of their records it has
    /// collected and not yet heard every device drop (`logged`: each entry's membership
    /// context, `nil` for an entry logged without one, by a release that did not keep it).
    ///
    /// A device that has not dropped a collected record yet may still relay a part of the
    /// collected life (its tombstone, or a change of it it had not pushed): that part goes,
    /// as the hub dropped the rest. Everything else stays: a new life of the key (inserted
    /// again, by a replica that saw the delete or one that never heard of the record), its
    /// field edits and its deletes. An entry without a context can tell no life from
    /// another: then, as before contexts were logged, only states that are alive stay.
    public static func withoutCollectedLives(_ changeset: Changeset, logged: [RecordAddress: [CausalContext?]]) -> Changeset {
        guard !logged.isEmpty else { return changeset }
        return Changeset(records: changeset.records.filter { delta in
            guard let lives = logged[RecordAddress(table: delta.table, key: delta.key)] else { return true }
            return !lives.contains { context in
                guard let context else { return !delta.state.isAlive }
                return isCollectedLife(delta.state, collectedContext: context)
            }
        })
    }
}
