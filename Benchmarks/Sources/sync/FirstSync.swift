import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import WorkloadW

/// Benchmark 1: a device holding workload W's data syncs for the first time with an empty
/// server over loopback HTTP (push), then a new empty device syncs (pull); both against
/// the in-process `ReplicatedDatabase.apply` of the same full changeset. With `--storage
/// all`, each batch configuration runs on the SQLite server and then on PostgreSQL (one
/// instance, a fresh database), and their fields/s are compared.
enum FirstSyncBenchmark {
    struct Batches: Sendable {
        var name: String
        var label: String
        var pushRecords: Int
        var pushBytes: Int
        var pullRecords: Int
        var pullBytes: Int

        /// The engine's configuration; `peer` names the server, whose cursors device A keeps
        /// apart from the other servers' it synced with.
        func configuration(peer: String) -> SyncEngine.Configuration {
            SyncEngine.Configuration(
                peer: peer, pushBatchRecords: pushRecords, pushBatchBytes: pushBytes,
                pullPageRecords: pullRecords, pullPageBytes: pullBytes)
        }

        /// SyncEngine.Configuration's defaults, read from it; the server caps pulled pages
        /// at 1,000 records / 4 MiB by default.
        static let defaults: Batches = {
            let engine = SyncEngine.Configuration()
            return Batches(
                name: "default",
                label: "default batches (push \(grouped(engine.pushBatchRecords)) records / \(engine.pushBatchBytes >> 20) MiB, pull pages \(grouped(engine.pullPageRecords)) records / \(engine.pullPageBytes >> 20) MiB)",
                pushRecords: engine.pushBatchRecords, pushBytes: engine.pushBatchBytes, pullRecords: engine.pullPageRecords, pullBytes: engine.pullPageBytes)
        }()
        /// Pushes of 100 records (the engine's default until stop 36): ten times the
        /// requests, so that the difference shows what one request costs.
        static let small = Batches(
            name: "small", label: "small pushes (push 100 records / 1 MiB, pull pages 1,000 records / 1 MiB)",
            pushRecords: 100, pushBytes: 1 << 20, pullRecords: 1_000, pullBytes: 1 << 20)
    }

    static let namespace = "bench"

