import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import WorkloadW

/// Benchmark 2: many devices, each with its own SQLite store and sync engine, run rounds
/// concurrently against one server on loopback. In a round a device writes 20 fields in
/// one transaction (all five fields of its two own rows and of two rows it shares with
/// every device of its namespace), then syncs. Afterwards every device syncs twice more
/// and must hold exactly the server's state, with every last write present.
///
/// Runs against each configuration asked for (`--storage`): the SQLite server, and
/// PostgreSQL with one or several server instances (devices spread round-robin over them),
/// each on a fresh database; the ratios of their rounds/s end the figures.
enum ConcurrencyBenchmark {
    static let fieldsPerRound = 20

    struct Device: Sendable {
        let index: Int
        let namespace: String
        let store: ReplicatedDatabase
        let engine: SyncEngine

        var ownRows: [String] { (0..<2).map { "\(namespace)-device\(index)-own\($0)" } }
    }

    /// The last write of one row by one device: its stamp and the five values.
    struct Write: Sendable {
        var stamp: Stamp
        var values: [DatabaseValue]
        var device: Int
        var round: Int
    }

    struct DeviceResult: Sendable {
        var device: Int
        var latencies: [Double] = []
        var errors = 0
        var firstErrors: [String] = []
        var retries = 0
        var pushedRecords = 0
        var pulledRecords = 0
        var requests = 0
        /// The device's last write of each row it wrote (own and shared).
        var lastWrites: [String: Write] = [:]
        var missingRows = 0

        mutating func failed(_ error: any Error) {
            errors += 1
            if firstErrors.count < 3 { firstErrors.append("\(error)") }
        }
    }

    static func sharedRow(_ index: Int) -> String { "shared-\(index)" }

    static func namespaceName(_ index: Int) -> String { "team-\(index)" }

    /// What `device` writes into a row in `round`: every value differs from every other
    /// write's to the same row. (An UPDATE that leaves a value as it was writes nothing to
    /// that field: it takes no stamp, and a concurrent write may then win the field; unique
    /// values keep "the last write wins every field" exact.)
    static func values(device: Int, round: Int, row: Int, shared: Bool) -> [DatabaseValue] {
        let tag = shared ? "s" : "o"
        let writer = Int64(device) * 100_000 + Int64(round + 1)
        return [
            "d\(device)-r\(round)-\(tag)\(row)".databaseValue,
            writer.databaseValue,
            (Double(writer) + Double(row % 8) / 8 + (shared ? 0.0625 : 0)).databaseValue,
            "note \(tag) device \(device) round \(round)".databaseValue,
            (WorkloadW.baseTime + writer).databaseValue,
        ]
    }

    static let update = "UPDATE items SET name = ?, qty = ?, price = ?, note = ?, updated = ? WHERE id = ?"

    /// What the comparison table and the ratios need of one configuration's run.
    struct Summary: Sendable {
        var setup: ServerSetup
        var roundsPerSecond: Double
        var p50: Double
        var p99: Double
        var errors: Int
        var lostFields: Int
        var divergedDevices: Int
        var rssAfterRounds: Double?
        var databaseBytes: Int?
        /// CPU time per round, in seconds: this process's (devices and server) and, for
        /// PostgreSQL, its server processes'. Other jobs on the machine do not count in it,
        /// so the ratio of these moves less than the rounds/s when the load shifts.
        var cpuPerRound: Double
    }

    static func run(_ options: Options) async throws -> Figures {
        var figures = Figures()
        var summaries = [Summary]()
        let setups = options.concurrencySetups
        for (index, setup) in setups.enumerated() {
            let (figuresOfRun, summary) = try await measure(options, setup, after: index > 0)
            var measured = figuresOfRun
            // Everything is released now: what stays resident is malloc's retained free memory
            // (given back by malloc_trim) or something still referenced.
            try? await Task.sleep(for: .seconds(1))
            let released = Memory.now()
            let trimmed = trimMalloc() ? Memory.now() : nil
            if let released {
                print("memory after releasing the devices and the server: RSS \(format(released.rss, 0)) MiB, SQLite heap \(format(released.sqlite, 0)) MiB"
                      + (trimmed.map { "; after malloc_trim(0): RSS \(format($0.rss, 0)) MiB" } ?? ""))
                measured.set("\(setup.key)concurrency_rss_released_mib", released.rss)
            }
            if let trimmed { measured.set("\(setup.key)concurrency_rss_released_trimmed_mib", trimmed.rss) }
            figures.append(measured)
            summaries.append(summary)
        }
        if summaries.count > 1 { figures.append(compare(summaries)) }
        return figures
    }

