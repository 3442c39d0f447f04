import ConvergeCore
import ConvergeSQLite
import Foundation
import FuzzSupport
import GRDB

// FuzzApply: bytes as a sequence of changesets — valid ones from a core replica's writes and
// feeds, raw and mutated wire bytes, and hostile ones (reserved or invalid table names, keys
// of the wrong type, far-future stamps) — applied to an in-memory `ReplicatedDatabase`,
// mixed with local SQL writes on it. One table, `tags`, has unique indexes whose few values
// clash (constraint conflicts, DESIGN §4).
//
// Checks: nothing traps; a refused changeset leaves every table (Converge's included)
// exactly as before, and a clash on a unique index never refuses one; an accepted one
// leaves the app tables equal to the visible rows of the metadata (held records absent),
// the constraint conflicts equal to the model's (`UniquePlanner` over the snapshot),
// satisfies every invariant, and applying it again changes nothing. A local SQL write that
// collides with a shown row fails with SQLite's error and leaves everything as it was; a
// held record is edited and deleted through Converge.

@main
enum FuzzApplyMain {
    static func main() {
        FuzzerMain.run(seeds: ApplySeeds.seeds) { data, count in
            fuzz(data.map(UnsafeRawPointer.init) ?? FuzzerMain.emptyInput, count)
        }
    }
}

final class FuzzClock: @unchecked Sendable {
    private let lock = NSLock()
    private var milliseconds = FuzzFixtures.startMilliseconds
    var now: UInt64 { lock.withLock { milliseconds } }
    func advance(_ delta: UInt64) { lock.withLock { milliseconds = min(milliseconds + delta, FuzzFixtures.physicalMillisecondsLimit) } }
}

/// Deletes win; `code` alone and `day` with `room` (critical: concurrent values show the
/// provisional one) are unique. Their values come from ``clashingValues``.
let tags = TableSchema(
    name: "tags", primaryKey: "id", columns: ["label", "code", "day", "room"],
    policies: ["room": .critical], deletePolicy: .deleteWins,
    uniqueIndexes: [UniqueIndex(name: "tags_code", columns: ["code"]), UniqueIndex(name: "tags_day_room", columns: ["day", "room"])])

/// The target's tables: the fixtures' two, and `tags`.
let schemas = FuzzFixtures.schemas + [tags]

/// Few values, so that records clash often; 1 and 1.0 are one value to SQLite's index.
let clashingValues: [Value] = [.null, .integer(1), .real(1.0), .text("a"), .text("b")]

let createTables = [
    "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, title, body, amount)",
    "CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name, qty, status)",
    "CREATE TABLE tags(id TEXT PRIMARY KEY NOT NULL, label, code, day, room)",
    "CREATE UNIQUE INDEX tags_code ON tags(code)",
    "CREATE UNIQUE INDEX tags_day_room ON tags(day, room)",
]

/// A core replica of the fixtures, with `tags` too.
func makeSource(_ index: Int) -> Replica {
    var replica = FuzzFixtures.makeReplicas()[index]
    replica.replicate(tags)
    return replica
}

func makeTarget(clock: FuzzClock) -> ReplicatedDatabase {
    do {
        let queue = try DatabaseQueue()
        try queue.write { db in for sql in createTables { try db.execute(sql: sql) } }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try store.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
        try store.replicate(table: "tags", policies: tags.policies, deletePolicy: tags.deletePolicy, allowUniqueIndexes: true)
        return store
    } catch {
        fatalError("cannot set up the target store: \(error)")
    }
}

/// Every row of every table, Converge's own included, as text.
func dump(_ store: ReplicatedDatabase) -> String {
    do {
        return try store.writer.read { db in
            var out = ""
            for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") {
                for row in try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\" ORDER BY 1") { out += "\(table) \(row)\n" }
            }
            return out
        }
    } catch {
        fatalError("cannot read the target store: \(error)")
    }
}

func value(_ databaseValue: DatabaseValue) -> Value {
    switch databaseValue.storage {
    case .null: return .null
    case .int64(let v): return .integer(v)
    case .double(let v): return .real(v)
    case .string(let v): return .text(v)
    case .blob(let d): return .blob([UInt8](d))
    }
}

