// Workload W: the store's write overhead, apply speed, feed speed and wire size, each
// measured against plain SQLite doing the same work in the same process, on files in a
// temporary folder (WAL, synchronous=NORMAL). The last line printed is one JSON object.
//
//     swift run -c release --package-path Benchmarks workload [--rows N]
import ConvergeCore
import ConvergeSQLite
import CZlib
import Foundation
import GRDB
import WorkloadW

let rowCount = CommandLine.arguments.firstIndex(of: "--rows").map { Int(CommandLine.arguments[$0 + 1])! } ?? 100_000
let transactionRows = 1_000
let folder = FileManager.default.temporaryDirectory.appendingPathComponent("converge-workload-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: folder) }

let schema = WorkloadW.createTable
let workloadW = WorkloadW(rows: rowCount)
let items = workloadW.items
let updates = workloadW.updates

@MainActor func open(_ name: String) throws -> DatabaseQueue {
    var configuration = Configuration()
    configuration.prepareDatabase { db in
        try db.execute(sql: "PRAGMA journal_mode = WAL")
        try db.execute(sql: "PRAGMA synchronous = NORMAL")
    }
    let queue = try DatabaseQueue(path: folder.appendingPathComponent(name).path, configuration: configuration)
    try queue.write { try $0.execute(sql: schema) }
    return queue
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
}

@MainActor func insertAll(_ queue: DatabaseQueue) throws {
    for start in stride(from: 0, to: rowCount, by: transactionRows) { try insertBatch(queue, start) }
}

@MainActor func updateAll(_ queue: DatabaseQueue) throws {
    for start in stride(from: 0, to: rowCount, by: transactionRows) { try updateBatch(queue, start) }
}

/// The 1,000-row transaction of inserts that starts at row `start`.
@MainActor func insertBatch(_ queue: DatabaseQueue, _ start: Int) throws {
    try queue.write { db in
        let statement = try db.cachedStatement(sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)")
        for item in items[start..<min(start + transactionRows, rowCount)] {
            try statement.execute(arguments: [item.id, item.name, item.qty, item.price, item.note, item.updated])
        }
    }
}

/// The 1,000-row transaction of updates that starts at update `start`.
@MainActor func updateBatch(_ queue: DatabaseQueue, _ start: Int) throws {
    try queue.write { db in
        for update in updates[start..<min(start + transactionRows, rowCount)] {
            let value = WorkloadW.updateValue(column: update.column, seed: update.seed)
            try db.cachedStatement(sql: "UPDATE items SET \(WorkloadW.columns[update.column]) = ? WHERE id = ?")
                .execute(arguments: [value.databaseValue, items[update.row].id])
        }
    }
}

func best(_ runs: Int, _ body: () throws -> Double) rethrows -> Double {
    var result = Double.infinity
    for _ in 0..<runs { result = min(result, try body()) }
    return result
}

print("workload W: \(rowCount) rows × 5 fields, \(transactionRows)-row transactions, WAL, synchronous=NORMAL")
var round = 0
@MainActor func fresh(_ prefix: String) throws -> DatabaseQueue { round += 1; return try open("\(prefix)-\(round).sqlite") }

// Inserts and updates: plain and Converge alternate, best of three each.
var plainInsert = Double.infinity, convergeInsert = Double.infinity, plainUpdate = Double.infinity, convergeUpdate = Double.infinity
// The deferred half of capture, measured after each write phase: folding the captured log
// into the per-record metadata (what serving the feed first needs). Counted in the totals.
var insertFold = Double.infinity, updateFold = Double.infinity
var convergeInsertTotal = Double.infinity, convergeUpdateTotal = Double.infinity
var source: ReplicatedDatabase!
for _ in 0..<3 {
    let plain = try fresh("plain")
    plainInsert = min(plainInsert, try seconds { try insertAll(plain) })
    plainUpdate = min(plainUpdate, try seconds { try updateAll(plain) })
    let queue = try fresh("converge")
    let store = try ReplicatedDatabase(queue)
    try store.replicate(table: "items")
    let insert = try seconds { try insertAll(queue) }
    let fold = try seconds { _ = try store.changes(since: 0, maxRecords: 1) }
    convergeInsert = min(convergeInsert, insert)
    insertFold = min(insertFold, fold)
    convergeInsertTotal = min(convergeInsertTotal, insert + fold)
    source = store
    let copy = try fresh("converge-updates")
    let updating = try ReplicatedDatabase(copy)
    try updating.replicate(table: "items")
    try insertAll(copy)
    _ = try updating.changes(since: 0, maxRecords: 1)  // fold the inserts first
    let update = try seconds { try updateAll(copy) }
    let updateFolding = try seconds { _ = try updating.changes(since: 0, maxRecords: 1) }
    convergeUpdate = min(convergeUpdate, update)
    updateFold = min(updateFold, updateFolding)
    convergeUpdateTotal = min(convergeUpdateTotal, update + updateFolding)
}
print(String(format: "insert: plain %.3f s, converge %.3f s (ratio %.2f), + fold %.3f s = %.3f s (total ratio %.2f)",
             plainInsert, convergeInsert, convergeInsert / plainInsert, insertFold, convergeInsertTotal, convergeInsertTotal / plainInsert))
print(String(format: "update: plain %.3f s, converge %.3f s (ratio %.2f), + fold %.3f s = %.3f s (total ratio %.2f)",
             plainUpdate, convergeUpdate, convergeUpdate / plainUpdate, updateFold, convergeUpdateTotal, convergeUpdateTotal / plainUpdate))

// A device that syncs while it writes: the feed is read (folding what the transaction
// captured) after every 1,000-row transaction, so each fold writes a batch of random keys
// rather than all of them in key order at once. The inserts, then one update per row.
@MainActor func synced(_ queue: DatabaseQueue, _ store: ReplicatedDatabase, _ write: (DatabaseQueue, Int) throws -> Void) throws {
    var cursor: UInt64 = 0
    for start in stride(from: 0, to: rowCount, by: transactionRows) {
        try write(queue, start)
        cursor = try store.changes(since: cursor, maxRecords: 1).next
    }
}
var syncedInsert = Double.infinity, syncedUpdate = Double.infinity
for _ in 0..<2 {
    let queue = try fresh("converge-synced")
    let store = try ReplicatedDatabase(queue)
    try store.replicate(table: "items")
    syncedInsert = min(syncedInsert, try seconds { try synced(queue, store, insertBatch) })
    syncedUpdate = min(syncedUpdate, try seconds { try synced(queue, store, updateBatch) })
}
print(String(format: "synced while writing (a fold after each transaction): insert %.3f s (total ratio %.2f), update %.3f s (total ratio %.2f)",
             syncedInsert, syncedInsert / plainInsert, syncedUpdate, syncedUpdate / plainUpdate))

let foldSeconds = insertFold
var changeset = Changeset()
let feedSeconds = try seconds {
    var cursor: UInt64 = 0
    var records = [RecordDelta]()
    while true {
        let batch = try source.changes(since: cursor, maxRecords: 10_000, maxBytes: .max)
        records += batch.changeset.records
        cursor = batch.next
        if !batch.hasMore { break }
    }
    changeset = Changeset(records: records)
}
let fields = changeset.fieldCount
print(String(format: "fold of the captured log: %.3f s; feed: %d fields in %.3f s", foldSeconds, fields, feedSeconds))

// Apply everything to an empty replica, against a plain row-by-row insert of the same rows.
let applySeconds = try best(3) {
    let target = try ReplicatedDatabase(try fresh("apply"))
    try target.replicate(table: "items")
    return try seconds { try target.apply(changeset) }
}
let plainRowByRow = try best(3) {
    let plain = try fresh("plain-rows")
    return try seconds {
        try plain.write { db in
            let statement = try db.cachedStatement(sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)")
            for item in items { try statement.execute(arguments: [item.id, item.name, item.qty, item.price, item.note, item.updated]) }
        }
    }
}
print(String(format: "apply: %.3f s (%.0f fields/s); plain row-by-row insert %.3f s; ratio %.2f",
             applySeconds, Double(fields) / applySeconds, plainRowByRow, applySeconds / plainRowByRow))

// The same changeset in 100-record transactions (a sync's pages), against one transaction.
let smallTransactionRecords = 100
let applySmallSeconds = try best(3) {
    let target = try ReplicatedDatabase(try fresh("apply-small"))
    try target.replicate(table: "items")
    return try seconds {
        for start in stride(from: 0, to: changeset.records.count, by: smallTransactionRecords) {
            try target.apply(Changeset(records: Array(changeset.records[start..<min(start + smallTransactionRecords, changeset.records.count)])))
        }
    }
}
print(String(format: "apply in %d-record transactions: %.3f s; ratio to one transaction %.2f",
             smallTransactionRecords, applySmallSeconds, applySmallSeconds / applySeconds))

// Wire size, raw and with the zlib (deflate) compression the sync protocol offers.
let bytes = WireEncoder.encode(changeset)
var compressedLength = uLongf(compressBound(uLong(bytes.count)))
var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
_ = compress2(&compressed, &compressedLength, bytes, uLong(bytes.count), 6)
print(String(format: "wire: %d bytes, %.2f bytes/field; deflate: %d bytes, %.2f bytes/field",
             bytes.count, Double(bytes.count) / Double(fields), Int(compressedLength), Double(compressedLength) / Double(fields)))

// Convergence: a concurrent 10 % edit on both sides, exchanged both ways.
let left = try ReplicatedDatabase(try fresh("left")), right = try ReplicatedDatabase(try fresh("right"))
try left.replicate(table: "items"); try right.replicate(table: "items")
try left.apply(changeset); try right.apply(changeset)
let leftCursor = try left.changes(since: 0, maxRecords: 1).next, rightCursor = try right.changes(since: 0, maxRecords: 1).next
for (store, salt) in [(left, "L"), (right, "R")] {
    try store.writer.write { db in
        for index in stride(from: 0, to: rowCount, by: 10) {
            let item = items[(index * 7 + salt.count * 13) % rowCount]
            try db.execute(sql: "UPDATE items SET name = ?, qty = qty + 1 WHERE id = ?", arguments: [salt + item.name, item.id])
        }
    }
}
try right.apply(try left.changes(since: leftCursor, maxRecords: 1_000_000, maxBytes: .max).changeset)
try left.apply(try right.changes(since: rightCursor, maxRecords: 1_000_000, maxBytes: .max).changeset)
let dump = { (store: ReplicatedDatabase) in try store.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM items ORDER BY id") } }
let converged = try dump(left) == dump(right) && left.snapshot() == right.snapshot()
print("converged after a concurrent 10 % edit both ways: \(converged)")

let figures: [String: Any] = [
    "insert_ratio": convergeInsert / plainInsert,
    "insert_total_ratio": convergeInsertTotal / plainInsert,
    "update_ratio": convergeUpdate / plainUpdate,
    "update_total_ratio": convergeUpdateTotal / plainUpdate,
    "insert_synced_total_ratio": syncedInsert / plainInsert,
    "update_synced_total_ratio": syncedUpdate / plainUpdate,
    "apply_small_txn_ratio": applySmallSeconds / applySeconds,
    "apply_fields_per_s": Double(fields) / applySeconds,
    "apply_ratio": applySeconds / plainRowByRow,
    "feed_fields_per_s": Double(fields) / feedSeconds,
    "fold_s": foldSeconds,
    "wire_bytes_per_field": Double(bytes.count) / Double(fields),
    "wire_bytes_per_field_compressed": Double(compressedLength) / Double(fields),
    "converged": converged,
]
let json = try JSONSerialization.data(withJSONObject: figures, options: [.sortedKeys])
print(String(decoding: json, as: UTF8.self))
