import ConvergeCore
import ConvergeSQLite
import Foundation
import FuzzSupport
import GRDB

// FuzzApply: bytes as a sequence of changesets — valid ones from a core replica's writes and
// feeds, raw and mutated wire bytes, and hostile ones (reserved or invalid table names, keys
// of the wrong type, far-future stamps) — applied to an in-memory `ReplicatedDatabase`,
// mixed with local SQL writes on it.
//
// Checks: nothing traps; a refused changeset leaves every table (Converge's included)
// exactly as before; an accepted one leaves the app tables equal to the visible rows of the
// metadata, satisfies every invariant, and applying it again changes nothing.

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

let createTables = [
    "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, title, body, amount)",
    "CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name, qty, status)",
]

func makeTarget(clock: FuzzClock) -> ReplicatedDatabase {
    do {
        let queue = try DatabaseQueue()
        try queue.write { db in for sql in createTables { try db.execute(sql: sql) } }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try store.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
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

/// The app tables hold exactly the rows the metadata says are visible.
func requireConsistent(_ store: ReplicatedDatabase) {
    do {
        let snapshot = try store.snapshot()
        requireInvariants("target snapshot") { try snapshot.checkInvariants() }
        for schema in FuzzFixtures.schemas {
            let rows = try store.writer.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM \(schema.name) ORDER BY id").map { Array($0.databaseValues.map(value)) }
            }
            let expected = snapshot.records.filter { $0.table == schema.name && $0.state.isAlive }
                .sorted { a, b in
                    // SQLite's order for TEXT keys: by bytes.
                    if case .text(let x) = a.key, case .text(let y) = b.key { return x.utf8.lexicographicallyPrecedes(y.utf8) }
                    return a.key < b.key
                }
                .map { delta in [delta.key] + schema.columns.map { delta.state.value(of: $0, policy: schema.policy(of: $0)) ?? .null } }
            require(rows == expected, "table \(schema.name) disagrees with its metadata:\n  rows \(rows)\n  metadata \(expected)")
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

func localWrite(_ operation: Replica.Operation, on store: ReplicatedDatabase) {
    do {
        try store.writer.write { db in
            switch operation {
            case .insert(let table, let key, let values):
                let columns = values.keys.sorted()
                try db.execute(
                    sql: "INSERT OR REPLACE INTO \(table)(id\(columns.map { ", \($0)" }.joined())) VALUES (?\(String(repeating: ", ?", count: columns.count)))",
                    arguments: StatementArguments([sqlValue(key)] + columns.map { sqlValue(values[$0]!) }))
            case .update(let table, let key, let values):
                let columns = values.keys.sorted()
                try db.execute(
                    sql: "UPDATE \(table) SET \(columns.map { "\($0) = ?" }.joined(separator: ", ")) WHERE id = ?",
                    arguments: StatementArguments(columns.map { sqlValue(values[$0]!) } + [sqlValue(key)]))
            case .delete(let table, let key):
                try db.execute(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [sqlValue(key)])
            }
        }
    } catch {
        fatalError("a local write failed: \(error)")
    }
}

func operation(_ input: inout FuzzInput) -> Replica.Operation {
    let schema = FuzzFixtures.schemas[input.below(FuzzFixtures.schemas.count)]
    let key = Value.text("k\(input.below(3))")
    var values = [String: Value]()
    let kind = input.below(4)
    for column in schema.columns where kind == 0 || input.bool() {
        values[column] = FuzzFixtures.values[input.below(FuzzFixtures.values.count)]
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
    var source = FuzzFixtures.makeReplicas()[0]
    var skewed = FuzzFixtures.makeReplicas()[1]
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
            localWrite(operation(&input), on: target)
            if let feed = try? target.changes(since: 0).changeset { source.apply(feed, physicalMilliseconds: clock.now) }
        }
        guard let changeset = candidate else { continue }
        produced.append(changeset)
        let before = dump(target)
        do {
            try target.apply(changeset)
        } catch is ApplyError {
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
        return seeds
    }
}