    static func run(_ options: Options) async throws -> Figures {
        var figures = Figures()
        let folder = try Bench.temporaryFolder("first")
        defer { try? FileManager.default.removeItem(at: folder) }
        let workload = WorkloadW(rows: options.rows)

        // Device A: the app inserted workload W in 1,000-row transactions.
        let deviceA = try Bench.openPoolStore(folder.appendingPathComponent("device-a.sqlite").path)
        let (_, insertTiming) = try timed { try Self.insert(workload, into: deviceA) }
        // The deferred half of capture, which the first feed read would otherwise pay.
        let (_, fold) = try timed { _ = try deviceA.changes(since: 0, maxRecords: 1) }
        let (full, snapshot) = try timed { try deviceA.snapshot() }
        let fields = full.fieldCount
        let records = full.records.count

        // The reference: the whole changeset applied in-process to a fresh store, one transaction.
        let referenceStore = try Bench.openPoolStore(folder.appendingPathComponent("apply.sqlite").path)
        let (_, reference) = try timed { try referenceStore.apply(full) }
        let referenceEqual = try Bench.rows(referenceStore) == Bench.rows(deviceA)

        print("""

            BENCHMARK 1 — first sync of workload W over loopback HTTP
            \(grouped(records)) rows × 5 value columns (2 texts, 2 integers, 1 real; random UUID text keys) = \(grouped(fields)) fields
            stores: GRDB DatabasePool (journal_mode=\(Bench.pragma(deviceA, "journal_mode")), synchronous=\(Bench.synchronous(deviceA)): \
            GRDB's defaults, as the server opens its namespaces) in \(FileManager.default.temporaryDirectory.path)
            times: wall clock, and CPU time of the whole process (server and devices both run here)
            """)
        var setup = TextTable("setup and reference (in-process, no network)")
        setup.row("device A: insert (1,000-row transactions)", insertTiming.text)
        setup.row("device A: fold of the captured log (before the sync)", fold.text)
        setup.row("device A: snapshot() = the full changeset", snapshot.text)
        setup.row("REFERENCE: apply(full changeset), fresh store, one transaction",
                  "\(reference.text) = \(rate(fields, reference.wall)) fields/s (rows equal A's: \(referenceEqual))")
        setup.print()
        figures.set("first_fields", fields)
        figures.set("first_apply_s", reference.wall)
        figures.set("first_apply_cpu_s", reference.cpu)
        figures.set("first_apply_fields_per_s", Double(fields) / reference.wall)

        if options.breakdown {
            figures.append(try breakdown(full: full, source: deviceA, folder: folder))
        }

        var runs = [Batches]()
        if options.defaultBatches { runs.append(.defaults) }
        if options.smallBatches { runs.append(.small) }
        var pushes = [String: (seconds: Double, cpu: Double, requests: Int)]()
        let setups = options.storages.map { $0 == .sqlite ? ServerSetup.sqlite : .postgres(1) }
        for batches in runs {
            var fieldsPerSecond = [(setup: ServerSetup, push: Double, pull: Double, pushCPU: Double, pullCPU: Double)]()
            for setup in setups {
                let (run, push, pull, pushCPU, pullCPU) = try await syncRun(
                    batches, setup, options: options, deviceA: deviceA, fields: fields, reference: reference, folder: folder)
                figures.append(run)
                if setup.storage == .sqlite, let requests = run.integer("first_\(batches.name)_push_requests") {
                    pushes[batches.name] = (Double(fields) / push, pushCPU, requests)
                }
                fieldsPerSecond.append((setup, push, pull, pushCPU, pullCPU))
            }
            if let sqlite = fieldsPerSecond.first(where: { $0.setup.storage == .sqlite }),
                let postgres = fieldsPerSecond.first(where: { $0.setup.storage == .postgres }) {
                let push = postgres.push / sqlite.push, pull = postgres.pull / sqlite.pull
                // Fields per CPU second (this process's, and PostgreSQL's processes'): moves
                // less than the wall clock when other jobs share the machine.
                let pushCPU = sqlite.pushCPU / postgres.pushCPU, pullCPU = sqlite.pullCPU / postgres.pullCPU
                print("""

                    first sync, \(batches.label): PostgreSQL ÷ SQLite server (fields/s, same run; in fields per CPU second)
                      push \(rate(Int(postgres.push), 1)) ÷ \(rate(Int(sqlite.push), 1)) = \(format(push)); CPU \(format(pushCPU))
                      pull \(rate(Int(postgres.pull), 1)) ÷ \(rate(Int(sqlite.pull), 1)) = \(format(pull)); CPU \(format(pullCPU))
                    """)
                figures.set("first_\(batches.name)_pg1_vs_sqlite_push_ratio", push)
                figures.set("first_\(batches.name)_pg1_vs_sqlite_pull_ratio", pull)
                figures.set("first_\(batches.name)_pg1_vs_sqlite_push_cpu_ratio", pushCPU)
                figures.set("first_\(batches.name)_pg1_vs_sqlite_pull_cpu_ratio", pullCPU)
            }
        }
        if let big = pushes["default"], let small = pushes["small"], small.requests > big.requests {
            // The same records in more requests: what the extra requests cost, each.
            let extra = Double(small.requests - big.requests)
            let wall = (small.seconds - big.seconds) / extra, cpu = (small.cpu - big.cpu) / extra
            print("""

                what one push request costs (SQLite server; small pushes minus default batches, \(grouped(small.requests - big.requests)) more requests)
                  \(format(wall * 1e3, 2)) ms wall, \(format(cpu * 1e3, 2)) ms CPU of this process (device and server)
                """)
            figures.set("first_push_request_ms", wall * 1e3)
            figures.set("first_push_request_cpu_ms", cpu * 1e3)
        }
        return figures
    }

