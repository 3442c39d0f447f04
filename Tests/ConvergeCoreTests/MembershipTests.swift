import ConvergeCore
import ConvergeTestSupport
import Testing

@Suite(.computeBound) struct MembershipTests {
    let a = Fixtures.replicaID(0), b = Fixtures.replicaID(1)

    func pair(_ schema: TableSchema) -> (Replica, Replica, RecordAddress) {
        var left = Replica(id: a), right = Replica(id: b)
        left.replicate(schema); right.replicate(schema)
        let insert = left.perform([.insert(table: schema.name, key: .integer(1), values: ["name": .text("pen"), "qty": .integer(1), "status": .text("new"), "title": .text("t"), "body": .null, "amount": .integer(1)])], physicalMilliseconds: 10)
        right.apply(insert, physicalMilliseconds: 10)
        return (left, right, RecordAddress(table: schema.name, key: .integer(1)))
    }

    @Test func addWinsUnderUpdateWins() {
        var (left, right, _) = pair(Fixtures.notes)
        let delete = left.perform([.delete(table: "notes", key: .integer(1))], physicalMilliseconds: 20)
        let edit = right.perform([.update(table: "notes", key: .integer(1), values: ["title": .text("edited")])], physicalMilliseconds: 15)
        left.apply(edit, physicalMilliseconds: 30)
        right.apply(delete, physicalMilliseconds: 30)
        #expect(left.row(table: "notes", key: .integer(1))?["title"] == .text("edited"))
        // The revived record comes back whole, not only the edited field.
        #expect(left.row(table: "notes", key: .integer(1))?["amount"] == .integer(1))
        #expect(left.state.snapshot == right.state.snapshot)
    }

    @Test func deleteWinsIgnoresConcurrentEdit() {
        var (left, right, _) = pair(Fixtures.items)
        let delete = left.perform([.delete(table: "items", key: .integer(1))], physicalMilliseconds: 20)
        let edit = right.perform([.update(table: "items", key: .integer(1), values: ["name": .text("edited")])], physicalMilliseconds: 25)
        left.apply(edit, physicalMilliseconds: 30)
        right.apply(delete, physicalMilliseconds: 30)
        #expect(left.row(table: "items", key: .integer(1)) == nil)
        #expect(right.row(table: "items", key: .integer(1)) == nil)
        #expect(left.state.snapshot == right.state.snapshot)
    }

    @Test func deleteWinsConcurrentReinsertRevives() {
        var (left, right, _) = pair(Fixtures.items)
        let delete = left.perform([.delete(table: "items", key: .integer(1))], physicalMilliseconds: 20)
        let reinsert = right.perform([.insert(table: "items", key: .integer(1), values: ["name": .text("again"), "qty": .integer(2), "status": .null])], physicalMilliseconds: 15)
        left.apply(reinsert, physicalMilliseconds: 30)
        right.apply(delete, physicalMilliseconds: 30)
        #expect(left.row(table: "items", key: .integer(1))?["name"] == .text("again"))
        #expect(left.state.snapshot == right.state.snapshot)
    }

    /// A skewed clock's edit of a deleted incarnation must never overwrite the re-inserted
    /// row's value, whatever its stamp.
    @Test func editOfDeletedIncarnationNeverShows() {
        var (left, right, _) = pair(Fixtures.items)
        let futureEdit = right.perform([.update(table: "items", key: .integer(1), values: ["name": .text("ghost")])], physicalMilliseconds: 9_000)
        let delete = left.perform([.delete(table: "items", key: .integer(1))], physicalMilliseconds: 20)
        let reinsert = left.perform([.insert(table: "items", key: .integer(1), values: ["name": .text("fresh"), "qty": .integer(0), "status": .null])], physicalMilliseconds: 21)
        left.apply(futureEdit, physicalMilliseconds: 30)
        right.apply(delete, physicalMilliseconds: 9_001)
        right.apply(reinsert, physicalMilliseconds: 9_001)
        #expect(left.row(table: "items", key: .integer(1))?["name"] == .text("fresh"))
        #expect(right.row(table: "items", key: .integer(1))?["name"] == .text("fresh"))
        #expect(left.state.snapshot == right.state.snapshot)
    }
}

