import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import Foundation
import NIOCore
import PostgresNIO

extension PostgresNamespaceStore {
    /// Applies a push in one transaction, with the namespace's head row locked: the same
    /// checks, planner and answers as the SQLite store (see ConvergeServer's `NamespaceStore.push(_:replica:device:validate:)`).
    public func push(
        _ changeset: Changeset, replica: ReplicaID, device: String, validate: (@Sendable (ProposedChange) -> String?)?
    ) async throws -> ApplyReport {
        try await transaction { connection in
            try await self.push(changeset, replica: replica, device: device, validate: validate, connection)
        }
    }

    private func push(
        _ changeset: Changeset, replica: ReplicaID, device: String, validate: (@Sendable (ProposedChange) -> String?)?,
        _ connection: PostgresConnection
    ) async throws -> ApplyReport {
        var head = try await lockHead(connection)
        let bound = try await connection.query(
            "SELECT replica FROM converge_devices WHERE namespace = \(namespace) AND device = \(device)", logger: logger
        ).single(ByteBuffer.self).flatMap { ReplicaID(bytes: Array(buffer: $0)) }
        if let bound, bound != replica {
            throw PushRefusal(message: "device \(device) is bound to replica \(bound), not \(replica)")
        }
        if bound == nil { try await checkClaim(of: replica, by: device, head: head, connection) }
        let descriptions = tables.descriptions
        try ReplicatedTable.checkAddresses(of: changeset, tables: descriptions)

        // Parts of lives collected here (DESIGN §9) that a device still relays go (everyone
        // drops them), and a context covering a collected delete (a key inserted again) is
        // checked against what the collected records had seen.
        let changeset = CollectionPlanner.withoutCollectedLives(changeset, logged: try await loggedCollected(in: changeset, connection))

        let now = storage.configuration.physicalTime()
        var context = ApplyPlanner.Context(
            replica: head.replica, clock: head.clock, physicalMilliseconds: now, maxDriftMilliseconds: storage.configuration.maxDriftMilliseconds,
            schemas: tables.schemas, authority: head.replica, author: replica)
        var quarantined = try await dueQuarantine(context: context, connection)
        let ahead = changeset.records.filter { !context.isDue($0.state) }.map { RecordAddress(table: $0.table, key: $0.key) }
        for (address, state) in try await quarantinedStates(at: ahead, connection) where quarantined[address] == nil { quarantined[address] = state }
        var entries = try await self.entries(at: ApplyPlanner.addresses(of: changeset, quarantineDue: quarantined.keys), connection)

        let plan: ApplyPlanner.Plan
        do {
            do {
                plan = try ApplyPlanner.plan(changeset, stored: entries.mapValues(\.state), quarantined: quarantined, context: context)
            } catch {
                // Only then is the collected clock needed (a context covering a collected
                // delete): read it, and plan again with it.
                context.collectedClock = try await collectedClock(connection)
                guard !context.collectedClock.isEmpty else { throw error }
                plan = try ApplyPlanner.plan(changeset, stored: entries.mapValues(\.state), quarantined: quarantined, context: context)
            }
        } catch let error as ApplyPlanner.Refusal {
            switch error {
            case .notAuthor(let address, let stamp):
                throw PushRefusal(message: "the push carries a write stamped by replica \(stamp.replica) at \(stamp.hlc) (table \(address.table), key \(address.key)), which this server does not hold; a device may only write as its own replica \(replica)")
            }
        }

        var report = ApplyReport(plan)
        report.feedBefore = head.sequence
        let shown = try await store(
            Dictionary(uniqueKeysWithValues: plan.changes.map { ($0.address, $0.after) }), entries: &entries, head: &head, connection)
        report.feedAfter = head.sequence
        var clock = HybridClock(latest: head.clock)
        if let receive = plan.receive { _ = clock.receive(receive, physicalMilliseconds: now) }

        // Validation: each visibly changed row is shown; a refused one is undone by a write of
        // the server stamped after everything it received, so every replica converges to it.
        if let validate {
            let unseen = shown.map(\.address).filter { entries[$0] == nil }
            for (address, entry) in try await self.entries(at: unseen, connection) { entries[address] = entry }
            let compensations = ValidationPlanner.plan(shown, schemas: tables.schemas, authority: head.replica, stamp: {
                Stamp(hlc: clock.tick(physicalMilliseconds: now), replica: head.replica)
            }, validate: validate)
            for compensation in compensations {
                let address = compensation.address
                let id = try await connection.query(
                    """
                    INSERT INTO converge_rejections(namespace, device, tbl, key, reason, at)
                    VALUES (\(namespace), \(device), \(address.table), \(KeyCodec.encode(address.key)), \(compensation.reason), \(Double(now) / 1_000))
                    RETURNING id
                    """, logger: logger).single(Int64.self) ?? 0
                report.rejections.append(ChangeRejection(
                    id: id, table: address.table, key: address.key, reason: compensation.reason, origin: device, physicalMilliseconds: now))
            }
            if !compensations.isEmpty {
                // Stored like any write: new positions (beyond `feedAfter`, so the pushing
                // device pulls them), rows settled, claims kept.
                _ = try await store(
                    Dictionary(uniqueKeysWithValues: compensations.map { ($0.address, $0.after) }), entries: &entries, head: &head, connection)
                try await connection.query(
                    """
                    DELETE FROM converge_rejections WHERE namespace = \(namespace) AND id <= (
                        SELECT id FROM converge_rejections WHERE namespace = \(namespace) ORDER BY id DESC OFFSET \(Self.rejectionLimit) LIMIT 1)
                    """, logger: logger)
            }
        }

        try await writeQuarantine(plan, connection)
        if plan.counts.quarantinedRecords > 0 {
            let count = try await connection.query("SELECT count(*)::int8 FROM converge_quarantine WHERE namespace = \(namespace)", logger: logger).single(Int64.self) ?? 0
            if count > storage.configuration.maxQuarantinedRecords {
                throw ApplyError(table: "converge_quarantine", key: nil, reason: .quotaExceeded(what: "quarantine", limit: storage.configuration.maxQuarantinedRecords))
            }
        }
        if plan.changes.contains(where: { tables.tables[$0.address.table] == nil && $0.before.isBottom }) {
            let names = tables.tables.keys.sorted()
            let parked = try await connection.query(
                "SELECT count(*)::int8 FROM converge_records WHERE namespace = \(namespace) AND NOT (tbl = ANY(\(names)::text[]))", logger: logger
            ).single(Int64.self) ?? 0
            if parked > storage.configuration.maxParkedRecords {
                throw ApplyError(table: "converge_records", key: nil, reason: .quotaExceeded(what: "parked", limit: storage.configuration.maxParkedRecords))
            }
        }
        if bound == nil {
            // The binding commits with the push.
            try await connection.query(
                "INSERT INTO converge_devices(namespace, device, replica, bound_at) VALUES (\(namespace), \(device), \(ByteBuffer(bytes: replica.bytes)), \(Date().timeIntervalSince1970))",
                logger: logger)
        }
        var clocks = changeset.maxHLCByReplica
        if plan.rewound {
            // A device holds this server's stamps beyond its clock (the database was restored
            // from a backup): take a new identity, and never let a device claim the old one.
            clocks[head.replica] = max(clocks[head.replica] ?? .zero, clock.latest)
            logger.notice("a device holds the server's stamps beyond its clock (a restored database): taking a new identity", metadata: ["namespace": "\(namespace)"])
            head.replica = ReplicaID.random()
            report.identityReset = true
        }
        try await noteHeld(clocks, connection)
        head.clock = clock.latest
        try await save(head, connection)
        if head.sequence > report.feedBefore { try await notify(device: device, connection) }
        return report
    }