    static func insert(_ workload: WorkloadW, into store: ReplicatedDatabase) throws {
        for start in stride(from: 0, to: workload.items.count, by: 1_000) {
            try store.writer.write { db in
                let statement = try db.cachedStatement(sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)")
                for item in workload.items[start..<min(start + 1_000, workload.items.count)] {
                    try statement.execute(arguments: [item.id, item.name, item.qty, item.price, item.note, item.updated])
                }
            }
        }
    }

    /// The steps of a sync, in-process, each timed over the whole data set: what a push
    /// and a pull cost without HTTP.
    static func breakdown(full: Changeset, source: ReplicatedDatabase, folder: URL) throws -> Figures {
        var figures = Figures()
        var table = TextTable("where a first sync's time goes: its steps in-process, no HTTP (whole data set)")
        let fields = full.fieldCount
        func row(_ label: String, _ timing: Timing, _ key: String, _ extra: String = "") {
            table.row(label, "\(timing.text) = \(rate(fields, timing.wall)) fields/s\(extra)")
            figures.set(key + "_s", timing.wall)
            figures.set(key + "_cpu_s", timing.cpu)
        }
        func feed(_ store: ReplicatedDatabase, pageRecords: Int, pageBytes: Int) throws -> [Changeset] {
            var pages = [Changeset]()
            var position: UInt64?
            while true {
                let batch = try store.changes(since: 0, after: position, maxRecords: pageRecords, maxBytes: pageBytes)
                if !batch.changeset.isEmpty { pages.append(batch.changeset) }
                position = batch.next
                if !batch.hasMore { break }
            }
            return pages
        }
        /// Applies each page in its own transaction; the mean time of a call over the first
        /// and the last tenth of the pages shows how it grows with the store.
        func applyPages(_ pages: [Changeset], to store: ReplicatedDatabase) throws -> (Timing, String) {
            var calls = [Double]()
            let (_, timing) = try timed {
                for page in pages {
                    let (_, call) = try timed { try store.apply(page) }
                    calls.append(call.wall)
                }
            }
            let tenth = max(1, calls.count / 10)
            let first = calls.prefix(tenth).reduce(0, +) / Double(tenth), last = calls.suffix(tenth).reduce(0, +) / Double(tenth)
            return (timing, "; per call: first tenth \(format(first * 1000, 1)) ms, last tenth \(format(last * 1000, 1)) ms")
        }
        // Push with 100-record batches (the small pushes): the device reads its feed in pages
        // of 100 records and encodes them; the server decodes, checks and applies each in its
        // own transaction. (Default batches are the pull's shape, below.)
        let (pushPages, feed100) = try timed { try feed(source, pageRecords: 100, pageBytes: 1 << 20) }
        row("device feed: changes() in pages of 100 records (\(pushPages.count) pages)", feed100, "breakdown_feed100")
        let (encoded, encode) = timed { pushPages.map { WireEncoder.encode($0) } }
        row("encode those pages (\(grouped(encoded.reduce(0) { $0 + $1.count })) bytes)", encode, "breakdown_encode")
        let (decoded, decode) = try timed {
            try encoded.map { bytes in
                let changeset = try WireDecoder.decode(bytes)
                try changeset.checkInvariants()
                return changeset
            }
        }
        row("decode + checkInvariants", decode, "breakdown_decode")
        let (_, maxima) = timed { for page in decoded { _ = page.maxHLCByReplica } }
        row("server's stampMaxima (push guard)", maxima, "breakdown_stamp_maxima")
        let target100 = try Bench.openPoolStore(folder.appendingPathComponent("apply-100.sqlite").path)
        let (apply100, growth100) = try applyPages(decoded, to: target100)
        row("apply in 100-record transactions, fresh store", apply100, "breakdown_apply100", growth100)
        // Pull: the server reads its feed in pages of 1,000 records; the new device applies
        // each page in its own transaction.
        let (pullPages, feed1000) = try timed { try feed(target100, pageRecords: 1_000, pageBytes: 4 << 20) }
        row("server feed: changes() in pages of 1,000 records (\(pullPages.count) pages)", feed1000, "breakdown_feed1000")
        let target1000 = try Bench.openPoolStore(folder.appendingPathComponent("apply-1000.sqlite").path)
        let (apply1000, growth1000) = try applyPages(pullPages, to: target1000)
        row("apply in 1,000-record transactions, fresh store", apply1000, "breakdown_apply1000", growth1000)
        table.print()
        return figures
    }

