@testable import ConvergeCore
import ConvergeTestSupport
import Testing

/// Tombstone collection's decisions (DESIGN §9) and the in-memory replica's collection and
/// reset, which the simulator's hub and core replicas run.
@Suite("Collection planner", .computeBound)
struct CollectionPlannerTests {
    static let notes = TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body"], deletePolicy: .updateWins)
    static let items = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty"], policies: ["qty": .critical], deletePolicy: .deleteWins)
    let a = ReplicaID(bytes: Array(repeating: 0xA0, count: 16))!
    let b = ReplicaID(bytes: Array(repeating: 0xB0, count: 16))!
    let c = ReplicaID(bytes: Array(repeating: 0xC0, count: 16))!

    func replica(_ id: ReplicaID) -> Replica {
        var replica = Replica(id: id)
        replica.replicate(Self.notes)
        replica.replicate(Self.items)
        return replica
    }

    @Test("a stable position moves only with a complete push, never past the head, never down")
    func stablePosition() {
        #expect(CollectionPlanner.stablePosition(previous: 4, pullCursor: 9, pushComplete: false, head: 20) == 4)
        #expect(CollectionPlanner.stablePosition(previous: 4, pullCursor: 9, pushComplete: true, head: 20) == 9)
        #expect(CollectionPlanner.stablePosition(previous: 4, pullCursor: 90, pushComplete: true, head: 20) == 20)
        // A late copy of an old request claims less than what is known.
        #expect(CollectionPlanner.stablePosition(previous: 12, pullCursor: 9, pushComplete: true, head: 20) == 12)
    }

    @Test("the frontier is the smallest stable position of the active devices")
    func frontier() {
        let standings = [
            CollectionPlanner.Standing(replica: a, stablePosition: 30, lastSeenMilliseconds: 0),
            CollectionPlanner.Standing(replica: b, stablePosition: 12, lastSeenMilliseconds: 0),
            CollectionPlanner.Standing(replica: c, stablePosition: 3, lastSeenMilliseconds: 0, retired: true),
        ]
        #expect(CollectionPlanner.frontier(standings) == 12)
        #expect(CollectionPlanner.frontier(standings.filter(\.retired)) == 0)
        #expect(CollectionPlanner.frontier([CollectionPlanner.Standing]()) == 0)
        // A device that has not completed a push stands at 0 and holds everything back.
        #expect(CollectionPlanner.frontier(standings + [CollectionPlanner.Standing(replica: c, lastSeenMilliseconds: 0)]) == 0)
        #expect(CollectionPlanner.droppedEverywhere(standings) == 0)
    }

    @Test("retirement after the retention window; a clock running backwards retires nobody")
    func retirement() {
        #expect(!CollectionPlanner.isRetired(lastSeenMilliseconds: 1_000, nowMilliseconds: 1_500, retentionMilliseconds: 500))
        #expect(CollectionPlanner.isRetired(lastSeenMilliseconds: 1_000, nowMilliseconds: 1_501, retentionMilliseconds: 500))
        #expect(!CollectionPlanner.isRetired(lastSeenMilliseconds: 1_000, nowMilliseconds: 100, retentionMilliseconds: 500))
        #expect(!CollectionPlanner.isRetired(lastSeenMilliseconds: 0, nowMilliseconds: 100, retentionMilliseconds: .max))
    }

    @Test("a push is applied once, and never after a later one")
    func stalePushes() {
        #expect(CollectionPlanner.isStale(requestSerial: 3, appliedSerial: 5))
        #expect(CollectionPlanner.isStale(requestSerial: 5, appliedSerial: 5))
        #expect(!CollectionPlanner.isStale(requestSerial: 6, appliedSerial: 5))
    }

    @Test("only deleted records at or below the frontier, none held in quarantine, oldest first")
    func collectable() {
        var alive = RecordState()
        _ = alive.insert(["title": .text("x")], at: Stamp(hlc: HLC(rawValue: 1 << 16), replica: a), schema: Self.notes)
        var dead = alive
        _ = dead.delete(at: Stamp(hlc: HLC(rawValue: 2 << 16), replica: a), schema: Self.notes)
        func address(_ key: String) -> RecordAddress { RecordAddress(table: "notes", key: .text(key)) }
        let candidates = [
            CollectionPlanner.Candidate(address: address("late"), state: dead, sequence: 9, quarantined: false),
            CollectionPlanner.Candidate(address: address("above"), state: dead, sequence: 11, quarantined: false),
            CollectionPlanner.Candidate(address: address("alive"), state: alive, sequence: 2, quarantined: false),
            CollectionPlanner.Candidate(address: address("held"), state: dead, sequence: 3, quarantined: true),
            CollectionPlanner.Candidate(address: address("early"), state: dead, sequence: 4, quarantined: false),
            CollectionPlanner.Candidate(address: address("bottom"), state: RecordState(), sequence: 1, quarantined: false),
        ]
        #expect(CollectionPlanner.collectable(candidates, through: 10, limit: 10) == [address("early"), address("late")])
        #expect(CollectionPlanner.collectable(candidates, through: 10, limit: 1) == [address("early")])
        #expect(CollectionPlanner.mayDrop(dead, sequence: 9, quarantined: false, unchangedAfter: nil))
        #expect(!CollectionPlanner.mayDrop(dead, sequence: 9, quarantined: false, unchangedAfter: 8))
        #expect(!CollectionPlanner.mayDrop(alive, sequence: 1, quarantined: false, unchangedAfter: nil))
        #expect(!CollectionPlanner.mayDrop(dead, sequence: 1, quarantined: true, unchangedAfter: nil))
    }

