import ConvergeCore
import ConvergePostgres
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Logging
import PostgresNIO
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

enum Fixtures {
    /// No column affinity on value columns: SQLite keeps values exactly as given.
    static let createNotes = "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, title, body, amount)"
    static let createItems = "CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name, qty)"

    static let schema = ServerSchema(tables: [
        .init(name: "notes", create: createNotes, policies: ["amount": .critical], deletePolicy: .updateWins),
        .init(name: "items", create: createItems, policies: ["qty": .critical], deletePolicy: .deleteWins),
    ])

    /// A fresh HS256 secret: each test server has its own, so a device of one test can
    /// never talk to another test's server by mistake (a reused port answers 401).
    static func makeSecret() -> String { "test-secret-\(UUID().uuidString)" }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("converge-sync-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Fast retries, so that failure tests stay quick.
    static let quickRetry = SyncEngine.RetryPolicy(maxAttempts: 3, initialDelay: .milliseconds(10), maxDelay: .milliseconds(40))
}

/// Runs blocking work (waiting for a process) on a dispatch thread, not on one of the few
/// threads every test's async work shares.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}

/// The server's storage a test runs on: the server suites run on both (DESIGN §10).
enum Backend: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    /// SQLite always; PostgreSQL when `CONVERGE_POSTGRES_URL` names a database (CI sets it).
    static let available: [Backend] = {
        guard PostgresFixture.url != nil else {
            print("PostgreSQL backend tests skipped: CONVERGE_POSTGRES_URL is not set (.ci/run starts a cluster and sets it)")
            return [.sqlite]
        }
        return [.sqlite, .postgres]
    }()
}

/// Where a test's server keeps its tables in PostgreSQL: a database, and a schema of its own.
struct PostgresPlace: Sendable {
    var url: String
    var schema: String?
}

