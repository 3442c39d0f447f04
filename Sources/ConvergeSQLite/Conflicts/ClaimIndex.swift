import ConvergeCore
import Foundation
import GRDB

/// `converge_claims`: every live record's claims on its table's unique indexes, so that
/// the records clashing with a change are found by an index lookup, not a table scan. It is
/// a function of the record states (``UniquePlanner/claims(of:key:schema:authority:)``),
/// rebuilt from them whenever a table is replicated anew, and kept by ``MetadataStore/settleUnique()``.
struct ClaimIndex: UniquePlanner.Lookup {
    let db: Database
    let metadata: MetadataStore

    func claimants(of groups: [UniquePlanner.Group]) throws -> [UniquePlanner.Group: [UniquePlanner.Claimant]] {
        var result = [UniquePlanner.Group: [UniquePlanner.Claimant]]()
        let statement = try db.cachedStatement(sql: "SELECT hlc, replica, key FROM converge_claims WHERE tbl = ? AND idx = ? AND vals = ?")
        for group in groups {
            let rows = try Row.fetchCursor(statement, arguments: [group.table, group.index, Self.encode(group.values)])
            var claimants = [UniquePlanner.Claimant]()
            while let row = try rows.next() { claimants.append(try Self.claimant(row)) }
            result[group] = claimants
        }
        return result
    }

    func states(of addresses: [RecordAddress]) throws -> [RecordAddress: RecordState] {
        try metadata.load(addresses).mapValues(\.state)
    }

    static func remove(_ claim: (group: UniquePlanner.Group, claimant: UniquePlanner.Claimant), _ db: Database) throws {
        try db.cachedStatement(sql: "DELETE FROM converge_claims WHERE tbl = ? AND idx = ? AND vals = ? AND key = ?")
            .execute(arguments: [claim.group.table, claim.group.index, encode(claim.group.values), claim.claimant.key.databaseValue])
    }

    static func add(_ claim: (group: UniquePlanner.Group, claimant: UniquePlanner.Claimant), _ db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO converge_claims(tbl, idx, vals, key, hlc, replica) VALUES (?, ?, ?, ?, ?, ?)")
            .execute(arguments: [
                claim.group.table, claim.group.index, encode(claim.group.values), claim.claimant.key.databaseValue,
                MetadataSchema.sortable(claim.claimant.stamp.hlc), Data(claim.claimant.stamp.replica.bytes),
            ])
    }

    /// Every group of `table` that two or more records claim, with its claimants.
    static func clashes(_ db: Database) throws -> [UniquePlanner.Group: [UniquePlanner.Claimant]] {
        var result = [UniquePlanner.Group: [UniquePlanner.Claimant]]()
        let rows = try Row.fetchCursor(db, sql: """
            SELECT c.tbl AS tbl, c.idx AS idx, c.vals AS vals, c.hlc AS hlc, c.replica AS replica, c.key AS key
            FROM converge_claims c JOIN (
                SELECT tbl, idx, vals FROM converge_claims GROUP BY tbl, idx, vals HAVING count(*) > 1
            ) g ON g.tbl = c.tbl AND g.idx = c.idx AND g.vals = c.vals
            """)
        while let row = try rows.next() {
            let group = UniquePlanner.Group(table: row["tbl"], index: row["idx"], values: try decode(row["vals"]))
            result[group, default: []].append(try claimant(row))
        }
        return result.mapValues { $0.sorted() }
    }

    /// Rebuilds the claims of `table` from the stored states of its records.
    static func rebuild(_ table: ReplicatedTable, states: [(key: Value, state: RecordState)], authority: ReplicaID?, _ db: Database) throws {
        try db.execute(sql: "DELETE FROM converge_claims WHERE tbl = ?", arguments: [table.schema.name])
        for (key, state) in states {
            for claim in UniquePlanner.claims(of: state, key: key, schema: table.schema, authority: authority) { try add(claim, db) }
        }
    }

    private static func claimant(_ row: Row) throws -> UniquePlanner.Claimant {
        let replica: [UInt8] = [UInt8]((row["replica"] as Data?) ?? Data())
        guard let id = ReplicaID(bytes: replica) else {
            throw MetadataCorruption(table: "converge_claims", key: nil, detail: "a claim's replica is not 16 bytes")
        }
        let sortable: Int64 = row["hlc"]
        let hlc = HLC(rawValue: UInt64(bitPattern: sortable) ^ (1 << 63))
        return UniquePlanner.Claimant(stamp: Stamp(hlc: hlc, replica: id), key: Value(row["key"] as DatabaseValue))
    }

    // MARK: The values' bytes: equal values, equal bytes (``Value/encodeTuple(_:)``)

    static func encode(_ values: [Value]) -> Data { Data(Value.encodeTuple(values)) }

    static func decode(_ data: Data) throws -> [Value] {
        do {
            return try Value.decodeTuple([UInt8](data))
        } catch {
            throw MetadataCorruption(table: "converge_claims", key: nil, detail: "unreadable claim values")
        }
    }
}

extension MetadataStore {
    /// Decides the rows of the records of tables with unique indexes committed since the
    /// last call (``UniquePlanner/settle(_:schemas:authority:lookup:)``), writes them and the
    /// claim index, and returns what it showed and held. Every path that commits records
    /// calls it before its transaction ends.
    mutating func settleUnique() throws -> [UniquePlanner.Settled] {
        let changes = takeUnsettled()
        guard !changes.isEmpty else { return [] }
        let settlement = try UniquePlanner.settle(changes, schemas: tables.mapValues(\.schema), authority: authority, lookup: ClaimIndex(db: db, metadata: self))
        for claim in settlement.removedClaims { try ClaimIndex.remove(claim, db) }
        for claim in settlement.addedClaims { try ClaimIndex.add(claim, db) }
        try Materializer.write(settlement.rows.map { ($0.address, $0.row) }, tables: tables, db)
        return settlement.rows
    }
}
