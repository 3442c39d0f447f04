import ConvergeCore
import ConvergeTestSupport
import PropertyBased
import Testing

/// DESIGN §2: a write that changes nothing takes no stamp and moves no clock, an apply that
/// changes nothing moves no clock, and writing a critical field in conflict resolves it,
/// even to the value shown.
@Suite(.computeBound) struct NoOpClockTests {
    /// `items(id, name, qty, amount)` with `amount` critical: the smallest case.
    static let items = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty", "amount"], policies: ["amount": .critical])

    static func replica(_ index: Int) -> Replica {
        var replica = Replica(id: Fixtures.replicaID(index))
        replica.replicate(items)
        return replica
    }

    @Test func refusedResolveMovesNoClock() {
        var a = Self.replica(0)
        a.perform([.insert(table: "items", key: .text("k1"), values: ["name": .text("pen")])], physicalMilliseconds: 1_000)
        a.perform([.delete(table: "items", key: .text("k1"))], physicalMilliseconds: 1_001)
        let refused = a.resolve(table: "items", key: .text("k1"), column: "amount", to: .integer(5), physicalMilliseconds: 1_002)
        #expect(refused.isEmpty)
        #expect(a.clock.latest == HLC(milliseconds: 1_001, counter: 0))
        // A resolve of a record that never existed, or of an unknown table, neither.
        #expect(a.resolve(table: "items", key: .text("nope"), column: "amount", to: .integer(5), physicalMilliseconds: 1_003).isEmpty)
        #expect(a.resolve(table: "other", key: .text("k1"), column: "amount", to: .integer(5), physicalMilliseconds: 1_003).isEmpty)
        #expect(a.clock.latest == HLC(milliseconds: 1_001, counter: 0))
    }

    /// Two replicas write `amount` concurrently; A then writes the value it shows.
    func conflicted() -> (Replica, Replica, Value) {
        var a = Self.replica(0), b = Self.replica(1)
        let created = a.perform([.insert(table: "items", key: .text("k"), values: ["name": .text("pen"), "amount": .integer(1)])], physicalMilliseconds: 1_000)
        b.apply(created, physicalMilliseconds: 1_000)
        let fromA = a.perform([.update(table: "items", key: .text("k"), values: ["amount": .integer(2)])], physicalMilliseconds: 2_000)
        let fromB = b.perform([.update(table: "items", key: .text("k"), values: ["amount": .integer(3)])], physicalMilliseconds: 2_001)
        a.apply(fromB, physicalMilliseconds: 3_000)
        b.apply(fromA, physicalMilliseconds: 3_000)
        let shown = a.row(table: "items", key: .text("k"))!["amount"]!
        return (a, b, shown)
    }

    @Test func writingTheShownValueOfAConflictResolvesIt() {
        var (a, b, shown) = conflicted()
        #expect(a.conflicts().count == 1 && b.conflicts().count == 1)
        #expect(shown == .integer(3))  // the provisional value: the sibling with the largest stamp
        let choice = a.perform([.update(table: "items", key: .text("k"), values: ["amount": shown])], physicalMilliseconds: 4_000)
        #expect(!choice.isEmpty)
        #expect(a.conflicts().isEmpty)
        b.apply(choice, physicalMilliseconds: 4_000)
        #expect(b.conflicts().isEmpty)
        #expect(a.row(table: "items", key: .text("k")) == b.row(table: "items", key: .text("k")))
        #expect(a.state.snapshot == b.state.snapshot)

        // Now that it is resolved, the same write is an ordinary no-op again.
        let clock = a.clock
        #expect(a.perform([.update(table: "items", key: .text("k"), values: ["amount": shown])], physicalMilliseconds: 5_000).isEmpty)
        #expect(a.clock == clock)
    }

    @Test func writingTheShownValueOutsideAConflictChangesNothing() {
        var a = Self.replica(0)
        a.perform([.insert(table: "items", key: .text("k"), values: ["name": .text("pen"), "qty": .integer(1), "amount": .integer(1)])], physicalMilliseconds: 1_000)
        let clock = a.clock
        let same = a.perform([.update(table: "items", key: .text("k"), values: ["name": .text("pen"), "qty": .integer(1), "amount": .integer(1)])], physicalMilliseconds: 2_000)
        #expect(same.isEmpty)
        #expect(a.clock == clock)
    }

