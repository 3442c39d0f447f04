import ConvergeCore
import ConvergeSQLite
import Foundation

/// Options of a sync server.
public struct ServerConfiguration: Sendable {
    /// Where the per-namespace databases live (`<dataDirectory>/<namespace>.sqlite`).
    public var dataDirectory: URL
    /// The HS256 secret that signs bearer tokens.
    public var jwtSecret: String
    /// A P-256 public key (PEM): ES256 tokens it verifies are accepted beside HS256 ones.
    public var jwtES256PublicKeyPEM: String?
    /// What a token must carry beyond a valid signature (`exp` required by default), and
    /// the lifetime of the tokens this server signs.
    public var tokens = TokenPolicy()
    /// The admin API's credential (`Authorization: Bearer <it>`), at least 32 bytes; `nil`
    /// turns the admin API off. Never a device token: see ``SyncService/adminDevices(authorization:namespace:)``.
    public var adminToken: String?
    /// HTTPS: the certificate and key files (PEM) the server terminates TLS with; `nil`
    /// serves plain HTTP (behind a proxy that terminates TLS, or on loopback).
    public var tls: TLSSettings?
    /// The largest request body accepted (larger ones get 413).
    public var maxBodyBytes: Int
    /// Caps on one pulled page, whatever the client asks.
    public var maxPullRecords: Int
    /// The most changeset bytes in one pulled page (at least 1).
    public var maxPullBytes: Int
    /// The app's tables, created and replicated in every namespace.
    public var schema: ServerSchema
    /// Connections idle this long are closed.
    public var idleTimeoutSeconds: Int
    /// How often an event stream sends a heartbeat comment.
    public var heartbeatSeconds: Int
    /// A connection whose first request head has not arrived in full this long after it
    /// opened gets 408 and is closed (silent and slow clients hold no connection for long;
    /// later requests on a kept-alive connection are bounded by `idleTimeoutSeconds`).
    public var requestHeadTimeoutSeconds: Int
    /// The most connections open at once. A new connection beyond it closes an open one
    /// that waits for a request head (one that never sent any first, then the kept-alive
    /// connection idle the longest); when every connection has a request in progress, the
    /// newcomer gets 503 and is closed. Capped below the process's limit of open files, so
    /// that the server never runs out of descriptors.
    public var maxConnections: Int
    /// The largest request head (request line and header fields) accepted; a larger one gets
    /// 431 and the connection is closed.
    public var maxHeaderBytes: Int
    /// Server-side rules: sees each row a push changes visibly (before and after) and
    /// returns why it is refused, or `nil`. A refused change is undone by a compensating
    /// write of the server, so every replica converges to the server's row, and the
    /// pushing device receives the rejection and its reason in its sync status. It runs
    /// inside the push's transaction, in turn with the namespace's other pushes: keep it
    /// fast and free of I/O.
    public var validator: Validator?
    /// The namespaces' store options: how far ahead of the server's time a pushed stamp may
    /// be before it is quarantined, and the server's physical time (the simulator injects
    /// virtual time; keep the default wall clock otherwise).
    public var store: ReplicatedDatabase.Configuration

    // Request limits: what one push may carry. Checked while the changeset is decoded,
    // before storage is touched; each refusal is a typed 413 (or 400 for clocks) naming
    // the limit. The defaults sit far above an honest device's batch (1,000 records,
    // 1 MiB, 100,000 fields), so that only hostile or broken clients meet them.

    /// Distinct replicas a pushed changeset may name (its replica table).
    public var maxReplicasPerRequest: Int = 10_000
    /// Records a pushed changeset may carry.
    public var maxRecordsPerRequest: Int = 10_000
    /// Field states a pushed changeset may carry, over all its records.
    public var maxFieldsPerRequest: Int = 200_000
    /// Bytes of a pushed record key (UTF-8 for text). Keys are indexed and compared on
    /// every apply of their record: a huge one slows every later push to it.
    public var maxKeyBytes: Int = 1_024
    /// Bytes of one pushed text or blob value (UTF-8 for text).
    public var maxValueBytes: Int = 4 << 20
    /// UTF-8 bytes of a pushed table or column name: like keys, names are stored with every
    /// record that has them (tables the server does not know are parked, columns kept).
    public var maxNameBytes: Int = 256
    /// Add-tags of one pushed record: its live dots plus its fields' incarnations (an
    /// honest record holds about one per replica that re-added it concurrently).
    public var maxDotsPerRecord: Int = 256
    /// How far ahead of the server's physical time (``store``'s `physicalTime`) a pushed
    /// stamp may be; beyond it the push is refused (400 `implausible_clock`). Between the
    /// store's drift limit and this bound a change is quarantined until time catches up;
    /// a value below the drift limit counts as the drift limit. A week: devices whose date
    /// is set a day or so wrong still sync (their changes wait), while no stamp can hold the
    /// quarantine, or after it every clock, years ahead.
    public var maxClockAheadMilliseconds: UInt64 = 7 * 24 * 60 * 60 * 1000
    /// No pushed stamp may be later than this, whatever the server's time: 2200-01-01 UTC.
    public var clockCeilingMilliseconds: UInt64 = 7_258_118_400_000

