import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import NIOCore
import PostgresNIO

/// Unique indexes (DESIGN §4) in the shared tables: the claims of live records in
/// `converge_claims`, settled by ConvergeCore's ``UniquePlanner`` like the SQLite store's.
extension PostgresNamespaceStore {
    /// Stores records changed to `states` (in address order): the next feed positions, their
    /// rows in the app tables (settled by the unique rules for tables with unique indexes),
    /// and the claim index. Returns what the app sees change, for the validator.
    func store(
        _ states: [RecordAddress: RecordState], entries: inout [RecordAddress: RecordEntry], head: inout Head, _ connection: PostgresConnection
    ) async throws -> [ValidationPlanner.Shown] {
        let schemas = tables.schemas
        var changed = [(address: RecordAddress, entry: RecordEntry, conflicted: Bool)]()
        var rows = [(address: RecordAddress, row: ApplyPlanner.RowChange)]()
        var shown = [ValidationPlanner.Shown]()
        var unique = [UniquePlanner.Change]()
        for (address, state) in states.sorted(by: { $0.key < $1.key }) {
            var entry = entries[address] ?? .empty
            let before = entry.state
            guard state != before else { continue }
            head.sequence += 1
            entry.update(to: state, at: head.sequence)
            entries[address] = entry
            changed.append((address, entry, isConflicted(state, table: address.table)))
            guard let schema = schemas[address.table] else { continue }
            if !schema.uniqueIndexes.isEmpty {
                unique.append(UniquePlanner.Change(address: address, before: before, after: state, writtenByApp: false))
                continue
            }
            let oldRow = ApplyPlanner.visibleRow(before, schema, head.replica), newRow = ApplyPlanner.visibleRow(state, schema, head.replica)
            guard oldRow != newRow else { continue }
            rows.append((address, newRow.map(ApplyPlanner.RowChange.upsert) ?? .delete))
            shown.append(ValidationPlanner.Shown(address: address, before: oldRow == nil ? nil : before, after: newRow == nil ? nil : state, current: state))
        }
        if !unique.isEmpty {
            let settlement = try await settle(unique, authority: head.replica, connection)
            for settled in settlement.rows where settled.row != .none {
                rows.append((settled.address, settled.row))
                shown.append(ValidationPlanner.Shown(
                    address: settled.address, before: settled.shownBefore ? settled.before : nil, after: settled.shownAfter ? settled.after : nil,
                    current: settled.after))
            }
            try await writeClaims(settlement, connection)
        }
        try await commit(changed, rows: rows, connection)
        return shown.sorted { $0.address < $1.address }
    }

    /// Serves ``UniquePlanner/settle(_:schemas:authority:lookup:)`` (synchronous) from what
    /// was fetched; what it lacks it names, and the settlement is run again with it (a pure
    /// function: at most one more round per lookup round).
    private struct FetchedLookup: UniquePlanner.Lookup {
        struct Missing: Error {
            var groups: [UniquePlanner.Group] = []
            var addresses: [RecordAddress] = []
        }

        var claimants: [UniquePlanner.Group: [UniquePlanner.Claimant]] = [:]
        var states: [RecordAddress: RecordState] = [:]

        func claimants(of groups: [UniquePlanner.Group]) throws -> [UniquePlanner.Group: [UniquePlanner.Claimant]] {
            let missing = groups.filter { claimants[$0] == nil }
            if !missing.isEmpty { throw Missing(groups: missing) }
            return Dictionary(uniqueKeysWithValues: groups.map { ($0, claimants[$0]!) })
        }

        func states(of addresses: [RecordAddress]) throws -> [RecordAddress: RecordState] {
            let missing = addresses.filter { states[$0] == nil }
            if !missing.isEmpty { throw Missing(addresses: missing) }
            return Dictionary(uniqueKeysWithValues: addresses.map { ($0, states[$0]!) })
        }
    }

    private func settle(_ changes: [UniquePlanner.Change], authority: ReplicaID, _ connection: PostgresConnection) async throws -> UniquePlanner.Settlement {
        var lookup = FetchedLookup()
        for _ in 0..<8 {
            do {
                return try UniquePlanner.settle(changes, schemas: tables.schemas, authority: authority, lookup: lookup)
            } catch let missing as FetchedLookup.Missing {
                for (group, claimants) in try await claimants(of: missing.groups, connection) { lookup.claimants[group] = claimants }
                for group in missing.groups where lookup.claimants[group] == nil { lookup.claimants[group] = [] }
                let found = try await entries(at: missing.addresses, connection)
                for address in missing.addresses { lookup.states[address] = found[address]?.state ?? RecordState() }
            }
        }
        throw StorageCorruption("the unique-index settlement kept asking for more claims")
    }

