import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// The sync log: one row per round in `converge_sync_log`, pruned to a bound. The table is
/// an ordinary one in the app's database, so a GRDB `ValueObservation` can watch it.
public enum SyncLog {
    /// One round.
    public struct Entry: Sendable, Hashable {
        /// The row's id in `converge_sync_log`; later rounds have larger ids.
        public var id: Int64
        /// The server the round synced with (`SyncEngine.Configuration.peer`).
        public var peer: String
        /// When the round started.
        public var startedAt: Date
        /// How long the round took, in seconds.
        public var durationSeconds: Double
        /// Requests the round sent (retries not counted).
        public var requests: Int
        /// Records pushed to the server.
        public var pushedRecords: Int
        /// Bytes of changesets pushed.
        public var pushedBytes: Int
        /// Records pulled from the server.
        public var pulledRecords: Int
        /// Bytes of changesets pulled.
        public var pulledBytes: Int
        /// `"ok"` or `"error"`.
        public var result: String
        /// Why the round failed; nil when it succeeded.
        public var error: String?
        /// Deleted records dropped because the server collected them.
        public var collectedRecords: Int
        /// Set when the round reset this device (the server had retired it): the records
        /// whose unsent changes it wrote again as new writes.
        public var resetReappliedRecords: Int?
    }

