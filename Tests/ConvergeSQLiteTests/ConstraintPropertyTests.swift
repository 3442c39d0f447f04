import ConvergeCore
@testable import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// Unique constraints as conflicts (DESIGN §4) under random workloads: 3–6 in-memory stores
/// whose tables keep single and multi-column UNIQUE indexes over a few values (clashes are
/// frequent, 1 and 1.0 clash, NULLs never do), each shadowed by a core ``Replica`` fed what
/// the store really captured. Local SQL transactions of inserts, updates (one row or every
/// matching row), rekeys and deletes of shown rows (a transaction SQLite refuses for a
/// unique violation is dropped from the model too), Converge writes of held and shown
/// records, field resolutions, and partial feeds delivered in random order with duplicates.
/// `INSERT OR REPLACE` is in the workload (`replaces:`), over other rows' unique values too.
///
/// After every apply (which never throws) the store's app tables and conflicts equal its
/// model's (its metadata and claim index too, every fourth apply); after a full exchange
/// every store has the same app tables, metadata, claim index and conflicts, equal to the
/// model's.
///
/// Seeds are fixed, so a failure replays: `ConstraintPropertyTests.run(seed:)` with the seed
/// named in the failure, `trace: true` to print its steps.
@Suite(.computeBound) struct ConstraintPropertyTests {
    static let seeds: Range<UInt64> = 0..<12

    @Test func storesSettleClashesAlikeAndEqualTheModel() throws {
        var totals = Stats()
        for seed in Self.seeds { totals += try Self.run(seed: seed) }
        // The workload reaches what it is for.
        #expect(totals.refusedLocalWrites > 0, "\(totals)")
        #expect(totals.heldWrites > 0, "\(totals)")
        #expect(totals.clashesSeen > 0, "\(totals)")
        #expect(totals.clashesAtEnd > 0, "\(totals)")
    }

    /// Found by this workload: an `INSERT OR REPLACE` that collides with *another* row on a
    /// unique index makes SQLite delete that row without firing its delete trigger (SQLite
    /// fires delete triggers for REPLACE's deletions only with `PRAGMA recursive_triggers`).
    /// The capture must see that delete anyway (its BEFORE/AFTER triggers note and capture
    /// the rows a REPLACE removed), or the metadata would keep the replaced record alive and
    /// hold the new row out, and the writing store would end with neither row.
    @Test func insertOrReplaceOverAnotherRowsUniqueValueDeletesIt() throws {
        let clock = TestClock()
        let a = try Self.makeStore(clock: clock), b = try Self.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO people(id, email) VALUES ('pa', 'x')") }
        clock.advance(by: 5)
        try a.writer.write { db in try db.execute(sql: "INSERT OR REPLACE INTO people(id, email) VALUES ('pb', 'x')") }
        #expect(try Self.rows(a, "people") == [[.text("pb"), .text("x"), .null]], "SQLite replaced pa")
        try b.apply(try a.changes(since: 0).changeset)
        let people = try [a, b].map { try Self.rows($0, "people") }, conflicts = try [a, b].map { try $0.conflicts() }
        #expect(people == [[[.text("pb"), .text("x"), .null]], [[.text("pb"), .text("x"), .null]]])
        #expect(conflicts == [[], []])
        // And UPDATE OR REPLACE, and with the app's recursive triggers on.
        try a.writer.write { db in try db.execute(sql: "INSERT INTO people(id, email) VALUES ('pc', 'y')") }
        clock.advance(by: 5)
        try a.writer.write { db in try db.execute(sql: "UPDATE OR REPLACE people SET email = 'y' WHERE id = 'pb'") }
        try a.writer.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA recursive_triggers = ON") }
        clock.advance(by: 5)
        try a.writer.write { db in try db.execute(sql: "INSERT OR REPLACE INTO people(id, email) VALUES ('pd', 'y')") }
        try b.apply(try a.changes(since: 0).changeset)
        for store in [a, b] {
            #expect(try Self.rows(store, "people") == [[.text("pd"), .text("y"), .null]])
            #expect(try store.conflicts().isEmpty)
        }
    }

    /// What a run exercised, summed over the seeds.
    struct Stats: CustomStringConvertible {
        var localWrites = 0, refusedLocalWrites = 0, replacedRows = 0, heldWrites = 0, applies = 0, clashesSeen = 0, clashesAtEnd = 0

        static func += (lhs: inout Stats, rhs: Stats) {
            lhs.localWrites += rhs.localWrites
            lhs.refusedLocalWrites += rhs.refusedLocalWrites
            lhs.replacedRows += rhs.replacedRows
            lhs.heldWrites += rhs.heldWrites
            lhs.applies += rhs.applies
            lhs.clashesSeen += rhs.clashesSeen
            lhs.clashesAtEnd += rhs.clashesAtEnd
        }

