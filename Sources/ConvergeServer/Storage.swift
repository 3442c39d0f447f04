import ConvergeCore
import ConvergeProtocol
import ConvergeSQLite
import Foundation
import GRDB

/// Where a server keeps its namespaces. The embedded default is ``SQLiteStorage`` (one
/// Converge store per namespace); a PostgreSQL backend implements the same two protocols.
public protocol NamespaceStorage: Sendable {
    /// The store of `namespace`, created on first use. `namespace` is already validated
    /// (see ``Namespace/isValid(_:)``).
    func store(for namespace: String) async throws -> any NamespaceStore

    /// The store of `namespace` if the namespace exists, without creating it: reads use
    /// this, so that only pushes create namespaces.
    func existingStore(for namespace: String) async throws -> (any NamespaceStore)?

    /// Starts telling `notifier` of changes that other server instances made to the
    /// storage's namespaces (a shared database), so that devices connected here hear of
    /// them. Storage used by one server process alone has nothing to relay.
    func relayChanges(to notifier: ChangeNotifier) async
}

extension NamespaceStorage {
    public func relayChanges(to notifier: ChangeNotifier) async {}
}

/// The storage cannot be reached right now (a lost database connection that retries did not
/// bring back): nothing was applied, and the same request may be sent again (HTTP 503).
public struct StorageUnavailable: Error, Sendable, CustomStringConvertible {
    /// What failed, for logs.
    public let message: String
    /// The error, explained by `message`.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A write of the server's own to one record, stamped by the server's replica and synced
/// like any other replica's (see ``SyncService/write(_:in:)``).
public enum ServerWrite: Sendable, Hashable {
    /// Inserts the record, or sets every given column of it (others keep their values).
    case upsert(table: String, key: Value, values: [String: Value])
    /// Deletes the record (throws `RecordNotFound` when it is absent or deleted already).
    case delete(table: String, key: Value)
}

/// One namespace's replica on the server. Operations on one namespace are serialized.
public protocol NamespaceStore: Sendable {
    /// The server's replica identity in this namespace.
    var serverReplica: ReplicaID { get }

    /// Applies a push from `device`, whose own writes are stamped by `replica`, atomically
    /// with respect to other pushes of the namespace.
    ///
    /// Refuses, changing nothing, with ``PushRefusal`` when the device is bound to another
    /// replica or the changeset carries a stamp of another replica that the server does not
    /// hold; the first accepted push binds the device to `replica`.
    ///
    /// With `validate`, each visibly changed row is shown to it; a refused one is undone by
    /// a compensating write of the server and recorded as a rejection for `device`, in the
    /// same transaction (see `ReplicatedDatabase.apply(_:origin:validate:)`).
    func push(
        _ changeset: Changeset, replica: ReplicaID, device: String, validate: (@Sendable (ProposedChange) -> String?)?
    ) async throws -> ApplyReport

    /// Writes as the server's replica, in turn with pushes (the same transaction discipline).
    func write(_ write: ServerWrite) async throws

    /// Runs `body` in a write transaction of the namespace's own SQLite database, in turn
    /// with pushes: the server's writes as SQL, captured and synced like any replica's.
    ///
    /// Only a store whose namespace is one SQLite database can offer it; the default
    /// refuses with ``ServiceError`` 404 (`unsupported`); a `ServerWrite` works on every store.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T

    /// Rejections of `device`'s changes after `id`, oldest first, at most `limit`.
    func rejections(for device: String, after id: UInt64, limit: Int) async throws -> [ChangeRejection]

    /// A page of the namespace's feed after `cursor`.
    func changes(since cursor: UInt64, after position: UInt64?, maxRecords: Int, maxBytes: Int) async throws -> ReplicatedDatabase.ChangeBatch

    /// The namespace's feed position (the cursor a fully synced device holds).
    func head() async throws -> UInt64

    /// Records changed after `cursor`.
    func changedRecordCount(since cursor: UInt64) async throws -> Int

    /// The namespace's open conflicts: critical fields with concurrent values, and unique-index clashes.
    func conflicts() async throws -> [Conflict]
    /// Records held back because their stamps are too far ahead of the server's clock.
    func quarantinedCount() async throws -> Int

    /// Applies the quarantined changes whose time has come (their stamps are no longer too
    /// far ahead of the server's clock), as a push would before its own changes, and
    /// returns how many records it released. For a namespace nobody pushes to for a while.
    func releaseDueQuarantine() async throws -> Int

    /// Every record's full merge state (for checks and tests).
    func snapshot() async throws -> Changeset