    @Test("a replica collects deleted records only, and shows the same rows after")
    func replicaCollects() {
        var hub = replica(a)
        hub.perform([.insert(table: "notes", key: .text("k1"), values: ["title": .text("one"), "body": .text("b")]),
                     .insert(table: "notes", key: .text("k2"), values: ["title": .text("two"), "body": .text("b")])], physicalMilliseconds: 1_000)
        hub.perform([.delete(table: "notes", key: .text("k1"))], physicalMilliseconds: 1_001)
        let rows = hub.rows(table: "notes").map(\.key)
        #expect(hub.tombstoneCount == 1)
        #expect(hub.collectableRecords(through: 0).isEmpty)
        let collectable = hub.collectableRecords(through: hub.state.sequence)
        #expect(collectable == [RecordAddress(table: "notes", key: .text("k1"))])
        let everything = [RecordAddress(table: "notes", key: .text("k1")), RecordAddress(table: "notes", key: .text("k2"))]
        #expect(hub.collect(everything) == collectable)
        #expect(hub.tombstoneCount == 0 && hub.state.recordCount == 1)
        #expect(hub.rows(table: "notes").map(\.key) == rows)
        // The feed no longer shows the dropped record.
        #expect(hub.state.changes(since: 0).changeset.records.map(\.key) == [.text("k2")])
    }

    @Test("a reset keeps the unacknowledged writes and writes them again under one new stamp")
    func resetKeepsUnacknowledgedWrites() throws {
        var device = replica(b)
        device.perform([.insert(table: "notes", key: .text("acked"), values: ["title": .text("a"), "body": .text("a")])], physicalMilliseconds: 1_000)
        let acknowledged = device.state.sequence
        device.perform([.insert(table: "notes", key: .text("new"), values: ["title": .text("n"), "body": .text("n")])], physicalMilliseconds: 1_001)
        device.perform([.update(table: "notes", key: .text("acked"), values: ["title": .text("edited")])], physicalMilliseconds: 1_002)
        device.perform([.insert(table: "items", key: .text("gone"), values: ["name": .text("g"), "qty": .integer(1)])], physicalMilliseconds: 1_003)
        device.perform([.delete(table: "items", key: .text("gone"))], physicalMilliseconds: 1_004)
        let clock = device.clock.latest
        // Kept: the edit, the insert, and the delete of the record inserted since (a delete
        // is its own latest event; written again, it changes nothing where the record is absent).
        #expect(device.resetForResync(acknowledged: acknowledged, newID: c) == 3)
        #expect(device.id == c && device.state.recordCount == 0 && device.keptWrites.count == 3)
        #expect(device.keptWrites.map(\.address.key) == [.text("gone"), .text("acked"), .text("new")])
        // The snapshot: the hub has the acknowledged record, edited by someone else since.
        var hub = replica(a)
        hub.perform([.insert(table: "notes", key: .text("acked"), values: ["title": .text("a"), "body": .text("a")])], physicalMilliseconds: 1_000)
        hub.perform([.update(table: "notes", key: .text("acked"), values: ["body": .text("theirs")])], physicalMilliseconds: 1_010)
        device.apply(hub.state.snapshot, physicalMilliseconds: 1_011)
        let written = device.reapplyKeptWrites(physicalMilliseconds: 1_012)
        #expect(device.keptWrites.isEmpty)
        #expect(written.records.map(\.key) == [.text("acked"), .text("new")])
        let stamps = Set(written.records.map { $0.state.membership.dots })
        #expect(stamps.count == 1 && stamps.first!.count == 1 && stamps.first!.first!.replica == c && stamps.first!.first!.hlc > clock)
        #expect(device.row(table: "notes", key: .text("acked")) == ["title": .text("edited"), "body": .text("theirs")])
        #expect(device.row(table: "notes", key: .text("new")) == ["title": .text("n"), "body": .text("n")])
        #expect(device.row(table: "items", key: .text("gone")) == nil)
    }

