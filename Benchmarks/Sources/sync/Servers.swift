import ConvergeCore
import ConvergePostgres
import ConvergeServer
import ConvergeSQLite
import Foundation
import GRDB
import Logging
import PostgresNIO
import WorkloadW

/// Where a benchmark's server keeps its namespaces.
enum StorageKind: String, Sendable {
    case sqlite, postgres
}

/// One server configuration a benchmark runs against: the embedded SQLite storage, or
/// PostgreSQL served by `instances` server instances (each its own `PostgresStorage` and
/// pool, sharing one database, as separate processes would).
struct ServerSetup: Sendable, CustomStringConvertible {
    var storage: StorageKind
    var instances = 1

    static let sqlite = ServerSetup(storage: .sqlite)
    static func postgres(_ instances: Int) -> ServerSetup { ServerSetup(storage: .postgres, instances: instances) }

    /// The prefix of its JSON keys: "" for SQLite (the keys as before), "pg1_", "pg3_", ….
    var key: String { storage == .sqlite ? "" : "pg\(instances)_" }

    var description: String {
        storage == .sqlite ? "SQLite server" : "PostgreSQL, \(instances) server instance\(instances == 1 ? "" : "s")"
    }
}

/// The server instances of one configuration, on loopback in this process; for PostgreSQL
/// on a database of their own, created from `CONVERGE_POSTGRES_URL` and dropped by ``stop()``.
final class BenchServers: Sendable {
    let setup: ServerSetup
    let instances: [RunningServer]
    let storages: [PostgresStorage]
    /// The benchmark's database (PostgreSQL only).
    let database: PostgresDatabase?

    private init(setup: ServerSetup, instances: [RunningServer], storages: [PostgresStorage], database: PostgresDatabase?) {
        self.setup = setup
        self.instances = instances
        self.storages = storages
        self.database = database
    }

    /// Every instance shares the JWT secret: a token works on any of them.
    var authenticator: Authenticator { instances[0].service.authenticator }

    /// The instance device number `index` talks to: devices are spread round-robin.
    func baseURL(forDevice index: Int) -> URL { instances[index % instances.count].baseURL }

    /// Starts the instances. SQLite keeps its namespaces in `folder`; PostgreSQL gets a
    /// fresh database (`folder` is then only the unused data directory of the configuration).
    static func start(_ setup: ServerSetup, in folder: URL, secret: String, postgresConnections: Int) async throws -> BenchServers {
        let configuration = ServerConfiguration(dataDirectory: folder, jwtSecret: secret, schema: Bench.serverSchema())
        switch setup.storage {
        case .sqlite:
            let service = try await SyncService(configuration: configuration)
            return BenchServers(
                setup: setup, instances: [try await RunningServer.start(service: service, port: 0, logger: Bench.quietLogger())], storages: [], database: nil)
        case .postgres:
            let database = try await PostgresDatabase.create()
            var storages = [PostgresStorage]()
            var instances = [RunningServer]()
            do {
                for _ in 0..<setup.instances {
                    let storage = try await PostgresStorage(
                        url: database.url, schema: configuration.schema, store: configuration.store, maximumConnections: postgresConnections,
                        maxNamespaces: configuration.maxNamespaces, logger: Bench.quietLogger())
                    storages.append(storage)
                    let service = try await SyncService(configuration: configuration, storage: storage)
                    instances.append(try await RunningServer.start(service: service, port: 0, logger: Bench.quietLogger()))
                }
            } catch {
                for instance in instances { await instance.stop() }
                for storage in storages { await storage.shutdown() }
                await database.drop()
                throw error
            }
            return BenchServers(setup: setup, instances: instances, storages: storages, database: database)
        }
    }

    /// Stops every instance, closes the pools and drops the database.
    func stop() async {
        for instance in instances { await instance.stop() }
        for storage in storages { await storage.shutdown() }
        await database?.drop()
    }

    /// The namespace's store, through the first instance.
    func store(_ namespace: String) async throws -> any NamespaceStore {
        try await instances[0].service.storage.store(for: namespace)
    }

    /// The app table's rows as the server shows them: the SQLite store's table, or the
    /// materialized PostgreSQL table (what a backend service reading it with SQL sees).
    func rows(_ namespace: String) async throws -> [Value: [String: Value]] {
        let store = try await store(namespace)
        if let store = store as? SQLiteNamespaceStore { return try Bench.rowsByKey(store.database) }
        if let store = store as? PostgresNamespaceStore { return try await store.materializedRows(of: WorkloadW.table) }
        throw BenchmarkError("unknown namespace store \(type(of: store))")
    }
}

/// A database of its own for one configuration, in the cluster of `CONVERGE_POSTGRES_URL`.
struct PostgresDatabase: Sendable {
    let name: String
    let url: String