    /// The replica a device is bound to, if it pushed already.
    func boundReplica(of device: String) async throws -> ReplicaID?

    /// The namespace's devices: every one bound by a push or seen since the store opened,
    /// with its activity and whether it is revoked.
    func devices() async throws -> [DeviceInfo]

    /// Revokes `device`: its tokens are refused (401) from now on, also after a restart.
    /// Returns whether it was not revoked already.
    func revoke(device: String) async throws -> Bool

    /// Whether `device` is revoked.
    func isRevoked(device: String) async throws -> Bool

    /// Notes that `device` was served (a push, a pull, or any request), for ``devices()``.
    func noteActivity(of device: String, pushed: Bool, pulled: Bool) async

    // MARK: Tombstone collection (DESIGN §9)

    /// Where `device` stands before its round: `nil` when it has never synced here.
    func standing(of device: String) async throws -> DeviceStanding?

    /// Records a device's round that succeeded at `nowMilliseconds`: it was seen, speaks for
    /// `replica`, and (when `pushComplete`) every write it made before it had applied the
    /// feed up to `pullCursor` is here, so that becomes its stable position (never beyond
    /// the feed's head). `collectedAfter` is the last collected record it dropped.
    ///
    /// `serial` is the request's number (`SyncRequest.serial`): the highest of `replica`
    /// is kept as the device's ``DeviceStanding/serial``.
    func noteRound(
        of device: String, replica: ReplicaID, pullCursor: UInt64, pushComplete: Bool, collectedAfter: UInt64?, serial: UInt64?,
        nowMilliseconds: UInt64
    ) async throws

    /// Retires the devices not seen for `retentionMilliseconds`, computes the frontier (the
    /// smallest stable position over the active devices), drops at most `limit` records
    /// deleted at or below it and unchanged since (logging them for devices), prunes the log
    /// of what every active device has dropped, and returns the frontier.
    func collect(retentionMilliseconds: UInt64, nowMilliseconds: UInt64, limit: Int) async throws -> UInt64

    /// The records collected after `id`, oldest first, at most `limit`.
    func collected(after id: UInt64, limit: Int) async throws -> [SyncCollected]

    /// Retires `device` now (an admin's call, or the retention window): returns whether it
    /// was active.
    func retire(device: String, nowMilliseconds: UInt64) async throws -> Bool

    /// Takes a retired device back as `replica` (it reset and comes back under a new
    /// identity): its binding and stable position start over, and the replicas it leaves
    /// are remembered as left. Returns `false`, changing nothing, when `replica` is not new
    /// here: one the namespace holds writes of, one a device is bound to or synced as, or
    /// one some device left (a late request from before a reset must not take the device
    /// back to an identity it gave up).
    func readmit(device: String, as replica: ReplicaID) async throws -> Bool
}

extension NamespaceStore {
    /// Refuses: a store whose namespace is not one SQLite database cannot run SQL on it.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        throw ServiceError(status: 404, code: "unsupported", message: "server writes in SQL need the embedded SQLite storage")
    }
}

/// A device's place in its namespace's tombstone collection.
public struct DeviceStanding: Sendable, Hashable {
    /// The replica it last synced as.
    public var replica: ReplicaID?
    /// Its stable position: every write it made before it had applied the feed up to here
    /// is on the server.
    public var stablePosition: UInt64
    /// When it was last seen (milliseconds since 1970, the server's store clock).
    public var lastSeenMilliseconds: UInt64
    /// When it was retired, if it is.
    public var retiredMilliseconds: UInt64?
    /// The highest request serial of `replica` the server served (`SyncRequest.serial`).
    /// A push numbered at or below it was delayed past a later request: applying its old
    /// states after their records were collected would bring deleted records back.
    public var serial: UInt64

    /// A standing; `serial` 0 means no request of `replica` was served yet.
    public init(replica: ReplicaID?, stablePosition: UInt64, lastSeenMilliseconds: UInt64, retiredMilliseconds: UInt64?, serial: UInt64 = 0) {
        self.serial = serial
        self.replica = replica
        self.stablePosition = stablePosition
        self.lastSeenMilliseconds = lastSeenMilliseconds
        self.retiredMilliseconds = retiredMilliseconds
    }
}

