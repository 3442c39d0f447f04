import ConvergeCore
import Foundation
import GRDB

/// A GRDB database whose chosen tables are replicated: local writes are captured, a change
/// feed serves them, and remote changesets merge in field by field.
///
/// The app keeps ordinary tables and writes to them as usual, through SQL or GRDB records:
///
/// ```swift
/// let dbQueue = try DatabaseQueue(path: path)
/// try dbQueue.write { db in
///     try db.execute(sql: "CREATE TABLE IF NOT EXISTS item(id TEXT PRIMARY KEY NOT NULL, name TEXT, qty INTEGER)")
/// }
/// let converge = try ReplicatedDatabase(dbQueue)
/// try converge.replicate(table: "item", policies: ["qty": .critical])
/// try dbQueue.write { db in try db.execute(sql: "INSERT INTO item VALUES ('a', 'pen', 1)") }
///
/// let batch = try converge.changes(since: 0)          // send batch.changeset to a peer...
/// try otherReplica.apply(batch.changeset)             // ...which merges it
/// ```
///
/// Every transaction that writes replicated tables takes one stamp from the replica's
/// hybrid logical clock; the fields it wrote win or lose together. Any connection that
/// writes replicated tables must go through the `DatabaseWriter` given here: the capture
/// triggers call SQL functions that Converge installs on it, so a write from a connection
/// Converge does not know fails loudly instead of going uncaptured.
public final class ReplicatedDatabase: Sendable {
    /// Options of a replicated database.
    public struct Configuration: Sendable {
        /// How far ahead of local time a remote stamp may be before its change is
        /// quarantined instead of advancing the clock.
        public var maxDriftMilliseconds: UInt64
        /// Physical time in milliseconds since 1970; the simulator injects virtual time.
        public var physicalTime: @Sendable () -> UInt64
        /// The most records the quarantine may hold; an apply that would hold more is
        /// refused whole (``ApplyError/Reason/quotaExceeded(what:limit:)``).
        public var maxQuarantinedRecords: Int
        /// The most records of tables not replicated here (parked, forwarded) the store may
        /// hold; an apply that would park more is refused whole.
        public var maxParkedRecords: Int
        /// Where new identities come from (a new database, a copied file, a reset): random
        /// UUIDs; the simulator injects seeded ones, so that a replay breaks stamp ties alike.
        public var makeReplicaID: @Sendable () -> ReplicaID
        /// Whether a database Converge sets up for the first time switches to incremental
        /// auto-vacuum (one `VACUUM` then), so that the space tombstone collection frees goes
        /// back to the file system (``reclaimSpace()``) instead of only being reused.
        public var incrementalVacuum: Bool