    /// The claimants of `groups` as `converge_claims` holds them, each group's sorted.
    func claimants(of groups: [UniquePlanner.Group], _ connection: PostgresConnection) async throws -> [UniquePlanner.Group: [UniquePlanner.Claimant]] {
        guard !groups.isEmpty else { return [:] }
        let rows = try await connection.query(
            """
            SELECT c.tbl, c.idx, c.vals, c.key, c.hlc, c.replica FROM converge_claims c
            JOIN unnest(\(groups.map(\.table))::text[], \(groups.map(\.index))::text[], \(groups.map { ByteBuffer(bytes: Value.encodeTuple($0.values)) })::bytea[])
              AS g(tbl, idx, vals) ON c.tbl = g.tbl AND c.idx = g.idx AND c.vals = g.vals
            WHERE c.namespace = \(namespace)
            """, logger: logger)
        return try await Self.claimants(rows)
    }

    private static func claimants(_ rows: PostgresRowSequence) async throws -> [UniquePlanner.Group: [UniquePlanner.Claimant]] {
        var result = [UniquePlanner.Group: [UniquePlanner.Claimant]]()
        for try await (table, index, values, key, hlc, replica) in rows.decode((String, String, ByteBuffer, ByteBuffer, Int64, ByteBuffer).self) {
            guard let decoded = try? Value.decodeTuple(Array(buffer: values)), let id = ReplicaID(bytes: Array(buffer: replica)) else {
                throw StorageCorruption("an unreadable claim in \(table).\(index)")
            }
            let group = UniquePlanner.Group(table: table, index: index, values: decoded)
            result[group, default: []].append(UniquePlanner.Claimant(stamp: Stamp(hlc: HLC(rawValue: UInt64(bitPattern: hlc)), replica: id), key: try KeyCodec.decode(key)))
        }
        return result.mapValues { $0.sorted() }
    }

    private func writeClaims(_ settlement: UniquePlanner.Settlement, _ connection: PostgresConnection) async throws {
        let removed = settlement.removedClaims, added = settlement.addedClaims
        if !removed.isEmpty {
            try await connection.query(
                """
                DELETE FROM converge_claims c USING unnest(
                    \(removed.map(\.group.table))::text[], \(removed.map(\.group.index))::text[],
                    \(removed.map { ByteBuffer(bytes: Value.encodeTuple($0.group.values)) })::bytea[], \(removed.map { KeyCodec.encode($0.claimant.key) })::bytea[])
                  AS r(tbl, idx, vals, key)
                WHERE c.namespace = \(namespace) AND c.tbl = r.tbl AND c.idx = r.idx AND c.vals = r.vals AND c.key = r.key
                """, logger: logger)
        }
        if !added.isEmpty {
            try await connection.query(
                """
                INSERT INTO converge_claims(namespace, tbl, idx, vals, key, hlc, replica)
                SELECT \(namespace), * FROM unnest(
                    \(added.map(\.group.table))::text[], \(added.map(\.group.index))::text[],
                    \(added.map { ByteBuffer(bytes: Value.encodeTuple($0.group.values)) })::bytea[], \(added.map { KeyCodec.encode($0.claimant.key) })::bytea[],
                    \(added.map { Int64(bitPattern: $0.claimant.stamp.hlc.rawValue) })::int8[], \(added.map { ByteBuffer(bytes: $0.claimant.stamp.replica.bytes) })::bytea[])
                ON CONFLICT (namespace, tbl, idx, vals, key) DO UPDATE SET hlc = excluded.hlc, replica = excluded.replica
                """, logger: logger)
        }
    }

    /// The namespace's unique-index clashes, as conflicts (after its field conflicts).
    func constraintConflicts() async throws -> [Conflict] {
        let schemas = tables.schemas
        guard schemas.values.contains(where: { !$0.uniqueIndexes.isEmpty }) else { return [] }
        return try await transaction { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            let head = try await connection.query("SELECT replica FROM converge_namespaces WHERE namespace = \(self.namespace)", logger: self.logger)
                .single(ByteBuffer.self).flatMap { ReplicaID(bytes: Array(buffer: $0)) }
            let clashes = try await Self.claimants(try await connection.query(
                """
                SELECT c.tbl, c.idx, c.vals, c.key, c.hlc, c.replica FROM converge_claims c
                JOIN (SELECT tbl, idx, vals FROM converge_claims WHERE namespace = \(self.namespace) GROUP BY tbl, idx, vals HAVING count(*) > 1) g
                  ON c.tbl = g.tbl AND c.idx = g.idx AND c.vals = g.vals
                WHERE c.namespace = \(self.namespace)
                """, logger: self.logger))
            let addresses = clashes.flatMap { group, claimants in claimants.map { RecordAddress(table: group.table, key: $0.key) } }
            let states = try await self.entries(at: addresses, connection).mapValues(\.state)
            return clashes.sorted { $0.key < $1.key }.compactMap { group, claimants -> Conflict? in
                guard let schema = schemas[group.table] else { return nil }
                return .constraint(ConstraintConflict(group: group, claimants: claimants, schema: schema, authority: head) {
                    states[RecordAddress(table: group.table, key: $0)]
                })
            }
        }
    }
}
