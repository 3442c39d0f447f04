import ConvergeCore
import ConvergeProtocol
import ConvergeServer
import ConvergeSQLite
import Foundation
import Logging
import NIOCore
import PostgresNIO

/// One namespace in the shared PostgreSQL tables. It holds nothing but its name and the
/// server replica last read: every operation reads and writes the database, so any number
/// of server instances can serve the namespace at once.
public final class PostgresNamespaceStore: NamespaceStore, @unchecked Sendable {
    let storage: PostgresStorage
    /// The namespace this store serves.
    public let namespace: String
    private let lock = NSLock()
    private var replica: ReplicaID

    init(storage: PostgresStorage, namespace: String, replica: ReplicaID) {
        self.storage = storage
        self.namespace = namespace
        self.replica = replica
    }

    public var serverReplica: ReplicaID { lock.withLock { replica } }

    var logger: Logger { storage.logger }
    var tables: MaterializedTables { storage.tables }

    /// Runs `body` in one transaction, retried while the connection is lost.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await storage.retrying {
            try await self.storage.client.withTransaction(logger: self.logger) { connection in try await body(connection) }
        }
    }

    /// Runs one read query's `body`, retried while the connection is lost.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        try await storage.retrying { try await body(self.storage.client) }
    }

    // MARK: The head row

    /// The namespace's head row, locked for this transaction: pushes, server writes and
    /// collection of one namespace take it first, so they run one at a time across instances.
    struct Head {
        var replica: ReplicaID
        var clock: HLC
        var sequence: UInt64
    }

    func lockHead(_ connection: PostgresConnection) async throws -> Head {
        let rows = try await connection.query(
            "SELECT replica, clock, sequence FROM converge_namespaces WHERE namespace = \(namespace) FOR UPDATE", logger: logger)
        for try await (bytes, clock, sequence) in rows.decode((ByteBuffer, Int64, Int64).self) {
            guard let replica = ReplicaID(bytes: Array(buffer: bytes)) else { throw StorageCorruption("namespace \(namespace) has an unreadable server replica") }
            lock.withLock { self.replica = replica }
            return Head(replica: replica, clock: HLC(rawValue: UInt64(bitPattern: clock)), sequence: UInt64(bitPattern: sequence))
        }
        throw StorageCorruption("namespace \(namespace) has no head row")
    }

    func save(_ head: Head, _ connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE converge_namespaces SET replica = \(ByteBuffer(bytes: head.replica.bytes)), clock = \(Int64(bitPattern: head.clock.rawValue)),
                sequence = \(Int64(bitPattern: head.sequence)) WHERE namespace = \(namespace)
            """, logger: logger)
        lock.withLock { replica = head.replica }
    }

    /// Tells every instance's devices (NOTIFY is delivered when the transaction commits).
    func notify(device: String, _ connection: PostgresConnection) async throws {
        try await connection.query("SELECT pg_notify(\(storage.channel), \("\(storage.instance) \(namespace) \(device)"))", logger: logger)
    }

    // MARK: Records

    /// The stored entries of `addresses`, in one query.
    ///
    /// One primary-key probe per address, whatever the planner estimates: a plain join lets
    /// it hash-join against every record of the namespace when its statistics make the
    /// namespace look small (a new database, or one large namespace among many small ones),
    /// which makes each push cost as much as the namespace holds. (`LIMIT 1` keeps the
    /// lateral subquery from being flattened into that join; the key is unique anyway.)
    func entries(at addresses: [RecordAddress], _ connection: PostgresConnection) async throws -> [RecordAddress: RecordEntry] {
        guard !addresses.isEmpty else { return [:] }
        let rows = try await connection.query(
            """
            SELECT r.tbl, r.key, r.state, r.seqs
            FROM unnest(\(addresses.map(\.table))::text[], \(addresses.map { KeyCodec.encode($0.key) })::bytea[]) AS a(tbl, key)
            CROSS JOIN LATERAL (
                SELECT tbl, key, state, seqs FROM converge_records
                WHERE namespace = \(namespace) AND tbl = a.tbl AND key = a.key LIMIT 1) r
            """, logger: logger)
        var result = [RecordAddress: RecordEntry]()
        for try await (table, key, state, sequences) in rows.decode((String, ByteBuffer, ByteBuffer, ByteBuffer).self) {
            let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
            result[address] = try Self.entry(state: state, sequences: sequences, at: address)
        }
        return result
    }

    static func entry(state: ByteBuffer, sequences: ByteBuffer, at address: RecordAddress) throws -> RecordEntry {
        do {
            let decoded = try RecordEntry.decodeState(Array(buffer: state))
            let (membership, fields) = try RecordEntry.decodeSequences(Array(buffer: sequences))
            return RecordEntry(state: decoded, membershipSequence: membership, fieldSequences: fields)
        } catch {
            throw StorageCorruption("record \(address.key) of \(address.table): \(error.detail)")
        }
    }

    /// Writes changed entries (batched, in address order) and their rows in the app tables.
    func commit(
        _ changed: [(address: RecordAddress, entry: RecordEntry, conflicted: Bool)], rows: [(address: RecordAddress, row: ApplyPlanner.RowChange)],
        _ connection: PostgresConnection
    ) async throws {
        guard !changed.isEmpty else { return }
        let sorted = changed.sorted { $0.address < $1.address }
        try await connection.query(
            """
            INSERT INTO converge_records(namespace, tbl, key, position, alive, conflicted, state, seqs)
            SELECT \(namespace), * FROM unnest(
                \(sorted.map(\.address.table))::text[], \(sorted.map { KeyCodec.encode($0.address.key) })::bytea[],
                \(sorted.map { Int64(bitPattern: $0.entry.sequence) })::int8[], \(sorted.map(\.entry.state.isAlive))::bool[],
                \(sorted.map(\.conflicted))::bool[],
                \(sorted.map { ByteBuffer(bytes: RecordEntry.encodeState($0.entry.state)) })::bytea[],
                \(sorted.map { ByteBuffer(bytes: $0.entry.encodeSequences()) })::bytea[])
            ON CONFLICT (namespace, tbl, key) DO UPDATE SET position = excluded.position, alive = excluded.alive,
                conflicted = excluded.conflicted, state = excluded.state, seqs = excluded.seqs
            """, logger: logger)
        try await tables.write(rows, namespace: namespace, on: connection, logger: logger)
    }

    /// Whether `state` has critical columns in conflict (what ``conflicts()`` lists).
    func isConflicted(_ state: RecordState, table: String) -> Bool {
        guard let schema = tables.schemas[table] else { return false }
        return !(ApplyPlanner.openConflicts(state, schema) ?? []).isEmpty
    }

    // MARK: Reads

    public func changes(since cursor: UInt64, after position: UInt64?, maxRecords: Int, maxBytes: Int) async throws -> ReplicatedDatabase.ChangeBatch {
        let start = max(position ?? cursor, cursor)
        let maxRecords = max(1, maxRecords), maxBytes = max(1, maxBytes)
        return try await read { client in
            // The head and the page in one statement: one snapshot for both (and one round
            // trip). The head row comes once, with no record columns when the page is empty.
            let rows = try await client.query(
                """
                SELECT h.sequence, r.tbl, r.key, r.position, r.state, r.seqs FROM converge_namespaces h
                LEFT JOIN LATERAL (
                    SELECT tbl, key, position, state, seqs FROM converge_records
                    WHERE namespace = \(self.namespace) AND position > \(Int64(bitPattern: start)) ORDER BY position LIMIT \(maxRecords + 1)
                ) r ON true
                WHERE h.namespace = \(self.namespace)
                ORDER BY r.position
                """, logger: self.logger)
            var head: UInt64 = 0
            var records = [RecordDelta]()
            var bytes = 0
            var next = start
            var hasMore = false
            for try await (sequence, table, key, recordPosition, state, sequences) in rows.decode((Int64, String?, ByteBuffer?, Int64?, ByteBuffer?, ByteBuffer?).self) {
                head = UInt64(bitPattern: sequence)
                guard let table, let key, let recordPosition, let state, let sequences else { continue }
                if hasMore { continue }
                if records.count == maxRecords || (bytes + state.readableBytes > maxBytes && !records.isEmpty) {
                    hasMore = true
                    continue
                }
                let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
                let entry = try Self.entry(state: state, sequences: sequences, at: address)
                records.append(RecordDelta(table: table, key: address.key, state: entry.delta(after: cursor)))
                bytes += state.readableBytes
                next = UInt64(bitPattern: recordPosition)
            }
            if !hasMore { next = max(next, head) }
            return ReplicatedDatabase.ChangeBatch(changeset: Changeset(records: records), next: next, hasMore: hasMore)
        }
    }

    public func head() async throws -> UInt64 {
        try await read { client in
            UInt64(bitPattern: try await client.query("SELECT sequence FROM converge_namespaces WHERE namespace = \(self.namespace)", logger: self.logger)
                .single(Int64.self) ?? 0)
        }
    }

    public func changedRecordCount(since cursor: UInt64) async throws -> Int {
        try await read { client in
            Int(try await client.query(
                "SELECT count(*)::int8 FROM converge_records WHERE namespace = \(self.namespace) AND position > \(Int64(bitPattern: cursor))",
                logger: self.logger).single(Int64.self) ?? 0)
        }
    }

    /// The namespace's open conflicts: critical fields in conflict and unique-index clashes.
    public func conflicts() async throws -> [Conflict] {
        let schemas = tables.schemas
        let states = try await read { client in
            var result = [(RecordAddress, RecordState)]()
            let rows = try await client.query(
                "SELECT tbl, key, state FROM converge_records WHERE namespace = \(self.namespace) AND conflicted", logger: self.logger)
            for try await (table, key, state) in rows.decode((String, ByteBuffer, ByteBuffer).self) {
                let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
                do {
                    result.append((address, try RecordEntry.decodeState(Array(buffer: state))))
                } catch {
                    throw StorageCorruption("record \(address.key) of \(table): \(error)")
                }
            }
            return result
        }
        var result = [Conflict]()
        for (address, state) in states.sorted(by: { $0.0 < $1.0 }) {
            guard let schema = schemas[address.table] else { continue }
            for column in ApplyPlanner.openConflicts(state, schema) ?? [] {
                guard let register = state.multiValue(of: column), register.isConflicted else { continue }
                result.append(.field(FieldConflict(table: address.table, key: address.key, column: column, siblings: register.siblings)))
            }
        }
        return result + (try await constraintConflicts())
    }

    /// The records the namespace holds in quarantine (stamped too far ahead of the server's
    /// time).
    public func quarantinedCount() async throws -> Int {
        try await read { client in
            Int(try await client.query("SELECT count(*)::int8 FROM converge_quarantine WHERE namespace = \(self.namespace)", logger: self.logger)
                .single(Int64.self) ?? 0)
        }
    }

    public func snapshot() async throws -> Changeset {
        try await read { client in
            var records = [RecordDelta]()
            let rows = try await client.query("SELECT tbl, key, state, seqs FROM converge_records WHERE namespace = \(self.namespace)", logger: self.logger)
            for try await (table, key, state, sequences) in rows.decode((String, ByteBuffer, ByteBuffer, ByteBuffer).self) {
                let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
                records.append(RecordDelta(table: table, key: address.key, state: try Self.entry(state: state, sequences: sequences, at: address).state))
            }
            return Changeset(records: records).normalized
        }
    }

    /// The visible rows of `table` as the materialized PostgreSQL table holds them, by key
    /// (for tests and checks: what a backend service reading the table sees).
    public func materializedRows(of table: String) async throws -> [Value: [String: Value]] {
        guard let described = tables.tables[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
        let columns = described.schema.columns
        let key = described.schema.primaryKey
        let list = ([key] + columns).map { "\(quoted($0))::text" }.joined(separator: ", ")
        let text = try await read { client in
            var binds = PostgresBindings()
            binds.append(self.namespace)
            let rows = try await client.query(PostgresQuery(unsafeSQL: "SELECT \(list) FROM \(quoted(table)) WHERE namespace = $1", binds: binds), logger: self.logger)
            var result = [[String?]]()
            for try await row in rows {
                var values = [String?]()
                for cell in row { values.append(try cell.decode(String?.self)) }
                result.append(values)
            }
            return result
        }
        var result = [Value: [String: Value]]()
        for row in text {
            let key = Self.value(row[0], type: described.keyType)
            var values = [String: Value]()
            for (index, column) in columns.enumerated() { values[column] = Self.value(row[index + 1], type: described.columnTypes[index]) }
            result[key] = values
        }
        return result
    }

    /// A materialized cell read back as text, as the value it holds.
    static func value(_ text: String?, type: MaterializedTables.ColumnType) -> Value {
        guard let text else { return .null }
        switch type {
        case .integer: return Int64(text).map(Value.integer) ?? .text(text)
        case .real: return Double(text).map(Value.real) ?? .text(text)
        case .numeric: return Int64(text).map(Value.integer) ?? Double(text).map(Value.real) ?? .text(text)
        case .text: return .text(text)
        case .blob:
            // bytea's text form: \x followed by hex digits.
            guard text.hasPrefix("\\x") else { return .text(text) }
            var bytes = [UInt8]()
            var digits = text.dropFirst(2).makeIterator()
            while let high = digits.next(), let low = digits.next(), let byte = UInt8(String([high, low]), radix: 16) { bytes.append(byte) }
            return .blob(bytes)
        }
    }

    // MARK: Devices

    public func boundReplica(of device: String) async throws -> ReplicaID? {
        try await read { client in
            try await client.query("SELECT replica FROM converge_devices WHERE namespace = \(self.namespace) AND device = \(device)", logger: self.logger)
                .single(ByteBuffer.self).flatMap { ReplicaID(bytes: Array(buffer: $0)) }
        }
    }

    public func devices() async throws -> [DeviceInfo] {
        let (bound, revoked, counts) = try await read { client in
            var bound = [(String, ReplicaID?, Double)]()
            for try await (device, replica, at) in try await client.query(
                "SELECT device, replica, bound_at FROM converge_devices WHERE namespace = \(self.namespace)", logger: self.logger
            ).decode((String, ByteBuffer, Double).self) {
                bound.append((device, ReplicaID(bytes: Array(buffer: replica)), at))
            }
            var revoked = [(String, Double)]()
            for try await (device, at) in try await client.query(
                "SELECT device, revoked_at FROM converge_revocations WHERE namespace = \(self.namespace)", logger: self.logger
            ).decode((String, Double).self) {
                revoked.append((device, at))
            }
            var counts = [(String, Int64)]()
            for try await (device, count) in try await client.query(
                "SELECT device, count(*)::int8 FROM converge_rejections WHERE namespace = \(self.namespace) AND device IS NOT NULL GROUP BY device",
                logger: self.logger
            ).decode((String, Int64).self) {
                counts.append((device, count))
            }
            return (bound, revoked, counts)
        }
        var devices = [String: DeviceInfo]()
        for (device, replica, at) in bound {
            devices[device] = DeviceInfo(device: device, replica: replica, boundAt: Date(timeIntervalSince1970: at))
        }
        for (device, seen) in storage.activity(of: namespace) {
            var info = devices[device] ?? DeviceInfo(device: device)
            info.lastSeen = seen.seen
            info.lastPush = seen.push
            info.lastPull = seen.pull
            devices[device] = info
        }
        for (device, at) in revoked {
            var info = devices[device] ?? DeviceInfo(device: device)
            info.revokedAt = Date(timeIntervalSince1970: at)
            devices[device] = info
        }
        for (device, count) in counts where devices[device] != nil { devices[device]!.rejections = Int(count) }
        return devices.values.sorted { $0.device < $1.device }
    }

    public func revoke(device: String) async throws -> Bool {
        try await read { client in
            try await client.query(
                """
                INSERT INTO converge_revocations(namespace, device, revoked_at) VALUES (\(self.namespace), \(device), \(Date().timeIntervalSince1970))
                ON CONFLICT (namespace, device) DO NOTHING RETURNING 1::int8
                """, logger: self.logger).single(Int64.self) != nil
        }
    }

    /// Read from the database on every request: a device revoked through one instance is
    /// refused by all of them at once.
    public func isRevoked(device: String) async throws -> Bool {
        try await read { client in
            try await client.query(
                "SELECT 1::int8 FROM converge_revocations WHERE namespace = \(self.namespace) AND device = \(device)", logger: self.logger
            ).single(Int64.self) != nil
        }
    }

    public func noteActivity(of device: String, pushed: Bool, pulled: Bool) async {
        storage.noteActivity(namespace: namespace, device: device, pushed: pushed, pulled: pulled)
    }

    public func rejections(for device: String, after id: UInt64, limit: Int) async throws -> [ChangeRejection] {
        try await read { client in
            var result = [ChangeRejection]()
            let rows = try await client.query(
                """
                SELECT id, tbl, key, reason, at FROM converge_rejections
                WHERE namespace = \(self.namespace) AND device = \(device) AND id > \(Int64(clamping: id)) ORDER BY id LIMIT \(max(0, limit))
                """, logger: self.logger)
            for try await (id, table, key, reason, at) in rows.decode((Int64, String, ByteBuffer, String, Double).self) {
                result.append(ChangeRejection(
                    id: id, table: table, key: try KeyCodec.decode(key), reason: reason, origin: device, date: Date(timeIntervalSince1970: at)))
            }
            return result
        }
    }
}