/// The app tables hold exactly the rows the metadata says are visible: the live records,
/// less those a unique index holds (by `UniquePlanner`, the model); the constraint
/// conflicts are the model's.
func requireConsistent(_ store: ReplicatedDatabase) {
    do {
        let snapshot = try store.snapshot()
        requireInvariants("target snapshot") { try snapshot.checkInvariants() }
        for schema in schemas {
            let rows = try store.writer.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM \(schema.name) ORDER BY id").map { Array($0.databaseValues.map(value)) }
            }
            let live = snapshot.records.filter { $0.table == schema.name && $0.state.isAlive }.map { (key: $0.key, state: $0.state) }
            let held = UniquePlanner.heldKeys(live, schema: schema, authority: nil)
            let expected = snapshot.records.filter { $0.table == schema.name && $0.state.isAlive && !held.contains($0.key) }
                .sorted { a, b in
                    // SQLite's order for TEXT keys: by bytes.
                    if case .text(let x) = a.key, case .text(let y) = b.key { return x.utf8.lexicographicallyPrecedes(y.utf8) }
                    return a.key < b.key
                }
                .map { delta in [delta.key] + schema.columns.map { delta.state.value(of: $0, policy: schema.policy(of: $0)) ?? .null } }
            require(rows == expected, "table \(schema.name) disagrees with its metadata:\n  rows \(rows)\n  metadata \(expected)\n  held \(held)")
            guard !schema.uniqueIndexes.isEmpty else { continue }
            let states = Dictionary(live, uniquingKeysWith: { first, _ in first })
            let model = UniquePlanner.conflicts(live, schema: schema, authority: nil).map { group, claimants in
                ConstraintConflict(group: group, claimants: claimants, schema: schema, authority: nil) { states[$0] }
            }
            let listed = try store.conflicts().compactMap(\.constraint).filter { $0.table == schema.name }
            require(listed == model, "constraint conflicts of \(schema.name) differ from the model's:\n  store \(listed)\n  model \(model)")
        }
    } catch {
        fatalError("consistency check failed to run: \(error)")
    }
}

func sqlValue(_ value: Value) -> (any DatabaseValueConvertible)? {
    switch value {
    case .null: return nil
    case .integer(let v): return v
    case .real(let v): return v
    case .text(let v): return v
    case .blob(let b): return Data(b)
    }
}

/// Whether a unique index holds the record out of the app table: alive in the metadata, no row.
func isHeld(_ table: String, _ key: Value, in store: ReplicatedDatabase) throws -> Bool {
    guard schemas.first(where: { $0.name == table })?.uniqueIndexes.isEmpty == false else { return false }
    let row = try store.writer.read { db in try Row.fetchOne(db, sql: "SELECT 1 FROM \(table) WHERE id = ?", arguments: [sqlValue(key)]) }
    guard row == nil else { return false }
    return try store.snapshot().records.contains { $0.table == table && $0.key == key && $0.state.isAlive }
}

/// A local write on `tags`, which has unique indexes: a held record is edited or deleted
/// through Converge (SQL cannot reach it). A write whose values another row shows either
/// fails with SQLite's constraint error, leaving everything as it was, or (`replaceOnClash`:
/// `INSERT OR REPLACE`, `UPDATE OR REPLACE`) deletes that row, which the capture must see
/// as a delete; the consistency check after the step tells.
func uniqueLocalWrite(_ operation: Replica.Operation, replaceOnClash: Bool, on store: ReplicatedDatabase) {
    do {
        switch operation {
        case .update(let table, let key, let values) where try isHeld(table, key, in: store):
            try store.update(table: table, key: key, values: values)
            return
        case .delete(let table, let key) where try isHeld(table, key, in: store):
            try store.delete(table: table, key: key)
            return
        default:
            break
        }
        guard case .insert(let table, let key, let values) = operation else {
            try attemptColliding(operation, on: store, replaceInsert: true, replaceUpdate: replaceOnClash)
            return
        }
        // What the row would hold after the write: an insert leaves unnamed columns NULL.
        let row = tags.columns.map { values[$0] ?? .null }
        let collides = try store.writer.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM tags WHERE id IS NOT ? AND (code = ? OR (day = ? AND room = ?)))",
                              arguments: [sqlValue(key), sqlValue(row[1]), sqlValue(row[2]), sqlValue(row[3])]) ?? false
        }
        if collides {
            try attemptColliding(.insert(table: table, key: key, values: values), on: store, replaceInsert: replaceOnClash, replaceUpdate: false)
        } else {
            localWrite(operation, on: store)
        }
    } catch {
        fatalError("a local write on a table with unique indexes failed: \(error)")
    }
}