    /// The configurations side by side, and the ratios of their rounds/s.
    static func compare(_ summaries: [Summary]) -> Figures {
        var figures = Figures()
        print("\nBENCHMARK 2 — the configurations side by side (one run, one after the other)")
        print("configuration                        rounds/s   p50 ms   p99 ms  errors  lost  diverged  CPU ms/round  RSS after rounds  database")
        for summary in summaries {
            let database = summary.databaseBytes.map { "\(format(Double($0) / 1_048_576, 1)) MiB" } ?? "(files)"
            print(
                summary.setup.description.padding(toLength: 36, withPad: " ", startingAt: 0)
                    + String(format: " %8.1f %8.0f %8.0f %7d %5d %9d %13.1f", summary.roundsPerSecond, summary.p50 * 1000, summary.p99 * 1000, summary.errors, summary.lostFields, summary.divergedDevices, summary.cpuPerRound * 1000)
                    + "  " + (summary.rssAfterRounds.map { "\(format($0, 0)) MiB" } ?? "?").padding(toLength: 16, withPad: " ", startingAt: 0) + "  " + database)
        }
        let sqlite = summaries.first { $0.setup.storage == .sqlite }
        let pg1 = summaries.first { $0.setup.storage == .postgres && $0.setup.instances == 1 }
        let several = summaries.first { $0.setup.storage == .postgres && $0.setup.instances > 1 }
        // The CPU ratios: rounds per CPU second, this configuration's over the other's.
        if let sqlite, let pg1 {
            let ratio = pg1.roundsPerSecond / sqlite.roundsPerSecond, cpu = sqlite.cpuPerRound / pg1.cpuPerRound
            print("PostgreSQL, 1 instance ÷ SQLite (rounds/s): \(format(ratio))  (goal ≥ 0.7); in rounds per CPU second: \(format(cpu))")
            figures.set("pg1_vs_sqlite_rounds_ratio", ratio)
            figures.set("pg1_vs_sqlite_cpu_ratio", cpu)
        }
        if let pg1, let several {
            let ratio = several.roundsPerSecond / pg1.roundsPerSecond, cpu = pg1.cpuPerRound / several.cpuPerRound
            print("PostgreSQL, \(several.setup.instances) instances ÷ 1 instance (rounds/s): \(format(ratio))  (goal ≥ 0.9 on this 2-core machine); in rounds per CPU second: \(format(cpu))")
            figures.set("pg\(several.setup.instances)_vs_pg1_rounds_ratio", ratio)
            figures.set("pg\(several.setup.instances)_vs_pg1_cpu_ratio", cpu)
        }
        return figures
    }

