import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import PropertyBased
import Testing

/// 3–6 in-memory stores driven by plain SQL, exchanging partial feeds in random order with
/// duplicates, each shadowed by a core-model replica fed the same operations and the same
/// changesets: all stores end with identical app tables and metadata, equal to the model.
@Suite(.computeBound) struct StoreModelTests {
    @Test func storesConvergeAndEqualTheCoreModel() async throws {
        await propertyCheck(count: 25, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            do {
                try Self.run(seed: seed)
            } catch {
                Issue.record("seed \(seed): \(error)")
            }
        }
    }

    /// The same with a validator on every apply, in the stores and in their models: both
    /// validate through ``ValidationPlanner``, so they refuse the same changes, report the
    /// same rejections and write the same compensations, stamps included.
    /// Fixed seeds, so that the count of refusals (which must not be zero) is known.
    @Test func validatedStoresEqualTheCoreModel() throws {
        var refused = 0
        for seed in UInt64(1)...15 { refused += try Self.run(seed: seed, validate: Self.rules) }
        #expect(refused > 20, "the rules refused \(refused) changes: the runs must exercise compensations")
    }

    /// Refuses a quantity of 1 or 3, a delete of `k1`, and a new note whose title is set.
    static func rules(_ change: ProposedChange) -> String? {
        if let qty = change.after?["qty"], qty == .integer(1) || qty == .integer(3) { return "a quantity of \(qty) is refused" }
        if change.key == .text("k1"), change.before != nil, change.after == nil { return "k1 may not be deleted" }
        if change.table == "notes", change.before == nil, let title = change.after?["title"], title != .null { return "a new note comes without a title" }
        return nil
    }

    /// Returns how many changes `validate` refused.
    @discardableResult
    static func run(seed: UInt64, validate: ((ProposedChange) -> String?)? = nil) throws -> Int {
        var refused = 0
        var rng = SeededGenerator(seed: seed)
        let clock = TestClock()
        let count = 3 + rng.below(4)
        let stores = try (0..<count).map { _ in try StoreFixtures.makeStore(clock: clock) }
        var models = stores.map { store -> Replica in
            var replica = Replica(id: store.replicaID, clock: HybridClock(latest: store.clock))
            replica.replicate(StoreFixtures.notes)
            replica.replicate(StoreFixtures.items)
            return replica
        }
        // Per pair: the fixed cursor of the round, and the position while paging.
        var cursors = Array(repeating: Array(repeating: UInt64(0), count: count), count: count)
        var positions = Array(repeating: Array(repeating: UInt64?.none, count: count), count: count)
        var inFlight = [(to: Int, changeset: Changeset)]()
        for _ in 0..<80 {
            clock.advance(by: UInt64(rng.below(3)))
            let who = rng.below(count)
            switch rng.below(10) {
            case 0...4:
                let operations = (0..<(1 + rng.below(3))).map { _ in StoreFixtures.randomOperation(&rng) }
                try StoreFixtures.perform(operations, on: stores[who])
                models[who].perform(operations, physicalMilliseconds: clock.now)
            case 5:
                if let conflict = try stores[who].conflicts().compactMap(\.field).first {
                    let value = StoreFixtures.randomValue(&rng)
                    try stores[who].resolve(table: conflict.table, key: conflict.key, column: conflict.column, to: value)
                    models[who].resolve(table: conflict.table, key: conflict.key, column: conflict.column, to: value, physicalMilliseconds: clock.now)
                }
            case 6, 7:
                let to = rng.below(count)
                guard to != who else { continue }
                let batch = try stores[who].changes(since: cursors[who][to], after: positions[who][to], maxRecords: 1 + rng.below(4))
                if batch.hasMore { positions[who][to] = batch.next } else { cursors[who][to] = batch.next; positions[who][to] = nil }
                let changeset = try WireDecoder.decode(WireEncoder.encode(batch.changeset))
                inFlight.append((to, changeset))
                if rng.chance(0.3) { inFlight.append((to, changeset)) }  // duplicated
            default:
                guard !inFlight.isEmpty else { continue }
                let message = inFlight.remove(at: rng.below(inFlight.count))  // reordered
                if let validate {
                    let origin = "peer"
                    let report = try stores[message.to].apply(message.changeset, origin: origin, validate: validate)
                    let modelReport = models[message.to].apply(message.changeset, physicalMilliseconds: clock.now, origin: origin, validate: validate)
                    #expect(report.rejections == modelReport.rejections, "seed \(seed)")
                    refused += report.rejections.count
                    #expect(report.changedRecords == modelReport.changedRecords, "seed \(seed)")
                    #expect(try stores[message.to].snapshot() == models[message.to].state.snapshot.normalized, "seed \(seed)")
                } else {
                    try stores[message.to].apply(message.changeset)
                    models[message.to].apply(message.changeset, physicalMilliseconds: clock.now)
                }
            }
        }
        for (index, store) in stores.enumerated() {
            #expect(try store.snapshot() == models[index].state.snapshot.normalized, "store \(index) differs from its model, seed \(seed)")
        }
        // Heal: everyone sends everything to everyone (no validator: a plain join).
        for _ in 0..<2 {
            for source in stores.indices {
                let changeset = try stores[source].changes(since: 0).changeset
                for target in stores.indices where target != source {
                    try stores[target].apply(changeset)
                    models[target].apply(changeset, physicalMilliseconds: clock.now)
                }
            }
        }
        let reference = try stores[0].snapshot()
        for (index, store) in stores.enumerated() {
            #expect(try store.snapshot() == reference, "seed \(seed)")
            #expect(try store.snapshot() == models[index].state.snapshot.normalized, "seed \(seed)")
            for table in ["notes", "items"] {
                let rows = try StoreFixtures.rows(store, table)
                #expect(rows == (try StoreFixtures.rows(stores[0], table)), "seed \(seed)")
                let modelRows = models[index].rows(table: table).map { row in
                    [row.key] + (table == "notes" ? ["title", "body", "amount"] : ["name", "qty", "status"]).map { row.values[$0] ?? .null }
                }
                #expect(rows == modelRows, "seed \(seed) table \(table)")
            }
            #expect(try store.conflicts() == models[index].conflicts(), "seed \(seed)")
        }
        return refused
    }
}
