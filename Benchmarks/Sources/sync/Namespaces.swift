import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import WorkloadW

/// Benchmark 3 (issue #17): many small namespaces, one device each, pushing a few records
/// of workload W through a real server on loopback HTTP. Does the server's memory and its
/// storage grow with the data only, with nothing left behind per namespace (no file,
/// connection or cache)?
///
/// Each namespace's device is an in-memory store, dropped after its sync; a few workers
/// push namespaces concurrently. At checkpoints (a tenth, a quarter, half, three quarters,
/// all) the pushes pause and the process's RSS (before and after `malloc_trim(0)`) and the
/// storage's size are taken.
enum NamespacesBenchmark {
    static let workers = 8

    static func namespaceName(_ index: Int) -> String { "ns-\(index)" }

    static func run(_ options: Options) async throws -> Figures {
        var figures = Figures()
        for kind in options.storages {
            let count = kind == .sqlite ? min(options.sqliteNamespaceCount, options.namespaceCount) : options.namespaceCount
            figures.append(try await measure(kind == .sqlite ? .sqlite : .postgres(1), count: count, options: options))
        }
        return figures
    }

    /// One checkpoint's figures.
    struct Checkpoint: Sendable {
        var namespaces: Int
        var seconds: Double
        var rss: Double?
        var rssTrimmed: Double?
        var sqliteHeap: Double?
        var storageBytes: Int
        var connections: Int?
        var databasePSS: Double?
    }