    static func measure(_ options: Options, _ setup: ServerSetup, after earlier: Bool) async throws -> (Figures, Summary) {
        var figures = Figures()
        let key = setup.key
        let folder = try Bench.temporaryFolder("concurrency")
        defer { try? FileManager.default.removeItem(at: folder) }
        if options.runFirstSync {
            print("\n(benchmark 1 ran in this process before: for memory figures, run with --only concurrency)")
        } else if earlier {
            print("\n(another configuration ran in this process before: memory figures start from what it left resident)")
        }
        // Start from what is live (malloc keeps what benchmark 1 freed, if it ran).
        _ = trimMalloc()
        let memoryAtStart = Memory.now()
        let servers = try await BenchServers.start(
            setup, in: folder.appendingPathComponent("server"), secret: Bench.secret(), postgresConnections: options.postgresConnections)
        let memoryServerStarted = Memory.now()
        let authenticator = servers.authenticator
        let placement = setup.storage == .sqlite
            ? "server: the embedded SQLite storage (one file per namespace)"
            : "server: PostgreSQL (a fresh database), \(setup.instances) instance\(setup.instances == 1 ? "" : "s") (PostgresStorage with a pool of \(options.postgresConnections) connections each)"
                + (setup.instances > 1 ? ", devices spread round-robin over them" : "")

        print("""

            BENCHMARK 2 — \(setup.description): \(options.devices) concurrent devices × \(options.rounds) rounds × \(fieldsPerRound) fields over loopback HTTP
            \(placement)
            \(options.namespaces) namespace\(options.namespaces == 1 ? "" : "s") (\(options.devices / options.namespaces)\
            \(options.devices % options.namespaces == 0 ? "" : "+") devices each), \(options.sharedRows) shared rows per namespace; \
            a round = one local transaction writing 20 fields (2 own rows + 2 shared rows × 5 fields), then engine.sync()
            devices: GRDB DatabaseQueue (WAL) each, SyncEngine defaults (push 100 records / 1 MiB, pull pages 1,000 records / 1 MiB, \
            retry 6 attempts from 500 ms), one HTTPSyncTransport (URLSession) each; server and devices share this process
            """)

        // Setup: devices, then the shared rows (by each namespace's first device), then
        // every device inserts its own rows and syncs (pulling the shared rows).
        let (devices, openTiming) = try await timed { () async throws -> [Device] in
            var devices = [Device]()
            for index in 0..<options.devices {
                let namespace = namespaceName(index % options.namespaces)
                let store = try Bench.openQueueStore(folder.appendingPathComponent("device-\(index).sqlite").path)
                let engine = try SyncEngine(
                    database: store, transport: HTTPSyncTransport(baseURL: servers.baseURL(forDevice: index)),
                    token: try await authenticator.token(namespace: namespace, device: "device-\(index)"))
                devices.append(Device(index: index, namespace: namespace, store: store, engine: engine))
            }
            return devices
        }
        let (_, setupTiming) = try await timed {
            for device in devices.prefix(options.namespaces) {
                try await device.store.writer.write { db in
                    for row in 0..<options.sharedRows {
                        try db.execute(
                            sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: StatementArguments([sharedRow(row).databaseValue] + values(device: device.index, round: -1, row: row, shared: true)))
                    }
                }
                try await device.engine.sync()
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for device in devices {
                    group.addTask {
                        try await device.store.writer.write { db in
                            for (row, id) in device.ownRows.enumerated() {
                                try db.execute(
                                    sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)",
                                    arguments: StatementArguments([id.databaseValue] + values(device: device.index, round: -1, row: row, shared: false)))
                            }
                        }
                        try await device.engine.sync()
                    }
                }
                try await group.waitForAll()
            }
        }
        let memoryAfterSetup = Memory.now()

        // The measured rounds.
        let backendsBefore = try await servers.database?.backendCPU()
        let (results, runTiming) = await timed { await withTaskGroup(of: DeviceResult.self) { group in
            for device in devices {
                group.addTask { await rounds(device, options: options) }
            }
            var results = [DeviceResult]()
            for await result in group { results.append(result) }
            return results
        } }
        let runSeconds = runTiming.wall
        // PostgreSQL's own processes are not in the process's CPU time.
        var databaseCPU: Double?
        if let backendsBefore, let backendsAfter = try await servers.database?.backendCPU() {
            databaseCPU = PostgresDatabase.cpuSeconds(from: backendsBefore, to: backendsAfter)
        }
        let memoryAfterRounds = Memory.now()

        // Everyone syncs twice more: the first pass pushes anything a failed round left
        // behind, the second brings it to every device.
        var finalErrors = 0
        var finalFirstErrors = [String]()
        let (_, finalTiming) = await timed {
            for _ in 0..<2 {
                let failures = await withTaskGroup(of: String?.self) { group in
                    for device in devices {
                        group.addTask {
                            do {
                                try await device.engine.sync()
                                return nil
                            } catch {
                                return "\(error)"
                            }
                        }
                    }
                    var failures = [String]()
                    for await failure in group { if let failure { failures.append(failure) } }
                    return failures
                }
                finalErrors += failures.count
                finalFirstErrors += failures.prefix(3 - min(3, finalFirstErrors.count))
            }
        }