    /// Releases the quarantined records whose time has come, as a push does before its own
    /// changes: one transaction with the head row locked, the same planner.
    public func releaseDueQuarantine() async throws -> Int {
        // Most namespaces hold nothing in quarantine: one read decides, without the head lock.
        guard try await quarantinedCount() > 0 else { return 0 }
        return try await transaction { connection in
            var head = try await self.lockHead(connection)
            let now = self.storage.configuration.physicalTime()
            let context = ApplyPlanner.Context(
                replica: head.replica, clock: head.clock, physicalMilliseconds: now, maxDriftMilliseconds: self.storage.configuration.maxDriftMilliseconds,
                schemas: self.tables.schemas, authority: head.replica)
            let quarantined = try await self.dueQuarantine(context: context, connection)
            guard !quarantined.isEmpty else { return 0 }
            var entries = try await self.entries(at: ApplyPlanner.addresses(of: Changeset(), quarantineDue: quarantined.keys), connection)
            let plan = try ApplyPlanner.plan(Changeset(), stored: entries.mapValues(\.state), quarantined: quarantined, context: context)
            guard plan.counts.releasedRecords > 0 else { return 0 }
            let before = head.sequence
            _ = try await self.store(Dictionary(uniqueKeysWithValues: plan.changes.map { ($0.address, $0.after) }), entries: &entries, head: &head, connection)
            var clock = HybridClock(latest: head.clock)
            if let receive = plan.receive { _ = clock.receive(receive, physicalMilliseconds: now) }
            try await self.writeQuarantine(plan, connection)
            head.clock = clock.latest
            try await self.save(head, connection)
            if head.sequence > before { try await self.notify(device: "server", connection) }
            return plan.counts.releasedRecords
        }
    }

