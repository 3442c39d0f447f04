import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// `converge status`: what a device's database holds and owes its peers.
struct StatusReport: InspectorReport {
    struct Column: Encodable {
        var name: String
        var policy: String
    }

    struct Table: Encodable {
        var name: String
        var primaryKey: String
        var keyType: String
        var deletePolicy: String
        var columns: [Column]
        /// Records in the metadata, and those alive (what the app table should hold).
        var records: Int
        var alive: Int
        /// Rows in the app table; `nil` when the table is missing.
        var rows: Int?
        /// Local writes captured and not yet folded into the metadata.
        var unfoldedWrites: Int
    }

    struct Parked: Encodable {
        var table: String
        var records: Int
    }

    struct Peer: Encodable {
        var peer: String
        var sent: UInt64
        var received: UInt64
        /// Records changed after `sent`: what the next sync sends this peer.
        var pending: Int
    }

    struct Rejection: Encodable {
        var id: Int64
        var table: String
        var key: JSONValue
        var reason: String
        var origin: String?
        var time: String
    }

    struct Sizes: Encodable {
        var fileBytes: Int
        var walBytes: Int
        var shmBytes: Int
        var pageSize: Int
        var pages: Int
        var freePages: Int
        var metadataRecords: Int
        var metadataRecordBytes: Int
    }

    var database: String
    var replica: String
    var clock: JSONTime
    var feedSequence: UInt64
    var schemaVersion: Int
    var authority: String?
    var tables: [Table]
    var parked: [Parked]
    var peers: [Peer]
    var conflicts: Int
    var quarantinedRecords: Int
    var rejections: Int
    /// The latest few rejections, newest last.
    var latestRejections: [Rejection]
    var sizes: Sizes

    static let latestRejectionsShown = 5

    static func make(_ file: InspectedFile) throws -> StatusReport {
        try file.read { db in
            let identity = try ReplicatedDatabase.storedIdentity(db)
            let stored = try ReplicatedDatabase.storedTables(db)
            let size = try ReplicatedDatabase.metadataSize(db)
            var clock = identity.clock
            var tables = [Table]()
            for (name, table) in stored.sorted(by: { $0.key < $1.key }) {
                let schema = table.schema
                let records = try ReplicatedDatabase.storedRecords(db, table: name)
                let writes = try ReplicatedDatabase.capturedWrites(db, table: table, replica: identity.replica)
                // Captured writes carry stamps above the saved mark until they are folded.
                if let last = writes.last { clock = max(clock, last.stamp.hlc) }
                let rows = try db.tableExists(name) ? try Int.fetchOne(db, sql: "SELECT count(*) FROM \(SQL.quoted(name))") : nil
                tables.append(Table(
                    name: name, primaryKey: schema.primaryKey, keyType: table.keyType, deletePolicy: schema.deletePolicy.rawValue,
                    columns: schema.columns.map { Column(name: $0, policy: Format.policy(schema.policy(of: $0))) },
                    records: records.count, alive: records.filter(\.state.isAlive).count, rows: rows, unfoldedWrites: writes.count))
            }
            let parked = size.recordsByTable.filter { stored[$0.key] == nil }.sorted { $0.key < $1.key }.map { Parked(table: $0.key, records: $0.value) }
            var peers = [Peer]()
            for (peer, cursor) in try ReplicatedDatabase.peerCursors(db).sorted(by: { $0.key < $1.key }) {
                let pending = try ReplicatedDatabase.changedRecordCount(db, since: cursor.sent, tables: Array(stored.keys))
                peers.append(Peer(peer: peer, sent: cursor.sent, received: cursor.received, pending: pending))
            }
            let latestID = try Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM converge_rejections") ?? 0
            let latest = try ReplicatedDatabase.rejections(db, after: max(0, latestID - Int64(latestRejectionsShown)), limit: latestRejectionsShown)
            let sizes = file.fileSizes()
            return StatusReport(
                database: file.path, replica: identity.replica.uuidString(), clock: JSONTime(clock), feedSequence: identity.sequence,
                schemaVersion: identity.schemaVersion, authority: identity.authority?.uuidString(), tables: tables, parked: parked, peers: peers,
                conflicts: try ReplicatedDatabase.conflicts(db).count, quarantinedRecords: size.quarantinedRecords, rejections: size.rejections,
                latestRejections: latest.map {
                    Rejection(id: $0.id, table: $0.table, key: JSONValue($0.key), reason: $0.reason, origin: $0.origin,
                              time: Format.iso8601(milliseconds: UInt64(max(0, $0.date.timeIntervalSince1970 * 1_000))))
                },
                sizes: Sizes(
                    fileBytes: sizes.database, walBytes: sizes.wal, shmBytes: sizes.shm,
                    pageSize: try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0, pages: try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0,
                    freePages: try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0,
                    metadataRecords: size.recordsByTable.values.reduce(0, +), metadataRecordBytes: size.recordBytes))
        }
    }