    // Namespace resources.

    /// Namespace stores kept open at once (each holds a few files and some cache); the
    /// least recently used beyond it are closed once no request uses them.
    public var maxOpenNamespaces: Int = 256
    /// A namespace store unused this long is closed.
    public var namespaceIdleSeconds: Int = 300
    /// Namespaces that may exist; a push that would create one more is refused (403
    /// `too_many_namespaces`). `nil`: no bound.
    public var maxNamespaces: Int?

    /// Tombstone collection (DESIGN §9): on by default.
    public var collection = CollectionPolicy()

    /// How the server collects deleted records and retires devices (DESIGN §9).
    ///
    /// Each device that speaks protocol version 2 tells the server, with every push that
    /// empties its feed, the server position it had applied: its *stable position*. The
    /// smallest one over the namespace's active devices is the *frontier*; a record deleted
    /// at or below it and unchanged since can receive no edit concurrent with its delete
    /// any more, so the server drops its metadata and tells devices to drop it too. A device
    /// not seen for `retentionSeconds` is retired: it no longer holds the frontier back, and
    /// its next request gets 410 `reset_required` (its engine resets and resyncs, keeping
    /// what its user typed). Devices of older releases never report a stable position: while
    /// one is active, nothing is collected.
    public struct CollectionPolicy: Sendable {
        /// Whether the server collects at all. Off, tombstones are kept forever and no device
        /// is retired.
        public var enabled: Bool
        /// How long a device may stay away before it is retired (default 30 days).
        public var retentionSeconds: UInt64 {
            get { retentionMilliseconds / 1_000 }
            set {
                let (milliseconds, overflow) = newValue.multipliedReportingOverflow(by: 1_000)
                retentionMilliseconds = overflow ? .max : milliseconds
            }
        }
        /// The retention window in milliseconds (the simulator's runs last seconds).
        public var retentionMilliseconds: UInt64
        /// The time the retention window is measured on, in milliseconds since 1970; `nil`:
        /// the namespaces' store clock (``ServerConfiguration/store``'s `physicalTime`). The
        /// simulator stops it while it heals, when it moves the store clock far ahead only
        /// to release quarantines.
        public var clock: (@Sendable () -> UInt64)?
        /// The most records one round collects (the rest wait for the next round).
        public var maxRecordsPerRound: Int
        /// The most collected records one sync answer lists for a device.
        public var maxCollectedPerAnswer: Int

        /// Defaults collect deletes after 30 days, at most 10,000 records a round and 1,000 listed per answer; counts below 1 count as 1.
        public init(enabled: Bool = true, retentionSeconds: UInt64 = 30 * 24 * 60 * 60, maxRecordsPerRound: Int = 10_000, maxCollectedPerAnswer: Int = 1_000) {
            self.enabled = enabled
            let (milliseconds, overflow) = retentionSeconds.multipliedReportingOverflow(by: 1_000)
            self.retentionMilliseconds = overflow ? .max : milliseconds
            self.maxRecordsPerRound = max(1, maxRecordsPerRound)
            self.maxCollectedPerAnswer = max(1, maxCollectedPerAnswer)
        }
    }

    /// A rule for pushed changes; see ``ServerConfiguration/validator``.
    public typealias Validator = @Sendable (_ change: ProposedChange, _ pusher: Principal) -> String?

    /// A server storing its namespaces under `dataDirectory` and signing and verifying HS256 tokens with `jwtSecret` (at least 32 bytes). Sizes are in bytes and times in seconds; counts and timeouts below 1 (headers below 1 KiB) are raised to that minimum; `maxBodyBytes` is taken as given.
    public init(
        dataDirectory: URL,
        jwtSecret: String,
        jwtES256PublicKeyPEM: String? = nil,
        maxBodyBytes: Int = 8 << 20,
        maxPullRecords: Int = 1_000,
        maxPullBytes: Int = 4 << 20,
        schema: ServerSchema = ServerSchema(),
        idleTimeoutSeconds: Int = 60,
        heartbeatSeconds: Int = 20,
        requestHeadTimeoutSeconds: Int = 10,
        maxConnections: Int = 1_000,
        maxHeaderBytes: Int = 32 << 10,
        validator: Validator? = nil,
        store: ReplicatedDatabase.Configuration = ReplicatedDatabase.Configuration()
    ) {
        self.validator = validator
        self.store = store
        self.heartbeatSeconds = max(1, heartbeatSeconds)
        self.requestHeadTimeoutSeconds = max(1, requestHeadTimeoutSeconds)
        self.maxConnections = max(1, maxConnections)
        self.maxHeaderBytes = max(1 << 10, maxHeaderBytes)
        self.idleTimeoutSeconds = max(1, idleTimeoutSeconds)
        self.dataDirectory = dataDirectory
        self.jwtSecret = jwtSecret
        self.jwtES256PublicKeyPEM = jwtES256PublicKeyPEM
        self.maxBodyBytes = maxBodyBytes
        self.maxPullRecords = max(1, maxPullRecords)
        self.maxPullBytes = max(1, maxPullBytes)
        self.schema = schema
    }
}

