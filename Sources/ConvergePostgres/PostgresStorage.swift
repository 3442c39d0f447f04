import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// The server's namespaces in one PostgreSQL database (DESIGN §10): tables shared by every
/// namespace and keyed by it, so a million namespaces need no million files, schemas or
/// connections; any number of server instances may serve the same database.
///
/// - Pushes to one namespace serialize across instances on a row lock of the namespace's
///   head row, taken first in the push's transaction: feed positions are assigned in commit
///   order, and a pull never skips a change that commits later with a smaller position.
///   Pushes to different namespaces run in parallel.
/// - Each push NOTIFYs in its transaction; every instance LISTENs and tells the devices
///   connected to it (``relayChanges(to:)``).
/// - The merge decisions are ConvergeCore's planners, as in the SQLite store: this type
///   only loads the states a changeset touches (one batched query), calls the planner and
///   writes the plan back (batched), in one transaction.
/// - A lost connection is retried; when retries do not bring it back the request fails with
///   `StorageUnavailable` (HTTP 503, which devices retry), never with a half-applied push.
public final class PostgresStorage: NamespaceInventory, @unchecked Sendable {
    /// Where the database is, from a `postgres://user:password@host:port/database` URL.
    public struct Location: Sendable, Hashable, CustomStringConvertible {
        /// The server's host name or address.
        public var host: String
        /// The server's port (5432 when the URL names none).
        public var port: Int
        /// The user to connect as.
        public var username: String
        /// The user's password, if the URL has one.
        public var password: String?
        /// The database (the user's name when the URL names none).
        public var database: String
        /// `sslmode=require` in the URL's query: refuse a connection without TLS.
        public var requireTLS: Bool

        /// Parses `postgres://` (or `postgresql://`) URLs; the database defaults to the user's name.
        public init(url text: String) throws(PostgresConfigurationError) {
            guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), scheme == "postgres" || scheme == "postgresql" else {
                throw PostgresConfigurationError("not a postgres:// URL: \(Self.redacted(text))")
            }
            guard let host = url.host, !host.isEmpty else { throw PostgresConfigurationError("the URL names no host: \(Self.redacted(text))") }
            guard let user = url.user, !user.isEmpty else { throw PostgresConfigurationError("the URL names no user: \(Self.redacted(text))") }
            self.host = host
            self.port = url.port ?? 5432
            self.username = user.removingPercentEncoding ?? user
            self.password = url.password.map { $0.removingPercentEncoding ?? $0 }
            let path = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
            self.database = path.isEmpty ? self.username : (path.removingPercentEncoding ?? path)
            self.requireTLS = url.queryItems?.contains { $0.name == "sslmode" && ["require", "verify-ca", "verify-full"].contains($0.value ?? "") } ?? false
        }

        /// The URL without its password (for logs).
        public var description: String { "postgres://\(username)@\(host):\(port)/\(database)" }

