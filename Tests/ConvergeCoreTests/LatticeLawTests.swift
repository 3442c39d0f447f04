import ConvergeCore
import ConvergeTestSupport
import PropertyBased
import Testing

/// Join laws checked on states a random multi-replica run reaches (so concurrent ones),
/// and every local mutation checked to be an inflation.
@Suite(.computeBound) struct LatticeLawTests {
    static func checkLaws<T: Equatable>(_ states: [T], _ join: (T, T) -> T, sourceLocation: SourceLocation = #_sourceLocation) {
        for a in states {
            #expect(join(a, a) == a, "idempotence", sourceLocation: sourceLocation)
            for b in states {
                let ab = join(a, b)
                #expect(ab == join(b, a), "commutativity", sourceLocation: sourceLocation)
                #expect(join(ab, b) == ab, "upper bound", sourceLocation: sourceLocation)
                for c in states.prefix(6) {
                    #expect(join(ab, c) == join(a, join(b, c)), "associativity", sourceLocation: sourceLocation)
                }
            }
        }
    }

    /// The record states of one address across replicas and changesets.
    static func recordStates(seed: UInt64) -> [RecordState] {
        let (replicas, changesets) = Fixtures.randomRun(seed: seed, replicas: 4, steps: 120)
        var rng = SeededGenerator(seed: seed ^ 0xABCD)
        let table = rng.chance(0.5) ? "notes" : "items"
        let address = RecordAddress(table: table, key: .text("k\(rng.below(4))"))
        var states = replicas.compactMap { $0.state.state(of: address) }
        for changeset in changesets.suffix(20) {
            states += changeset.records.filter { $0.table == table && $0.key == address.key }.map(\.state)
        }
        states.append(RecordState())
        for state in states { #expect(throws: Never.self) { try state.checkInvariants() } }
        return Array(states.prefix(10))
    }

    @Test func recordStateLaws() async {
        await propertyCheck(count: 60, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            Self.checkLaws(Self.recordStates(seed: seed)) { $0.merging($1) }
        }
    }

    @Test func orSetLaws() async {
        await propertyCheck(count: 60, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            Self.checkLaws(Self.recordStates(seed: seed).map(\.membership)) { $0.merging($1) }
        }
    }

    @Test func causalContextLaws() async {
        await propertyCheck(count: 60, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            Self.checkLaws(Self.recordStates(seed: seed).map(\.membership.context)) { $0.merging($1) }
        }
    }

    @Test func mvRegisterLaws() async {
        await propertyCheck(count: 60, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            let ids = (0..<3).map(Fixtures.replicaID)
            // Random registers, concurrent writes and corrupt ties (same stamp, other value) included.
            var registers = [MVRegister()]
            for step in 1...8 {
                var register = registers[rng.below(registers.count)]
                if rng.chance(0.3) { register.merge(registers[rng.below(registers.count)]) }
                let stamp = Stamp(hlc: HLC(rawValue: UInt64(step * 10 + rng.below(3))), replica: ids[rng.below(3)])
                if !register.context.covers(stamp) { register.write(Fixtures.randomValue(&rng), at: stamp) }
                #expect(throws: Never.self) { try register.checkInvariants() }
                registers.append(register)
            }
            Self.checkLaws(registers) { $0.merging($1) }
        }
    }

    @Test func lwwRegisterLaws() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            let registers = (0..<8).map { _ in
                LWWRegister(value: Fixtures.randomValue(&rng), stamp: Stamp(hlc: HLC(rawValue: UInt64(rng.below(4))), replica: Fixtures.replicaID(rng.below(2))))
            }
            Self.checkLaws(registers) { $0.merging($1) }
        }
    }

    @Test func changesetLaws() async {
        await propertyCheck(count: 30, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            let (_, changesets) = Fixtures.randomRun(seed: seed, replicas: 3, steps: 60)
            Self.checkLaws(Array(changesets.suffix(6)).map(\.normalized)) { $0.merging($1) }
        }
    }

    /// `merge(old, new) == new` for every local mutation, and the delta it returns takes
    /// any earlier state to the same place.
    @Test func mutationsAreInflations() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            var replicas = Fixtures.makeReplicas(2)
            var time: UInt64 = 1_000
            for _ in 0..<60 {
                time += 1
                let who = rng.below(2)
                let before = replicas[who].state.snapshot
                let changeset = replicas[who].perform([Fixtures.randomOperation(&rng)], physicalMilliseconds: time)
                let after = replicas[who].state.snapshot
                #expect(before.merging(after) == after.normalized)
                #expect(before.merging(changeset) == after.normalized)
                if rng.chance(0.3) { replicas[1 - who].apply(changeset, physicalMilliseconds: time) }
            }
        }
    }
}

/// States where one column is `.plain` on one side and `.incarnated` on the other (a
/// table whose delete policy changed, or a hostile changeset): the join must stay a
/// semilattice. The first three are the Coq counterexample `FieldState_pruned_nil_not_assoc`.
@Suite(.computeBound) struct MixedFieldKindTests {
    @Test func recordJoinStaysAssociativeWhenKindsMix() {
        let r = Fixtures.replicaID(0)
        let i = Stamp(hlc: HLC(rawValue: 1), replica: r)
        let five = RecordState(membership: ORSet(), fields: ["f": .plain(.lww(LWWRegister(value: .integer(5), stamp: Stamp(hlc: HLC(rawValue: 2), replica: r))))])
        var added = ORSet(); added.add(at: i)
        let nine = RecordState(membership: added, fields: ["f": .incarnated([.init(incarnation: i, register: .lww(LWWRegister(value: .integer(9), stamp: i)))])])
        var removed = added; removed.remove(at: Stamp(hlc: HLC(rawValue: 3), replica: r))
        let deleted = RecordState(membership: removed, fields: [:])
        LatticeLawTests.checkLaws([five, nine, deleted, RecordState()]) { $0.merging($1) }
        #expect(five.merging(nine).merging(deleted) == five.merging(nine.merging(deleted)))
    }
}
