import ConvergeServer
import ConvergeSQLite
import Foundation
import GRDB
import GRDBSQLite
import Logging
import WorkloadW

/// Command-line options (`--name value`).
struct Options: Sendable {
    /// Benchmark 1: rows of workload W (5 fields each).
    var rows = 100_000
    /// Benchmark 2.
    var devices = 200
    var rounds = 50
    /// Devices are spread over this many namespaces (one server store each). With one, every
    /// device pulls every other's writes each round, which is quadratic: 200 devices × 50
    /// rounds then take about 5 minutes on 2 cores instead of under 2.
    var namespaces = 4
    /// Rows every device of a namespace may write (besides its own two).
    var sharedRows = 100
    var runFirstSync = true
    var runConcurrency = true
    /// Benchmark 3 (only with `--only namespaces`): many small namespaces.
    var runNamespaces = false
    /// The servers the benchmarks run against: the embedded SQLite storage (the default),
    /// PostgreSQL, or both in one run (issue #17).
    var storage = StorageChoice.sqlite
    /// PostgreSQL server instances on one database (benchmark 2; with `all`, besides one
    /// instance; default 1 with `postgres`, 3 with `all`).
    var servers: Int?
    /// Each PostgreSQL instance's pool (`PostgresStorage`'s `maximumConnections`).
    var postgresConnections = 16
    /// Benchmark 3: namespaces pushed into PostgreSQL, into the SQLite server (one file
    /// each, much slower to create), and records per namespace.
    var namespaceCount = 10_000
    var sqliteNamespaceCount = 2_000
    var recordsPerNamespace = 10
    /// Benchmark 1: runs with the engine's default batches, and with 100-record pushes.
    var defaultBatches = true
    var smallBatches = true
    /// Benchmark 1: the in-process steps of a sync, timed one by one.
    var breakdown = true

    static let usage = """
        usage: sync [--rows N] [--devices N] [--rounds N] [--namespaces N] [--shared-rows N]
                    [--only first|concurrency|namespaces] [--batches default|small|both] [--no-breakdown]
                    [--storage sqlite|postgres|all] [--servers N] [--pg-connections N]
                    [--namespace-count N] [--sqlite-namespace-count N] [--records-per-namespace N]
        PostgreSQL (--storage postgres|all) needs CONVERGE_POSTGRES_URL: each configuration runs
        on a database of its own, created in that cluster and dropped afterwards.
        """