        let memoryAtEnd = Memory.now()
        // What is live: malloc keeps freed memory (its arenas) resident until trimmed.
        let memoryTrimmed = trimMalloc() ? Memory.now() : nil

        // Verification, per namespace: each device against the server's store, and the
        // server's rows against the last writes.
        let resultsByDevice = Dictionary(results.map { ($0.device, $0) }, uniquingKeysWith: { a, _ in a })
        var divergedDevices = 0
        var lostFields = 0
        var checkedFields = 0
        var lostDetails = [String]()
        var serverRecords = 0
        for namespaceIndex in 0..<options.namespaces {
            let namespace = namespaceName(namespaceIndex)
            let members = devices.filter { $0.namespace == namespace }
            let serverSnapshot = try await servers.store(namespace).snapshot()
            serverRecords += serverSnapshot.records.count
            // The SQLite store's table, or the materialized PostgreSQL table.
            let serverRows = try await servers.rows(namespace)
            for device in members {
                if try Bench.rowsByKey(device.store) != serverRows || device.store.snapshot() != serverSnapshot { divergedDevices += 1 }
            }
            // The expected value of each row: the write with the largest stamp.
            var expected = [String: Write]()
            for device in members {
                for (row, write) in resultsByDevice[device.index]?.lastWrites ?? [:] {
                    if let current = expected[row], current.stamp >= write.stamp { continue }
                    expected[row] = write
                }
            }
            let states = Dictionary(serverSnapshot.records.map { ("\($0.key)", $0.state) }, uniquingKeysWith: { a, _ in a })
            for (id, write) in expected.sorted(by: { $0.key < $1.key }) {
                checkedFields += write.values.count
                guard let row = serverRows[.text(id)] else {
                    lostFields += write.values.count
                    lostDetails.append("\(namespace) \(id): row missing; expected device \(write.device) round \(write.round) at \(write.stamp)")
                    continue
                }
                for (column, value) in zip(WorkloadW.columns, write.values.map(Value.init)) where row[column] != value {
                    lostFields += 1
                    if lostDetails.count < 8 {
                        let register = states[Value.text(id).description].flatMap { $0.fields[column] }.map { "\($0)" } ?? "none"
                        lostDetails.append("\(namespace) \(id).\(column) = \(row[column].map { "\($0)" } ?? "none"), expected \(value) (device \(write.device), round \(write.round), stamp \(write.stamp)); server register: \(register)")
                    }
                }
            }
        }
        // PostgreSQL: the database's size and its server processes, with every device still connected.
        var databaseBytes: Int?
        var backends: (connections: Int, pssMiB: Double?)?
        if let database = servers.database {
            databaseBytes = try await database.size()
            backends = try await database.backends()
        }
        await servers.stop()