/// One device of a namespace, as the admin API lists it.
public struct DeviceInfo: Sendable, Hashable, Encodable {
    /// The device's name, from its tokens.
    public var device: String
    /// The replica its pushes are stamped by, once it pushed.
    public var replica: ReplicaID?
    /// When the device was bound to its replica; nil if it never pushed.
    public var boundAt: Date?
    /// Activity since the store was opened (kept in memory: a restart forgets it).
    public var lastSeen: Date?
    /// When it last pushed, since the store was opened.
    public var lastPush: Date?
    /// When it last pulled, since the store was opened.
    public var lastPull: Date?
    /// When the device was revoked; nil while it may still sync.
    public var revokedAt: Date?
    /// Its changes refused by validation and undone, as recorded.
    public var rejections: Int

    /// Describes `device`; every unknown date is nil.
    public init(
        device: String, replica: ReplicaID? = nil, boundAt: Date? = nil, lastSeen: Date? = nil, lastPush: Date? = nil,
        lastPull: Date? = nil, revokedAt: Date? = nil, rejections: Int = 0
    ) {
        self.device = device
        self.replica = replica
        self.boundAt = boundAt
        self.lastSeen = lastSeen
        self.lastPush = lastPush
        self.lastPull = lastPull
        self.revokedAt = revokedAt
        self.rejections = rejections
    }

    private enum CodingKeys: String, CodingKey {
        case device, replica, boundAt, lastSeen, lastPush, lastPull, revokedAt, rejections
    }

    /// As the admin API shows it: the replica as its UUID text, dates as ISO-8601, unknown
    /// ones left out.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let format = ISO8601DateFormatter()
        try container.encode(device, forKey: .device)
        try container.encodeIfPresent(replica?.uuidString(), forKey: .replica)
        try container.encodeIfPresent(boundAt.map(format.string), forKey: .boundAt)
        try container.encodeIfPresent(lastSeen.map(format.string), forKey: .lastSeen)
        try container.encodeIfPresent(lastPush.map(format.string), forKey: .lastPush)
        try container.encodeIfPresent(lastPull.map(format.string), forKey: .lastPull)
        try container.encodeIfPresent(revokedAt.map(format.string), forKey: .revokedAt)
        try container.encode(rejections, forKey: .rejections)
    }
}

/// Why a push was refused (HTTP 403).
public struct PushRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// Why the push was refused, as the device is told.
    public let message: String
    /// A refusal explained by `message`.
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Namespace names: they name files, so they are kept plain.
public enum Namespace {
    /// 1 to 128 characters among `A–Z a–z 0–9 . _ -`, not starting with a dot.
    public static func isValid(_ name: String) -> Bool {
        guard (1...128).contains(name.utf8.count), name.first != "." else { return false }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "-")
        }
    }
}

/// One namespace in SQLite. Work runs on the namespace's serial queue, off the
/// cooperative thread pool (SQLite calls block).
public final class SQLiteNamespaceStore: NamespaceStore, @unchecked Sendable {
    /// The namespace's replicated database.
    public let database: ReplicatedDatabase
    private let queue: DispatchQueue
    /// The highest clock reading of each replica whose events the server holds: no device
    /// may claim one of them as its own. (Writes in another replica's name are refused
    /// record by record, in the push's transaction: ``ApplyOptions/author``.) Touched only
    /// on `queue`.
    private var held: [ReplicaID: HLC]
    /// Revoked devices (persisted in `converge_server_revocations`, loaded on open): read on
    /// every request, so kept in memory. Touched only on `queue`.
    private var revoked: [String: Date]
    /// The join of the contexts of every record collected here (persisted in
    /// `converge_server_collected_clock`): see `ApplyPlanner.Context.collectedClock`.
    /// Touched only on `queue`.
    private var collectedClock: CausalContext
    /// When each device was last served, since the store opened. Touched only on `queue`.
    private var activity: [String: (seen: Date, push: Date?, pull: Date?)] = [:]

    /// When a namespace made by a release without tombstone collection was first opened by
    /// one with it (`converge_server_meta`'s `standing_since`, written only on open), in
    /// physical milliseconds; `nil` for a namespace that never needed it. Read on every
    /// round's collection, so kept in memory.
    private let standingSince: UInt64?

    private init(
        database: ReplicatedDatabase, queue: DispatchQueue, held: [ReplicaID: HLC], revoked: [String: Date], collectedClock: CausalContext,
        standingSince: UInt64?
    ) {
        self.standingSince = standingSince
        self.collectedClock = collectedClock
        self.database = database
        self.queue = queue
        self.held = held
        self.revoked = revoked
    }

    /// How long opening a namespace waits for the close of its previous store to let go of
    /// the file.
    static let busyTimeoutSeconds: TimeInterval = 10