/// The app's tables as the server replicates them.
///
/// The server merges and forwards changes of tables it does not know (they are parked), so
/// a schema is optional; it is needed for the server to list conflicts and to show rows.
/// As JSON (`--schema` file):
///
/// ```json
/// {"tables": [{"name": "notes",
///              "create": "CREATE TABLE notes(id TEXT PRIMARY KEY NOT NULL, title, amount, code)",
///              "policies": {"amount": "critical"},
///              "deletePolicy": "updateWins",
///              "uniqueIndexes": [{"name": "notes_code", "columns": ["code"]}]}]}
/// ```
///
/// `uniqueIndexes` (optional) opts the table in to constraint conflicts (DESIGN §4): the
/// server creates each index (`CREATE UNIQUE INDEX IF NOT EXISTS name ON table(columns)`)
/// and replicates the table with `allowUniqueIndexes`, so that clashing records from
/// different devices never fail a push: the first claim is shown, the others are held and
/// listed as conflicts. Give the indexes the names the devices' indexes have: a conflict
/// names its index, and the server's list then reads like the devices'. A UNIQUE
/// constraint written in `create` itself is taken too once the table lists an index here;
/// without any, a UNIQUE index beyond the key is refused, as by `replicate(table:)`.
public struct ServerSchema: Sendable, Hashable, Codable {
    /// One app table: how to create it and how its columns merge.
    public struct Table: Sendable, Hashable, Codable {
        /// The table's name, as the devices name it.
        public var name: String
        /// The `CREATE TABLE` statement, run when the table does not exist yet.
        public var create: String
        /// Column policies: `"lww"` (the default), `"critical"` (concurrent values kept for
        /// the user to choose) or `"authority"` (concurrent values resolve to the server's).
        public var policies: [String: Policy]
        /// What wins when an edit races a delete; must match the devices' (default `updateWins`).
        public var deletePolicy: DeletePolicy
        /// UNIQUE indexes beyond the key, created with the table and replicated as
        /// constraint conflicts (see ``ServerSchema``).
        public var uniqueIndexes: [UniqueIndex]
        /// Columns the devices encrypt (DESIGN §11): the server stores, merges and forwards
        /// their ciphertext (blobs) without the key. Declared here so that what would need
        /// to read them is refused at load: an `"authority"` policy or a unique index on
        /// one. A validator sees their ciphertext, never their values.
        public var encrypted: [String]

        /// A table created by `create`, merging as `policies` and `deletePolicy` say.
        public init(
            name: String, create: String, policies: [String: Policy] = [:], deletePolicy: DeletePolicy = .updateWins,
            uniqueIndexes: [UniqueIndex] = [], encrypted: [String] = []
        ) {
            self.name = name
            self.create = create
            self.policies = policies
            self.deletePolicy = deletePolicy
            self.uniqueIndexes = uniqueIndexes
            self.encrypted = encrypted
        }

        /// The statements creating ``uniqueIndexes`` (when they do not exist yet).
        public var uniqueIndexStatements: [String] {
            uniqueIndexes.map { index in
                "CREATE UNIQUE INDEX IF NOT EXISTS \"\(index.name)\" ON \"\(name)\"(\(index.columns.map { "\"\($0)\"" }.joined(separator: ", ")))"
            }
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decode(String.self, forKey: .name)
            create = try container.decode(String.self, forKey: .create)
            policies = try container.decodeIfPresent([String: Policy].self, forKey: .policies) ?? [:]
            deletePolicy = try container.decodeIfPresent(DeletePolicy.self, forKey: .deletePolicy) ?? .updateWins
            uniqueIndexes = try container.decodeIfPresent([UniqueIndex].self, forKey: .uniqueIndexes) ?? []
            encrypted = try container.decodeIfPresent([String].self, forKey: .encrypted) ?? []
        }
    }

    /// A column's merge policy as the JSON schema spells it.
    public enum Policy: String, Sendable, Hashable, Codable {
        /// Last writer wins (`ColumnPolicy.lww`).
        case lww
        /// Concurrent values kept for the user to choose (`ColumnPolicy.critical`).
        case critical
        /// Concurrent values resolve to the server's (`ColumnPolicy.authority`).
        case authority

        /// The same policy as the merge engine's `ColumnPolicy`.
        public var columnPolicy: ColumnPolicy {
            switch self {
            case .lww: return .lww
            case .critical: return .critical
            case .authority: return .authority
            }
        }
    }

    /// The tables every namespace creates and replicates.
    public var tables: [Table]

    /// A schema of `tables`; empty by default, where the server parks every table's changes.
    public init(tables: [Table] = []) {
        self.tables = tables
    }

    /// Reads a schema from a JSON file (the `--schema` format above); throws if the file cannot be read or decoded.
    public init(contentsOf url: URL) throws {
        self = try JSONDecoder().decode(ServerSchema.self, from: Data(contentsOf: url))
    }
}