        let latencies = results.flatMap(\.latencies).sorted()
        let totalRounds = latencies.count
        let errors = results.reduce(0) { $0 + $1.errors }
        let missingRows = results.reduce(0) { $0 + $1.missingRows }
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int((p * Double(latencies.count - 1)).rounded()))]
        }
        let mean = latencies.isEmpty ? Double.nan : latencies.reduce(0, +) / Double(latencies.count)
        let pushed = results.reduce(0) { $0 + $1.pushedRecords }, pulled = results.reduce(0) { $0 + $1.pulledRecords }
        let requests = results.reduce(0) { $0 + $1.requests }, retries = results.reduce(0) { $0 + $1.retries }

        var table = TextTable("concurrent devices, \(setup.description)")
        table.row("setup: open \(options.devices) stores + engines", openTiming.text)
        table.row("setup: shared rows, then every device's own rows + first sync", setupTiming.text)
        table.row("rounds completed", "\(grouped(totalRounds)) of \(grouped(options.devices * options.rounds)) (\(grouped(totalRounds * fieldsPerRound)) fields written)")
        table.row("time of the rounds", "\(runTiming.text); CPU per round \(format(runTiming.cpu / Double(max(1, totalRounds)) * 1000, 1)) ms")
        if let databaseCPU {
            table.row("    CPU of PostgreSQL's processes in the rounds", "\(format(databaseCPU)) s; per round \(format(databaseCPU / Double(max(1, totalRounds)) * 1000, 1)) ms")
        }
        table.row("rounds/s", "\(format(Double(totalRounds) / runSeconds, 1)) (\(rate(totalRounds * fieldsPerRound, runSeconds)) fields written and synced per second)")
        table.row("round latency (write + sync) p50 / p99 / max", "\(format(percentile(0.5) * 1000, 1)) / \(format(percentile(0.99) * 1000, 1)) / \(format((latencies.last ?? .nan) * 1000, 1)) ms (mean \(format(mean * 1000, 1)) ms)")
        table.row("requests / retries", "\(grouped(requests)) / \(retries)")
        table.row("records pushed / pulled in the rounds", "\(grouped(pushed)) / \(grouped(pulled)) (\(format(Double(pulled) / Double(max(1, totalRounds)), 1)) pulled per round)")
        table.row("errors in the rounds", "\(errors)\(results.flatMap(\.firstErrors).prefix(3).map { "\n      \($0)" }.joined())  (goal 0)")
        if missingRows > 0 { table.row("UPDATEs that found no row (setup problem)", "\(missingRows)") }
        table.row("final: every device syncs twice", "\(finalTiming.text), \(finalErrors) errors\(finalFirstErrors.map { "\n      \($0)" }.joined())")
        table.row("server records (all namespaces)", grouped(serverRecords))
        table.row("devices whose table or snapshot differs from the server's", "\(divergedDevices) of \(options.devices)")
        table.row("lost fields (last writes missing on the server)", "\(lostFields) of \(grouped(checkedFields)) checked  (goal 0)\(lostDetails.map { "\n      \($0)" }.joined())")
        var memoryFigures = Figures()
        if let memoryAtStart, let memoryServerStarted, let memoryAfterSetup, let memoryAfterRounds, let memoryAtEnd {
            let points = [memoryAtStart, memoryServerStarted, memoryAfterSetup, memoryAfterRounds, memoryAtEnd]
            func row(_ value: (Memory) -> Double) -> String { points.map { format(value($0), 0) }.joined(separator: " / ") + " MiB" }
            table.row("memory at: start / server up / devices set up / after rounds / after final syncs", "(server and all \(options.devices) devices: one process)")
            table.row("    resident set size (VmRSS)", row(\.rss))
            table.row("    of which SQLite's heap (all connections)", row(\.sqlite))
            if let memoryTrimmed {
                table.row("    RSS after final syncs, then malloc_trim(0)", "\(format(memoryTrimmed.rss, 0)) MiB (the rest was freed memory malloc kept)")
                memoryFigures.set("concurrency_rss_trimmed_mib", memoryTrimmed.rss)
            }
            table.row("peak RSS (VmHWM)", "\(format(memoryAtEnd.peak, 0)) MiB" + (earlier ? " (the process's, since it started)" : ""))
            memoryFigures.set("concurrency_sqlite_heap_after_rounds_mib", memoryAfterRounds.sqlite)
            memoryFigures.set("concurrency_rss_start_mib", memoryAtStart.rss)
            memoryFigures.set("concurrency_rss_server_up_mib", memoryServerStarted.rss)
            memoryFigures.set("concurrency_rss_after_setup_mib", memoryAfterSetup.rss)
            memoryFigures.set("concurrency_rss_after_rounds_mib", memoryAfterRounds.rss)
            memoryFigures.set("concurrency_rss_peak_mib", memoryAtEnd.peak)
        }
        if let databaseBytes {
            table.row("PostgreSQL: pg_database_size after the final syncs", "\(grouped(databaseBytes)) B (\(format(Double(databaseBytes) / 1_048_576, 1)) MiB)")
            memoryFigures.set("concurrency_database_bytes", databaseBytes)
        }
        if let backends {
            table.row("PostgreSQL: server processes of the database (connections), their PSS",
                      "\(backends.connections)" + (backends.pssMiB.map { ", \(format($0, 0)) MiB (shared buffers divided among them)" } ?? ", PSS unreadable"))
            memoryFigures.set("concurrency_database_connections", backends.connections)
            if let pss = backends.pssMiB { memoryFigures.set("concurrency_database_pss_mib", pss) }
        }
        table.print()

        figures.set("concurrency_instances", setup.instances)
        figures.set("concurrency_devices", options.devices)
        figures.set("concurrency_namespaces", options.namespaces)
        figures.set("concurrency_rounds", totalRounds)
        figures.set("concurrency_seconds", runSeconds)
        figures.set("concurrency_cpu_seconds", runTiming.cpu)
        if let databaseCPU { figures.set("concurrency_database_cpu_seconds", databaseCPU) }
        figures.set("concurrency_rounds_per_s", Double(totalRounds) / runSeconds)
        figures.set("concurrency_p50_ms", percentile(0.5) * 1000)
        figures.set("concurrency_p99_ms", percentile(0.99) * 1000)
        figures.set("concurrency_max_ms", (latencies.last ?? .nan) * 1000)
        figures.set("concurrency_errors", errors + finalErrors)
        figures.set("concurrency_retries", retries)
        figures.set("concurrency_pulled_per_round", Double(pulled) / Double(max(1, totalRounds)))
        figures.set("concurrency_diverged_devices", divergedDevices)
        figures.set("concurrency_lost_fields", lostFields)
        figures.append(memoryFigures)
        let summary = Summary(
            setup: setup, roundsPerSecond: Double(totalRounds) / runSeconds, p50: percentile(0.5), p99: percentile(0.99),
            errors: errors + finalErrors, lostFields: lostFields, divergedDevices: divergedDevices, rssAfterRounds: memoryAfterRounds?.rss,
            databaseBytes: databaseBytes, cpuPerRound: (runTiming.cpu + (databaseCPU ?? 0)) / Double(max(1, totalRounds)))
        return (figures.prefixed(key), summary)
    }

    /// One device's rounds, back to back.
    static func rounds(_ device: Device, options: Options) async -> DeviceResult {
        var result = DeviceResult(device: device.index)
        var rng = SeededGenerator(seed: 0x5EED_0000 &+ UInt64(device.index))
        let clock = ContinuousClock()
        for round in 0..<options.rounds {
            let first = rng.below(options.sharedRows)
            let second = (first + 1 + rng.below(options.sharedRows - 1)) % options.sharedRows
            let rows = device.ownRows.enumerated().map { (id: $0.element, values: values(device: device.index, round: round, row: $0.offset, shared: false)) }
                + [first, second].map { (id: sharedRow($0), values: values(device: device.index, round: round, row: $0, shared: true)) }
            let started = clock.now
            do {
                let store = device.store
                let updated = try await store.writer.write { db -> Int in
                    var updated = 0
                    for row in rows {
                        try db.execute(sql: update, arguments: StatementArguments(row.values + [row.id.databaseValue]))
                        updated += db.changesCount
                    }
                    return updated
                }
                // The stamp this transaction took: the clock ticked for it, and that tick is
                // the store's clock once the transaction committed (inside it, `clock` is still
                // the one before; nothing else writes this store before the sync below).
                let stamp = Stamp(hlc: store.clock, replica: store.replicaID)
                result.missingRows += rows.count - updated
                for row in rows { result.lastWrites[row.id] = Write(stamp: stamp, values: row.values, device: device.index, round: round) }
                let report = try await device.engine.sync()
                result.latencies.append((clock.now - started).seconds)
                result.retries += report.retries
                result.pushedRecords += report.pushedRecords
                result.pulledRecords += report.pulledRecords
                result.requests += report.requests
            } catch {
                result.failed(error)
            }
        }
        return result
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
