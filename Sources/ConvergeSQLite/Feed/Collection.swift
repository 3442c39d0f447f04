import ConvergeCore
import Foundation
import GRDB

/// Tombstone collection (DESIGN §9): a store grows with its live data, not its history.
///
/// A deleted record keeps its metadata (membership context, field registers, last values)
/// so that an edit concurrent with the delete revives all of it. Once the delete is
/// *causally stable* (every replica has sent, after seeing it, everything it wrote before)
/// no such edit can arrive any more, and the record can be dropped: the visible state is
/// the same whether a replica has dropped it or not. Who knows that a delete is stable is
/// the hub: the sync server computes a frontier, collects with
/// ``collectableRecords(through:limit:)`` and ``collect(_:unchangedAfter:keepingQuarantined:beforeCommit:)``, and tells
/// devices which records it dropped; each device drops the same ones. Mesh topologies have
/// no frontier and keep their tombstones.
extension ReplicatedDatabase {
    /// What one collection did.
    public struct CollectionReport: Sendable, Hashable {
        /// The records dropped, in address order.
        public var collected: [RecordAddress] = []
        /// Pages returned to the file's free space by an incremental vacuum.
        public var freedPages = 0
    }

    /// Deleted records whose last change has a local sequence number at or below
    /// `position`, oldest change first, at most `limit`: on the server, what the frontier
    /// allows it to drop. Records with a quarantined change waiting are left out (that
    /// change may be an edit concurrent with the delete).
    ///
    /// Folds the captured local writes first (a write transaction): the server's own writes
    /// count like any other.
    public func collectableRecords(through position: UInt64, limit: Int = 10_000) throws -> [RecordAddress] {
        try withMetadata { metadata in
            let db = metadata.db
            let rows = try Row.fetchAll(db, sql: """
                SELECT d.tbl AS tbl, d.key AS key FROM converge_dead d
                WHERE d.seq <= ? AND NOT EXISTS (SELECT 1 FROM converge_quarantine q WHERE q.tbl = d.tbl AND q.key = d.key)
                ORDER BY d.seq LIMIT ?
                """, arguments: [Int64(clamping: position), max(0, limit)])
            return rows.map { RecordAddress(table: $0["tbl"], key: Value($0["key"] as DatabaseValue)) }
        }
    }

    /// Drops the metadata of the records at `addresses` that are deleted here, with their
    /// conflicts and claims, and returns the freed space to the file. A record alive here
    /// (revived since) is kept, and so is one changed after local sequence `unchangedAfter`
    /// when it is given (a local change not pushed yet is never dropped), and, with
    /// `keepingQuarantined` (the default, a hub's rule), one with a change waiting in
    /// quarantine: that change may be an edit concurrent with the delete. A device the hub
    /// told to drop a record passes `false`: what it holds in quarantine of that key then
    /// belongs to a later life (a device makes no stability claim while its quarantine holds
    /// anything), which stays in quarantine while the collected life goes. The decision is
    /// ConvergeCore's `CollectionPlanner.mayDrop(_:sequence:quarantined:unchangedAfter:)`.
    ///
    /// The visible state does not change: only deleted records go, and they show nothing.
    /// `beforeCommit` runs in the same transaction with the records dropped and the
    /// membership context each had (a server logs them for its devices there: the context
    /// tells the collected life from a later one of the same key).
    @discardableResult
    public func collect(
        _ addresses: [RecordAddress], unchangedAfter: UInt64? = nil, keepingQuarantined: Bool = true,
        beforeCommit: ((Database, [(address: RecordAddress, context: CausalContext)]) throws -> Void)? = nil
    ) throws -> CollectionReport {
        guard !addresses.isEmpty else { return CollectionReport() }
        var report = try withMetadata { metadata -> CollectionReport in
            var report = CollectionReport()
            var contexts = [(address: RecordAddress, context: CausalContext)]()
            let db = metadata.db
            let entries = try metadata.load(Array(Set(addresses)).sorted())
            for (address, entry) in entries.sorted(by: { $0.key < $1.key }) {
                let arguments: StatementArguments = [address.table, address.key.databaseValue]
                let quarantined = try keepingQuarantined && entry.state.isCollectable
                    && Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM converge_quarantine WHERE tbl = ? AND key = ?)"), arguments: arguments) == true
                guard CollectionPlanner.mayDrop(entry.state, sequence: entry.sequence, quarantined: quarantined, unchangedAfter: unchangedAfter) else { continue }
                try db.cachedStatement(sql: "DELETE FROM converge_records WHERE tbl = ? AND key = ?").execute(arguments: arguments)
                try db.cachedStatement(sql: "DELETE FROM converge_dead WHERE tbl = ? AND key = ?").execute(arguments: arguments)
                try db.cachedStatement(sql: "DELETE FROM converge_conflicts WHERE tbl = ? AND key = ?").execute(arguments: arguments)
                try db.cachedStatement(sql: "DELETE FROM converge_claims WHERE tbl = ? AND key = ?").execute(arguments: arguments)
                report.collected.append(address)
                contexts.append((address, entry.state.membership.context))
            }
            try beforeCommit?(db, contexts)
            return report
        }
        if !report.collected.isEmpty {
            StoreMetrics.collectedRecords.increment(by: report.collected.count)
            report.freedPages = try reclaimSpace()
        }
        return report
    }

    /// Returns free pages to the file system when the database uses incremental
    /// auto-vacuum (new stores do, see ``Configuration/incrementalVacuum``); otherwise
    /// SQLite reuses them for later rows. Returns the pages freed.
    @discardableResult
    public func reclaimSpace() throws -> Int {
        try writer.writeWithoutTransaction { db in
            guard try Int.fetchOne(db, sql: "PRAGMA auto_vacuum") == 2 else { return 0 }
            let free = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
            guard free > 0 else { return 0 }
            try db.execute(sql: "PRAGMA incremental_vacuum")
            return free - (try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0)
        }
    }

    /// The number of deleted records this store still holds metadata for, as of the last
    /// fold of local writes (a read: it folds nothing).
    public func tombstoneCount() throws -> Int {
        try writer.readKeepingStatements { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM converge_dead")) ?? 0 }
    }
}