    static let rejectionLimit = 10_000

    /// Refuses a device's first push that declares a replica it cannot be: a reserved id,
    /// the server's own, one another device is bound to, or one whose writes are held here.
    private func checkClaim(of replica: ReplicaID, by device: String, head: Head, _ connection: PostgresConnection) async throws {
        if replica.isReserved || replica == head.replica {
            throw PushRefusal(message: "replica \(replica) is reserved; a device must push as a replica of its own")
        }
        let replicaBytes = ByteBuffer(bytes: replica.bytes)
        if let other = try await connection.query(
            "SELECT device FROM converge_devices WHERE namespace = \(namespace) AND replica = \(replicaBytes)", logger: logger
        ).single(String.self) {
            throw PushRefusal(message: "replica \(replica) is bound to device \(other); device \(device) cannot claim it")
        }
        if try await connection.query(
            "SELECT 1::int8 FROM converge_replicas WHERE namespace = \(namespace) AND replica = \(replicaBytes)", logger: logger
        ).single(Int64.self) != nil {
            throw PushRefusal(message: "this server already holds writes of replica \(replica); device \(device) cannot claim it")
        }
    }

    /// The join of the contexts of every record collected in the namespace
    /// (`ApplyPlanner.Context.collectedClock`).
    private func collectedClock(_ connection: PostgresConnection) async throws -> CausalContext {
        var entries = [CausalContext.Entry]()
        for try await (replica, hlc) in try await connection.query(
            "SELECT replica, hlc FROM converge_collected_clock WHERE namespace = \(namespace)", logger: logger
        ).decode((ByteBuffer, Int64).self) {
            if let id = ReplicaID(bytes: Array(buffer: replica)) { entries.append(.init(replica: id, hlc: HLC(rawValue: UInt64(bitPattern: hlc)))) }
        }
        return CausalContext(entries)
    }

    private func noteHeld(_ clocks: [ReplicaID: HLC], _ connection: PostgresConnection) async throws {
        guard !clocks.isEmpty else { return }
        let sorted = clocks.sorted { $0.key < $1.key }
        try await connection.query(
            """
            INSERT INTO converge_replicas(namespace, replica, hlc)
            SELECT \(namespace), * FROM unnest(\(sorted.map { ByteBuffer(bytes: $0.key.bytes) })::bytea[], \(sorted.map { Int64(bitPattern: $0.value.rawValue) })::int8[])
            ON CONFLICT (namespace, replica) DO UPDATE SET hlc = GREATEST(converge_replicas.hlc, excluded.hlc)
            """, logger: logger)
    }

    /// The collected lives of `changeset`'s records still listed (not dropped yet by every
    /// device): their contexts, by record.
    private func loggedCollected(in changeset: Changeset, _ connection: PostgresConnection) async throws -> [RecordAddress: [CausalContext?]] {
        guard !changeset.records.isEmpty else { return [:] }
        let rows = try await connection.query(
            """
            SELECT c.tbl, c.key, c.context FROM converge_collected c
            JOIN (SELECT DISTINCT * FROM unnest(\(changeset.records.map(\.table))::text[], \(changeset.records.map { KeyCodec.encode($0.key) })::bytea[])) AS a(tbl, key)
              ON c.tbl = a.tbl AND c.key = a.key
            WHERE c.namespace = \(namespace)
            """, logger: logger)
        var result = [RecordAddress: [CausalContext?]]()
        for try await (table, key, context) in rows.decode((String, ByteBuffer, ByteBuffer?).self) {
            let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
            do {
                result[address, default: []].append(try context.map { try CausalContext(packedBytes: Array(buffer: $0)) })
            } catch {
                throw RecordBlobCorruption("collected context of \(table) \(address.key): \(error)")
            }
        }
        return result
    }

    /// The quarantined records that may be due (the planner decides).
    private func dueQuarantine(context: ApplyPlanner.Context, _ connection: PostgresConnection) async throws -> [RecordAddress: RecordState] {
        let limit = context.physicalMilliseconds.addingReportingOverflow(context.maxDriftMilliseconds)
        let boundary = limit.overflow ? UInt64.max : (min(limit.partialValue, HLC.millisecondsMax) << 16) | 0xFFFF
        let rows = try await connection.query(
            "SELECT tbl, key, state FROM converge_quarantine WHERE namespace = \(namespace) AND max_hlc <= \(Int64(clamping: boundary))", logger: logger)
        return try await Self.states(rows)
    }