    @Test func applyThatChangesNothingMovesNoClock() {
        var a = Self.replica(0), b = Self.replica(1)
        let created = a.perform([.insert(table: "items", key: .text("k"), values: ["name": .text("pen")])], physicalMilliseconds: 1_000)
        #expect(b.apply(created, physicalMilliseconds: 1_500).changedRecords == 1)
        let clock = b.clock
        // Later physical time: a receive would move the clock; a re-sent changeset does none.
        let again = b.apply(created, physicalMilliseconds: 9_000)
        #expect(again.changedRecords == 0)
        #expect(b.clock == clock)
        #expect(b.apply(Changeset(), physicalMilliseconds: 9_500).changedRecords == 0)
        #expect(b.clock == clock)
    }

    /// For random operation sequences on one replica, refused and no-op operations among
    /// them: the clock after the sequence equals the clock after the same sequence with
    /// those operations left out (and so does the state).
    @Test func clockIgnoresRefusedAndNoOpOperations() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            var full = Self.replica(0)
            var effective = [(step: Step, milliseconds: UInt64)]()
            var now: UInt64 = 1_000
            for _ in 0..<40 {
                now += UInt64(rng.below(3))  // often the same millisecond: counters matter
                let step = Step.random(&rng, full)
                let before = full.state.snapshot
                step.run(on: &full, at: now)
                // A step counts when it changed the state; then it must have taken a stamp.
                if full.state.snapshot != before { effective.append((step, now)) }
            }
            var filtered = Self.replica(0)
            for (step, milliseconds) in effective { step.run(on: &filtered, at: milliseconds) }
            #expect(full.clock == filtered.clock, "seed \(seed)")
            #expect(full.state.snapshot == filtered.state.snapshot, "seed \(seed)")
        }
    }

    /// One step of the property: an operation, a resolve, or a remote apply.
    enum Step {
        case perform([Replica.Operation])
        case resolve(key: Value, to: Value)
        /// A remote write, already seen or new: applies that change nothing move nothing.
        case apply(Changeset)

        static func random(_ rng: inout SeededGenerator, _ replica: Replica) -> Step {
            let key = Value.text("k\(rng.below(3))")
            let shown = replica.row(table: "items", key: key)
            switch rng.below(10) {
            case 0, 1:
                return .perform([.insert(table: "items", key: key, values: ["name": .text("n\(rng.below(2))"), "qty": .integer(Int64(rng.below(2))), "amount": .integer(Int64(rng.below(2)))])])
            case 2:
                return .perform([.delete(table: "items", key: key)])
            case 3:
                return .resolve(key: key, to: .integer(Int64(rng.below(2))))
            case 4:
                // An update writing every field to the value shown (an ORM saving a record).
                guard let shown else { return .perform([.update(table: "items", key: key, values: ["name": .text("x")])]) }
                return .perform([.update(table: "items", key: key, values: shown)])
            case 5, 6:
                // A remote replica's write of `amount`, racing this one's.
                var remote = NoOpClockTests.replica(1)
                _ = remote.apply(replica.state.changes(since: 0).changeset, physicalMilliseconds: 1_000)
                let written = remote.perform([.update(table: "items", key: key, values: ["amount": .integer(Int64(2 + rng.below(2)))])], physicalMilliseconds: 900 + UInt64(rng.below(200)))
                return .apply(written)
            case 7:
                // Whatever this replica already holds, re-sent.
                return .apply(replica.state.changes(since: 0).changeset)
            default:
                return .perform([.update(table: "items", key: key, values: ["qty": .integer(Int64(rng.below(2)))])])
            }
        }

        func run(on replica: inout Replica, at milliseconds: UInt64) {
            switch self {
            case .perform(let operations): replica.perform(operations, physicalMilliseconds: milliseconds)
            case .resolve(let key, let value): replica.resolve(table: "items", key: key, column: "amount", to: value, physicalMilliseconds: milliseconds)
            case .apply(let changeset): replica.apply(changeset, physicalMilliseconds: milliseconds)
            }
        }
    }
}