/// Runs a local SQL write that may collide with a shown row: it either succeeds, or fails
/// with SQLite's constraint error leaving every table as it was.
func attemptColliding(_ operation: Replica.Operation, on store: ReplicatedDatabase, replaceInsert: Bool, replaceUpdate: Bool) throws {
    let before = dump(store)
    do {
        try write(operation, on: store, replaceInsert: replaceInsert, replaceUpdate: replaceUpdate)
    } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
        require(dump(store) == before, "a local write refused by SQLite (\(error)) changed the database")
    }
}

func localWrite(_ operation: Replica.Operation, on store: ReplicatedDatabase) {
    do {
        try write(operation, on: store, replaceInsert: true, replaceUpdate: false)
    } catch {
        fatalError("a local write failed: \(error)")
    }
}

/// The write as SQL: `INSERT OR REPLACE` or `INSERT`, `UPDATE` or `UPDATE OR REPLACE`, `DELETE`.
func write(_ operation: Replica.Operation, on store: ReplicatedDatabase, replaceInsert: Bool, replaceUpdate: Bool) throws {
    try store.writer.write { db in
        switch operation {
        case .insert(let table, let key, let values):
            let columns = values.keys.sorted()
            try db.execute(
                sql: "INSERT\(replaceInsert ? " OR REPLACE" : "") INTO \(table)(id\(columns.map { ", \($0)" }.joined())) VALUES (?\(String(repeating: ", ?", count: columns.count)))",
                arguments: StatementArguments([sqlValue(key)] + columns.map { sqlValue(values[$0]!) }))
        case .update(let table, let key, let values):
            let columns = values.keys.sorted()
            try db.execute(
                sql: "UPDATE\(replaceUpdate ? " OR REPLACE" : "") \(table) SET \(columns.map { "\($0) = ?" }.joined(separator: ", ")) WHERE id = ?",
                arguments: StatementArguments(columns.map { sqlValue(values[$0]!) } + [sqlValue(key)]))
        case .delete(let table, let key):
            try db.execute(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [sqlValue(key)])
        }
    }
}

func operation(_ input: inout FuzzInput) -> Replica.Operation {
    let schema = schemas[input.below(schemas.count)]
    let key = Value.text("k\(input.below(3))")
    var values = [String: Value]()
    let kind = input.below(4)
    let unique = Set(schema.uniqueIndexes.flatMap(\.columns))
    for column in schema.columns where kind == 0 || input.bool() {
        values[column] = unique.contains(column)
            ? clashingValues[input.below(clashingValues.count)]
            : FuzzFixtures.values[input.below(FuzzFixtures.values.count)]
    }
    switch kind {
    case 0: return .insert(table: schema.name, key: key, values: values)
    case 1: return .delete(table: schema.name, key: key)
    default:
        if values.isEmpty { values[schema.columns[0]] = .integer(Int64(input.below(3))) }
        return .update(table: schema.name, key: key, values: values)
    }
}

func withChecksum(_ body: [UInt8]) -> [UInt8] {
    let checksum = CRC32C.checksum(body)
    return body + (0..<4).map { UInt8(truncatingIfNeeded: checksum >> UInt32(8 * $0)) }
}