    private func quarantinedStates(at addresses: [RecordAddress], _ connection: PostgresConnection) async throws -> [RecordAddress: RecordState] {
        guard !addresses.isEmpty else { return [:] }
        let rows = try await connection.query(
            """
            SELECT q.tbl, q.key, q.state FROM converge_quarantine q
            JOIN unnest(\(addresses.map(\.table))::text[], \(addresses.map { KeyCodec.encode($0.key) })::bytea[]) AS a(tbl, key)
              ON q.tbl = a.tbl AND q.key = a.key
            WHERE q.namespace = \(namespace)
            """, logger: logger)
        return try await Self.states(rows)
    }

    private static func states(_ rows: PostgresRowSequence) async throws -> [RecordAddress: RecordState] {
        var result = [RecordAddress: RecordState]()
        for try await (table, key, state) in rows.decode((String, ByteBuffer, ByteBuffer).self) {
            let address = RecordAddress(table: table, key: try KeyCodec.decode(key))
            do {
                result[address] = try RecordEntry.decodeState(Array(buffer: state))
            } catch {
                throw StorageCorruption("quarantined record \(address.key) of \(table): \(error.detail)")
            }
        }
        return result
    }

    private func writeQuarantine(_ plan: ApplyPlanner.Plan, _ connection: PostgresConnection) async throws {
        if !plan.released.isEmpty {
            try await connection.query(
                """
                DELETE FROM converge_quarantine q USING unnest(\(plan.released.map(\.table))::text[], \(plan.released.map { KeyCodec.encode($0.key) })::bytea[]) AS a(tbl, key)
                WHERE q.namespace = \(namespace) AND q.tbl = a.tbl AND q.key = a.key
                """, logger: logger)
        }
        guard !plan.quarantine.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO converge_quarantine(namespace, tbl, key, max_hlc, state)
            SELECT \(namespace), * FROM unnest(
                \(plan.quarantine.map(\.address.table))::text[], \(plan.quarantine.map { KeyCodec.encode($0.address.key) })::bytea[],
                \(plan.quarantine.map { Int64(clamping: $0.state.maxHLC.rawValue) })::int8[],
                \(plan.quarantine.map { ByteBuffer(bytes: RecordEntry.encodeState($0.state)) })::bytea[])
            ON CONFLICT (namespace, tbl, key) DO UPDATE SET max_hlc = excluded.max_hlc, state = excluded.state
            """, logger: logger)
    }

    // MARK: The server's own writes

    public func write(_ write: ServerWrite) async throws {
        try await transaction { connection in try await self.write(write, connection) }
    }

    private func write(_ write: ServerWrite, _ connection: PostgresConnection) async throws {
        let table: String, key: Value
        switch write {
        case .upsert(let t, let k, _), .delete(let t, let k):
            table = t
            key = k
        }
        guard let schema = tables.schemas[table] else { throw SchemaError(table: table, reason: .noSuchTable) }
        if case .upsert(_, _, let values) = write {
            for column in values.keys where !schema.columns.contains(column) { throw SchemaError(table: table, reason: .unknownColumn(column)) }
        }
        try ReplicatedTable.checkAddress(RecordDelta(table: table, key: key, state: RecordState()), tables: tables.descriptions)
        var head = try await lockHead(connection)
        let address = RecordAddress(table: table, key: key)
        let entry = try await entries(at: [address], connection)[address] ?? .empty
        var state = entry.state
        let now = storage.configuration.physicalTime()
        var clock = HybridClock(latest: head.clock)
        let operation: CapturePlanner.Operation
        switch write {
        case .upsert(_, _, let values):
            if let row = ValidationPlanner.namedRow(state, schema, authority: head.replica) {
                operation = .update(changed: ColumnMap(values), row: ColumnMap(row.merging(values) { $1 }))
            } else {
                operation = .insert(ColumnMap(values))
            }
        case .delete:
            guard state.isAlive else { throw RecordNotFound(table: table, key: key) }
            operation = .delete
        }
        let stamp = Stamp(hlc: clock.tick(physicalMilliseconds: now), replica: head.replica)
        // Writing the values shown changes nothing (and moves no clock).
        guard CapturePlanner.apply(operation, at: stamp, to: &state, schema: schema) != nil, state != entry.state else { return }
        var entries = [address: entry]
        _ = try await store([address: state], entries: &entries, head: &head, connection)
        head.clock = clock.latest
        try await save(head, connection)
        try await notify(device: "server", connection)
    }
}
