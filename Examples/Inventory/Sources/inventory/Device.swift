import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB

/// One device of the shop: its own SQLite file, Converge on it, and a sync engine talking
/// to the server over HTTP. An app does the same at launch.
struct Device {
    let name: String
    let dbQueue: DatabaseQueue
    let converge: ReplicatedDatabase
    let engine: SyncEngine

    /// Opens (or creates) the device's database, runs the app's migrations, replicates the
    /// `item` table as ``Item`` declares, and sets up the sync engine.
    static func open(_ name: String, path: String, server: URL, token: String) throws -> Device {
        let dbQueue = try DatabaseQueue(path: path)
        try Item.migrator.migrate(dbQueue)
        let converge = try ReplicatedDatabase(dbQueue)
        try converge.replicate(Item.self)
        let engine = try SyncEngine(database: converge, transport: HTTPSyncTransport(baseURL: server), token: token)
        return Device(name: name, dbQueue: dbQueue, converge: converge, engine: engine)
    }

    /// The shelf as the app shows it: the rows of the `item` table, by SKU.
    func items() throws -> [Item] {
        try dbQueue.read { db in try Item.order(Item.Columns.sku, Column("id")).fetchAll(db) }
    }

    func item(_ id: String) throws -> Item? {
        try dbQueue.read { db in try Item.fetchOne(db, key: id) }
    }

    /// Local changes the server has not acknowledged yet.
    func pendingUploads() async -> Int {
        await engine.refreshStatus()
        return await engine.status.pendingChanges
    }

    /// The id of the newest sync-log entry, to sum up the rounds a wait ran.
    func lastRound() throws -> Int64 { try engine.log(limit: 1).first?.id ?? 0 }

    /// What the rounds after `round` did, in a few words.
    func rounds(after round: Int64) throws -> String {
        let entries = try engine.log(limit: 100).filter { $0.id > round }
        let pushed = entries.reduce(0) { $0 + $1.pushedRecords }
        let pulled = entries.reduce(0) { $0 + $1.pulledRecords }
        let failed = entries.filter { $0.error != nil }.count
        let rounds = entries.count == 1 ? "1 round" : "\(entries.count) rounds"
        return "\(rounds), pushed \(pushed) and pulled \(pulled) records" + (failed > 0 ? " (\(failed) retried after an error)" : "")
    }
}
