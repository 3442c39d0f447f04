import ConvergeCore
import ConvergeProtocol
import ConvergeServer
import Foundation
import NIOCore
import PostgresNIO

/// Tombstone collection (DESIGN §9), as the SQLite store does it, in the shared tables.
extension PostgresNamespaceStore {
    public func standing(of device: String) async throws -> DeviceStanding? {
        try await read { client in
            let rows = try await client.query(
                """
                SELECT replica, stable, serial, last_seen, retired_at FROM converge_standing
                WHERE namespace = \(self.namespace) AND device = \(device)
                """, logger: self.logger)
            for try await (replica, stable, serial, seen, retired) in rows.decode((ByteBuffer?, Int64, Int64, Int64, Int64?).self) {
                return DeviceStanding(
                    replica: replica.flatMap { ReplicaID(bytes: Array(buffer: $0)) }, stablePosition: UInt64(bitPattern: stable),
                    lastSeenMilliseconds: UInt64(bitPattern: seen), retiredMilliseconds: retired.map { UInt64(bitPattern: $0) },
                    serial: UInt64(bitPattern: serial))
            }
            return nil
        }
    }

    public func noteRound(
        of device: String, replica: ReplicaID, pullCursor: UInt64, pushComplete: Bool, collectedAfter: UInt64?, serial: UInt64?,
        nowMilliseconds: UInt64
    ) async throws {
        try await read { client in
            // A device's own claim only lowers what it may receive: clamp it to the head.
            _ = try await client.query(
                """
                INSERT INTO converge_standing(namespace, device, replica, stable, serial, collected_after, last_seen)
                SELECT \(self.namespace), \(device), \(ByteBuffer(bytes: replica.bytes)),
                    CASE WHEN \(pushComplete) THEN LEAST(\(Int64(clamping: pullCursor)), h.sequence) ELSE 0 END,
                    \(Int64(clamping: serial ?? 0)), \(collectedAfter.map { Int64(clamping: $0) })::int8, \(Int64(clamping: nowMilliseconds))
                FROM converge_namespaces h WHERE h.namespace = \(self.namespace)
                ON CONFLICT (namespace, device) DO UPDATE SET
                    serial = CASE WHEN converge_standing.replica IS NOT DISTINCT FROM excluded.replica
                        THEN GREATEST(converge_standing.serial, excluded.serial) ELSE excluded.serial END,
                    replica = excluded.replica, stable = GREATEST(converge_standing.stable, excluded.stable),
                    collected_after = CASE WHEN excluded.collected_after IS NULL THEN converge_standing.collected_after
                        ELSE GREATEST(coalesce(converge_standing.collected_after, 0), excluded.collected_after) END,
                    last_seen = GREATEST(converge_standing.last_seen, excluded.last_seen)
                """, logger: self.logger)
        }
    }

    public func collect(retentionMilliseconds: UInt64, nowMilliseconds: UInt64, limit: Int) async throws -> UInt64 {
        try await transaction { connection in
            // With the head row locked: a push of the namespace cannot revive a record while it goes.
            _ = try await self.lockHead(connection)
            let (horizon, overflow) = nowMilliseconds.subtractingReportingOverflow(retentionMilliseconds)
            // Retires the devices not seen within the retention window and takes the frontier
            // of the others, in one statement: its SELECT sees the rows as they were before
            // the UPDATE, so it leaves out the devices the UPDATE retires.
            let frontierRows = overflow
                ? try await connection.query(
                    "SELECT min(stable) FROM converge_standing WHERE namespace = \(self.namespace) AND retired_at IS NULL", logger: self.logger)
                : try await connection.query(
                    """
                    WITH retired AS (
                        UPDATE converge_standing SET retired_at = \(Int64(clamping: nowMilliseconds))
                        WHERE namespace = \(self.namespace) AND retired_at IS NULL AND last_seen < \(Int64(clamping: horizon))
                        RETURNING device)
                    SELECT min(stable) FROM converge_standing
                    WHERE namespace = \(self.namespace) AND retired_at IS NULL AND device NOT IN (SELECT device FROM retired)
                    """, logger: self.logger)
            let frontier = UInt64(bitPattern: try await frontierRows.single(Int64?.self).flatMap { $0 } ?? 0)
            if frontier > 0 {
                let rows = try await connection.query(
                    """
                    WITH candidates AS (
                        SELECT d.tbl, d.key, d.position FROM converge_records d
                        WHERE d.namespace = \(self.namespace) AND NOT d.alive AND d.position <= \(Int64(clamping: frontier))
                          AND NOT EXISTS (SELECT 1 FROM converge_quarantine q WHERE q.namespace = d.namespace AND q.tbl = d.tbl AND q.key = d.key)
                        ORDER BY d.position LIMIT \(max(0, limit)))
                    DELETE FROM converge_records r USING candidates c
                    WHERE r.namespace = \(self.namespace) AND r.tbl = c.tbl AND r.key = c.key
                    RETURNING r.tbl, r.key, r.position, r.state
                    """, logger: self.logger)
                var gone = [(position: Int64, table: String, key: ByteBuffer, context: CausalContext)]()
                for try await (table, key, position, state) in rows.decode((String, ByteBuffer, Int64, ByteBuffer).self) {
                    let decoded = try RecordEntry.decodeState(Array(buffer: state))
                    gone.append((position, table, key, decoded.membership.context))
                }
                gone.sort { ($0.position, $0.table) < ($1.position, $1.table) }
                if !gone.isEmpty {
                    try await connection.query(
                        """
                        INSERT INTO converge_collected(namespace, tbl, key, context)
                        SELECT \(self.namespace), g.tbl, g.key, g.context FROM unnest(\(gone.map(\.table))::text[], \(gone.map(\.key))::bytea[],
                            \(gone.map { ByteBuffer(bytes: $0.context.packedBytes) })::bytea[]) WITH ORDINALITY AS g(tbl, key, context, n)
                        ORDER BY g.n
                        """, logger: self.logger)
                    let clock = gone.reduce(CausalContext()) { $0.merging($1.context) }
                    try await connection.query(
                        """
                        INSERT INTO converge_collected_clock(namespace, replica, hlc)
                        SELECT \(self.namespace), * FROM unnest(\(clock.entries.map { ByteBuffer(bytes: $0.replica.bytes) })::bytea[],
                            \(clock.entries.map { Int64(bitPattern: $0.hlc.rawValue) })::int8[])
                        ON CONFLICT (namespace, replica) DO UPDATE SET hlc = GREATEST(converge_collected_clock.hlc, excluded.hlc)
                        """, logger: self.logger)
                }
            }
            // What every active device has dropped need not be listed again (with no active
            // device the bound is NULL, and nothing goes).
            try await connection.query(
                """
                DELETE FROM converge_collected WHERE namespace = \(self.namespace) AND id <= (
                    SELECT min(coalesce(collected_after, 0)) FROM converge_standing WHERE namespace = \(self.namespace) AND retired_at IS NULL)
                """, logger: self.logger)
            return frontier
        }
    }