let hostileTables = ["converge_records", "converge_identity", "sqlite_master", "bad name", "", "x\"; DROP TABLE notes; --", "parked"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start: start, count: count)
    let clock = FuzzClock()
    let target = makeTarget(clock: clock)
    var source = makeSource(0)
    var skewed = makeSource(1)
    var produced = [Changeset]()
    var steps = 0
    while !input.isExhausted && steps < 16 {
        steps += 1
        clock.advance(UInt64(input.below(4)) * (input.below(8) == 0 ? 400_000 : 1))
        var candidate: Changeset?
        switch input.below(7) {
        case 0:  // a transaction of the source replica
            let operations = (0...input.below(3)).map { _ in operation(&input) }
            candidate = source.perform(operations, physicalMilliseconds: clock.now)
        case 1:  // a page of the source's feed
            let cursor = UInt64(input.below(Int(min(source.state.sequence, 255)) + 1))
            candidate = source.state.changes(since: cursor, limit: 1 + input.below(4)).changeset
        case 2:  // raw bytes as a changeset body
            let length = input.below(96)
            let body = (0..<length).map { _ in input.byte() }
            candidate = try? WireDecoder.decode(withChecksum(WireFormat.magic + [WireFormat.version] + body))
        case 3:  // a produced changeset with bytes changed (checksum fixed, so the parser sees them)
            guard let last = produced.last else { continue }
            var bytes = Array(WireEncoder.encode(last).dropLast(4))
            for _ in 0...input.below(3) where bytes.count > 5 {
                bytes[5 + input.below(min(bytes.count - 5, 256))] = input.byte()
            }
            candidate = try? WireDecoder.decode(withChecksum(bytes))
        case 4:  // hostile: a reserved or invalid table, or a key of the wrong type
            guard var last = produced.last, !last.records.isEmpty else { continue }
            let index = input.below(min(last.records.count, 256))
            if input.bool() {
                last.records[index].table = hostileTables[input.below(hostileTables.count)]
            } else {
                last.records[index].key = [Value.integer(7), .blob([1]), .real(1.5), .null][input.below(4)]
            }
            candidate = last
        case 5:  // a replica whose clock runs an hour ahead: quarantine
            candidate = skewed.perform([operation(&input)], physicalMilliseconds: clock.now + 3_600_000)
        default:  // a local SQL write on the target, then ship its feed back to the source
            let write = operation(&input)
            switch write {
            case .insert(tags.name, _, _), .update(tags.name, _, _), .delete(tags.name, _):
                uniqueLocalWrite(write, replaceOnClash: input.bool(), on: target)
            default: localWrite(write, on: target)
            }
            if let feed = try? target.changes(since: 0).changeset { source.apply(feed, physicalMilliseconds: clock.now) }
        }
        guard let changeset = candidate else { continue }
        produced.append(changeset)
        let before = dump(target)
        do {
            try target.apply(changeset)
        } catch let error as ApplyError {
            if case .constraintViolation = error.reason {
                fatalError("a clash on a unique index refused an apply (it must be a constraint conflict): \(error)\n\(changeset)")
            }
            require(dump(target) == before, "a refused changeset changed the database: \(changeset)")
            continue
        } catch {
            fatalError("apply failed with an untyped error: \(error)")
        }
        requireConsistent(target)
        let after = dump(target)
        do {
            let again = try target.apply(changeset)
            require(again.changedRecords == 0 && again.releasedRecords == 0, "applying twice changed something: \(again)")
        } catch {
            fatalError("applying an accepted changeset again failed: \(error)")
        }
        let twice = dump(target)
        if twice != after {
            let a = Set(after.split(separator: "\n")), b = Set(twice.split(separator: "\n"))
            require(false, "applying twice changed the database:\n- \(a.subtracting(b).sorted().joined(separator: "\n- "))\n+ \(b.subtracting(a).sorted().joined(separator: "\n+ "))")
        }
    }
    requireConsistent(target)
    return 0
}

enum ApplySeeds {
    /// Deterministic scripts: each byte sequence exercises writes, feeds, mutations, hostile
    /// names and quarantine in a different order.
    static func seeds() -> [[UInt8]] {
        var seeds = [[UInt8]]()
        for seed in UInt64(1)...16 {
            var rng = SeededGenerator(seed: seed)
            seeds.append((0..<(40 + rng.below(120))).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        // Hand-made: insert, hostile rename, quarantine, local write, feed.
        seeds.append([0, 0, 0, 0, 0, 1, 0, 4, 0, 1, 0, 0, 5, 0, 0, 1, 6, 0, 1, 0, 2, 1, 0, 0, 1, 0, 3, 0, 9, 1, 0])
        // Unique indexes (`tags`): two local inserts of code 'a' on k0 and k1, the second
        // a plain INSERT that SQLite refuses, then an INSERT OR REPLACE that deletes k0.
        let insertK0 = [1, 1, 6, 2, 0, 0, 1, 3, 0, 0, 0] as [UInt8]
        seeds.append(insertK0 + [1, 1, 6, 2, 1, 0, 1, 3, 0, 0, 0] + [1, 1, 6, 2, 1, 0, 1, 3, 0, 0, 1])
        // Two changesets of the source claim code 'a' and day 1 / room 1.0 (= 1) on k0 and
        // k1: k1 is held. Edited through Converge it stays held on (day, room); once k0 is
        // deleted with SQL it shows; then a page of the source's feed.
        seeds.append([1, 1, 0, 0, 2, 0, 0, 1, 3, 1, 2] + [1, 1, 0, 0, 2, 1, 0, 1, 3, 1, 1]
                     + [1, 1, 6, 2, 1, 2, 0, 1, 4, 0, 0, 0] + [1, 1, 6, 2, 0, 1, 0, 0, 0, 0, 0] + [1, 1, 1, 0, 3])
        return seeds
    }
}