    /// One server, device A's first sync (push) and second (what comes back), then a new
    /// device's first sync (pull). Returns the figures, and the push's and the pull's fields/s.
    static func syncRun(
        _ batches: Batches, _ setup: ServerSetup, options: Options, deviceA: ReplicatedDatabase, fields: Int, reference: Timing, folder: URL
    ) async throws -> (Figures, push: Double, pull: Double, pushCPU: Double, pullCPU: Double) {
        var figures = Figures()
        let run = "\(setup.key)\(batches.name)"
        let servers = try await BenchServers.start(
            setup, in: folder.appendingPathComponent("server-\(run)"), secret: Bench.secret(), postgresConnections: options.postgresConnections)
        let authenticator = servers.authenticator
        let peer = "server-\(run)"
        let engineA = try SyncEngine(
            database: deviceA, transport: HTTPSyncTransport(baseURL: servers.baseURL(forDevice: 0)), configuration: batches.configuration(peer: peer),
            token: try await authenticator.token(namespace: namespace, device: "device-a"))
        // PostgreSQL's own processes are not in this process's CPU time: measured apart.
        let backendsAtStart = try await servers.database?.backendCPU()
        let (push, pushTiming) = try await timed { try await engineA.sync() }
        let backendsAfterPush = try await servers.database?.backendCPU()
        let (echo, echoTiming) = try await timed { try await engineA.sync() }

        let deviceB = try Bench.openPoolStore(folder.appendingPathComponent("device-b-\(run).sqlite").path)
        let engineB = try SyncEngine(
            database: deviceB, transport: HTTPSyncTransport(baseURL: servers.baseURL(forDevice: 0)), configuration: batches.configuration(peer: peer),
            token: try await authenticator.token(namespace: namespace, device: "device-b"))
        let backendsBeforePull = try await servers.database?.backendCPU()
        let (pull, pullTiming) = try await timed { try await engineB.sync() }
        let backendsAfterPull = try await servers.database?.backendCPU()
        var databaseCPU: (push: Double, pull: Double)?
        if let backendsAtStart, let backendsAfterPush, let backendsBeforePull, let backendsAfterPull {
            databaseCPU = (
                PostgresDatabase.cpuSeconds(from: backendsAtStart, to: backendsAfterPush),
                PostgresDatabase.cpuSeconds(from: backendsBeforePull, to: backendsAfterPull))
        }

        let rowsA = try Bench.rows(deviceA), rowsB = try Bench.rows(deviceB)
        let serverSnapshot = try await servers.store(namespace).snapshot()
        let snapshotA = try deviceA.snapshot(), snapshotB = try deviceB.snapshot()
        // The server's table too (for PostgreSQL: the materialized table).
        let serverRows = try await servers.rows(namespace)
        let rowsAByKey = try Bench.rowsByKey(deviceA)
        let rowsConverged = rowsA.count * 5 == fields && rowsA == rowsB && serverRows == rowsAByKey
        let converged = rowsConverged && snapshotA == snapshotB && snapshotB == serverSnapshot
        let databaseBytes = try await servers.database?.size()
        await servers.stop()

        func ratio(_ timing: Timing) -> String {
            "\(format(timing.wall / reference.wall)) wall, \(format(timing.cpu / reference.cpu)) CPU  (goal ≤ 1.5)"
        }
        var table = TextTable("sync over loopback HTTP, \(setup.description), \(batches.label)")
        table.row("(a) device A's first sync: push to the empty server",
                  "\(pushTiming.text) = \(rate(fields, pushTiming.wall)) fields/s")
        table.row("    requests, records, bytes, retries",
                  "\(grouped(push.requests)), \(grouped(push.pushedRecords)) pushed (\(grouped(push.pushedBytes)) B), \(grouped(push.pulledRecords)) pulled, \(push.retries) retries")
        table.row("    ratio to the reference apply", ratio(pushTiming))
        if let databaseCPU { table.row("    CPU of PostgreSQL's processes", "\(format(databaseCPU.push)) s") }
        table.row("(b) device B's first sync: pull into an empty store",
                  "\(pullTiming.text) = \(rate(fields, pullTiming.wall)) fields/s")
        table.row("    requests, records, bytes, retries",
                  "\(grouped(pull.requests)), \(grouped(pull.pulledRecords)) pulled (\(grouped(pull.pulledBytes)) B), \(pull.retries) retries")
        table.row("    ratio to the reference apply", ratio(pullTiming))
        if let databaseCPU { table.row("    CPU of PostgreSQL's processes", "\(format(databaseCPU.pull)) s") }
        table.row("device A's second sync (its own push comes back)",
                  "\(echoTiming.text); \(grouped(echo.requests)) requests, \(grouped(echo.pulledRecords)) records pulled (\(grouped(echo.pulledBytes)) B), \(echo.appliedRecords) changed anything")
        table.row("converged (B's table = A's = the server's; A, B, server snapshots equal)", "\(converged)")
        if let databaseBytes {
            table.row("PostgreSQL: pg_database_size afterwards", "\(grouped(databaseBytes)) B (\(format(Double(databaseBytes) / 1_048_576, 1)) MiB)")
        }
        table.print()

        let key = "\(setup.key)first_\(batches.name)"
        figures.set("\(key)_push_s", pushTiming.wall)
        figures.set("\(key)_push_cpu_s", pushTiming.cpu)
        figures.set("\(key)_push_fields_per_s", Double(fields) / pushTiming.wall)
        figures.set("\(key)_push_ratio", pushTiming.wall / reference.wall)
        figures.set("\(key)_push_cpu_ratio", pushTiming.cpu / reference.cpu)
        figures.set("\(key)_pull_s", pullTiming.wall)
        figures.set("\(key)_pull_cpu_s", pullTiming.cpu)
        figures.set("\(key)_pull_fields_per_s", Double(fields) / pullTiming.wall)
        figures.set("\(key)_pull_ratio", pullTiming.wall / reference.wall)
        figures.set("\(key)_pull_cpu_ratio", pullTiming.cpu / reference.cpu)
        figures.set("\(key)_push_requests", push.requests)
        figures.set("\(key)_pull_requests", pull.requests)
        figures.set("\(key)_second_sync_s", echoTiming.wall)
        figures.set("\(key)_second_sync_pulled_records", echo.pulledRecords)
        figures.set("\(key)_converged", converged)
        if let databaseBytes { figures.set("\(key)_database_bytes", databaseBytes) }
        if let databaseCPU {
            figures.set("\(key)_push_database_cpu_s", databaseCPU.push)
            figures.set("\(key)_pull_database_cpu_s", databaseCPU.pull)
        }
        if batches.name == "default" {
            // The issue's names for the default batches' ratios (#16).
            figures.set("\(setup.key)first_sync_push_ratio", pushTiming.wall / reference.wall)
            figures.set("\(setup.key)first_sync_pull_ratio", pullTiming.wall / reference.wall)
        }
        return (
            figures, Double(fields) / pushTiming.wall, Double(fields) / pullTiming.wall,
            pushTiming.cpu + (databaseCPU?.push ?? 0), pullTiming.cpu + (databaseCPU?.pull ?? 0))
    }
}