    public func collected(after id: UInt64, limit: Int) async throws -> [SyncCollected] {
        try await read { client in
            var result = [SyncCollected]()
            let rows = try await client.query(
                """
                SELECT id, tbl, key FROM converge_collected WHERE namespace = \(self.namespace) AND id > \(Int64(clamping: id))
                ORDER BY id LIMIT \(max(0, limit))
                """, logger: self.logger)
            for try await (id, table, key) in rows.decode((Int64, String, ByteBuffer).self) {
                result.append(SyncCollected(id: UInt64(bitPattern: id), table: table, key: try KeyCodec.decode(key)))
            }
            return result
        }
    }

    public func retire(device: String, nowMilliseconds: UInt64) async throws -> Bool {
        try await read { client in
            try await client.query(
                """
                INSERT INTO converge_standing(namespace, device, last_seen, retired_at)
                VALUES (\(self.namespace), \(device), \(Int64(clamping: nowMilliseconds)), \(Int64(clamping: nowMilliseconds)))
                ON CONFLICT (namespace, device) DO UPDATE SET retired_at = excluded.retired_at WHERE converge_standing.retired_at IS NULL
                RETURNING 1::int8
                """, logger: self.logger).single(Int64.self) != nil
        }
    }

    public func readmit(device: String, as replica: ReplicaID) async throws -> Bool {
        let replicaBytes = ByteBuffer(bytes: replica.bytes)
        return try await transaction { connection in
            let head = try await self.lockHead(connection)
            guard !replica.isReserved, replica != head.replica else { return false }
            let known = try await connection.query(
                """
                SELECT (CASE WHEN EXISTS (SELECT 1 FROM converge_left_replicas WHERE namespace = \(self.namespace) AND replica = \(replicaBytes))
                    OR EXISTS (SELECT 1 FROM converge_replicas WHERE namespace = \(self.namespace) AND replica = \(replicaBytes))
                    OR EXISTS (SELECT 1 FROM converge_devices WHERE namespace = \(self.namespace) AND replica = \(replicaBytes))
                    OR EXISTS (SELECT 1 FROM converge_standing WHERE namespace = \(self.namespace) AND replica = \(replicaBytes))
                    THEN 1 ELSE 0 END)::int8
                """, logger: self.logger).single(Int64.self) ?? 1
            guard known == 0 else { return false }
            try await connection.query(
                """
                INSERT INTO converge_left_replicas(namespace, replica)
                SELECT \(self.namespace), replica FROM converge_standing WHERE namespace = \(self.namespace) AND device = \(device) AND replica IS NOT NULL
                UNION SELECT \(self.namespace), replica FROM converge_devices WHERE namespace = \(self.namespace) AND device = \(device)
                ON CONFLICT DO NOTHING
                """, logger: self.logger)
            try await connection.query("DELETE FROM converge_standing WHERE namespace = \(self.namespace) AND device = \(device)", logger: self.logger)
            try await connection.query("DELETE FROM converge_devices WHERE namespace = \(self.namespace) AND device = \(device)", logger: self.logger)
            return true
        }
    }
}
