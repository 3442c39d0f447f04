import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB
import Synchronization

/// Virtual time for stores under test: every store reads the same settable clock.
final class TestClock: Sendable {
    private let milliseconds = Mutex<UInt64>(1_700_000_000_000)
    var now: UInt64 { milliseconds.withLock { $0 } }
    func advance(by delta: UInt64) { milliseconds.withLock { $0 += delta } }
    func set(_ value: UInt64) { milliseconds.withLock { $0 = value } }
}

enum StoreFixtures {
    /// No column affinity on value columns: SQLite then stores values exactly as given,
    /// as the core model does.
    static let createNotes = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, title, body, amount)"
    static let createItems = "CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name, qty, status)"

    static let notes = TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body", "amount"], policies: ["amount": .critical], deletePolicy: .updateWins)
    static let items = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty", "status"], policies: ["qty": .critical], deletePolicy: .deleteWins)

    static func makeStore(clock: TestClock, path: String? = nil) throws -> ReplicatedDatabase {
        let queue = try path.map { try DatabaseQueue(path: $0) } ?? DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS " + createNotes.dropFirst("CREATE TABLE ".count))
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS " + createItems.dropFirst("CREATE TABLE ".count))
        }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try store.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
        return store
    }

    /// Every row of a table, as values, sorted by key.
    static func rows(_ store: ReplicatedDatabase, _ table: String) throws -> [[Value]] {
        try store.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY id").map { row in
                row.databaseValues.map(valueOf)
            }
        }
    }

    static func valueOf(_ value: DatabaseValue) -> Value {
        switch value.storage {
        case .null: return .null
        case .int64(let v): return .integer(v)
        case .double(let v): return .real(v)
        case .string(let v): return .text(v)
        case .blob(let d): return .blob([UInt8](d))
        }
    }

    static func sql(_ value: Value) -> DatabaseValueConvertible? {
        switch value {
        case .null: return nil
        case .integer(let v): return v
        case .real(let v): return v
        case .text(let v): return v
        case .blob(let b): return Data(b)
        }
    }

    /// Runs `operations` as one SQL transaction on `store`: the same statements an app issues.
    static func perform(_ operations: [Replica.Operation], on store: ReplicatedDatabase) throws {
        try store.writer.write { db in
            for operation in operations {
                switch operation {
                case .insert(let table, let key, let values):
                    let columns = values.keys.sorted()
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO \(table)(id\(columns.map { ", \($0)" }.joined())) VALUES (?\(String(repeating: ", ?", count: columns.count)))",
                        arguments: StatementArguments([sql(key)] + columns.map { sql(values[$0]!) }))
                case .update(let table, let key, let values):
                    let columns = values.keys.sorted()
                    try db.execute(
                        sql: "UPDATE \(table) SET \(columns.map { "\($0) = ?" }.joined(separator: ", ")) WHERE id = ?",
                        arguments: StatementArguments(columns.map { sql(values[$0]!) } + [sql(key)]))
                case .delete(let table, let key):
                    try db.execute(sql: "DELETE FROM \(table) WHERE id = ?", arguments: [sql(key)])
                }
            }
        }
    }

    static func randomValue(_ rng: inout SeededGenerator) -> Value {
        switch rng.below(5) {
        case 0: return .null
        case 1, 2: return .integer(Int64(rng.below(5)))
        case 3: return .real(Double(rng.below(40)) / 4 + 0.5)
        default: return .text(["a", "b", "é"][rng.below(3)])
        }
    }

    static func randomOperation(_ rng: inout SeededGenerator) -> Replica.Operation {
        let schema = rng.chance(0.5) ? notes : items
        let key = Value.text("k\(rng.below(5))")
        switch rng.below(10) {
        case 0, 1, 2:
            var values = [String: Value]()
            for column in schema.columns { values[column] = randomValue(&rng) }
            return .insert(table: schema.name, key: key, values: values)
        case 3: return .delete(table: schema.name, key: key)
        default:
            var values = [String: Value]()
            for column in schema.columns where rng.chance(0.5) { values[column] = randomValue(&rng) }
            if values.isEmpty { values[schema.columns[rng.below(schema.columns.count)]] = randomValue(&rng) }
            return .update(table: schema.name, key: key, values: values)
        }
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("converge-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