        /// The default options: five minutes of drift, system time, 10,000 quarantined and
        /// 100,000 parked records at most, random identities, incremental vacuum.
        public init(
            maxDriftMilliseconds: UInt64 = HybridClock.defaultMaxDriftMilliseconds,
            physicalTime: @escaping @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) },
            maxQuarantinedRecords: Int = 10_000,
            maxParkedRecords: Int = 100_000,
            makeReplicaID: @escaping @Sendable () -> ReplicaID = { .random() },
            incrementalVacuum: Bool = true
        ) {
            self.incrementalVacuum = incrementalVacuum
            self.maxDriftMilliseconds = maxDriftMilliseconds
            self.physicalTime = physicalTime
            self.makeReplicaID = makeReplicaID
            self.maxQuarantinedRecords = max(0, maxQuarantinedRecords)
            self.maxParkedRecords = max(0, maxParkedRecords)
        }
    }

    /// How ``apply(_:options:)`` treats a changeset beyond the merge.
    public struct ApplyOptions {
        /// Who sent the changeset (a device name); recorded with each rejection.
        public var origin: String?
        /// Sees each visibly changed row and returns why it is refused, or `nil`; see
        /// ``apply(_:origin:validate:)``.
        public var validate: ((ProposedChange) throws -> String?)?
        /// The sender's own replica: every event of another replica in the changeset must
        /// already be held here exactly (joining it changes nothing), else the whole
        /// changeset is refused with ``ApplyError/Reason/notAuthor(_:)``. A sync server
        /// sets it to the pushing device's bound replica.
        public var author: ReplicaID?
        /// The join of the contexts of the records the caller has collected: foreign context
        /// entries within it count as held by the author check. See
        /// `ApplyPlanner.Context.collectedClock` in ConvergeCore (a sync server sets it).
        public var collectedClock = CausalContext()
        /// Runs in the apply's transaction after the merge, so that what it writes commits
        /// with the merge or not at all (a server binds a device to its replica here).
        public var beforeCommit: ((Database) throws -> Void)?

        /// Options for an apply from `origin`, checked by `validate` and, when set, `author`.
        public init(
            origin: String? = nil, validate: ((ProposedChange) throws -> String?)? = nil, author: ReplicaID? = nil,
            beforeCommit: ((Database) throws -> Void)? = nil
        ) {
            self.origin = origin
            self.validate = validate
            self.author = author
            self.beforeCommit = beforeCommit
        }
    }

    /// A page of the change feed.
    public struct ChangeBatch: Sendable, Hashable {
        /// The changes of the page: per-field deltas of the records changed after the cursor.
        public var changeset: Changeset
        /// The cursor to continue from.
        public var next: UInt64
        /// Whether more changes follow `next`.
        public var hasMore: Bool

        /// A page of `changeset`, to continue from `next`.
        public init(changeset: Changeset, next: UInt64, hasMore: Bool) {
            self.changeset = changeset
            self.next = next
            self.hasMore = hasMore
        }
    }

    /// What an apply did: the report every replica kind returns (ConvergeCore's
    /// `ApplyReport`), with the feed's positions and the rejections filled in.
    public typealias ApplyReport = ConvergeCore.ApplyReport

    /// What this replica has sent to and received from one peer.
    public struct PeerCursor: Sendable, Hashable, Codable {
        /// The feed position the peer acknowledged receiving from us.
        public var sent: UInt64
        /// The peer's feed position we have applied.
        public var received: UInt64
        /// A cursor at `sent` and `received` (nothing exchanged yet by default).
        public init(sent: UInt64 = 0, received: UInt64 = 0) {
            self.sent = sent
            self.received = received
        }
    }

    /// The app's database writer, on which Converge installed its capture functions: write
    /// replicated tables through it.
    public let writer: any DatabaseWriter
    /// The options the database was opened with.
    public let configuration: Configuration
    let source: StampSource
    private let tablesLock = NSLock()
    nonisolated(unsafe) private var _tables: [String: ReplicatedTable]
    nonisolated(unsafe) private var _authority: ReplicaID?

    /// Opens (and on first use, sets up) replication on an app's database.
    ///
    /// Detects a file that was copied or restored (its fingerprint no longer matches the
    /// one recorded with its identity) and then takes a new identity, so that it never
    /// issues stamps another replica has already seen.
    public init(_ writer: any DatabaseWriter, configuration: Configuration = Configuration()) throws {
        self.writer = writer
        self.configuration = configuration
        let fingerprint = Identity.fingerprint(path: writer.path)
        let fresh = try writer.read { db in try !db.tableExists("converge_identity") }
        if fresh && configuration.incrementalVacuum {
            try writer.writeWithoutTransaction { db in
                if try Int.fetchOne(db, sql: "PRAGMA auto_vacuum") == 0 {
                    try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL")
                    try db.execute(sql: "VACUUM")
                }
            }
        }
        let opened = try writer.write { db -> (Identity, [String: ReplicatedTable]) in
            try MetadataSchema.create(db)
            let identity = try Identity.loadOrCreate(db, fingerprint: fingerprint, newReplica: configuration.makeReplicaID)
            return (identity, try ReplicatedTable.load(db))
        }
        _authority = opened.0.authority
        source = StampSource(replica: opened.0.replica, clock: HybridClock(latest: opened.0.clock), physicalTime: configuration.physicalTime)
        _tables = opened.1
        try writer.write { db in source.install(in: db) }
        if opened.0.wasCopied { try resetIdentity() }
    }

    /// This replica's identity.
    public var replicaID: ReplicaID { source.replica }

    /// The clock's high-water mark.
    public var clock: HLC { source.clock.latest }

    var tables: [String: ReplicatedTable] {
        get { tablesLock.withLock { _tables } }
        set { tablesLock.withLock { _tables = newValue } }
    }

    /// The replica whose concurrent writes show in `.authority` columns: the sync server,
    /// learned on the first sync (see ``setAuthority(_:)``); `nil` until then.
    public internal(set) var authority: ReplicaID? {
        get { tablesLock.withLock { _authority } }
        set { tablesLock.withLock { _authority = newValue } }
    }

    /// The merge schemas of the replicated tables.
    public var replicatedTables: [String: TableSchema] { tables.mapValues(\.schema) }

    /// The replicated tables with their keys' declared types, by name.
    public var tableDescriptions: [String: ReplicatedTable] { tables }

    /// Runs `body` in a write transaction with the captured log folded into the metadata,
    /// and saves the sequence counter and clock before committing.
    ///
    /// The clock moves `body` makes (stamps, receives) stand only if the transaction
    /// commits; when it throws or rolls back they are forgotten (see ``StampSource``). The
    /// transaction is ended here, inside the writer's serialized access, rather than left to
    /// the observer alone: a transaction that wrote nothing may end without a notification.
    func withMetadata<T>(_ body: (inout MetadataStore) throws -> T) throws -> T {
        let tables = self.tables
        return try writer.writeWithoutTransaction { db in
            var result: T?
            do {
                try db.inTransaction {
                    // Read inside the write: `setAuthority` changes it in a write transaction.
                    var metadata = try MetadataStore(db, tables: tables, authority: authority)
                    result = try source.withoutCapture { () throws -> T in
                        _ = try LogFold.fold(&metadata, replica: source.replica)
                        let result = try body(&metadata)
                        // Every path settles what it committed; this catches one that did not.
                        _ = try metadata.settleUnique()
                        return result
                    }
                    try metadata.saveSequence(clock: source.transactionClock.latest)
                    return .commit
                }
            } catch {
                source.endTransaction(committed: false)
                throw error
            }
            source.endTransaction(committed: true)
            return result!
        }
    }
}