        var description: String {
            "local writes \(localWrites) (refused \(refusedLocalWrites), rows replaced \(replacedRows)), writes of held records \(heldWrites), applies \(applies), clashes seen \(clashesSeen), at the end \(clashesAtEnd)"
        }
    }

    // MARK: The tables

    /// `people`: one single-column index, a critical column beside it. `slots`: a
    /// two-column index with a critical column in it, and a single-column one.
    static let createTables = """
        CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email UNIQUE, name);
        CREATE TABLE slots(id TEXT PRIMARY KEY NOT NULL, day, room, code);
        CREATE UNIQUE INDEX slots_day_room ON slots(day, room);
        CREATE UNIQUE INDEX slots_code ON slots(code);
        """
    static let columns: [String: [String]] = ["people": ["email", "name"], "slots": ["day", "room", "code"]]
    static let tableNames = ["people", "slots"]

    static func makeStore(clock: TestClock) throws -> ReplicatedDatabase {
        let queue = try DatabaseQueue()
        try queue.write { db in try db.execute(sql: createTables) }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "people", policies: ["name": .critical], deletePolicy: .updateWins, allowUniqueIndexes: true)
        try store.replicate(table: "slots", policies: ["room": .critical], deletePolicy: .deleteWins, allowUniqueIndexes: true)
        return store
    }

    /// Few values per column, so that records clash often; 1 and 1.0 clash as in SQLite.
    static func randomValue(_ column: String, _ rng: inout SeededGenerator) -> Value {
        switch column {
        case "email": return rng.chance(0.15) ? .null : .text(["a@x", "b@x", "c@x"][rng.below(3)])
        case "day": return rng.chance(0.1) ? .null : .text(["mon", "tue"][rng.below(2)])
        case "room": return [.integer(1), .integer(2), .real(1.0), .real(2.5), .null][rng.below(5)]
        case "code": return rng.chance(0.25) ? .null : .text(["x", "y", "z"][rng.below(3)])
        default: return [.text("n0"), .text("n1"), .integer(7), .null][rng.below(4)]
        }
    }

    static func randomKey(_ rng: inout SeededGenerator) -> Value { .text("k\(rng.below(6))") }

    /// Some columns of `table` (at least one), with random values.
    static func randomValues(_ table: String, _ rng: inout SeededGenerator, all: Bool = false) -> [String: Value] {
        let columns = columns[table]!
        var values = [String: Value]()
        for column in columns where all || rng.chance(0.5) { values[column] = randomValue(column, &rng) }
        if values.isEmpty { let column = columns[rng.below(columns.count)]; values[column] = randomValue(column, &rng) }
        return values
    }

    // MARK: Local SQL

    enum Statement: CustomStringConvertible {
        case insert(table: String, key: Value, values: [String: Value], replace: Bool)
        case update(table: String, key: Value, values: [String: Value])
        case delete(table: String, key: Value)
        /// `UPDATE ... SET id = to WHERE id = key`: a delete of the old key, an insert of the new.
        case rekey(table: String, key: Value, to: Value)
        /// `UPDATE ... SET column = value WHERE match = matchValue`: every row that matches.
        case updateWhere(table: String, column: String, value: Value, match: String, matchValue: Value)

        var description: String {
            func list(_ values: [String: Value]) -> String { values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
            switch self {
            case .insert(let table, let key, let values, let replace): return "INSERT\(replace ? " OR REPLACE" : "") \(table) \(key) \(list(values))"
            case .update(let table, let key, let values): return "UPDATE \(table) \(key) \(list(values))"
            case .delete(let table, let key): return "DELETE \(table) \(key)"
            case .rekey(let table, let key, let to): return "REKEY \(table) \(key) -> \(to)"
            case .updateWhere(let table, let column, let value, let match, let matchValue): return "UPDATE \(table) \(column)=\(value) WHERE \(match)=\(matchValue)"
            }
        }
    }

    static func randomStatement(_ rng: inout SeededGenerator, replaces: Bool) -> Statement {
        let table = tableNames[rng.below(2)]
        let key = randomKey(&rng)
        switch rng.below(12) {
        case 0, 1, 2: return .insert(table: table, key: key, values: randomValues(table, &rng, all: rng.chance(0.7)), replace: false)
        case 3: return .insert(table: table, key: key, values: randomValues(table, &rng, all: true), replace: replaces)
        case 4: return .delete(table: table, key: key)
        case 5: return .rekey(table: table, key: key, to: randomKey(&rng))
        case 6:
            let columns = columns[table]!
            let column = columns[rng.below(columns.count)], match = columns[rng.below(columns.count)]
            return .updateWhere(table: table, column: column, value: randomValue(column, &rng), match: match, matchValue: randomValue(match, &rng))
        default: return .update(table: table, key: key, values: randomValues(table, &rng))
        }
    }

    /// Runs `statements` as one SQL transaction, as an app would, and returns the local
    /// operations it made (what the model performs), or the error SQLite refused it with.
    static func execute(
        _ statements: [Statement], on store: ReplicatedDatabase, schemas: [String: TableSchema]
    ) -> Result<(operations: [Replica.Operation], replaced: Int), any Error> {
        Result {
            try store.writer.write { db in
                var operations = [Replica.Operation]()
                var replaced = 0
                for statement in statements {
                    switch statement {
                    case .insert(let table, let key, let given, let replace):
                        let names = given.keys.sorted()
                        var values = given
                        for column in columns[table]! where values[column] == nil { values[column] = .null }
                        if replace {
                            // REPLACE deletes every row the new one collides with: the
                            // same key (the insert overwrites it) and any unique value.
                            for index in schemas[table]!.uniqueIndexes where index.columns.allSatisfy({ values[$0] != .null }) {
                                let condition = index.columns.map { "\($0) = ?" }.joined(separator: " AND ")
                                let keys = try DatabaseValue.fetchAll(
                                    db, sql: "SELECT id FROM \(table) WHERE \(condition) AND id IS NOT ?",
                                    arguments: StatementArguments(index.columns.map { values[$0]!.databaseValue } + [key.databaseValue]))
                                for other in keys.map(Value.init) where !operations.contains(.delete(table: table, key: other)) {
                                    operations.append(.delete(table: table, key: other))
                                    replaced += 1
                                }
                            }
                        }
                        try db.execute(
                            sql: "INSERT\(replace ? " OR REPLACE" : "") INTO \(table)(id\(names.map { ", \($0)" }.joined())) VALUES (?\(String(repeating: ", ?", count: names.count)))",
                            arguments: StatementArguments([key.databaseValue] + names.map { given[$0]!.databaseValue }))
                        operations.append(.insert(table: table, key: key, values: values))
                    case .update(let table, let key, let values):
                        let names = values.keys.sorted()
                        try db.execute(
                            sql: "UPDATE \(table) SET \(names.map { "\($0) = ?" }.joined(separator: ", ")) WHERE id = ?",
                            arguments: StatementArguments(names.map { values[$0]!.databaseValue } + [key.databaseValue]))
                        if db.changesCount > 0 { operations.append(.update(table: table, key: key, values: values)) }
                    case .delete(let table, let key):
                        try db.execute(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [key.databaseValue])
                        if db.changesCount > 0 { operations.append(.delete(table: table, key: key)) }
                    case .rekey(let table, let key, let to):
                        let names = columns[table]!
                        let row = try Row.fetchOne(db, sql: "SELECT \(names.joined(separator: ", ")) FROM \(table) WHERE id = ?", arguments: [key.databaseValue])
                        try db.execute(sql: "UPDATE \(table) SET id = ? WHERE id = ?", arguments: [to.databaseValue, key.databaseValue])
                        if let row, key != to {
                            let values = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($0.element, Value(row[$0.offset] as DatabaseValue)) })
                            operations += [.delete(table: table, key: key), .insert(table: table, key: to, values: values)]
                        }
                    case .updateWhere(let table, let column, let value, let match, let matchValue):
                        let keys = try DatabaseValue.fetchAll(db, sql: "SELECT id FROM \(table) WHERE \(match) = ? ORDER BY id", arguments: [matchValue.databaseValue])
                        try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(match) = ?", arguments: [value.databaseValue, matchValue.databaseValue])
                        operations += keys.map { .update(table: table, key: Value($0), values: [column: value]) }
                    }
                }
                return (operations, replaced)
            }
        }
    }

    // MARK: What is compared

    static func rows(_ store: ReplicatedDatabase, _ table: String) throws -> [[Value]] { try StoreFixtures.rows(store, table) }

    static func rows(_ model: Replica, _ table: String) -> [[Value]] {
        model.rows(table: table).map { row in [row.key] + columns[table]!.map { row.values[$0] ?? .null } }
    }

    /// One row of `converge_claims`.
    struct ClaimRow: Hashable, Comparable, CustomStringConvertible {
        var group: UniquePlanner.Group
        var claimant: UniquePlanner.Claimant
        static func < (lhs: ClaimRow, rhs: ClaimRow) -> Bool { (lhs.group, lhs.claimant) < (rhs.group, rhs.claimant) }
        var description: String { "\(group.table).\(group.index)\(group.values)=\(claimant.key)@\(claimant.stamp)" }
    }

    static func claims(_ store: ReplicatedDatabase) throws -> [ClaimRow] {
        try store.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT tbl, idx, vals, key, hlc, replica FROM converge_claims").map { row in
                let sortable: Int64 = row["hlc"]
                let replica = try #require(ReplicaID(bytes: [UInt8](row["replica"] as Data)))
                return ClaimRow(
                    group: UniquePlanner.Group(table: row["tbl"], index: row["idx"], values: try ClaimIndex.decode(row["vals"])),
                    claimant: UniquePlanner.Claimant(
                        stamp: Stamp(hlc: HLC(rawValue: UInt64(bitPattern: sortable) ^ (1 << 63)), replica: replica),
                        key: Value(row["key"] as DatabaseValue)))
            }.sorted()
        }
    }

    /// The claims the model's records make: what the claim index must hold.
    static func claims(_ model: Replica) -> [ClaimRow] {
        model.state.allRecords.flatMap { address, state in
            UniquePlanner.claims(of: state, key: address.key, schema: model.schemas[address.table]!, authority: model.authority)
                .map { ClaimRow(group: $0.group, claimant: $0.claimant) }
        }.sorted()
    }

    // MARK: The run

    /// One seed's workload. Records an issue (with the seed, the step and, with `trace`, the
    /// steps so far) at the first divergence and stops there.
    @discardableResult
    static func run(seed: UInt64, steps: Int = 90, replaces: Bool = true, trace printing: Bool = false) throws -> Stats {
        var rng = SeededGenerator(seed: seed)
        var stats = Stats()
        let clock = TestClock()
        let count = 3 + rng.below(4)
        let stores = try (0..<count).map { _ in try makeStore(clock: clock) }
        let schemas = stores[0].replicatedTables
        var models = stores.map { store -> Replica in
            var replica = Replica(id: store.replicaID, clock: HybridClock(latest: store.clock))
            for table in tableNames { replica.replicate(schemas[table]!) }
            return replica
        }
        var trace = [String]()
        func log(_ line: @autoclosure () -> String) {
            let line = line()
            trace.append(line)
            if printing { print("seed \(seed) \(line)") }
        }
        func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
            Issue.record(Comment(rawValue: "seed \(seed), step \(trace.count): \(message)\n" + trace.suffix(40).joined(separator: "\n")), sourceLocation: sourceLocation)
        }
        /// Whether store `index` equals its model; records what differs.
        func matchesModel(_ index: Int, metadata: Bool) throws -> Bool {
            let store = stores[index], model = models[index]
            for table in tableNames {
                let stored = try rows(store, table), modeled = rows(model, table)
                if stored != modeled { fail("store \(index) table \(table):\n  store \(stored)\n  model \(modeled)"); return false }
            }
            let conflicts = try store.conflicts()
            if conflicts != model.conflicts() { fail("store \(index) conflicts:\n  store \(conflicts)\n  model \(model.conflicts())"); return false }
            if metadata {
                let snapshot = try store.snapshot()
                if snapshot != model.state.snapshot.normalized { fail("store \(index) metadata differs from its model"); return false }
                let stored = try claims(store), modeled = claims(model)
                if stored != modeled { fail("store \(index) claim index:\n  store \(stored)\n  model \(modeled)"); return false }
            }
            return true
        }

        // Per pair: the fixed cursor of the round, and the position while paging.
        var cursors = Array(repeating: Array(repeating: UInt64(0), count: count), count: count)
        var positions = Array(repeating: Array(repeating: UInt64?.none, count: count), count: count)
        var inFlight = [(to: Int, changeset: Changeset)]()
        for _ in 0..<steps {
            clock.advance(by: UInt64(rng.below(3)))
            let who = rng.below(count)
            switch rng.below(20) {
            case 0...7:
                let statements = (0..<(1 + rng.below(3))).map { _ in randomStatement(&rng, replaces: replaces) }
                switch execute(statements, on: stores[who], schemas: schemas) {
                case .success(let (operations, replaced)):
                    log("\(who) SQL \(statements) -> \(operations)")
                    stats.localWrites += 1
                    stats.replacedRows += replaced
                    models[who].perform(operations, physicalMilliseconds: clock.now)
                case .failure(let error):
                    log("\(who) SQL \(statements) refused")
                    stats.refusedLocalWrites += 1
                    guard let error = error as? DatabaseError,
                          [.SQLITE_CONSTRAINT_UNIQUE, .SQLITE_CONSTRAINT_PRIMARYKEY].contains(error.extendedResultCode)
                    else { fail("a local write failed otherwise than by a unique violation: \(error)"); return stats }
                }
            case 8...10:
                // A Converge write, of a held record when there is one.
                let allHeld = tableNames.flatMap { table in models[who].heldKeys(table: table).sorted().map { (table, $0) } }
                let (table, key) = !allHeld.isEmpty && rng.chance(0.8) ? allHeld[rng.below(allHeld.count)] : (tableNames[rng.below(2)], randomKey(&rng))
                let held = models[who].heldKeys(table: table)
                if held.contains(key) { stats.heldWrites += 1 }
                let operation: Replica.Operation = rng.chance(0.75)
                    ? .update(table: table, key: key, values: randomValues(table, &rng))
                    : .delete(table: table, key: key)
                do {
                    switch operation {
                    case .update(_, _, let values): try stores[who].update(table: table, key: key, values: values)
                    case .delete: try stores[who].delete(table: table, key: key)
                    case .insert: break
                    }
                    log("\(who) converge \(operation)\(held.contains(key) ? " (held)" : "")")
                    models[who].perform([operation], physicalMilliseconds: clock.now)
                } catch is RecordNotFound {
                    log("\(who) converge \(operation): not found")
                    if models[who].row(table: table, key: key) != nil { fail("store \(who) finds no record \(key) the model has"); return stats }
                }
            case 11:
                if let conflict = try stores[who].conflicts().compactMap(\.field).first {
                    let value = randomValue(conflict.column, &rng)
                    log("\(who) resolve \(conflict.table) \(conflict.key) \(conflict.column) to \(value)")
                    try stores[who].resolve(table: conflict.table, key: conflict.key, column: conflict.column, to: value)
                    models[who].resolve(table: conflict.table, key: conflict.key, column: conflict.column, to: value, physicalMilliseconds: clock.now)
                }
            case 12...14:
                let to = rng.below(count)
                guard to != who else { continue }
                let batch = try stores[who].changes(since: cursors[who][to], after: positions[who][to], maxRecords: 1 + rng.below(4))
                if batch.hasMore { positions[who][to] = batch.next } else { cursors[who][to] = batch.next; positions[who][to] = nil }
                let changeset = try WireDecoder.decode(WireEncoder.encode(batch.changeset))
                log("\(who) sends \(changeset.records.count) records to \(to)")
                inFlight.append((to, changeset))
                if rng.chance(0.3) { inFlight.append((to, changeset)) }  // duplicated
            default:
                guard !inFlight.isEmpty else { continue }
                let message = inFlight.remove(at: rng.below(inFlight.count))  // reordered
                log("\(message.to) applies \(message.changeset.records.map { "\($0.table) \($0.key)" })")
                do {
                    try stores[message.to].apply(message.changeset)
                } catch {
                    fail("store \(message.to)'s apply threw: \(error)")
                    return stats
                }
                stats.applies += 1
                models[message.to].apply(message.changeset, physicalMilliseconds: clock.now)
                guard try matchesModel(message.to, metadata: stats.applies % 4 == 0) else { return stats }
                stats.clashesSeen += try stores[message.to].conflicts().compactMap(\.constraint).count
            }
        }

        // Heal: everyone sends everything to everyone.
        for _ in 0..<2 {
            for source in stores.indices {
                let changeset = try stores[source].changes(since: 0).changeset
                for target in stores.indices where target != source {
                    do {
                        try stores[target].apply(changeset)
                    } catch {
                        fail("store \(target)'s apply of everything from \(source) threw: \(error)")
                        return stats
                    }
                    models[target].apply(changeset, physicalMilliseconds: clock.now)
                }
            }
        }
        log("healed")
        let snapshot = try stores[0].snapshot(), conflicts = try stores[0].conflicts(), claimRows = try claims(stores[0])
        let tables = try tableNames.map { try rows(stores[0], $0) }
        for index in stores.indices {
            guard try matchesModel(index, metadata: true) else { return stats }
            if try stores[index].snapshot() != snapshot { fail("store \(index)'s metadata differs from store 0's"); return stats }
            if try tableNames.map({ try rows(stores[index], $0) }) != tables { fail("store \(index)'s app tables differ from store 0's"); return stats }
            if try stores[index].conflicts() != conflicts { fail("store \(index)'s conflicts differ from store 0's"); return stats }
            if try claims(stores[index]) != claimRows { fail("store \(index)'s claim index differs from store 0's"); return stats }
        }
        stats.clashesAtEnd += conflicts.compactMap(\.constraint).count
        return stats
    }
}