    static func open(path: String, schema: ServerSchema, configuration: ReplicatedDatabase.Configuration) async throws -> SQLiteNamespaceStore {
        let queue = DispatchQueue(label: "converge.namespace")
        return try await run(on: queue) {
            // A store dropped from the cache closes its pool when its last user lets it go,
            // and closing the last connection checkpoints the WAL under an exclusive lock: a
            // request that reopens the namespace meanwhile waits for it instead of failing
            // with "database is locked" (nothing else writes the file).
            var poolConfiguration = GRDB.Configuration()
            poolConfiguration.busyMode = .timeout(SQLiteNamespaceStore.busyTimeoutSeconds)
            let pool = try DatabasePool(path: path, configuration: poolConfiguration)
            let hadStandings = try pool.read { db in try db.tableExists("converge_server_standing") }
            try pool.write { db in
                for table in schema.tables where try !db.tableExists(table.name) { try db.execute(sql: table.create) }
                // Also on a table that exists: an index added to the schema later is created
                // (which fails, naming the index, if the table's rows already clash).
                for table in schema.tables {
                    for statement in table.uniqueIndexStatements { try db.execute(sql: statement) }
                }
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS converge_server_revocations(
                        device TEXT PRIMARY KEY NOT NULL,
                        revoked_at REAL NOT NULL);
                    CREATE TABLE IF NOT EXISTS converge_server_devices(
                        device TEXT PRIMARY KEY NOT NULL,
                        replica TEXT NOT NULL,
                        bound_at REAL NOT NULL);
                    CREATE TABLE IF NOT EXISTS converge_server_standing(
                        device TEXT PRIMARY KEY NOT NULL,
                        replica TEXT,
                        stable INTEGER NOT NULL DEFAULT 0,
                        serial INTEGER NOT NULL DEFAULT 0,
                        collected_after INTEGER,
                        last_seen INTEGER NOT NULL,
                        retired_at INTEGER);
                    CREATE TABLE IF NOT EXISTS converge_server_collected(
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        tbl TEXT NOT NULL,
                        key NOT NULL,
                        context BLOB);
                    CREATE INDEX IF NOT EXISTS converge_server_collected_by_key ON converge_server_collected(tbl, key);
                    CREATE TABLE IF NOT EXISTS converge_server_collected_clock(
                        replica BLOB PRIMARY KEY NOT NULL,
                        hlc INTEGER NOT NULL);
                    CREATE TABLE IF NOT EXISTS converge_server_left(
                        replica TEXT PRIMARY KEY NOT NULL)
                    """)
                // Columns added by later releases (a namespace made before them still opens).
                let standing = try db.columns(in: "converge_server_standing").map(\.name)
                if !standing.contains("serial") {
                    try db.execute(sql: "ALTER TABLE converge_server_standing ADD COLUMN serial INTEGER NOT NULL DEFAULT 0")
                }
                if try !db.columns(in: "converge_server_collected").contains(where: { $0.name == "context" }) {
                    try db.execute(sql: "ALTER TABLE converge_server_collected ADD COLUMN context BLOB")
                }
            }
            let database = try ReplicatedDatabase(pool, configuration: configuration)
            // A namespace made by a release without tombstone collection (it has records, but
            // no device standings yet): devices that synced then are not known to the frontier,
            // so nothing is collected before a whole retention window has passed (by then each
            // has synced, or counts as retired).
            if !hadStandings, try database.feedHead() > 0 {
                try pool.write { db in
                    try db.execute(sql: "CREATE TABLE IF NOT EXISTS converge_server_meta(key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)")
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO converge_server_meta(key, value) VALUES ('standing_since', ?)",
                        arguments: [Int64(clamping: configuration.physicalTime())])
                }
            }
            for table in schema.tables {
                try database.replicate(
                    table: table.name, policies: table.policies.mapValues(\.columnPolicy), deletePolicy: table.deletePolicy,
                    allowUniqueIndexes: !table.uniqueIndexes.isEmpty, encrypted: Set(table.encrypted))
            }
            // The server owns `.authority` columns in its namespaces.
            try database.setAuthority(database.replicaID)
            let revoked = try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT device, revoked_at FROM converge_server_revocations").reduce(into: [String: Date]()) { result, row in
                    result[row["device"]] = Date(timeIntervalSince1970: row["revoked_at"])
                }
            }
            let collectedClock = CausalContext(try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT replica, hlc FROM converge_server_collected_clock").compactMap { row -> CausalContext.Entry? in
                    guard let replica = ReplicaID(bytes: [UInt8](row["replica"] as Data)) else { return nil }
                    return CausalContext.Entry(replica: replica, hlc: HLC(rawValue: UInt64(bitPattern: row["hlc"])))
                }
            })
            let standingSince = try pool.read { db in
                try db.tableExists("converge_server_meta")
                    ? Int64.fetchOne(db, sql: "SELECT value FROM converge_server_meta WHERE key = 'standing_since'").map { UInt64(clamping: $0) } : nil
            }
            return SQLiteNamespaceStore(
                database: database, queue: queue, held: try database.snapshot().maxHLCByReplica, revoked: revoked, collectedClock: collectedClock,
                standingSince: standingSince)
        }
    }

    private static func run<T: Sendable>(on queue: DispatchQueue, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await Self.run(on: queue, body)
    }

    public var serverReplica: ReplicaID { database.replicaID }

    /// Runs `body` in a write transaction of the namespace's database, in turn with pushes:
    /// the server's own writes (for example to `.authority` columns), captured and synced
    /// like any replica's. Prefer ``SyncService/write(in:_:)``, which also notifies devices.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await run { try self.database.writer.write(body) }
    }

    public func write(_ write: ServerWrite) async throws {
        try await run {
            switch write {
            case .upsert(let table, let key, let values):
                guard let schema = self.database.replicatedTables[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
                for column in values.keys where !schema.columns.contains(column) { throw SchemaError(table: table, reason: .unknownColumn(column)) }
                do {
                    try self.database.update(table: table, key: key, values: values)
                } catch is RecordNotFound {
                    // Not alive: an insert of the given columns (the others take their defaults).
                    let columns = values.keys.sorted()
                    let names = ([schema.primaryKey] + columns).map { "\"\($0)\"" }.joined(separator: ", ")
                    let marks = Array(repeating: "?", count: columns.count + 1).joined(separator: ", ")
                    try self.database.writer.write { db in
                        try db.execute(
                            sql: "INSERT OR REPLACE INTO \"\(table)\"(\(names)) VALUES (\(marks))",
                            arguments: StatementArguments([key.databaseValue] + columns.map { values[$0]!.databaseValue }))
                    }
                }
            case .delete(let table, let key):
                try self.database.delete(table: table, key: key)
            }
        }
    }

    public func push(
        _ changeset: Changeset, replica: ReplicaID, device: String, validate: (@Sendable (ProposedChange) -> String?)? = nil
    ) async throws -> ApplyReport {
        try await run { try self.pushOnQueue(changeset, replica: replica, device: device, validate: validate) }
    }

    public func rejections(for device: String, after id: UInt64, limit: Int) async throws -> [ChangeRejection] {
        try await run { try self.database.rejections(origin: device, after: Int64(clamping: id), limit: limit) }
    }

    private func pushOnQueue(
        _ changeset: Changeset, replica: ReplicaID, device: String, validate: (@Sendable (ProposedChange) -> String?)?
    ) throws -> ApplyReport {
        let bound = try boundReplicaOnQueue(of: device)
        if let bound, bound != replica {
            throw PushRefusal(message: "device \(device) is bound to replica \(bound), not \(replica)")
        }
        if bound == nil { try checkClaim(of: replica, by: device) }
        let serverReplica = database.replicaID
        // The binding commits with the push (a crash between the two would leave the push
        // applied and the device free to claim another replica).
        let bind: ((Database) throws -> Void)? = bound != nil ? nil : { db in
            try db.execute(
                sql: "INSERT INTO converge_server_devices(device, replica, bound_at) VALUES (?, ?, ?)",
                arguments: [device, replica.uuidString(), Date().timeIntervalSince1970])
        }
        // Parts of lives this server collected (DESIGN §9) that a device still relays go
        // (everyone drops them), and a context covering a collected delete (a key inserted
        // again) is checked against what the collected records had seen.
        let changeset = CollectionPlanner.withoutCollectedLives(changeset, logged: try loggedCollected(in: changeset))
        var options = ReplicatedDatabase.ApplyOptions(origin: device, validate: validate, author: replica, beforeCommit: bind)
        options.collectedClock = collectedClock
        let report: ApplyReport
        do {
            report = try database.apply(changeset, options: options)
        } catch let error as ApplyError {
            guard case .notAuthor(let stamp) = error.reason else { throw error }
            throw PushRefusal(message: "the push carries a write stamped by replica \(stamp.replica) at \(stamp.hlc) (table \(error.table), key \(error.key.map { "\($0)" } ?? "-")), which this server does not hold; a device may only write as its own replica \(replica)")
        }
        if report.identityReset {
            // A rewound server took a new identity: it still owns its authority columns, and
            // its old identity can never be claimed by a device.
            held[serverReplica] = max(held[serverReplica, default: .zero], database.clock)
            try database.setAuthority(database.replicaID)
        }
        for (stampReplica, hlc) in changeset.maxHLCByReplica where hlc > held[stampReplica, default: .zero] { held[stampReplica] = hlc }
        return report
    }

    /// The collected lives of `changeset`'s records still listed (not dropped yet by every
    /// device): their contexts, by record (`nil`: logged without one, by an older release).
    ///
    /// One read per table and chunk of keys, not one per record; none at all while the log
    /// is empty, as it is in most namespaces most of the time.
    private func loggedCollected(in changeset: Changeset) throws -> [RecordAddress: [CausalContext?]] {
        guard !changeset.records.isEmpty else { return [:] }
        return try database.writer.read { db in
            var result = [RecordAddress: [CausalContext?]]()
            guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM converge_server_collected)")) == true else { return result }
            var keysByTable = [String: [Value]]()
            for address in Set(changeset.records.map { RecordAddress(table: $0.table, key: $0.key) }) {
                keysByTable[address.table, default: []].append(address.key)
            }
            for (table, keys) in keysByTable {
                var start = 0
                while start < keys.count {
                    let chunk = Array(keys[start..<min(keys.count, start + keysPerBatchedRead)])
                    start += chunk.count
                    let (marks, arguments) = paddedInList(chunk.map(\.databaseValue))
                    let statement = try db.cachedStatement(sql: "SELECT key, context FROM converge_server_collected WHERE tbl = ? AND key IN (\(marks))")
                    for row in try Row.fetchAll(statement, arguments: StatementArguments([table.databaseValue] + arguments)) {
                        let logged = Value(row[0] as DatabaseValue)
                        // Filed under every key asked for that SQL took for equal (3 and 3.0),
                        // as the point read of each record did.
                        for key in chunk where sqlKeysEqual(key, logged) {
                            let address = RecordAddress(table: table, key: key)
                            let context = try (row[1] as Data?).map { bytes in
                                do { return try CausalContext(packedBytes: bytes) } catch { throw RecordBlobCorruption("collected context of \(address.table) \(address.key): \(error)") }
                            }
                            result[address, default: []].append(context)
                        }
                    }
                }
            }
            return result
        }
    }

    /// Refuses a device's first push that declares a replica it cannot be: a reserved id,
    /// the server's own, one another device is bound to, or one whose writes the server
    /// already holds (the device would then write as that replica from now on).
    private func checkClaim(of replica: ReplicaID, by device: String) throws {
        if replica.isReserved || replica == database.replicaID {
            throw PushRefusal(message: "replica \(replica) is reserved; a device must push as a replica of its own")
        }
        if let other = try database.writer.read({ db in
            try String.fetchOne(db, sql: "SELECT device FROM converge_server_devices WHERE replica = ?", arguments: [replica.uuidString()])
        }) {
            throw PushRefusal(message: "replica \(replica) is bound to device \(other); device \(device) cannot claim it")
        }
        if held[replica] != nil {
            throw PushRefusal(message: "this server already holds writes of replica \(replica); device \(device) cannot claim it")
        }
    }

    public func changes(since cursor: UInt64, after position: UInt64?, maxRecords: Int, maxBytes: Int) async throws -> ReplicatedDatabase.ChangeBatch {
        try await run { try self.database.changes(since: cursor, after: position, maxRecords: max(1, maxRecords), maxBytes: max(1, maxBytes)) }
    }

    public func head() async throws -> UInt64 {
        try await run { try self.database.feedHead() }
    }

    public func changedRecordCount(since cursor: UInt64) async throws -> Int {
        try await run { try self.database.changedRecordCount(since: cursor) }
    }

    /// The namespace's open conflicts: critical fields with concurrent values, and unique-index clashes.
    public func conflicts() async throws -> [Conflict] {
        try await run { try self.database.conflicts() }
    }

    /// Records held back because their stamps are too far ahead of the server's clock.
    public func quarantinedCount() async throws -> Int {
        try await run { try self.database.quarantinedCount() }
    }

    public func releaseDueQuarantine() async throws -> Int {
        // Most namespaces hold nothing in quarantine: a read decides, not a write transaction.
        try await run { try self.database.quarantinedCount() == 0 ? 0 : self.database.releaseQuarantine(force: false) }
    }

    public func snapshot() async throws -> Changeset {
        try await run { try self.database.snapshot() }
    }

    public func boundReplica(of device: String) async throws -> ReplicaID? {
        try await run { try self.boundReplicaOnQueue(of: device) }
    }

    // MARK: Devices

    public func devices() async throws -> [DeviceInfo] {
        try await run {
            var devices = [String: DeviceInfo]()
            let rows = try self.database.writer.read { db in
                try Row.fetchAll(db, sql: "SELECT device, replica, bound_at FROM converge_server_devices")
            }
            for row in rows {
                let device: String = row["device"]
                devices[device] = DeviceInfo(device: device, replica: ReplicaID(row["replica"] as String), boundAt: Date(timeIntervalSince1970: row["bound_at"]))
            }
            for (device, seen) in self.activity {
                var info = devices[device] ?? DeviceInfo(device: device)
                info.lastSeen = seen.seen
                info.lastPush = seen.push
                info.lastPull = seen.pull
                devices[device] = info
            }
            for (device, date) in self.revoked {
                var info = devices[device] ?? DeviceInfo(device: device)
                info.revokedAt = date
                devices[device] = info
            }
            for (device, count) in try self.database.rejectionCounts() where devices[device] != nil {
                devices[device]!.rejections = count
            }
            return devices.values.sorted { $0.device < $1.device }
        }
    }

    public func revoke(device: String) async throws -> Bool {
        try await run {
            guard self.revoked[device] == nil else { return false }
            let now = Date()
            try self.database.writer.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO converge_server_revocations(device, revoked_at) VALUES (?, ?)", arguments: [device, now.timeIntervalSince1970])
            }
            self.revoked[device] = now
            return true
        }
    }

    public func isRevoked(device: String) async throws -> Bool {
        try await run { self.revoked[device] != nil }
    }

    public func noteActivity(of device: String, pushed: Bool, pulled: Bool) async {
        let now = Date()
        queue.async {
            var entry = self.activity[device] ?? (now, nil, nil)
            entry.seen = now
            if pushed { entry.push = now }
            if pulled { entry.pull = now }
            self.activity[device] = entry
        }
    }

    // MARK: Tombstone collection

    public func standing(of device: String) async throws -> DeviceStanding? {
        try await run {
            try self.database.writer.read { db in
                try Row.fetchOne(db.cachedStatement(sql: "SELECT replica, stable, serial, last_seen, retired_at FROM converge_server_standing WHERE device = ?"), arguments: [device])
                    .map { row in
                        DeviceStanding(
                            replica: (row["replica"] as String?).flatMap(ReplicaID.init), stablePosition: UInt64(bitPattern: row["stable"]),
                            lastSeenMilliseconds: UInt64(bitPattern: row["last_seen"]), retiredMilliseconds: (row["retired_at"] as Int64?).map { UInt64(bitPattern: $0) },
                            serial: UInt64(bitPattern: row["serial"]))
                    }
            }
        }
    }

    public func noteRound(
        of device: String, replica: ReplicaID, pullCursor: UInt64, pushComplete: Bool, collectedAfter: UInt64?, serial: UInt64?,
        nowMilliseconds: UInt64
    ) async throws {
        try await run {
            // A device's own claim only lowers what it may receive: clamp it to the head
            // (read only for a claim: most rounds of a first push make none).
            let stable = pushComplete ? Int64(clamping: min(pullCursor, try self.database.feedHead())) : 0
            try self.database.writer.write { db in
                try db.cachedStatement(sql: """
                    INSERT INTO converge_server_standing(device, replica, stable, serial, collected_after, last_seen) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(device) DO UPDATE SET
                        serial = CASE WHEN replica IS excluded.replica THEN max(serial, excluded.serial) ELSE excluded.serial END,
                        replica = excluded.replica, stable = max(stable, excluded.stable),
                        collected_after = CASE WHEN excluded.collected_after IS NULL THEN collected_after
                            ELSE max(coalesce(collected_after, 0), excluded.collected_after) END,
                        last_seen = max(last_seen, excluded.last_seen)
                    """).execute(arguments: [
                        device, replica.uuidString(), stable, Int64(clamping: serial ?? 0), collectedAfter.map { Int64(clamping: $0) },
                        Int64(clamping: nowMilliseconds),
                    ])
            }
        }
    }

    public func collect(retentionMilliseconds: UInt64, nowMilliseconds: UInt64, limit: Int) async throws -> UInt64 {
        try await run {
            let frontier = try self.database.writer.write { db -> UInt64 in
                let (horizon, overflow) = nowMilliseconds.subtractingReportingOverflow(retentionMilliseconds)
                if !overflow {
                    try db.cachedStatement(sql: "UPDATE converge_server_standing SET retired_at = ? WHERE retired_at IS NULL AND last_seen < ?")
                        .execute(arguments: [Int64(clamping: nowMilliseconds), Int64(clamping: horizon)])
                }
                if let since = self.standingSince, overflow || since > horizon {
                    return 0  // upgraded less than a retention window ago: see `open`
                }
                return UInt64(bitPattern: try Int64.fetchOne(db.cachedStatement(sql: "SELECT min(stable) FROM converge_server_standing WHERE retired_at IS NULL")) ?? 0)
            }
            guard frontier > 0 else { return frontier }
            let candidates = try self.database.collectableRecords(through: frontier, limit: limit)
            if !candidates.isEmpty {
                var clock = self.collectedClock
                try self.database.collect(candidates) { db, collected in
                    for (address, context) in collected {
                        try db.execute(
                            sql: "INSERT INTO converge_server_collected(tbl, key, context) VALUES (?, ?, ?)",
                            arguments: [address.table, address.key.databaseValue, Data(context.packedBytes)])
                        clock.merge(context)
                    }
                    for entry in clock.entries where entry.hlc > self.collectedClock[entry.replica] {
                        try db.execute(
                            sql: "INSERT INTO converge_server_collected_clock(replica, hlc) VALUES (?, ?) ON CONFLICT(replica) DO UPDATE SET hlc = max(hlc, excluded.hlc)",
                            arguments: [Data(entry.replica.bytes), Int64(bitPattern: entry.hlc.rawValue)])
                    }
                }
                // Committed: the pushes that follow (on this queue) check against it.
                self.collectedClock = clock
            }
            try self.database.writer.write { db in
                // What every active device has dropped need not be listed again.
                if let dropped = try Int64.fetchOne(db.cachedStatement(sql: "SELECT min(coalesce(collected_after, 0)) FROM converge_server_standing WHERE retired_at IS NULL")) {
                    try db.cachedStatement(sql: "DELETE FROM converge_server_collected WHERE id <= ?").execute(arguments: [dropped])
                }
            }
            return frontier
        }
    }

    public func collected(after id: UInt64, limit: Int) async throws -> [SyncCollected] {
        try await run {
            try self.database.writer.read { db in
                try Row.fetchAll(db.cachedStatement(sql: "SELECT id, tbl, key FROM converge_server_collected WHERE id > ? ORDER BY id LIMIT ?"), arguments: [Int64(clamping: id), limit])
                    .map { SyncCollected(id: UInt64(bitPattern: $0["id"]), table: $0["tbl"], key: Value($0["key"] as DatabaseValue)) }
            }
        }
    }

    public func retire(device: String, nowMilliseconds: UInt64) async throws -> Bool {
        try await run {
            try self.database.writer.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO converge_server_standing(device, last_seen, retired_at) VALUES (?, ?, ?)
                        ON CONFLICT(device) DO UPDATE SET retired_at = excluded.retired_at WHERE retired_at IS NULL
                        """,
                    arguments: [device, Int64(clamping: nowMilliseconds), Int64(clamping: nowMilliseconds)])
                return db.changesCount > 0
            }
        }
    }

    public func readmit(device: String, as replica: ReplicaID) async throws -> Bool {
        try await run {
            guard self.held[replica] == nil, !replica.isReserved, replica != self.database.replicaID else { return false }
            return try self.database.writer.write { db in
                let id = replica.uuidString()
                let known = try Bool.fetchOne(db, sql: """
                    SELECT EXISTS (SELECT 1 FROM converge_server_left WHERE replica = ?)
                        OR EXISTS (SELECT 1 FROM converge_server_devices WHERE replica = ?)
                        OR EXISTS (SELECT 1 FROM converge_server_standing WHERE replica = ?)
                    """, arguments: [id, id, id]) ?? true
                guard !known else { return false }
                try db.execute(sql: """
                    INSERT OR IGNORE INTO converge_server_left(replica)
                    SELECT replica FROM converge_server_standing WHERE device = ? AND replica IS NOT NULL
                    UNION SELECT replica FROM converge_server_devices WHERE device = ?
                    """, arguments: [device, device])
                try db.execute(sql: "DELETE FROM converge_server_standing WHERE device = ?", arguments: [device])
                try db.execute(sql: "DELETE FROM converge_server_devices WHERE device = ?", arguments: [device])
                return true
            }
        }
    }

    private func boundReplicaOnQueue(of device: String) throws -> ReplicaID? {
        try database.writer.read { db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT replica FROM converge_server_devices WHERE device = ?"), arguments: [device]).flatMap(ReplicaID.init)
        }
    }
}
