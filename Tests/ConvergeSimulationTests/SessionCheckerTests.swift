import ConvergeCore
@testable import ConvergeSimulation
import ConvergeTestSupport
import Testing

/// The session checker on hand-made histories: it flags what DESIGN §7 forbids and lets
/// through the exceptions it names (a larger stamp, a removed incarnation).
@Suite("Session checker", .computeBound)
struct SessionCheckerTests {
    let a = ReplicaID(high: 0, low: 1)
    let b = ReplicaID(high: 0, low: 2)
    let notes = RecordAddress(table: "notes", key: .text("k1"))
    let docs = RecordAddress(table: "docs", key: .text("k1"))

    func stamp(_ hlc: UInt64, _ replica: ReplicaID) -> Stamp { Stamp(hlc: HLC(rawValue: hlc << 16), replica: replica) }

    func edit(_ address: RecordAddress, _ title: String, target: IncarnationTarget = .plain) -> PlannedWrite {
        let policy: DeletePolicy = address.table == "notes" ? .updateWins : .deleteWins
        return PlannedWrite(
            address: address, deletePolicy: policy, membership: .none,
            fields: [FieldWrite(column: "title", value: .text(title), critical: false, target: target, observed: [])], kind: "update")
    }

    /// A row showing `title` (and nothing else), alive with `dots`, having seen `context`.
    func shown(_ title: String?, dots: [Stamp], context: [Stamp] = []) -> ShownRecord {
        var seen = CausalContext()
        for dot in dots + context { seen.record(dot) }
        let membership = ORSet(dots: dots, context: seen)
        guard let title else { return ShownRecord(membership: membership, row: nil) }
        return ShownRecord(membership: membership, row: ["title": .text(title), "body": .null, "amount": .null, "name": .null, "qty": .null, "status": .null])
    }

    func step(_ op: Int) -> SessionStep { SessionStep(op: op, healing: false, what: "test") }

    @Test("a field that goes back to an older write breaks monotonic reads; a larger stamp does not")
    func monotonicReads() {
        var checker = SessionChecker(replicas: 2)
        let tag = stamp(1, b)
        let older = stamp(10, b), newer = stamp(20, b)
        checker.recordWrite(edit(notes, "old"), stamp: older, replica: 1)
        checker.recordWrite(edit(notes, "new"), stamp: newer, replica: 1)
        checker.observe(replica: 0, records: [notes: shown("new", dots: [tag])], step: step(1), describe: { "\($0)" })
        #expect(checker.violations == 0)
        checker.observe(replica: 0, records: [notes: shown("old", dots: [tag])], step: step(2), describe: { "\($0)" })
        #expect(checker.violations == 1)
        #expect(checker.first?.guarantee == "monotonic reads")
        #expect(checker.first?.replica == 0 && checker.first?.field == "title")
        #expect(checker.first?.shown.contains("'old'") == true && checker.first?.before.contains("'new'") == true)
        #expect(checker.first?.step.contains("op 2") == true)
        #expect(checker.checks >= 2)
    }

    @Test("a device that stops showing its own write breaks read-your-writes, unless a larger stamp won")
    func readYourWrites() {
        var checker = SessionChecker(replicas: 2)
        let tag = stamp(1, a)
        checker.recordWrite(edit(notes, "theirs-early"), stamp: stamp(5, b), replica: 1)
        checker.recordWrite(edit(notes, "mine"), stamp: stamp(10, a), replica: 0)
        checker.observe(replica: 0, records: [notes: shown("mine", dots: [tag])], step: step(1), written: [notes], describe: { "\($0)" })
        #expect(checker.violations == 0)
        // A later write of another device (larger stamp) supersedes it: allowed.
        checker.recordWrite(edit(notes, "theirs-late"), stamp: stamp(30, b), replica: 1)
        var other = checker
        other.observe(replica: 0, records: [notes: shown("theirs-late", dots: [tag])], step: step(2), describe: { "\($0)" })
        #expect(other.violations == 0)
        // The older write of the other device over it: a reverted local write.
        checker.observe(replica: 0, records: [notes: shown("theirs-early", dots: [tag])], step: step(2), describe: { "\($0)" })
        #expect(checker.violations == 1)
        #expect(checker.first?.guarantee == "no reverted local write")
        #expect(checker.first?.before.contains("its own write") == true)
        // Its own write leaving no visible row is flagged too.
        var fresh = SessionChecker(replicas: 1)
        fresh.recordWrite(edit(notes, "mine"), stamp: stamp(10, a), replica: 0)
        fresh.observe(replica: 0, records: [notes: shown(nil, dots: [])], step: step(1), written: [notes], describe: { "\($0)" })
        #expect(fresh.first?.guarantee == "read-your-writes")
    }

    @Test("under deleteWins, a write whose incarnation was removed may give way to an older one")
    func removedIncarnation() {
        var checker = SessionChecker(replicas: 2)
        let first = stamp(1, a), reinsert = stamp(3, b)
        checker.recordWrite(edit(docs, "in-first", target: .live([first])), stamp: stamp(50, a), replica: 0)
        checker.recordWrite(edit(docs, "in-second", target: .own), stamp: reinsert, replica: 1)
        checker.observe(replica: 0, records: [docs: shown("in-first", dots: [first])], step: step(1), describe: { "\($0)" })
        // The re-insert saw the first incarnation: it is removed, so its write never shows again.
        checker.observe(replica: 0, records: [docs: shown("in-second", dots: [reinsert], context: [first])], step: step(2), describe: { "\($0)" })
        #expect(checker.violations == 0, "\(String(describing: checker.first))")
        // The same older value while the first incarnation is still alive is a violation.
        var alive = SessionChecker(replicas: 2)
        alive.recordWrite(edit(docs, "in-first", target: .live([first])), stamp: stamp(50, a), replica: 0)
        alive.recordWrite(edit(docs, "in-second", target: .own), stamp: reinsert, replica: 1)
        alive.observe(replica: 0, records: [docs: shown("in-first", dots: [first])], step: step(1), describe: { "\($0)" })
        alive.observe(replica: 0, records: [docs: shown("in-second", dots: [first, reinsert])], step: step(2), describe: { "\($0)" })
        #expect(alive.violations == 1)
    }

    @Test("a device's pull cursor never goes back in one server's feed")
    func pullCursor() {
        var checker = SessionChecker(replicas: 1)
        let server = ReplicaID(high: 9, low: 9)
        checker.observeCursor(replica: 0, server: server, position: 10, step: step(1))
        checker.observeCursor(replica: 0, server: server, position: 12, step: step(2))
        #expect(checker.violations == 0)
        // Another server (a restored one): its feed starts over.
        checker.observeCursor(replica: 0, server: ReplicaID(high: 8, low: 8), position: 3, step: step(3))
        #expect(checker.violations == 0)
        checker.observeCursor(replica: 0, server: ReplicaID(high: 8, low: 8), position: 2, step: step(4))
        #expect(checker.violations == 1)
        #expect(checker.first?.field == "(pull cursor)")
    }
}