    enum StorageChoice: String, Sendable {
        case sqlite, postgres, all
    }

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var index = 1
        func value(_ name: String) -> Int {
            index += 1
            guard index < arguments.count, let number = Int(arguments[index]), number > 0 else {
                fail("\(name) needs a positive integer")
            }
            return number
        }
        while index < arguments.count {
            switch arguments[index] {
            case "--rows": options.rows = value("--rows")
            case "--devices": options.devices = value("--devices")
            case "--rounds": options.rounds = value("--rounds")
            case "--namespaces": options.namespaces = value("--namespaces")
            case "--shared-rows": options.sharedRows = max(2, value("--shared-rows"))
            case "--batches":
                index += 1
                switch index < arguments.count ? arguments[index] : "" {
                case "default": options.smallBatches = false
                case "small": options.defaultBatches = false
                case "both": break
                default: fail("--batches takes default, small or both")
                }
            case "--no-breakdown": options.breakdown = false
            case "--only":
                index += 1
                switch index < arguments.count ? arguments[index] : "" {
                case "first": options.runConcurrency = false
                case "concurrency": options.runFirstSync = false
                case "namespaces":
                    options.runFirstSync = false
                    options.runConcurrency = false
                    options.runNamespaces = true
                default: fail("--only takes first, concurrency or namespaces")
                }
            case "--storage":
                index += 1
                guard index < arguments.count, let choice = StorageChoice(rawValue: arguments[index]) else {
                    fail("--storage takes sqlite, postgres or all")
                }
                options.storage = choice
            case "--servers": options.servers = value("--servers")
            case "--pg-connections": options.postgresConnections = max(2, value("--pg-connections"))
            case "--namespace-count": options.namespaceCount = value("--namespace-count")
            case "--sqlite-namespace-count": options.sqliteNamespaceCount = value("--sqlite-namespace-count")
            case "--records-per-namespace": options.recordsPerNamespace = value("--records-per-namespace")
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument \(arguments[index])")
            }
            index += 1
        }
        options.namespaces = min(options.namespaces, options.devices)
        if options.servers != nil && options.storage == .sqlite { fail("--servers needs --storage postgres or all") }
        return options
    }

    /// The storages asked for, without PostgreSQL when `CONVERGE_POSTGRES_URL` is not set
    /// (the reason printed once).
    var storages: [StorageKind] {
        switch storage {
        case .sqlite: return [.sqlite]
        case .postgres: return Self.postgresAvailable ? [.postgres] : [.sqlite]
        case .all: return Self.postgresAvailable ? [.sqlite, .postgres] : [.sqlite]
        }
    }

    /// Benchmark 2's configurations: with `all`, SQLite, PostgreSQL with one instance and
    /// with `--servers` (default 3) instances.
    var concurrencySetups: [ServerSetup] {
        switch storage {
        case .sqlite: return [.sqlite]
        case .postgres: return Self.postgresAvailable ? [.postgres(servers ?? 1)] : [.sqlite]
        case .all:
            guard Self.postgresAvailable else { return [.sqlite] }
            let several = servers ?? 3
            return [.sqlite, .postgres(1)] + (several > 1 ? [.postgres(several)] : [])
        }
    }

    /// Whether PostgreSQL can be used; the first time it cannot, says why.
    static let postgresAvailable: Bool = {
        if PostgresDatabase.adminURL != nil { return true }
        print("""

            NOTE: CONVERGE_POSTGRES_URL is not set, so the PostgreSQL configurations are skipped and only \
            SQLite runs. To run them: `source .ci/postgres start` (starts a throwaway cluster on loopback and \
            exports the variable), or point it at a cluster where this user may CREATE DATABASE.
            """)
        return false
    }()

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("sync: \(message)\n\(usage)\n".utf8))
        exit(2)
    }
}

/// The figures of the final JSON line, in the order they were added.
struct Figures: Sendable {
    enum Value: Sendable {
        case number(Double), integer(Int), bool(Bool)

        var json: String {
            switch self {
            case .number(let value):
                guard value.isFinite else { return "null" }
                return value.magnitude >= 1_000 ? String(Int(value.rounded())) : String(format: "%.4g", value)
            case .integer(let value): return String(value)
            case .bool(let value): return value ? "true" : "false"
            }
        }
    }

    private(set) var entries: [(String, Value)] = []

    mutating func set(_ key: String, _ value: Double) { entries.append((key, .number(value))) }
    mutating func set(_ key: String, _ value: Int) { entries.append((key, .integer(value))) }
    mutating func set(_ key: String, _ value: Bool) { entries.append((key, .bool(value))) }
    mutating func append(_ other: Figures) { entries += other.entries }
    /// The last integer figure set under `key`, if any.
    func integer(_ key: String) -> Int? {
        for (name, value) in entries.reversed() where name == key { if case .integer(let number) = value { return number } }
        return nil
    }

    /// The same figures with `prefix` before every key.
    func prefixed(_ prefix: String) -> Figures {
        var result = self
        result.entries = entries.map { (prefix + $0.0, $0.1) }
        return result
    }

    var json: String { "{" + entries.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ") + "}" }
}

/// A two-column table printed with aligned columns.
struct TextTable {
    let title: String
    private var rows: [(String, String)] = []

    init(_ title: String) { self.title = title }

    mutating func row(_ label: String, _ value: String) { rows.append((label, value)) }