    var human: String {
        var text = ""
        let replicaID = ReplicaID(replica).map(Format.replica) ?? replica
        text += Format.table(["database", database], [
            ["replica", "\(replicaID)  (full id with --json)"],
            ["clock", Format.time(HLC(rawValue: clock.hlc))],
            ["feed", "sequence \(feedSequence)"],
            ["authority", authority.flatMap(ReplicaID.init).map(Format.replica) ?? "none (no sync server seen yet)"],
        ], indent: "")
        text += "\ntables (\(tables.count))\n"
        if tables.isEmpty {
            text += "  none replicated\n"
        } else {
            text += Format.table(["TABLE", "KEY", "DELETE", "RECORDS", "ALIVE", "ROWS", "UNFOLDED", "POLICIES"], tables.map { table in
                let policies = table.columns.filter { $0.policy != "lww" }.map { "\($0.name)=\($0.policy)" }
                return [
                    table.name, "\(table.primaryKey) \(table.keyType)".trimmingCharacters(in: .whitespaces), table.deletePolicy,
                    "\(table.records)", "\(table.alive)", table.rows.map(String.init) ?? "missing", "\(table.unfoldedWrites)",
                    "\(table.columns.count) columns" + (policies.isEmpty ? ", all lww" : ": " + policies.joined(separator: ", ")),
                ]
            })
        }
        if !parked.isEmpty {
            text += "parked (tables not replicated here, kept and forwarded)\n"
            text += Format.table(["TABLE", "RECORDS"], parked.map { [$0.table, "\($0.records)"] })
        }
        text += "\npeers (\(peers.count))\n"
        if peers.isEmpty {
            text += "  none\n"
        } else {
            text += Format.table(["PEER", "SENT", "RECEIVED", "PENDING"], peers.map { [$0.peer, "\($0.sent)", "\($0.received)", "\($0.pending)"] })
        }
        text += "\n" + Format.table(["conflicts", "\(conflicts)" + (conflicts > 0 ? "  (converge conflicts \(database))" : "")], [
            ["quarantine", "\(quarantinedRecords) records stamped too far ahead, held back"],
            ["rejections", "\(rejections)"],
        ], indent: "")
        for rejection in latestRejections {
            text += "  #\(rejection.id) \(rejection.time) \(rejection.table) \(Format.value(rejection.key.value)): \(rejection.reason)"
                + (rejection.origin.map { " (from \($0))" } ?? "") + "\n"
        }
        text += "\nsizes\n" + Format.table(["file", Format.bytes(sizes.fileBytes)], [
            ["wal", Format.bytes(sizes.walBytes)],
            ["pages", "\(sizes.pages) of \(Format.bytes(sizes.pageSize)), \(sizes.freePages) free"],
            ["metadata", "\(sizes.metadataRecords) records, \(Format.bytes(sizes.metadataRecordBytes)) of state"],
        ])
        return text
    }
}
