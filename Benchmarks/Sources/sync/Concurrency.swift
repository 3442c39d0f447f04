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

    static func run(_ options: Options) async throws -> Figures {
        var figures = try await measure(options)
        // Everything is released now: what stays resident is malloc's retained free memory
        // (given back by malloc_trim) or something still referenced.
        try? await Task.sleep(for: .seconds(1))
        let released = Memory.now()
        let trimmed = trimMalloc() ? Memory.now() : nil
        if let released {
            print("memory after releasing the devices and the server: RSS \(format(released.rss, 0)) MiB, SQLite heap \(format(released.sqlite, 0)) MiB"
                  + (trimmed.map { "; after malloc_trim(0): RSS \(format($0.rss, 0)) MiB" } ?? ""))
            figures.set("concurrency_rss_released_mib", released.rss)
        }
        if let trimmed { figures.set("concurrency_rss_released_trimmed_mib", trimmed.rss) }
        return figures
    }

    static func measure(_ options: Options) async throws -> Figures {
        var figures = Figures()
        let folder = try Bench.temporaryFolder("concurrency")
        defer { try? FileManager.default.removeItem(at: folder) }
        if options.runFirstSync {
            print("\n(benchmark 1 ran in this process before: for memory figures, run with --only concurrency)")
        }
        // Start from what is live (malloc keeps what benchmark 1 freed, if it ran).
        _ = trimMalloc()
        let memoryAtStart = Memory.now()
        let server = try await Bench.startServer(in: folder.appendingPathComponent("server"), secret: Bench.secret())
        let memoryServerStarted = Memory.now()
        let authenticator = server.service.authenticator

        print("""

            BENCHMARK 2 — \(options.devices) concurrent devices × \(options.rounds) rounds × \(fieldsPerRound) fields over loopback HTTP
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
                    database: store, transport: HTTPSyncTransport(baseURL: server.baseURL),
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
        let (results, runTiming) = await timed { await withTaskGroup(of: DeviceResult.self) { group in
            for device in devices {
                group.addTask { await rounds(device, options: options) }
            }
            var results = [DeviceResult]()
            for await result in group { results.append(result) }
            return results
        } }
        let runSeconds = runTiming.wall
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
            let store = try await server.service.storage.store(for: namespace)
            let serverSnapshot = try await store.snapshot()
            serverRecords += serverSnapshot.records.count
            guard let serverStore = (store as? SQLiteNamespaceStore)?.database else {
                throw BenchmarkError("the server's namespace store is not the SQLite one")
            }
            let serverRows = try Bench.rows(serverStore)
            for device in members {
                if try Bench.rows(device.store) != serverRows || device.store.snapshot() != serverSnapshot { divergedDevices += 1 }
            }
            // The expected value of each row: the write with the largest stamp.
            var expected = [String: Write]()
            for device in members {
                for (row, write) in resultsByDevice[device.index]?.lastWrites ?? [:] {
                    if let current = expected[row], current.stamp >= write.stamp { continue }
                    expected[row] = write
                }
            }
            let byID = Dictionary(serverRows.map { (String.fromDatabaseValue($0["id"] as DatabaseValue) ?? "", $0) }, uniquingKeysWith: { a, _ in a })
            let states = Dictionary(serverSnapshot.records.map { ("\($0.key)", $0.state) }, uniquingKeysWith: { a, _ in a })
            for (id, write) in expected.sorted(by: { $0.key < $1.key }) {
                checkedFields += write.values.count
                guard let row = byID[id] else {
                    lostFields += write.values.count
                    lostDetails.append("\(namespace) \(id): row missing; expected device \(write.device) round \(write.round) at \(write.stamp)")
                    continue
                }
                for (column, value) in zip(WorkloadW.columns, write.values) where (row[column] as DatabaseValue) != value {
                    lostFields += 1
                    if lostDetails.count < 8 {
                        let register = states[Value.text(id).description].flatMap { $0.fields[column] }.map { "\($0)" } ?? "none"
                        lostDetails.append("\(namespace) \(id).\(column) = \(row[column] as DatabaseValue), expected \(value) (device \(write.device), round \(write.round), stamp \(write.stamp)); server register: \(register)")
                    }
                }
            }
        }
        await server.stop()

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

        var table = TextTable("concurrent devices")
        table.row("setup: open \(options.devices) stores + engines", openTiming.text)
        table.row("setup: shared rows, then every device's own rows + first sync", setupTiming.text)
        table.row("rounds completed", "\(grouped(totalRounds)) of \(grouped(options.devices * options.rounds)) (\(grouped(totalRounds * fieldsPerRound)) fields written)")
        table.row("time of the rounds", "\(runTiming.text); CPU per round \(format(runTiming.cpu / Double(max(1, totalRounds)) * 1000, 1)) ms")
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
            table.row("peak RSS (VmHWM)", "\(format(memoryAtEnd.peak, 0)) MiB")
            memoryFigures.set("concurrency_sqlite_heap_after_rounds_mib", memoryAfterRounds.sqlite)
            memoryFigures.set("concurrency_rss_start_mib", memoryAtStart.rss)
            memoryFigures.set("concurrency_rss_server_up_mib", memoryServerStarted.rss)
            memoryFigures.set("concurrency_rss_after_setup_mib", memoryAfterSetup.rss)
            memoryFigures.set("concurrency_rss_after_rounds_mib", memoryAfterRounds.rss)
            memoryFigures.set("concurrency_rss_peak_mib", memoryAtEnd.peak)
        }
        table.print()

        figures.set("concurrency_devices", options.devices)
        figures.set("concurrency_namespaces", options.namespaces)
        figures.set("concurrency_rounds", totalRounds)
        figures.set("concurrency_seconds", runSeconds)
        figures.set("concurrency_cpu_seconds", runTiming.cpu)
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
        return figures
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
                let (stamp, updated) = try await store.writer.write { db -> (Stamp, Int) in
                    var updated = 0
                    for row in rows {
                        try db.execute(sql: update, arguments: StatementArguments(row.values + [row.id.databaseValue]))
                        updated += db.changesCount
                    }
                    // The stamp this transaction took (the clock ticked for it).
                    return (Stamp(hlc: store.clock, replica: store.replicaID), updated)
                }
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