/// Fresh PostgreSQL places for tests, beside the database `CONVERGE_POSTGRES_URL` names: a
/// schema each (cheap to make and drop, unlike a database), or a database when a test starts
/// `converge-server` processes on it.
enum PostgresFixture {
    static let url = ProcessInfo.processInfo.environment["CONVERGE_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }

    static func uniqueName() -> String { "converge_test_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))" }

    /// A new schema in the database of `CONVERGE_POSTGRES_URL`.
    static func create() async throws -> PostgresPlace {
        let name = uniqueName()
        try await admin("CREATE SCHEMA \(name)")
        return PostgresPlace(url: url!, schema: name)
    }

    static func drop(_ place: PostgresPlace) async {
        if let schema = place.schema {
            try? await admin("DROP SCHEMA IF EXISTS \(schema) CASCADE")
        } else {
            await dropDatabase(place.url)
        }
    }

    /// A new database (for `converge-server` processes, which take the default schema).
    static func createDatabase() async throws -> String {
        let name = uniqueName()
        try await admin("CREATE DATABASE \(name)")
        var components = URLComponents(string: url!)!
        components.path = "/\(name)"
        return components.string!
    }

    static func dropDatabase(_ databaseURL: String) async {
        guard let name = URLComponents(string: databaseURL)?.path.dropFirst(), name.hasPrefix("converge_test_") else { return }
        try? await admin("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// One client for the whole test run.
    static let adminClient: PostgresClient = {
        let location = try! PostgresStorage.Location(url: url!)
        let client = PostgresClient(
            configuration: .init(host: location.host, port: location.port, username: location.username, password: location.password, database: location.database, tls: .disable),
            backgroundLogger: Logger(label: "converge-test-postgres"))
        Task.detached { await client.run() }
        return client
    }()

    /// Runs one statement on the database of `CONVERGE_POSTGRES_URL`.
    static func admin(_ sql: String) async throws {
        try await adminClient.query(PostgresQuery(unsafeSQL: sql))
    }
}

/// A real server on loopback, on a free port, with its data in a temporary folder (or a
/// fresh PostgreSQL database).
final class TestServer: Sendable {
    let running: RunningServer
    let directory: URL
    let backend: Backend
    /// Its PostgreSQL storage, and the place to drop when it stops (`nil`: shared, the caller's).
    let postgres: (storage: PostgresStorage, place: PostgresPlace?)?

    var service: SyncService { running.service }
    var port: Int { running.port }
    var baseURL: URL { running.baseURL }

    private init(running: RunningServer, directory: URL, backend: Backend, postgres: (storage: PostgresStorage, place: PostgresPlace?)?) {
        self.running = running
        self.directory = directory
        self.backend = backend
        self.postgres = postgres
    }

    /// Starts a server; on `.postgres`, in a fresh schema (or in `shared`, the place of
    /// several instances).
    static func start(
        _ backend: Backend = .sqlite, shared: PostgresPlace? = nil, maxBodyBytes: Int = 8 << 20, directory: URL? = nil, port: Int = 0,
        secret: String = Fixtures.makeSecret(), schema: ServerSchema = Fixtures.schema, validator: ServerConfiguration.Validator? = nil,
        heartbeatSeconds: Int = 20, configure: (inout ServerConfiguration) -> Void = { _ in }
    ) async throws -> TestServer {
        let directory = try directory ?? Fixtures.temporaryDirectory()
        var configuration = ServerConfiguration(
            dataDirectory: directory, jwtSecret: secret, maxBodyBytes: maxBodyBytes, schema: schema,
            heartbeatSeconds: heartbeatSeconds, validator: validator)
        configure(&configuration)
        var postgres: (storage: PostgresStorage, place: PostgresPlace?)?
        if backend == .postgres {
            let place: PostgresPlace
            if let shared { place = shared } else { place = try await PostgresFixture.create() }
            var logger = Logger(label: "converge-test-postgres")
            logger.logLevel = .warning
            let storage = try await PostgresStorage(
                url: place.url, schema: schema, store: configuration.store, maximumConnections: 4, maxNamespaces: configuration.maxNamespaces,
                databaseSchema: place.schema, logger: logger)
            postgres = (storage, shared == nil ? place : nil)
        }
        let service = try await SyncService(configuration: configuration, storage: postgres?.storage)
        var logger = Logger(label: "converge-test-server")
        logger.logLevel = .warning
        return TestServer(
            running: try await RunningServer.start(service: service, port: port, logger: logger), directory: directory, backend: backend,
            postgres: postgres)
    }

    /// Runs `body` with a fresh server and a temporary folder for device files, then stops
    /// the server and removes both, whether `body` succeeded or threw.
    static func run(
        _ backend: Backend = .sqlite, maxBodyBytes: Int = 8 << 20, schema: ServerSchema = Fixtures.schema,
        validator: ServerConfiguration.Validator? = nil, heartbeatSeconds: Int = 20, configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (TestServer, URL) async throws -> Void
    ) async throws {
        let server = try await start(
            backend, maxBodyBytes: maxBodyBytes, schema: schema, validator: validator, heartbeatSeconds: heartbeatSeconds, configure: configure)
        let directory: URL
        do {
            directory = try Fixtures.temporaryDirectory()
        } catch {
            await server.stop()
            throw error
        }
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            try await body(server, directory)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// Stops the server; unless `keepData`, removes its folder and drops the database it
    /// created (a database shared through `postgresURL` is the caller's to drop).
    func stop(keepData: Bool = false) async {
        await running.stop()
        if let postgres {
            await postgres.storage.shutdown()
            if !keepData, let place = postgres.place { await PostgresFixture.drop(place) }
        }
        if !keepData { try? FileManager.default.removeItem(at: directory) }
    }

    func token(namespace: String = "team", device: String) async throws -> String {
        try await service.authenticator.token(namespace: namespace, device: device)
    }

    func store(_ namespace: String = "team") async throws -> any NamespaceStore {
        try await service.storage.store(for: namespace)
    }

    /// A raw POST to `/v1/sync`.
    func post(_ body: [UInt8], token: String?) async throws -> (status: Int, body: String) {
        var request = URLRequest(url: baseURL.appendingPathComponent("v1/sync"))
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
    }

    func get(_ path: String, token: String?) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: baseURL.absoluteString + path)!)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, data)
    }
}

/// A device: its own SQLite file, replicated tables and a sync engine over HTTP.
struct Device {
    let name: String
    let database: ReplicatedDatabase
    let engine: SyncEngine

    static func make(
        _ name: String, server: TestServer, namespace: String = "team", in directory: URL,
        configuration: SyncEngine.Configuration = SyncEngine.Configuration(retry: Fixtures.quickRetry),
        token: String? = nil, refreshToken: (@Sendable () async throws -> String)? = nil,
        store: ReplicatedDatabase.Configuration = ReplicatedDatabase.Configuration()
    ) async throws -> Device {
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("\(name)-\(UUID().uuidString).sqlite").path)
        try await queue.write { db in
            try db.execute(sql: Fixtures.createNotes)
            try db.execute(sql: Fixtures.createItems)
        }
        let database = try ReplicatedDatabase(queue, configuration: store)
        try database.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try database.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
        let resolvedToken: String
        if let token { resolvedToken = token } else { resolvedToken = try await server.token(namespace: namespace, device: name) }
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: server.baseURL), configuration: configuration,
            token: resolvedToken, refreshToken: refreshToken)
        return Device(name: name, database: database, engine: engine)
    }

    func execute(_ sql: String, _ arguments: StatementArguments = []) throws {
        try database.writer.write { db in try db.execute(sql: sql, arguments: arguments) }
    }

    /// Every row of a table, sorted by key, as text.
    func rows(_ table: String) throws -> [String] {
        try database.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY id").map { "\($0)" }
        }
    }

    @discardableResult
    func sync() async throws -> SyncReport { try await engine.sync() }
}