    static func install(in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS converge_sync_log(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    peer TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    duration REAL NOT NULL,
                    requests INTEGER NOT NULL,
                    pushed_records INTEGER NOT NULL,
                    pushed_bytes INTEGER NOT NULL,
                    pulled_records INTEGER NOT NULL,
                    pulled_bytes INTEGER NOT NULL,
                    result TEXT NOT NULL,
                    error TEXT);
                CREATE TABLE IF NOT EXISTS converge_sync_state(
                    peer TEXT PRIMARY KEY NOT NULL,
                    server_replica TEXT NOT NULL,
                    rejections_seen INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE IF NOT EXISTS converge_sync_rejections(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    peer TEXT NOT NULL,
                    server_id INTEGER NOT NULL,
                    tbl TEXT NOT NULL,
                    key,
                    reason TEXT NOT NULL,
                    received_at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS converge_sync_serials(
                    peer TEXT PRIMARY KEY NOT NULL,
                    reserved INTEGER NOT NULL);
                """)
            // Columns added by later releases.
            let state = try db.columns(in: "converge_sync_state").map(\.name)
            if !state.contains("rejections_seen") {
                try db.execute(sql: "ALTER TABLE converge_sync_state ADD COLUMN rejections_seen INTEGER NOT NULL DEFAULT 0")
            }
            if !state.contains("collected_seen") {
                try db.execute(sql: "ALTER TABLE converge_sync_state ADD COLUMN collected_seen INTEGER NOT NULL DEFAULT 0")
            }
            let log = try db.columns(in: "converge_sync_log").map(\.name)
            if !log.contains("collected") { try db.execute(sql: "ALTER TABLE converge_sync_log ADD COLUMN collected INTEGER NOT NULL DEFAULT 0") }
            if !log.contains("reset_reapplied") { try db.execute(sql: "ALTER TABLE converge_sync_log ADD COLUMN reset_reapplied INTEGER") }
        }
    }

    /// The most rejections kept on the device; older ones are pruned.
    static let rejectionLimit = 1_000

    /// The last rejection received from `peer`'s server (0 if none).
    static func rejectionsSeen(for peer: String, in reader: any DatabaseReader) throws -> UInt64 {
        try reader.readKeepingStatements { db in
            UInt64(clamping: try Int64.fetchOne(db, sql: "SELECT rejections_seen FROM converge_sync_state WHERE peer = ?", arguments: [peer]) ?? 0)
        }
    }

    /// The last collected record dropped on `peer`'s word (0 if none).
    static func collectedSeen(for peer: String, in reader: any DatabaseReader) throws -> UInt64 {
        try reader.readKeepingStatements { db in
            UInt64(clamping: try Int64.fetchOne(db, sql: "SELECT collected_seen FROM converge_sync_state WHERE peer = ?", arguments: [peer]) ?? 0)
        }
    }

    /// The request serials reserved for `peer` (0 if none): every serial at or below it may
    /// have been sent, so numbering goes on above it.
    static func reservedSerial(for peer: String, in reader: any DatabaseReader) throws -> UInt64 {
        try reader.readKeepingStatements { db in
            UInt64(clamping: try Int64.fetchOne(db, sql: "SELECT reserved FROM converge_sync_serials WHERE peer = ?", arguments: [peer]) ?? 0)
        }
    }

    /// Reserves the request serials up to `serial` for `peer`, before any of them is sent.
    static func reserveSerials(upTo serial: UInt64, for peer: String, in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(
                sql: "INSERT INTO converge_sync_serials(peer, reserved) VALUES (?, ?) ON CONFLICT(peer) DO UPDATE SET reserved = max(reserved, excluded.reserved)",
                arguments: [peer, Int64(clamping: serial)])
        }
    }

    static func setCollectedSeen(_ id: UInt64, for peer: String, in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(
                sql: "UPDATE converge_sync_state SET collected_seen = max(collected_seen, ?) WHERE peer = ?", arguments: [Int64(clamping: id), peer])
        }
    }

    /// Keeps rejections received from `peer` and moves the cursor past them, together.
    static func record(_ rejections: [SyncRejection], from peer: String, in writer: any DatabaseWriter) throws {
        guard let last = rejections.map(\.id).max() else { return }
        let now = Date().timeIntervalSince1970
        try writer.write { db in
            for rejection in rejections {
                try db.execute(
                    sql: "INSERT INTO converge_sync_rejections(peer, server_id, tbl, key, reason, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [peer, Int64(clamping: rejection.id), rejection.table, rejection.key.databaseValue, rejection.reason, now])
            }
            try db.execute(
                sql: "UPDATE converge_sync_state SET rejections_seen = max(rejections_seen, ?) WHERE peer = ?",
                arguments: [Int64(clamping: last), peer])
            try db.execute(
                sql: "DELETE FROM converge_sync_rejections WHERE id <= (SELECT max(id) FROM converge_sync_rejections) - ?",
                arguments: [rejectionLimit])
        }
    }

    static func rejections(in reader: any DatabaseReader) throws -> [SyncRejection] {
        try reader.readKeepingStatements { db in
            try Row.fetchAll(db, sql: "SELECT server_id, tbl, key, reason FROM converge_sync_rejections ORDER BY id DESC").map { row in
                SyncRejection(id: UInt64(clamping: row["server_id"] as Int64), table: row["tbl"], key: Value(row["key"] as DatabaseValue), reason: row["reason"])
            }
        }
    }

    static func rejectionCount(in reader: any DatabaseReader) throws -> Int {
        try reader.readKeepingStatements { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_sync_rejections") ?? 0 }
    }

    static func dismissRejections(in writer: any DatabaseWriter) throws {
        try writer.write { db in try db.execute(sql: "DELETE FROM converge_sync_rejections") }
    }

    /// Records a round; a failure to log never fails the round.
    static func record(_ report: SyncReport, started: Date, error: SyncError?, peer: String, in writer: any DatabaseWriter, limit: Int) {
        let seconds = Double(report.duration.components.seconds) + Double(report.duration.components.attoseconds) / 1e18
        try? writer.write { db in
            try db.execute(
                sql: """
                    INSERT INTO converge_sync_log(peer, started_at, duration, requests, pushed_records, pushed_bytes, pulled_records, pulled_bytes, result, error,
                        collected, reset_reapplied)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    peer, started.timeIntervalSince1970, seconds, report.requests, report.pushedRecords, report.pushedBytes,
                    report.pulledRecords, report.pulledBytes, error == nil ? "ok" : "error", error?.description,
                    report.collectedRecords, report.reset?.reappliedRecords,
                ])
            try db.execute(sql: "DELETE FROM converge_sync_log WHERE id <= (SELECT max(id) FROM converge_sync_log) - ?", arguments: [max(1, limit)])
        }
    }

    static func entries(in reader: any DatabaseReader, limit: Int) throws -> [Entry] {
        try reader.readKeepingStatements { db in
            try Row.fetchAll(db, sql: "SELECT * FROM converge_sync_log ORDER BY id DESC LIMIT ?", arguments: [limit]).map { row in
                Entry(
                    id: row["id"], peer: row["peer"], startedAt: Date(timeIntervalSince1970: row["started_at"]),
                    durationSeconds: row["duration"], requests: row["requests"], pushedRecords: row["pushed_records"],
                    pushedBytes: row["pushed_bytes"], pulledRecords: row["pulled_records"], pulledBytes: row["pulled_bytes"],
                    result: row["result"], error: row["error"], collectedRecords: row["collected"], resetReappliedRecords: row["reset_reapplied"])
            }
        }
    }

    static func serverReplica(for peer: String, in reader: any DatabaseReader) throws -> ReplicaID? {
        try reader.readKeepingStatements { db in
            try String.fetchOne(db, sql: "SELECT server_replica FROM converge_sync_state WHERE peer = ?", arguments: [peer]).flatMap(ReplicaID.init)
        }
    }

    static func setServerReplica(_ replica: ReplicaID, for peer: String, in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(
                // Another server numbers its rejections anew.
                sql: """
                    INSERT INTO converge_sync_state(peer, server_replica) VALUES (?, ?)
                    ON CONFLICT(peer) DO UPDATE SET server_replica = excluded.server_replica, rejections_seen = 0, collected_seen = 0
                    """,
                arguments: [peer, replica.uuidString()])
        }
    }
}
