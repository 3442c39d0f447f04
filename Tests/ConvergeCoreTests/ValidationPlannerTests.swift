import ConvergeCore
import Testing

/// Validation planned in the core (``ValidationPlanner``), through the in-memory replica: a
/// refused change is undone by a compensating write that wins everywhere, the sender
/// included; an accepted one is left alone; a throwing validator changes nothing.
@Suite struct ValidationPlannerTests {
    static let prices = TableSchema(name: "prices", primaryKey: "id", columns: ["label", "price"])
    static let handles = TableSchema(
        name: "handles", primaryKey: "id", columns: ["handle"], uniqueIndexes: [UniqueIndex(name: "by_handle", columns: ["handle"])])

    func replica(_ index: UInt64) -> Replica {
        var replica = Replica(id: ReplicaID(high: 0x4000 | index << 20, low: 0x8000_0000_0000_0000 | index))
        replica.replicate(Self.prices)
        replica.replicate(Self.handles)
        return replica
    }

    static func noNegativePrices(_ change: ProposedChange) -> String? {
        if case .integer(let price)? = change.after?["price"], price < 0 { return "a price cannot be negative" }
        if change.key == .text("keep"), change.after == nil { return "this record cannot be deleted" }
        return nil
    }

    @Test func aRefusedUpdateIsUndoneOnEveryReplica() throws {
        var server = replica(1), device = replica(2)
        let created = device.perform([.insert(table: "prices", key: .text("p"), values: ["label": .text("pen"), "price": .integer(100)])], physicalMilliseconds: 1_000)
        let accepted = server.apply(created, physicalMilliseconds: 1_000, origin: "phone", validate: Self.noNegativePrices)
        #expect(accepted.rejections.isEmpty && accepted.changedRecords == 1)
        let edit = device.perform([.update(table: "prices", key: .text("p"), values: ["label": .text("blue pen"), "price": .integer(-5)])], physicalMilliseconds: 2_000)
        let report = server.apply(edit, physicalMilliseconds: 2_000, origin: "phone", validate: Self.noNegativePrices)
        #expect(report.rejections.map(\.reason) == ["a price cannot be negative"])
        #expect(report.rejections.first?.origin == "phone" && report.rejections.first?.id == 1 && report.rejections.first?.physicalMilliseconds == 2_000)
        #expect(server.rejectionCount == 1)
        // The change is refused whole: the columns it changed are put back, by a write
        // stamped after the device's. A later edit of the label alone is accepted.
        #expect(server.row(table: "prices", key: .text("p")) == ["label": .text("pen"), "price": .integer(100)])
        #expect(server.state.sequence > report.feedAfter, "the compensation lies beyond feedAfter, so the sender pulls it")
        device.apply(server.state.changes(since: report.feedAfter).changeset, physicalMilliseconds: 3_000)
        #expect(device.row(table: "prices", key: .text("p")) == server.row(table: "prices", key: .text("p")))
        #expect(device.state.snapshot == server.state.snapshot)
        let relabel = device.perform([.update(table: "prices", key: .text("p"), values: ["label": .text("blue pen")])], physicalMilliseconds: 4_000)
        #expect(server.apply(relabel, physicalMilliseconds: 4_000, origin: "phone", validate: Self.noNegativePrices).rejections.isEmpty)
        #expect(server.row(table: "prices", key: .text("p")) == ["label": .text("blue pen"), "price": .integer(100)])
        try server.state.checkInvariants()
    }

