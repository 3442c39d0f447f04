import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import WorkloadW

/// The churn scenario (issue #19, DESIGN §9): devices insert records and delete most of
/// them, round after round, syncing as they go, against one server in this process. With
/// tombstone collection the stores should hold about what a fresh store holding the same
/// live rows holds; without it they keep every deleted record's metadata.
enum Churn {
    static let namespace = "churn"
    static let insert = "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)"
    static let delete = "DELETE FROM items WHERE id = ?"

    struct Device {
        let name: String
        let path: String
        let store: ReplicatedDatabase
        let engine: SyncEngine
    }

    /// One database after the run: its size on disk and what it holds.
    struct StoreFigures: Sendable {
        var name: String
        /// The main file plus its WAL, after `PRAGMA wal_checkpoint(TRUNCATE)`: what the
        /// database takes on disk.
        var fileBytes = 0
        var walBytes = 0
        /// `page_count * page_size` (equals the main file's size once checkpointed).
        var pageBytes = 0
        var pageSize = 0
        var freePages = 0
        var checkpointed = false
        /// Rows of the app table.
        var rows = 0
        /// Records the store holds metadata for (`converge_records`), and of those the
        /// deleted ones (`tombstoneCount()`).
        var records = 0
        var tombstones = 0
        /// Bytes per table and index (`dbstat`), largest first; nil without dbstat.
        var tables: [(name: String, bytes: Int, unused: Int)]?
        /// The size of a `VACUUM INTO` copy (every page rebuilt full): the least these rows
        /// can take; nil when not measured.
        var vacuumedBytes: Int?
    }

    /// One round's figures, taken between the timed phases (not counted in the times).
    struct RoundFigures: Sendable {
        var timing = Timing()
        var serverTombstones = 0
        var deviceTombstones = 0
        var serverBytes = 0
        var largestDeviceBytes = 0
    }

    struct Run: Sendable {
        var collection: Bool
        /// The measured loop: local writes and syncs.
        var writes = Timing()
        var syncs = Timing()
        /// Deferred work: the final syncs until every store has dropped what was collected
        /// (with collection), or until every device has the last deletes (without), and
        /// the final `reclaimSpace()` of every store (with collection).
        var drain = Timing()
        var reclaim = Timing()
        var drainPasses = 0
        var reclaimedPages = 0
        var requests = 0
        var pushed = 0
        var pulled = 0
        var collectedByDevices = 0
        var rounds: [RoundFigures] = []
        /// The devices, then the server.
        var stores: [StoreFigures] = []
        var serverCollectedList = 0
        var converged = false
        var convergenceNote = ""

        var loop: Timing { writes + syncs }
        var total: Timing { loop + drain + reclaim }
        var largest: StoreFigures { stores.max(by: { $0.fileBytes < $1.fileBytes })! }
        var tombstones: Int { stores.reduce(0) { $0 + $1.tombstones } }
    }

    /// The records device `device` inserts in `round`.
    static func batch(_ workload: WorkloadW, device: Int, round: Int, options: Options) -> ArraySlice<WorkloadW.Item> {
        let start = (round * options.devices + device) * options.records
        return workload.items[start..<start + options.records]
    }

    /// The records that stay live: the first `keep` of every batch.
    static func liveItems(_ workload: WorkloadW, options: Options) -> [WorkloadW.Item] {
        (0..<options.rounds).flatMap { round in
            (0..<options.devices).flatMap { device in batch(workload, device: device, round: round, options: options).prefix(options.keep) }
        }
    }

    // MARK: Stores

    static func serverSchema() -> ServerSchema {
        ServerSchema(tables: [.init(name: WorkloadW.table, create: WorkloadW.createTable)])
    }