    func print() {
        let width = rows.map(\.0.count).max() ?? 0
        Swift.print("\n" + title)
        Swift.print(String(repeating: "-", count: max(title.count, width + 24)))
        for (label, value) in rows {
            Swift.print(label.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// Wall-clock time and the process's CPU time (every thread: the server's and the devices'
/// when both run here). The machine may be shared: CPU time is the steadier figure.
struct Timing: Sendable {
    var wall: Double
    var cpu: Double

    var text: String { "\(format(wall)) s (CPU \(format(cpu)) s)" }
}

func timed<T>(_ body: () throws -> T) rethrows -> (T, Timing) {
    let start = ContinuousClock.now, cpu = processCPUSeconds()
    let result = try body()
    return (result, Timing(wall: (ContinuousClock.now - start).seconds, cpu: processCPUSeconds() - cpu))
}

func timed<T>(isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T) async rethrows -> (T, Timing) {
    let start = ContinuousClock.now, cpu = processCPUSeconds()
    let result = try await body()
    return (result, Timing(wall: (ContinuousClock.now - start).seconds, cpu: processCPUSeconds() - cpu))
}

/// CPU time of the whole process (user + system, every thread), in seconds.
func processCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

/// 1234567 → "1,234,567".
func grouped(_ value: Int) -> String {
    let text = String(value.magnitude)
    var result = ""
    for (index, character) in text.enumerated() {
        if index > 0 && (text.count - index) % 3 == 0 { result.append(",") }
        result.append(character)
    }
    return (value < 0 ? "-" : "") + result
}

func rate(_ count: Int, _ seconds: Double) -> String { grouped(Int((Double(count) / seconds).rounded())) }

/// The process's memory in MiB: resident set size and its peak (`VmRSS`, `VmHWM` of
/// /proc/self/status; nil where there is no /proc), and SQLite's heap (every connection's
/// page cache and statements).
struct Memory: Sendable {
    var rss: Double
    var peak: Double
    var sqlite: Double

    static func now() -> Memory? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        func mebibytes(_ key: String) -> Double? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
            return line.split(separator: " ").dropFirst().first.flatMap { Double($0) }.map { $0 / 1024 }
        }
        guard let rss = mebibytes("VmRSS"), let peak = mebibytes("VmHWM") else { return nil }
        return Memory(rss: rss, peak: peak, sqlite: Double(sqlite3_memory_used()) / 1_048_576)
    }
}

/// glibc's `malloc_trim(0)`: gives the heap's free memory back to the system. False where
/// there is no such function.
func trimMalloc() -> Bool {
    #if os(Linux)
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return false }
    typealias Trim = @convention(c) (Int) -> Int32
    _ = unsafeBitCast(symbol, to: Trim.self)(0)
    return true
    #else
    return false
    #endif
}

enum Bench {
    static func temporaryFolder(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("converge-sync-bench-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A 32-byte-plus HS256 secret of this run.
    static func secret() -> String { "sync-benchmark-secret-\(UUID().uuidString)" }

    static func serverSchema() -> ServerSchema {
        ServerSchema(tables: [.init(name: WorkloadW.table, create: WorkloadW.createTable)])
    }

    static func quietLogger() -> Logger {
        var logger = Logger(label: "converge-sync-benchmark")
        logger.logLevel = .warning
        return logger
    }

    /// A device store as an app opens it: a GRDB `DatabasePool` (WAL) with GRDB's default
    /// configuration (as the server opens its namespaces), workload W's table replicated.
    static func openPoolStore(_ path: String) throws -> ReplicatedDatabase {
        let pool = try DatabasePool(path: path)
        try pool.write { db in try db.execute(sql: WorkloadW.createTable) }
        let store = try ReplicatedDatabase(pool)
        try store.replicate(table: WorkloadW.table)
        return store
    }

    /// The same with a `DatabaseQueue` in GRDB's WAL mode (one connection: lighter for
    /// many devices; GRDB sets synchronous=NORMAL with WAL, as for pools).
    static func openQueueStore(_ path: String) throws -> ReplicatedDatabase {
        var configuration = Configuration()
        configuration.journalMode = .wal
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.write { db in try db.execute(sql: WorkloadW.createTable) }
        let store = try ReplicatedDatabase(queue)
        try store.replicate(table: WorkloadW.table)
        return store
    }

    /// Every row of the app table, by key.
    static func rows(_ store: ReplicatedDatabase) throws -> [Row] {
        try store.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM items ORDER BY id") }
    }

    /// A pragma as the writer connection has it.
    static func pragma(_ store: ReplicatedDatabase, _ name: String) -> String {
        (try? store.writer.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }).flatMap { $0 } ?? "?"
    }

    /// `synchronous` by name.
    static func synchronous(_ store: ReplicatedDatabase) -> String {
        let value = pragma(store, "synchronous")
        return ["0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"][value].map { "\($0)" } ?? value
    }
}