    @Test func aRefusedDeleteComesBackAndARefusedInsertGoesAway() {
        var server = replica(1), device = replica(2)
        let created = device.perform([.insert(table: "prices", key: .text("keep"), values: ["label": .text("kept"), "price": .integer(1)])], physicalMilliseconds: 1_000)
        server.apply(created, physicalMilliseconds: 1_000, origin: nil, validate: Self.noNegativePrices)
        let deleted = device.perform([.delete(table: "prices", key: .text("keep"))], physicalMilliseconds: 2_000)
        let insert = device.perform([.insert(table: "prices", key: .text("bad"), values: ["label": .text("x"), "price": .integer(-1)])], physicalMilliseconds: 2_001)
        var both = deleted
        both.records += insert.records
        let report = server.apply(both, physicalMilliseconds: 2_001, origin: nil, validate: Self.noNegativePrices)
        // Key order: "bad" before "keep"; the ids count up.
        #expect(report.rejections.map(\.key) == [.text("bad"), .text("keep")])
        #expect(report.rejections.map(\.id) == [1, 2])
        #expect(server.row(table: "prices", key: .text("keep")) == ["label": .text("kept"), "price": .integer(1)])
        #expect(server.row(table: "prices", key: .text("bad")) == nil)
        device.apply(server.state.snapshot, physicalMilliseconds: 3_000)
        #expect(device.rows(table: "prices").map(\.key) == [.text("keep")])
        // Applying the same changeset again shows nothing new: nothing is refused twice.
        let again = server.apply(both, physicalMilliseconds: 3_000, origin: nil, validate: Self.noNegativePrices)
        #expect(again.rejections.isEmpty && again.changedRecords == 0)
    }

    @Test func aThrowingValidatorLeavesTheReplicaUnchanged() {
        struct Refused: Error {}
        var server = replica(1), device = replica(2)
        let created = device.perform([.insert(table: "prices", key: .text("p"), values: ["label": .text("pen"), "price": .integer(-1)])], physicalMilliseconds: 1_000)
        let before = server.state.snapshot, clock = server.clock
        #expect(throws: Refused.self) {
            try server.apply(created, physicalMilliseconds: 1_000, origin: nil) { _ in throw Refused() }
        }
        #expect(server.state.snapshot == before && server.clock == clock && server.rejectionCount == 0)
    }

    @Test func aRecordAUniqueIndexHoldsIsNotShownUntilItShows() {
        var server = replica(1), phone = replica(2), laptop = replica(3)
        var seen = [ProposedChange]()
        func record(_ change: ProposedChange) -> String? { seen.append(change); return nil }
        let first = phone.perform([.insert(table: "handles", key: .text("a"), values: ["handle": .text("ann")])], physicalMilliseconds: 1_000)
        server.apply(first, physicalMilliseconds: 1_000, origin: nil, validate: record)
        #expect(seen.map(\.key) == [.text("a")])
        // A later claim of the same handle is held: no row, nothing shown.
        let second = laptop.perform([.insert(table: "handles", key: .text("b"), values: ["handle": .text("ann")])], physicalMilliseconds: 2_000)
        seen = []
        server.apply(second, physicalMilliseconds: 2_000, origin: nil, validate: record)
        #expect(seen.isEmpty)
        #expect(server.heldKeys(table: "handles") == [.text("b")])
        // The first holder leaves: the held record shows, and is seen arriving.
        let gone = phone.perform([.delete(table: "handles", key: .text("a"))], physicalMilliseconds: 3_000)
        server.apply(gone, physicalMilliseconds: 3_000, origin: nil, validate: record)
        #expect(seen.map(\.key) == [.text("a"), .text("b")])
        #expect(seen.last?.before == nil && seen.last?.after == ["handle": .text("ann")])
    }

    @Test func theRowsShownAreThoseThatChanged() {
        let plannerStamp = Stamp(hlc: HLC(rawValue: 10 << 16), replica: ReplicaID(high: 0x4000, low: 0x8000_0000_0000_0001))
        var state = RecordState()
        CapturePlanner.apply(.insert(["label": .text("pen"), "price": .integer(1)]), at: plannerStamp, to: &state, schema: Self.prices)
        let address = RecordAddress(table: "prices", key: .text("p"))
        // The same row before and after (a sibling merged, say): nothing to validate.
        let unchanged = ValidationPlanner.Shown(address: address, before: state, after: state, current: state)
        var calls = 0
        let none = ValidationPlanner.plan([unchanged], schemas: ["prices": Self.prices], authority: nil, stamp: { plannerStamp }) { _ in calls += 1; return "no" }
        #expect(none.isEmpty && calls == 0)
        // A table not replicated here is not shown either.
        let elsewhere = ValidationPlanner.Shown(address: RecordAddress(table: "other", key: .text("p")), before: nil, after: state, current: state)
        #expect(ValidationPlanner.plan([elsewhere], schemas: ["prices": Self.prices], authority: nil, stamp: { plannerStamp }) { _ in "no" }.isEmpty)
    }
}