    static func measure(_ setup: ServerSetup, count: Int, options: Options) async throws -> Figures {
        let folder = try Bench.temporaryFolder("namespaces")
        defer { try? FileManager.default.removeItem(at: folder) }
        let records = options.recordsPerNamespace
        print("""

            BENCHMARK 3 — \(setup.description): \(grouped(count)) namespaces × \(records) records of workload W (5 fields each), \
            one device each (an in-memory store, dropped after its sync), \(workers) pushing at once over loopback HTTP
            """)
        if setup.storage == .sqlite && count < options.namespaceCount {
            print("(SQLite: \(grouped(count)) of \(grouped(options.namespaceCount)) namespaces: the server makes a file per namespace, which is far slower; --sqlite-namespace-count N)")
        }
        _ = trimMalloc()
        let start = Memory.now()
        let dataDirectory = folder.appendingPathComponent("server")
        let servers = try await BenchServers.start(setup, in: dataDirectory, secret: Bench.secret(), postgresConnections: options.postgresConnections)
        let checkpoint = { @Sendable (namespaces: Int, seconds: Double) async throws -> Checkpoint in
            let rss = Memory.now()
            let trimmed = trimMalloc() ? Memory.now() : nil
            var point = Checkpoint(namespaces: namespaces, seconds: seconds, rss: rss?.rss, rssTrimmed: trimmed?.rss, sqliteHeap: trimmed?.sqlite ?? rss?.sqlite, storageBytes: 0)
            if let database = servers.database {
                point.storageBytes = try await database.size()
                let backends = try await database.backends()
                point.connections = backends.connections
                point.databasePSS = backends.pssMiB
            } else {
                point.storageBytes = Self.folderBytes(dataDirectory)
            }
            return point
        }
        var points = [try await checkpoint(0, 0)]
        let transports = (0..<workers).map { index in HTTPSyncTransport(baseURL: servers.baseURL(forDevice: index)) }
        let authenticator = servers.authenticator
        var errors = 0
        var firstErrors = [String]()
        var requests = 0
        let clock = ContinuousClock()
        let began = clock.now
        var cpu = processCPUSeconds()
        var pushed = 0
        for target in Set([count / 10, count / 4, count / 2, count * 3 / 4, count]).filter({ $0 > 0 }).sorted() {
            // Namespace `index` goes to worker `index % workers`, one after the other.
            let (from, to) = (pushed, target)
            let outcomes = await withTaskGroup(of: (errors: [String], requests: Int).self) { group in
                for worker in 0..<workers {
                    group.addTask {
                        var errors = [String]()
                        var requests = 0
                        for index in stride(from: from + worker, to: to, by: workers) {
                            do {
                                requests += try await push(namespace: index, records: records, transport: transports[worker], authenticator: authenticator)
                            } catch {
                                errors.append("\(namespaceName(index)): \(error)")
                            }
                        }
                        return (errors, requests)
                    }
                }
                var outcomes = [(errors: [String], requests: Int)]()
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            for outcome in outcomes {
                errors += outcome.errors.count
                firstErrors += outcome.errors.prefix(3 - min(3, firstErrors.count))
                requests += outcome.requests
            }
            pushed = target
            points.append(try await checkpoint(target, (clock.now - began).seconds))
        }
        cpu = processCPUSeconds() - cpu

        // Check a sample: every record of the namespace is on the server, as the device wrote it.
        var sampled = 0
        var wrong = [String]()
        for index in Set([0, count / 3, count / 2, count - 1] + (0..<16).map { $0 * max(1, count / 16) }).filter({ $0 < count }).sorted() {
            let expected = Self.rows(of: WorkloadW(rows: records, seed: UInt64(index)))
            let rows = try await servers.rows(namespaceName(index))
            let snapshot = try await servers.store(namespaceName(index)).snapshot()
            sampled += 1
            if rows != expected || snapshot.records.count != records { wrong.append(namespaceName(index)) }
        }
        // PostgreSQL: where the bytes are, per table (with its indexes and TOAST).
        let tableSizes = try await servers.database?.tableSizes() ?? []
        await servers.stop()

        var table = TextTable("\(grouped(count)) namespaces × \(records) records, \(setup.description)")
        let total = points.last!.seconds
        table.row("time to push them all", "\(format(total)) s (CPU \(format(cpu)) s) = \(format(Double(count) / total, 0)) namespaces/s, \(requests) requests")
        table.row("errors", "\(errors)\(firstErrors.map { "\n      \($0)" }.joined())  (goal 0)")
        table.row("sampled namespaces whose rows or records differ from the device's", "\(wrong.count) of \(sampled)\(wrong.isEmpty ? "" : ": " + wrong.prefix(5).joined(separator: ", "))")
        table.row("RSS at start (no server)", start.map { "\(format($0.rss, 0)) MiB" } ?? "?")
        let storageName = setup.storage == .sqlite ? "files in the data folder" : "pg_database_size"
        table.row("at N namespaces: RSS / after malloc_trim / SQLite heap; \(storageName)",
                  setup.storage == .postgres ? "(and the database's connections, their PSS)" : "")
        for point in points {
            var text = "\(point.rss.map { format($0, 0) } ?? "?") / \(point.rssTrimmed.map { format($0, 0) } ?? "?") / \(point.sqliteHeap.map { format($0, 1) } ?? "?") MiB; "
                + "\(grouped(point.storageBytes)) B"
            if let connections = point.connections {
                text += "; \(connections) connections" + (point.databasePSS.map { ", PSS \(format($0, 0)) MiB" } ?? "")
            }
            table.row("    \(grouped(point.namespaces))" + (point.namespaces > 0 ? " (after \(format(point.seconds, 1)) s)" : " (server up)"), text)
        }
        let first = points[0], last = points.last!
        let bytesPerNamespace = Double(last.storageBytes - first.storageBytes) / Double(count)
        let fieldsPerNamespace = records * 5
        table.row("storage per namespace" + (tableSizes.isEmpty ? "" : "; per table (with its indexes), largest first"), "\(format(bytesPerNamespace, 0)) B (\(format(bytesPerNamespace / Double(fieldsPerNamespace), 1)) B per field of \(fieldsPerNamespace))")
        // Memory per namespace over the second half (after trimming: what is live, not what
        // malloc kept); the first checkpoints include warming up (threads, pools, caches).
        var memoryPerNamespace: Double?
        if let from = points.first(where: { $0.namespaces == count / 2 }), from.namespaces < last.namespaces,
            let a = from.rssTrimmed ?? from.rss, let b = last.rssTrimmed ?? last.rss {
            memoryPerNamespace = (b - a) * 1_048_576 / Double(last.namespaces - from.namespaces)
            table.row("RSS growth per namespace from \(grouped(from.namespaces)) to \(grouped(last.namespaces)) (trimmed)", "\(format(memoryPerNamespace!, 0)) B")
        }
        for (name, bytes) in tableSizes {
            table.row("    \(name)", "\(grouped(bytes)) B = \(format(Double(bytes) / Double(count), 0)) B per namespace")
        }
        table.print()

        var figures = Figures()
        let key = "\(setup.storage == .sqlite ? "sqlite" : "pg")_namespaces"
        figures.set("\(key)_count", count)
        figures.set("\(key)_records_each", records)
        figures.set("\(key)_seconds", total)
        figures.set("\(key)_per_s", Double(count) / total)
        figures.set("\(key)_errors", errors)
        figures.set("\(key)_wrong_sampled", wrong.count)
        figures.set("\(key)_storage_bytes_before", first.storageBytes)
        figures.set("\(key)_storage_bytes_after", last.storageBytes)
        figures.set("\(key)_bytes_per_namespace", bytesPerNamespace)
        for point in points.dropFirst() {
            if let rss = point.rssTrimmed ?? point.rss { figures.set("\(key)_rss_trimmed_mib_at_\(point.namespaces)", rss) }
        }
        if let rss = first.rssTrimmed ?? first.rss { figures.set("\(key)_rss_trimmed_mib_server_up", rss) }
        if let memoryPerNamespace { figures.set("\(key)_rss_growth_bytes_per_namespace", memoryPerNamespace) }
        if let connections = last.connections { figures.set("\(key)_database_connections", connections) }
        return figures
    }

    /// One namespace's device: an in-memory store that writes `records` rows of workload W
    /// (seeded by the namespace's number) in one transaction and syncs. Returns its requests.
    static func push(namespace index: Int, records: Int, transport: HTTPSyncTransport, authenticator: Authenticator) async throws -> Int {
        let queue = try DatabaseQueue()
        try await queue.write { db in try db.execute(sql: WorkloadW.createTable) }
        let store = try ReplicatedDatabase(queue)
        try store.replicate(table: WorkloadW.table)
        let workload = WorkloadW(rows: records, seed: UInt64(index))
        try await queue.write { db in
            for item in workload.items {
                try db.execute(
                    sql: "INSERT INTO items(id, name, qty, price, note, updated) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [item.id, item.name, item.qty, item.price, item.note, item.updated])
            }
        }
        let engine = try SyncEngine(
            database: store, transport: transport,
            token: try await authenticator.token(namespace: namespaceName(index), device: "device-\(index)"))
        return try await engine.sync().requests
    }

    /// Workload W's rows as the server shows them.
    static func rows(of workload: WorkloadW) -> [Value: [String: Value]] {
        var result = [Value: [String: Value]]()
        for item in workload.items {
            result[.text(item.id)] = ["name": .text(item.name), "qty": .integer(item.qty), "price": .real(item.price), "note": .text(item.note), "updated": .integer(item.updated)]
        }
        return result
    }

    /// The bytes of every file under `folder`.
    static func folderBytes(_ folder: URL) -> Int {
        guard let files = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
        var total = 0
        for case let file as URL in files { total += (try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0 }
        return total
    }
}