    /// `CONVERGE_POSTGRES_URL`, or nil (with the reason printed by the caller).
    static var adminURL: String? {
        ProcessInfo.processInfo.environment["CONVERGE_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func create() async throws -> PostgresDatabase {
        guard let admin = adminURL else { throw BenchmarkError("CONVERGE_POSTGRES_URL is not set") }
        let name = "converge_bench_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        try await Self.admin { client in _ = try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)")) }
        if ProcessInfo.processInfo.environment["BENCH_LOG_DURATIONS"] != nil {
            try await Self.admin { client in _ = try await client.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(name) SET log_min_duration_statement = 0")) }
        }
        guard var components = URLComponents(string: admin) else { throw BenchmarkError("CONVERGE_POSTGRES_URL is not a URL") }
        components.path = "/\(name)"
        return PostgresDatabase(name: name, url: components.string!)
    }

    func drop() async {
        let name = name
        do {
            try await Self.admin { client in _ = try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) }
        } catch {
            FileHandle.standardError.write(Data("sync: could not drop database \(name): \(error)\n".utf8))
        }
    }

    /// `pg_database_size`: every table, index and TOAST file of the database, in bytes.
    func size() async throws -> Int {
        let name = name
        return try await Self.admin { client in
            for try await size in try await client.query("SELECT pg_database_size(\(name)::name)::int8").decode(Int64.self) { return Int(size) }
            return 0
        }
    }

    /// The size of each table of the database with its indexes and TOAST
    /// (`pg_total_relation_size`), largest first; tables under 64 KiB are left out.
    func tableSizes() async throws -> [(String, Int)] {
        try await Self.client(url) { client in
            var sizes = [(String, Int)]()
            let rows = try await client.query(
                """
                SELECT c.relname::text, pg_total_relation_size(c.oid)::int8 FROM pg_class c
                WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND pg_total_relation_size(c.oid) >= 65536
                ORDER BY 2 DESC
                """)
            for try await (name, size) in rows.decode((String, Int64).self) { sizes.append((name, Int(size))) }
            return sizes
        }
    }

    /// The CPU time (user + system, seconds) each of the database's server processes has
    /// used so far, by process id (empty where /proc cannot be read).
    func backendCPU() async throws -> [Int32: Double] {
        let name = name
        let pids = try await Self.admin { client in
            var pids = [Int32]()
            for try await pid in try await client.query("SELECT pid FROM pg_stat_activity WHERE datname = \(name)").decode(Int32.self) { pids.append(pid) }
            return pids
        }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var result = [Int32: Double]()
        for pid in pids {
            // Fields 14 and 15 (utime, stime) of /proc/PID/stat, after the parenthesized name.
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let end = text.lastIndex(of: ")")
            else { continue }
            let fields = text[text.index(after: end)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            result[pid] = (user + system) / ticks
        }
        return result
    }

    /// The CPU the database's server processes used between two ``backendCPU()`` readings
    /// (a process that started in between counts from zero).
    static func cpuSeconds(from start: [Int32: Double], to end: [Int32: Double]) -> Double {
        end.reduce(0) { $0 + $1.value - (start[$1.key] ?? 0) }
    }

    /// The database's server processes (its connections): their count and the sum of their
    /// proportional set sizes (`Pss` of /proc/PID/smaps_rollup: shared buffers are divided
    /// among the processes mapping them), in MiB. Nil where /proc cannot be read.
    func backends() async throws -> (connections: Int, pssMiB: Double?) {
        let name = name
        let pids = try await Self.admin { client in
            var pids = [Int32]()
            for try await pid in try await client.query("SELECT pid FROM pg_stat_activity WHERE datname = \(name)").decode(Int32.self) { pids.append(pid) }
            return pids
        }
        var total = 0.0
        for pid in pids {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Pss:") }),
                let kib = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
            else { return (pids.count, nil) }
            total += kib / 1024
        }
        return (pids.count, total)
    }

    /// Runs `body` with a client on the database of `CONVERGE_POSTGRES_URL`.
    static func admin<T: Sendable>(_ body: (PostgresClient) async throws -> T) async throws -> T {
        guard let admin = adminURL else { throw BenchmarkError("CONVERGE_POSTGRES_URL is not set") }
        return try await client(admin, body)
    }

    /// Runs `body` with a client on the database at `url`.
    static func client<T: Sendable>(_ url: String, _ body: (PostgresClient) async throws -> T) async throws -> T {
        let location = try PostgresStorage.Location(url: url)
        let client = PostgresClient(
            configuration: .init(
                host: location.host, port: location.port, username: location.username, password: location.password, database: location.database,
                tls: .disable),
            backgroundLogger: Bench.quietLogger())
        // The client runs in a child task, which ends when the body is done.
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }
}

extension Bench {
    /// Every row of the app table, by key, as `Value`s (comparable with the materialized
    /// PostgreSQL table's).
    static func rowsByKey(_ store: ReplicatedDatabase) throws -> [Value: [String: Value]] {
        var result = [Value: [String: Value]]()
        for row in try rows(store) {
            var values = [String: Value]()
            for column in WorkloadW.columns { values[column] = Value(row[column] as DatabaseValue) }
            result[Value(row["id"] as DatabaseValue)] = values
        }
        return result
    }
}