    @Test("a reset keeps a record that only its own add keeps alive")
    func resetKeepsOwnAdd() throws {
        // Two concurrent inserts under deleteWins: the device's own, and another with later
        // values that show in every column; then the other's incarnation is deleted where
        // the device's insert never arrived.
        var device = replica(b)
        var other = replica(a)
        other.perform([.insert(table: "items", key: .text("k"), values: ["name": .text("theirs"), "qty": .integer(2)])], physicalMilliseconds: 2_000)
        let acknowledged = device.state.sequence
        device.perform([.insert(table: "items", key: .text("k"), values: ["name": .text("mine"), "qty": .integer(1)])], physicalMilliseconds: 1_000)
        device.apply(other.state.snapshot, physicalMilliseconds: 2_001)
        #expect(device.row(table: "items", key: .text("k"))?["name"] == .text("theirs"))
        other.perform([.delete(table: "items", key: .text("k"))], physicalMilliseconds: 2_002)
        #expect(device.resetForResync(acknowledged: acknowledged, newID: c) == 1)
        device.apply(other.state.snapshot, physicalMilliseconds: 2_003)
        #expect(device.row(table: "items", key: .text("k")) == nil)
        device.reapplyKeptWrites(physicalMilliseconds: 2_004)
        // It comes back as the device showed it.
        #expect(device.row(table: "items", key: .text("k")) == ["name": .text("theirs"), "qty": .integer(2)])
    }

    @Test("a hub drops the parts of a collected life a device relays, and nothing of a later life")
    func withoutCollectedLives() {
        var device = replica(a)
        device.perform([.insert(table: "notes", key: .text("k"), values: ["title": .text("old"), "body": .text("b")])], physicalMilliseconds: 1_000)
        device.perform([.delete(table: "notes", key: .text("k"))], physicalMilliseconds: 1_001)
        let address = RecordAddress(table: "notes", key: .text("k"))
        let tombstone = device.state.state(of: address)!
        let collected = tombstone.membership.context
        // The new life: inserted again by a replica that never saw the old one, then deleted.
        var other = replica(b)
        let insert = other.perform([.insert(table: "notes", key: .text("k"), values: ["title": .text("new")])], physicalMilliseconds: 2_000)
        let delete = other.perform([.delete(table: "notes", key: .text("k"))], physicalMilliseconds: 2_001)
        let pushed = Changeset(records: [RecordDelta(table: "notes", key: .text("k"), state: tombstone)] + insert.records + delete.records)
        let kept = CollectionPlanner.withoutCollectedLives(pushed, logged: [address: [collected]])
        #expect(kept.records == insert.records + delete.records, "only the old tombstone goes")
        #expect(CollectionPlanner.withoutCollectedLives(pushed, logged: [:]) == pushed)
        // An entry logged without a context (an older release): only live states stay.
        #expect(CollectionPlanner.withoutCollectedLives(pushed, logged: [address: [nil]]).records == insert.records)
    }

    @Test("a causal context packs into 24 bytes an entry and reads back; bad bytes are refused")
    func packedContext() throws {
        let context = CausalContext([.init(replica: b, hlc: HLC(rawValue: 7)), .init(replica: a, hlc: HLC(rawValue: 1 << 40))])
        #expect(context.packedBytes.count == 48)
        #expect(try CausalContext(packedBytes: context.packedBytes) == context)
        #expect(try CausalContext(packedBytes: []) == CausalContext())
        #expect(throws: InvariantViolation.self) { try CausalContext(packedBytes: context.packedBytes.dropLast()) }
        // Entries out of order, or at zero.
        let swapped = Array(context.packedBytes[24...]) + Array(context.packedBytes[..<24])
        #expect(throws: InvariantViolation.self) { try CausalContext(packedBytes: swapped) }
        #expect(throws: InvariantViolation.self) { try CausalContext(packedBytes: a.bytes + Array(repeating: 0, count: 8)) }
    }

    @Test("the author check takes foreign context entries within the collected clock as held, and nothing more")
    func collectedClockInTheAuthorCheck() throws {
        var old = replica(a)
        old.perform([.insert(table: "notes", key: .text("k"), values: ["title": .text("old")])], physicalMilliseconds: 1_000)
        old.perform([.delete(table: "notes", key: .text("k"))], physicalMilliseconds: 1_001)
        var state = old.state.state(of: RecordAddress(table: "notes", key: .text("k")))!
        let collectedClock = state.membership.context
        let delta = state.insert(["title": .text("again")], at: Stamp(hlc: HLC(rawValue: 5_000 << 16), replica: b), schema: Self.notes)
        let push = Changeset(records: [RecordDelta(table: "notes", key: .text("k"), state: delta)])
        var context = ApplyPlanner.Context(replica: c, clock: .zero, physicalMilliseconds: 5_000, schemas: ["notes": Self.notes], author: b)
        #expect(throws: ApplyPlanner.Refusal.self) { try ApplyPlanner.plan(push, stored: [:], quarantined: [:], context: context) }
        context.collectedClock = collectedClock
        #expect(try ApplyPlanner.plan(push, stored: [:], quarantined: [:], context: context).changes.count == 1)
        // An entry beyond it is a claim on a future event of `a`: refused.
        var beyond = delta
        beyond.membership = ORSet(dots: delta.membership.dots, context: delta.membership.context.recording([Stamp(hlc: HLC(rawValue: 9_000 << 16), replica: a)]))
        let forged = Changeset(records: [RecordDelta(table: "notes", key: .text("k"), state: beyond)])
        #expect(throws: ApplyPlanner.Refusal.self) { try ApplyPlanner.plan(forged, stored: [:], quarantined: [:], context: context) }
    }
}