    /// A device store as an app opens it: a GRDB `DatabasePool` (WAL, GRDB's defaults, as
    /// the server opens its namespaces), workload W's table replicated. New stores use
    /// incremental auto-vacuum (`Configuration.incrementalVacuum`, the default).
    static func openStore(_ path: String) throws -> ReplicatedDatabase {
        let pool = try DatabasePool(path: path)
        try pool.write { db in try db.execute(sql: WorkloadW.createTable) }
        let store = try ReplicatedDatabase(pool)
        try store.replicate(table: WorkloadW.table)
        return store
    }

    static func write<S: Sequence>(_ items: S, into store: ReplicatedDatabase, sql: String, rows: Int, arguments: (WorkloadW.Item) -> StatementArguments) throws
    where S.Element == WorkloadW.Item {
        let items = Array(items)
        for start in stride(from: 0, to: items.count, by: rows) {
            try store.writer.write { db in
                let statement = try db.cachedStatement(sql: sql)
                for item in items[start..<min(start + rows, items.count)] { try statement.execute(arguments: arguments(item)) }
            }
        }
    }

    static func insertArguments(_ item: WorkloadW.Item) -> StatementArguments {
        [item.id, item.name, item.qty, item.price, item.note, item.updated]
    }

    /// Checkpoints the WAL into the main file (TRUNCATE: the WAL file is emptied), then
    /// measures the files and what the store holds.
    static func measure(_ store: ReplicatedDatabase, path: String, name: String, tables: Bool, vacuumed: Bool = false) throws -> StoreFigures {
        var figures = StoreFigures(name: name)
        try store.writer.writeWithoutTransaction { db in
            let checkpoint = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            figures.checkpointed = checkpoint.map { ($0[0] as Int) == 0 } ?? false
            figures.pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0
            figures.pageBytes = (try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0) * figures.pageSize
            figures.freePages = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
            figures.rows = try Int.fetchOne(db, sql: "SELECT count(*) FROM items") ?? 0
            figures.records = try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_records") ?? 0
            if tables {
                figures.tables = try? Row.fetchAll(db, sql: "SELECT name, sum(pgsize) AS bytes, sum(unused) AS unused FROM dbstat GROUP BY name ORDER BY bytes DESC")
                    .map { (name: $0["name"], bytes: $0["bytes"], unused: $0["unused"]) }
            }
        }
        figures.tombstones = try store.tombstoneCount()
        figures.walBytes = fileSize(path + "-wal")
        figures.fileBytes = fileSize(path) + figures.walBytes
        if vacuumed {
            let copy = path + ".vacuumed"
            try store.writer.writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [copy]) }
            figures.vacuumedBytes = fileSize(copy)
            try? FileManager.default.removeItem(atPath: copy)
        }
        return figures
    }

    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// `page_count * page_size` without a checkpoint (the pages the WAL adds count): cheap,
    /// for the per-round figures.
    static func pageBytes(_ store: ReplicatedDatabase) throws -> Int {
        try store.writer.read { db in
            (try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0) * (try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
        }
    }

    /// A fresh store holding only the live rows, written by the app (1,000-row
    /// transactions), measured the same way: the size the churned stores are held to. Also
    /// the same store compacted (`reclaimSpace()`): folding the captured log leaves free
    /// pages in it, which the churned stores with collection have given back (their last
    /// collection, and the final `reclaimSpace()`, vacuum them).
    static func fresh(_ items: [WorkloadW.Item], in folder: URL, options: Options) throws -> (written: StoreFigures, compact: StoreFigures, Timing) {
        let path = folder.appendingPathComponent("fresh.sqlite").path
        let store = try openStore(path)
        let (_, timing) = try timed { try write(items, into: store, sql: insert, rows: options.transactionRows, arguments: insertArguments) }
        // The deferred half of capture (folding the captured log), as a first sync would.
        _ = try store.changes(since: 0, maxRecords: 1)
        let written = try measure(store, path: path, name: "fresh store, as written", tables: true)
        try store.reclaimSpace()
        return (written, try measure(store, path: path, name: "fresh store, compacted", tables: true, vacuumed: true), timing)
    }

    // MARK: The scenario

    /// Both runs, interleaved round by round (in ABBA order: the first run first in even
    /// rounds, second in odd ones), so that both see the same load on a shared machine.
    static func run(workload: WorkloadW, options: Options, folder: URL) async throws -> [Run] {
        var scenarios = [Scenario]()
        if options.runWithCollection { scenarios.append(try await Scenario(collection: true, options: options, folder: folder)) }
        if options.runWithoutCollection { scenarios.append(try await Scenario(collection: false, options: options, folder: folder)) }
        progress("churn, collection \(scenarios.map(\.label).joined(separator: " and ")), interleaved: \(options.rounds) rounds …")
        for round in 0..<options.rounds {
            for scenario in round % 2 == 0 ? scenarios : scenarios.reversed() {
                try await scenario.round(round, workload: workload, options: options)
            }
            progress(" \(round + 1)")
        }
        progress("\n")
        var runs = [Run]()
        for scenario in scenarios { runs.append(try await scenario.finish(options: options)) }
        return runs
    }

    /// One run: a server and its devices, each with its own files in its folder.
    final class Scenario {
        let collection: Bool
        var label: String { collection ? "ON" : "OFF" }
        let service: SyncService
        let serverFolder: URL
        var devices = [Device]()
        var run: Run
        private var serverStore: ReplicatedDatabase?

        init(collection: Bool, options: Options, folder: URL) async throws {
            self.collection = collection
            run = Run(collection: collection)
            let runFolder = folder.appendingPathComponent("collection-\(collection ? "on" : "off")")
            try FileManager.default.createDirectory(at: runFolder, withIntermediateDirectories: true)
            serverFolder = runFolder.appendingPathComponent("server")
            var configuration = ServerConfiguration(
                dataDirectory: serverFolder, jwtSecret: "churn-benchmark-secret-\(UUID().uuidString)", schema: serverSchema())
            configuration.collection.enabled = collection
            configuration.namespaceIdleSeconds = 24 * 3_600
            let service = try await SyncService(configuration: configuration)
            self.service = service
            // In-process: the server's logic without HTTP (what is measured is storage).
            let transport = InMemorySyncTransport { body, authorization in
                let answer = await service.sync(body: body, authorization: authorization)
                return (answer.status, answer.body)
            }
            for index in 0..<options.devices {
                let name = "device-\(index + 1)"
                let path = runFolder.appendingPathComponent("\(name).sqlite").path
                let store = try openStore(path)
                let engine = try SyncEngine(
                    database: store, transport: transport,
                    token: try await service.authenticator.token(namespace: namespace, device: name))
                devices.append(Device(name: name, path: path, store: store, engine: engine))
            }
        }

        var serverPath: String { serverFolder.appendingPathComponent("\(namespace).sqlite").path }

        func sync(_ device: Device) async throws {
            let report = try await device.engine.sync()
            run.requests += report.requests
            run.pushed += report.pushedRecords
            run.pulled += report.pulledRecords
            run.collectedByDevices += report.collectedRecords
        }

        func server() async throws -> ReplicatedDatabase {
            if let serverStore { return serverStore }
            guard let store = try await service.storage.store(for: namespace) as? SQLiteNamespaceStore else {
                throw BenchmarkError("the server's namespace store is not the SQLite one")
            }
            serverStore = store.database
            return store.database
        }

        /// Every device inserts its batch and syncs, then every device deletes all but the
        /// first `keep` records of its batch and syncs.
        func round(_ round: Int, workload: WorkloadW, options: Options) async throws {
            var figures = RoundFigures()
            for (index, device) in devices.enumerated() {
                let items = batch(workload, device: index, round: round, options: options)
                let (_, writing) = try timed { try write(items, into: device.store, sql: insert, rows: options.transactionRows, arguments: insertArguments) }
                let (_, syncing) = try await timed { try await sync(device) }
                run.writes += writing
                run.syncs += syncing
                figures.timing += writing + syncing
            }
            for (index, device) in devices.enumerated() {
                let items = batch(workload, device: index, round: round, options: options).dropFirst(options.keep)
                let (_, writing) = try timed { try write(items, into: device.store, sql: delete, rows: options.transactionRows) { [$0.id] } }
                let (_, syncing) = try await timed { try await sync(device) }
                run.writes += writing
                run.syncs += syncing
                figures.timing += writing + syncing
            }
            let serverDatabase = try await server()
            figures.serverTombstones = try serverDatabase.tombstoneCount()
            figures.serverBytes = try pageBytes(serverDatabase)
            for device in devices {
                figures.deviceTombstones += try device.store.tombstoneCount()
                figures.largestDeviceBytes = max(figures.largestDeviceBytes, try pageBytes(device.store))
            }
            run.rounds.append(figures)
        }

        /// The deferred work (timed), then the checks and the measurements (not timed).
        func finish(options: Options) async throws -> Run {
            let serverDatabase = try await server()
            // With collection: every device syncs once per pass until no store holds a
            // tombstone (the server collects up to 10,000 records per request and lists up
            // to 1,000 per answer, so idle devices take several passes to hear of the last
            // round). Without: one pass brings the last deletes to every device.
            func tombstones() throws -> Int {
                try devices.reduce(try serverDatabase.tombstoneCount()) { $0 + (try $1.store.tombstoneCount()) }
            }
            var stalled = 0
            var left = try tombstones()
            var passes = 0
            let (_, drain) = try await timed {
                while passes < (collection ? options.maxDrainPasses : 1) {
                    for device in devices { try await sync(device) }
                    passes += 1
                    guard collection else { break }
                    let now = try tombstones()
                    if now == 0 { break }
                    stalled = now < left ? 0 : stalled + 1
                    left = now
                    if stalled >= 5 { break }
                }
            }
            run.drain = drain
            run.drainPasses = passes
            if collection {
                let devices = devices
                (run.reclaimedPages, run.reclaim) = try timed {
                    try devices.reduce(try serverDatabase.reclaimSpace()) { $0 + (try $1.store.reclaimSpace()) }
                }
            }
            progress("collection \(label): \(passes) final pass\(passes == 1 ? "" : "es")\n")

            // Convergence: every device shows the server's rows, the expected live set; with
            // collection every snapshot equals the server's too (the same records dropped).
            let expected = options.devices * options.rounds * options.keep
            func rows(_ store: ReplicatedDatabase) throws -> [Row] {
                try store.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM items ORDER BY id") }
            }
            let serverRows = try rows(serverDatabase)
            var notes = [String]()
            if serverRows.count != expected { notes.append("server holds \(serverRows.count) rows, expected \(expected)") }
            for device in devices where try rows(device.store) != serverRows { notes.append("\(device.name)'s rows differ from the server's") }
            if collection {
                let snapshot = try serverDatabase.snapshot()
                for device in devices where try device.store.snapshot() != snapshot { notes.append("\(device.name)'s snapshot differs from the server's") }
            }
            run.converged = notes.isEmpty
            run.convergenceNote = notes.joined(separator: "; ")

            let stores = devices.map { ($0.store, $0.path, $0.name) } + [(serverDatabase, serverPath, "server")]
            run.stores = try stores.map { try measure($0.0, path: $0.1, name: $0.2, tables: false) }
            run.serverCollectedList = try await serverDatabase.writer.read { db in
                try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_server_collected") ?? 0
            }
            // Where the largest store's space goes.
            if let index = run.stores.indices.max(by: { run.stores[$0].fileBytes < run.stores[$1].fileBytes }) {
                run.stores[index] = try measure(stores[index].0, path: stores[index].1, name: stores[index].2, tables: true, vacuumed: collection)
            }
            return run
        }
    }
}
