import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import PropertyBased
import Testing

/// DESIGN §2 on the SQLite store: a write or resolve that changes nothing (refused, or to
/// the value shown) moves no clock, an apply that changes nothing moves no clock, and an
/// UPDATE writing a critical field in conflict resolves it, even to the value shown.
@Suite(.computeBound) struct StoreNoOpClockTests {
    let clock = TestClock()

    /// `items(id, name, qty, amount)` with `amount` critical: the issue's smallest case.
    func makeStore() throws -> ReplicatedDatabase {
        let queue = try DatabaseQueue()
        try queue.write { db in try db.execute(sql: "CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name, qty, amount)") }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "items", policies: ["amount": .critical])
        return store
    }

    func execute(_ store: ReplicatedDatabase, _ sql: String, at milliseconds: UInt64? = nil) throws {
        if let milliseconds { clock.set(milliseconds) }
        try store.writer.write { db in try db.execute(sql: sql) }
    }

    @Test func refusedResolveMovesNoClock() throws {
        let a = try makeStore()
        try execute(a, "INSERT INTO items(id, name) VALUES ('k1', 'pen')", at: 1_000)
        try execute(a, "DELETE FROM items WHERE id = 'k1'", at: 1_001)
        clock.set(1_002)
        #expect(throws: RecordNotFound.self) { try a.resolve(table: "items", key: .text("k1"), column: "amount", to: .integer(5)) }
        #expect(throws: RecordNotFound.self) { try a.resolve(table: "items", key: .text("never"), column: "amount", to: .integer(5)) }
        #expect(a.clock == HLC(milliseconds: 1_001, counter: 0))
        // The next write is stamped as if the refusals had not happened, and so is the
        // saved high-water mark.
        try execute(a, "INSERT INTO items(id, name) VALUES ('k2', 'ink')", at: 1_001)
        #expect(a.clock == HLC(milliseconds: 1_001, counter: 1))
        let stamps = try a.snapshot().records.flatMap { $0.state.membership.dots }
        #expect(stamps.map(\.hlc).max() == HLC(milliseconds: 1_001, counter: 1))
    }

    @Test func rolledBackTransactionMovesNoClock() throws {
        let a = try makeStore()
        try execute(a, "INSERT INTO items(id, name) VALUES ('k', 'pen')", at: 1_000)
        let before = a.clock
        clock.set(1_500)
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try a.writer.write { db in
                try db.execute(sql: "UPDATE items SET name = 'gone' WHERE id = 'k'")
                throw Abort()
            }
        }
        #expect(a.clock == before)
        try a.writer.writeWithoutTransaction { db in
            try db.inTransaction {
                try db.execute(sql: "INSERT INTO items(id, name) VALUES ('k3', 'x')")
                return .rollback
            }
        }
        #expect(a.clock == before)
        #expect(try a.changes(since: 0).changeset.records.count == 1)
    }

    /// A and B write `amount` concurrently and exchange: both show the same provisional value.
    func conflicted() throws -> (ReplicatedDatabase, ReplicatedDatabase) {
        let a = try makeStore(), b = try makeStore()
        try execute(a, "INSERT INTO items(id, name, amount) VALUES ('k', 'pen', 1)", at: 1_000)
        try b.apply(try a.changes(since: 0).changeset)
        let cursorA = try a.changes(since: 0).next, cursorB = try b.changes(since: 0).next
        try execute(a, "UPDATE items SET amount = 2 WHERE id = 'k'", at: 2_000)
        try execute(b, "UPDATE items SET amount = 3 WHERE id = 'k'", at: 2_001)
        try a.apply(try b.changes(since: cursorB).changeset)
        try b.apply(try a.changes(since: cursorA).changeset)
        return (a, b)
    }

    func amount(_ store: ReplicatedDatabase) throws -> Int64? {
        try store.writer.read { db in try Int64.fetchOne(db, sql: "SELECT amount FROM items WHERE id = 'k'") }
    }

    @Test func writingTheShownValueOfAConflictResolvesIt() throws {
        let (a, b) = try conflicted()
        #expect(try a.conflicts().count == 1 && b.conflicts().count == 1)
        #expect(try amount(a) == 3 && amount(b) == 3)
        let cursor = try a.changes(since: 0).next
        try execute(a, "UPDATE items SET amount = 3 WHERE id = 'k'", at: 4_000)
        #expect(try a.conflicts().isEmpty)
        try b.apply(try a.changes(since: cursor).changeset)
        #expect(try b.conflicts().isEmpty)
        #expect(try a.snapshot() == b.snapshot())
        #expect(try amount(b) == 3)

        // Resolved now: the same write is an ordinary no-op, and takes no stamp.
        let clockA = a.clock
        let head = try a.changes(since: 0).next
        try execute(a, "UPDATE items SET amount = 3 WHERE id = 'k'", at: 5_000)
        #expect(a.clock == clockA)
        #expect(try a.changes(since: head).changeset.isEmpty)
    }

    @Test func anOrmSaveOfTheWholeRowResolvesToo() throws {
        // An ORM writes every column: the critical one in conflict is named, so it resolves
        // to the value shown; the unchanged plain columns are not captured.
        let (a, b) = try conflicted()
        let cursor = try a.changes(since: 0).next
        try execute(a, "UPDATE items SET name = 'pen', qty = NULL, amount = 3 WHERE id = 'k'", at: 4_000)
        let delta = try a.changes(since: cursor).changeset
        #expect(delta.records.count == 1)
        #expect(Set(delta.records[0].state.fields.keys) == ["amount"])
        try b.apply(delta)
        #expect(try a.conflicts().isEmpty && b.conflicts().isEmpty)
    }

    @Test func anUpdateNotNamingTheCriticalColumnLeavesTheConflict() throws {
        let (a, _) = try conflicted()
        try execute(a, "UPDATE items SET name = 'blue pen' WHERE id = 'k'", at: 4_000)
        #expect(try a.conflicts().count == 1)
    }

    @Test func writingTheShownValueOutsideAConflictChangesNothing() throws {
        let a = try makeStore()
        try execute(a, "INSERT INTO items(id, name, qty, amount) VALUES ('k', 'pen', 1, 1)", at: 1_000)
        let head = try a.changes(since: 0).next
        let before = a.clock
        try execute(a, "UPDATE items SET name = 'pen', qty = 1, amount = 1 WHERE id = 'k'", at: 2_000)
        #expect(a.clock == before)
        #expect(try a.changes(since: head).changeset.isEmpty)
    }

    @Test func applyThatChangesNothingMovesNoClock() throws {
        let a = try makeStore(), b = try makeStore()
        try execute(a, "INSERT INTO items(id, name) VALUES ('k', 'pen')", at: 1_000)
        let changeset = try a.changes(since: 0).changeset
        clock.set(1_500)
        #expect(try b.apply(changeset).changedRecords == 1)
        let after = b.clock
        clock.set(9_000)  // a receive now would move the clock
        #expect(try b.apply(changeset).changedRecords == 0)
        #expect(try b.apply(Changeset()).changedRecords == 0)
        #expect(b.clock == after)
        // And the saved high-water mark did not move either: reopening shows the same clock.
        let reopened = try ReplicatedDatabase(b.writer, configuration: .init(physicalTime: { 0 }))
        #expect(reopened.clock == after)
    }

    /// For random operation sequences on one store, refused and no-op operations among them
    /// (resolves and updates of missing or deleted records, deletes of absent ones, updates
    /// to the shown value of fields not in conflict, re-applied changesets): the clock after
    /// the sequence equals the clock of the same sequence with those operations left out.
    @Test func clockIgnoresRefusedAndNoOpOperations() async throws {
        await propertyCheck(count: 30, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            do {
                try self.checkSequence(seed: seed)
            } catch {
                Issue.record("seed \(seed): \(error)")
            }
        }
    }

    static let schema = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty", "amount"], policies: ["amount": .critical])

    enum Step {
        case perform([Replica.Operation])
        case resolve(key: Value, to: Value)
        case apply(Changeset)

        func run(on store: ReplicatedDatabase) throws {
            switch self {
            case .perform(let operations): try StoreFixtures.perform(operations, on: store)
            case .resolve(let key, let value):
                do {
                    try store.resolve(table: "items", key: key, column: "amount", to: value)
                } catch is RecordNotFound {}  // refused: must change nothing
            case .apply(let changeset): try store.apply(changeset)
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

    /// Runs a random sequence on a store and on a core model of the same replica over every
    /// step, and on a second model over only the steps that changed the store's state: the
    /// three clocks agree, and the store's rows equal the models'.
    func checkSequence(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let store = try makeStore()
        var every = Replica(id: store.replicaID, clock: HybridClock(latest: store.clock))
        every.replicate(Self.schema)
        var effective = every
        var remote = Replica(id: .random())
        remote.replicate(Self.schema)
        var now: UInt64 = 1_000
        for _ in 0..<30 {
            now += UInt64(rng.below(3))
            clock.set(now)
            let key = Value.text("k\(rng.below(3))")
            let shown = every.row(table: "items", key: key)
            let step: Step
            switch rng.below(11) {
            case 0, 1:
                step = .perform([.insert(table: "items", key: key, values: ["name": .text("n\(rng.below(2))"), "qty": .integer(Int64(rng.below(2))), "amount": .integer(Int64(rng.below(2)))])])
            case 2: step = .perform([.delete(table: "items", key: key)])
            case 3: step = .resolve(key: key, to: .integer(Int64(rng.below(2))))
            case 4: step = .perform([.update(table: "items", key: key, values: shown ?? ["name": .text("x")])])
            case 5:
                // The remote catches up (no step here): its next write sees this one's.
                remote.apply(try store.changes(since: 0).changeset, physicalMilliseconds: now)
                continue
            case 6, 7:
                // A remote write of `amount`, concurrent with this replica's later ones.
                step = .apply(remote.perform([.update(table: "items", key: key, values: ["amount": .integer(Int64(2 + rng.below(2)))])], physicalMilliseconds: now))
            case 8: step = .apply(try store.changes(since: 0).changeset)  // what it holds, re-sent
            default: step = .perform([.update(table: "items", key: key, values: ["amount": shown?["amount"] ?? .integer(0)])])
            }
            let before = try store.snapshot()
            try step.run(on: store)
            step.run(on: &every, at: now)
            if try store.snapshot() != before { step.run(on: &effective, at: now) }
        }
        #expect(store.clock == effective.clock.latest, "seed \(seed)")
        #expect(every.clock == effective.clock, "seed \(seed)")
        let modelRows = effective.rows(table: "items").map { row in [row.key] + Self.schema.columns.map { row.values[$0]! } }
        #expect(try StoreFixtures.rows(store, "items") == modelRows, "seed \(seed)")
    }
}