@Suite(.computeBound) struct MVRegisterTests {
    @Test func concurrentWritesKeepBothSiblings() {
        var replicas = Fixtures.makeReplicas(3)
        let insert = replicas[0].perform([.insert(table: "notes", key: .text("x"), values: ["amount": .integer(10)])], physicalMilliseconds: 1)
        for index in 1...2 { replicas[index].apply(insert, physicalMilliseconds: 1) }
        let first = replicas[1].perform([.update(table: "notes", key: .text("x"), values: ["amount": .integer(11)])], physicalMilliseconds: 5)
        let second = replicas[2].perform([.update(table: "notes", key: .text("x"), values: ["amount": .integer(12)])], physicalMilliseconds: 5)
        replicas[0].apply(second, physicalMilliseconds: 6); replicas[0].apply(first, physicalMilliseconds: 6)
        replicas[1].apply(second, physicalMilliseconds: 6)
        replicas[2].apply(first, physicalMilliseconds: 6)
        let views = replicas.map { $0.conflicts() }
        #expect(views[0].count == 1)
        #expect(views[0].first?.field?.siblings.map(\.value) == [.integer(11), .integer(12)] || views[0].first?.field?.siblings.map(\.value) == [.integer(12), .integer(11)])
        #expect(views[0] == views[1] && views[1] == views[2])
        let shown = replicas.map { $0.row(table: "notes", key: .text("x"))?["amount"] }
        #expect(shown[0] == shown[1] && shown[1] == shown[2])
        #expect(shown[0] == views[0].first?.field?.siblings.last?.value)
    }

    @Test func resolveClearsConflict() {
        var replicas = Fixtures.makeReplicas(2)
        let insert = replicas[0].perform([.insert(table: "notes", key: .text("x"), values: ["amount": .integer(10)])], physicalMilliseconds: 1)
        replicas[1].apply(insert, physicalMilliseconds: 1)
        let first = replicas[0].perform([.update(table: "notes", key: .text("x"), values: ["amount": .integer(11)])], physicalMilliseconds: 5)
        let second = replicas[1].perform([.update(table: "notes", key: .text("x"), values: ["amount": .integer(12)])], physicalMilliseconds: 5)
        replicas[0].apply(second, physicalMilliseconds: 6)
        replicas[1].apply(first, physicalMilliseconds: 6)
        #expect(replicas[1].conflicts().count == 1)
        let resolve = replicas[1].resolve(table: "notes", key: .text("x"), column: "amount", to: .integer(20), physicalMilliseconds: 7)
        replicas[0].apply(resolve, physicalMilliseconds: 8)
        #expect(replicas[0].conflicts().isEmpty && replicas[1].conflicts().isEmpty)
        #expect(replicas[0].row(table: "notes", key: .text("x"))?["amount"] == .integer(20))
    }

    @Test func equalConcurrentValuesAreNotAConflict() {
        var replicas = Fixtures.makeReplicas(2)
        let one = replicas[0].perform([.insert(table: "notes", key: .text("x"), values: ["amount": .integer(0)])], physicalMilliseconds: 1)
        let two = replicas[1].perform([.insert(table: "notes", key: .text("x"), values: ["amount": .integer(0)])], physicalMilliseconds: 1)
        replicas[0].apply(two, physicalMilliseconds: 2)
        replicas[1].apply(one, physicalMilliseconds: 2)
        #expect(replicas[0].conflicts().isEmpty)
        #expect(replicas[0].state.snapshot == replicas[1].state.snapshot)
    }

    @Test func authorityPrefersTheServersConcurrentValue() {
        let server = Fixtures.replicaID(9)
        var register = MVRegister()
        register.write(.integer(1), at: Stamp(hlc: HLC(rawValue: 5), replica: Fixtures.replicaID(0)))
        var other = MVRegister()
        other.write(.integer(2), at: Stamp(hlc: HLC(rawValue: 3), replica: server))
        let joined = register.merging(other)
        #expect(joined.value(preferring: server) == .integer(2))
        #expect(joined.provisionalValue == .integer(1))
        var record = RecordState()
        record.fields["status"] = .plain(.multi(joined))
        #expect(record.value(of: "status", policy: .authority, authority: server) == .integer(2))
        #expect(record.value(of: "status", policy: .authority) == .integer(1), "unknown authority: the largest stamp shows")
        #expect(record.value(of: "status", policy: .critical, authority: server) == .integer(1))
    }
}

@Suite(.computeBound) struct ConvergenceTests {
    @Test func nReplicasConverge() async {
        for seed in UInt64(0)..<60 {
            var rng = SeededGenerator(seed: seed)
            let count = 3 + rng.below(6)
            var (replicas, _) = Fixtures.randomRun(seed: seed, replicas: count, steps: 150)
            Fixtures.exchangeAll(&replicas)
            let reference = replicas[0].state.snapshot
            for replica in replicas {
                #expect(replica.state.snapshot == reference, "seed \(seed)")
                #expect(replica.conflicts() == replicas[0].conflicts())
                for table in ["notes", "items"] {
                    #expect(replica.rows(table: table).map(\.key) == replicas[0].rows(table: table).map(\.key))
                }
                #expect(throws: Never.self) { try replica.state.checkInvariants() }
            }
        }
    }
}