        static func redacted(_ text: String) -> String {
            guard var url = URLComponents(string: text), url.password != nil else { return text }
            url.password = "***"
            return url.string ?? text
        }
    }

    /// Where the database is.
    public let location: Location
    /// The server's schema: the tables it replicates and materializes.
    public let schema: ServerSchema
    /// The store options every namespace is merged with (drift allowance, quotas).
    public let configuration: ReplicatedDatabase.Configuration
    /// The most namespaces the database may hold (`nil`: no bound); a push that would
    /// create one more is refused.
    public let maxNamespaces: Int?
    /// The PostgreSQL schema holding Converge's tables (`nil`: the connection's default,
    /// usually `public`): several deployments, or test runs, can share one database.
    public let databaseSchema: String?
    /// The NOTIFY channel of this deployment's changes.
    let channel: String
    /// This instance's name in notifications: its own are not relayed back to it.
    let instance = UUID().uuidString
    let client: PostgresClient
    let logger: Logger
    let tables: MaterializedTables
    private let runner: Task<Void, Never>
    private let lock = NSLock()
    private var listener: Task<Void, Never>?
    /// Device activity served by this instance (like the SQLite store's, kept in memory).
    private var activity: [String: [String: (seen: Date, push: Date?, pull: Date?)]] = [:]

    /// How long a request keeps retrying a lost connection before answering 503.
    public var retryWindow: Duration = .seconds(5)

    /// Connects (a pool of at most `maximumConnections`), creates or migrates the schema
    /// (one instance at a time, under an advisory lock), and creates the app tables.
    ///
    /// - Throws: ``PostgresConfigurationError`` for a schema this backend cannot hold, or
    ///   the database's error when it cannot be reached.
    public init(
        url: String, schema: ServerSchema = ServerSchema(), store configuration: ReplicatedDatabase.Configuration = .init(),
        maximumConnections: Int = 16, maxNamespaces: Int? = nil, databaseSchema: String? = nil, logger: Logger = Logger(label: "converge-postgres")
    ) async throws {
        let location = try Location(url: url)
        if let databaseSchema { try Self.checkSchemaName(databaseSchema) }
        self.databaseSchema = databaseSchema
        self.channel = databaseSchema.map { "converge_changes_\($0)" } ?? "converge_changes"
        self.location = location
        self.schema = schema
        self.configuration = configuration
        self.maxNamespaces = maxNamespaces
        self.logger = logger
        self.tables = try MaterializedTables(schema: schema)
        var options = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.username, password: location.password, database: location.database,
            tls: location.requireTLS ? .require(.makeClientConfiguration()) : .disable)
        options.options.maximumConnections = max(2, maximumConnections)
        options.options.connectTimeout = .seconds(5)
        if let databaseSchema { options.options.additionalStartupParameters = [("search_path", databaseSchema)] }
        let client = PostgresClient(configuration: options, backgroundLogger: logger)
        self.client = client
        runner = Task { await client.run() }
        do {
            try await Migrations.run(client, schema: databaseSchema, tables: tables, logger: logger)
        } catch {
            runner.cancel()
            throw error
        }
    }

    /// Refuses a schema name that is not a plain identifier. (Its own function: the same
    /// guard inline in the async init crashes swiftc 6.3.1 in release builds, in LLVM's
    /// coroutine splitting.)
    private static func checkSchemaName(_ databaseSchema: String) throws(PostgresConfigurationError) {
        guard (1...48).contains(databaseSchema.utf8.count), databaseSchema.utf8.first.map({ !(48...57).contains($0) }) == true,
              databaseSchema.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 95 })
        else {
            throw PostgresConfigurationError("the PostgreSQL schema name \(databaseSchema) must be 1 to 48 lower-case letters, digits or underscores, not starting with a digit")
        }
    }

    deinit {
        listener?.cancel()
        runner.cancel()
    }

    /// Closes the pool and stops listening.
    public func shutdown() async {
        lock.withLock { listener }?.cancel()
        runner.cancel()
        _ = await runner.value
    }

    public func store(for namespace: String) async throws -> any NamespaceStore {
        precondition(Namespace.isValid(namespace))
        if let replica = try await headReplica(of: namespace) { return PostgresNamespaceStore(storage: self, namespace: namespace, replica: replica) }
        let replica = try await retrying {
            try await self.client.withTransaction(logger: self.logger) { connection -> ReplicaID in
                if let maxNamespaces = self.maxNamespaces {
                    // Serialize creations so the bound holds across instances.
                    try await connection.query("SELECT pg_advisory_xact_lock(hashtext('converge_namespace_creation:' || current_schema()))", logger: self.logger)
                    let count = try await connection.query("SELECT count(*)::int8 FROM converge_namespaces", logger: self.logger).single(Int64.self) ?? 0
                    let exists = try await connection.query("SELECT 1::int8 FROM converge_namespaces WHERE namespace = \(namespace)", logger: self.logger).single(Int64.self) != nil
                    if !exists, count >= maxNamespaces { throw NamespaceLimitExceeded(namespace: namespace, maxNamespaces: maxNamespaces) }
                }
                let fresh = ReplicaID.random()
                try await connection.query(
                    "INSERT INTO converge_namespaces(namespace, replica) VALUES (\(namespace), \(ByteBuffer(bytes: fresh.bytes))) ON CONFLICT (namespace) DO NOTHING",
                    logger: self.logger)
                let stored = try await connection.query("SELECT replica FROM converge_namespaces WHERE namespace = \(namespace)", logger: self.logger)
                    .single(ByteBuffer.self)
                guard let stored, let replica = ReplicaID(bytes: Array(buffer: stored)) else { throw StorageCorruption("namespace \(namespace) has no server replica") }
                return replica
            }
        }
        return PostgresNamespaceStore(storage: self, namespace: namespace, replica: replica)
    }

    public func existingStore(for namespace: String) async throws -> (any NamespaceStore)? {
        precondition(Namespace.isValid(namespace))
        return try await headReplica(of: namespace).map { PostgresNamespaceStore(storage: self, namespace: namespace, replica: $0) }
    }

    private func headReplica(of namespace: String) async throws -> ReplicaID? {
        try await retrying {
            guard let bytes = try await self.client.query("SELECT replica FROM converge_namespaces WHERE namespace = \(namespace)", logger: self.logger)
                .single(ByteBuffer.self)
            else { return nil }
            guard let replica = ReplicaID(bytes: Array(buffer: bytes)) else { throw StorageCorruption("namespace \(namespace) has an unreadable server replica") }
            return replica
        }
    }

    /// The namespaces stored, sorted (for tests and operators).
    public func namespaces() async throws -> [String] {
        try await retrying {
            try await self.client.query("SELECT namespace FROM converge_namespaces ORDER BY namespace", logger: self.logger).all(String.self)
        }
    }

    // MARK: What the operator page lists

    /// The namespaces stored, sorted, at most `limit`, and how many there are.
    public func namespaces(limit: Int) async throws -> (names: [String], total: Int) {
        try await retrying {
            let names = try await self.client.query(
                "SELECT namespace FROM converge_namespaces ORDER BY namespace LIMIT \(Int64(max(0, limit)))", logger: self.logger
            ).all(String.self)
            let total = try await self.client.query("SELECT count(*)::int8 FROM converge_namespaces", logger: self.logger).single(Int64.self) ?? 0
            return (names, Int(total))
        }
    }

    /// The bytes of the namespace's rows in the shared tables (record states, quarantine,
    /// claims), as PostgreSQL stores them (`pg_column_size`); `nil` for a namespace that
    /// does not exist. The materialized app tables are left out: they are the app's rows.
    public func storedBytes(of namespace: String) async throws -> Int64? {
        try await retrying {
            guard try await self.headReplica(of: namespace) != nil else { return nil }
            return try await self.client.query(
                """
                SELECT (coalesce((SELECT sum(pg_column_size(r.*)) FROM converge_records r WHERE r.namespace = \(namespace)), 0)
                    + coalesce((SELECT sum(pg_column_size(q.*)) FROM converge_quarantine q WHERE q.namespace = \(namespace)), 0)
                    + coalesce((SELECT sum(pg_column_size(c.*)) FROM converge_claims c WHERE c.namespace = \(namespace)), 0))::int8
                """, logger: self.logger
            ).single(Int64.self)
        }
    }

    // MARK: Notifications across instances

    public func relayChanges(to notifier: ChangeNotifier) async {
        let task = Task { [client, instance, logger, channel] in
            // Reconnects after a lost connection: a missed notification only delays a pull
            // (devices also pull on their own schedule).
            while !Task.isCancelled {
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            for try await notification in notifications {
                                let parts = notification.payload.split(separator: " ", maxSplits: 2).map(String.init)
                                guard parts.count == 3, parts[0] != instance else { continue }
                                notifier.publish(.init(device: parts[2]), in: parts[1])
                            }
                        }
                    }
                } catch {
                    if Task.isCancelled { return }
                    logger.notice("LISTEN connection lost; listening again", metadata: ["error": "\(String(reflecting: error))"])
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        lock.withLock { listener = task }
    }

    // MARK: Activity

    func noteActivity(namespace: String, device: String, pushed: Bool, pulled: Bool) {
        let now = Date()
        lock.withLock {
            var entry = activity[namespace]?[device] ?? (now, nil, nil)
            entry.seen = now
            if pushed { entry.push = now }
            if pulled { entry.pull = now }
            activity[namespace, default: [:]][device] = entry
        }
    }

    func activity(of namespace: String) -> [String: (seen: Date, push: Date?, pull: Date?)] {
        lock.withLock { activity[namespace] ?? [:] }
    }

    // MARK: Retries

    /// Runs `body`, again while the database connection is lost (for at most
    /// ``retryWindow``): every body is one transaction, so a retry never applies twice what
    /// committed once (and a join applied twice changes nothing anyway).
    func retrying<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + retryWindow
        var delay = Duration.milliseconds(50)
        while true {
            do {
                return try await body()
            } catch {
                guard let transient = Self.transientDescription(error) else { throw Self.unwrapped(error) }
                guard ContinuousClock.now + delay < deadline else {
                    throw StorageUnavailable("the PostgreSQL database at \(location) cannot be reached: \(transient)")
                }
                logger.info("retrying after a lost database connection", metadata: ["error": "\(transient)"])
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    /// The error a transaction's closure threw, not the wrapper around it.
    static func unwrapped(_ error: any Error) -> any Error {
        if let error = error as? PostgresTransactionError {
            return error.closureError ?? error.beginError ?? error.commitError ?? error
        }
        return error
    }

    /// What makes `error` worth retrying (a lost or refused connection, a server shutting
    /// down, a serialization failure), or `nil`.
    static func transientDescription(_ error: any Error) -> String? {
        if let error = error as? PostgresTransactionError {
            // A failed commit may have committed: retrying is still safe (a join is idempotent).
            for inner in [error.beginError, error.closureError, error.commitError, error.rollbackError].compactMap({ $0 }) {
                if let description = transientDescription(inner) { return description }
            }
            return nil
        }
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                let state = error.serverInfo?[.sqlState] ?? ""
                // 08: connection exceptions; 57P: operator intervention (shutdown, restart);
                // 40001/40P01: serialization failure, deadlock; 53300: too many connections.
                if state.hasPrefix("08") || state.hasPrefix("57P") || state == "40001" || state == "40P01" || state == "53300" {
                    return "\(state) \(error.serverInfo?[.message] ?? "")"
                }
                return nil
            case .serverClosedConnection, .connectionError, .uncleanShutdown, .clientClosedConnection, .poolClosed:
                return "\(error.code)"
            default:
                return nil
            }
        }
        if error is NIOConnectionError || error is ChannelError || error is IOError { return "\(error)" }
        return nil
    }
}

/// The storage cannot hold what it was configured with (a malformed URL, a schema this
/// backend does not support yet).
public struct PostgresConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public let message: String
    /// An error saying `message`.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A stored row Converge cannot read (a corrupt or foreign database).
public struct StorageCorruption: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was found.
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { "corrupt Converge data in PostgreSQL: \(message)" }
}

extension PostgresRowSequence {
    /// The first column of the first row, if any.
    func single<T: PostgresDecodable>(_ type: T.Type) async throws -> T? {
        for try await row in self { return try row.decode(T.self) }
        return nil
    }

    /// The first column of every row.
    func all<T: PostgresDecodable>(_ type: T.Type) async throws -> [T] {
        var result = [T]()
        for try await row in self { result.append(try row.decode(T.self)) }
        return result
    }
}
