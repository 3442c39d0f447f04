import ConvergeCore
import Foundation
import GRDB

/// The sync log: one row per round in `converge_sync_log`, pruned to a bound. The table is
/// an ordinary one in the app's database, so a GRDB `ValueObservation` can watch it.
public enum SyncLog {
    /// One round.
    public struct Entry: Sendable, Hashable {
        public var id: Int64
        public var peer: String
        public var startedAt: Date
        public var durationSeconds: Double
        public var requests: Int
        public var pushedRecords: Int
        public var pushedBytes: Int
        public var pulledRecords: Int
        public var pulledBytes: Int
        /// `"ok"` or `"error"`.
        public var result: String
        public var error: String?
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
                    server_replica TEXT NOT NULL);
                """)
        }
    }

    /// Records a round; a failure to log never fails the round.
    static func record(_ report: SyncReport, started: Date, error: SyncError?, peer: String, in writer: any DatabaseWriter, limit: Int) {
        let seconds = Double(report.duration.components.seconds) + Double(report.duration.components.attoseconds) / 1e18
        try? writer.write { db in
            try db.execute(
                sql: """
                    INSERT INTO converge_sync_log(peer, started_at, duration, requests, pushed_records, pushed_bytes, pulled_records, pulled_bytes, result, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    peer, started.timeIntervalSince1970, seconds, report.requests, report.pushedRecords, report.pushedBytes,
                    report.pulledRecords, report.pulledBytes, error == nil ? "ok" : "error", error?.description,
                ])
            try db.execute(sql: "DELETE FROM converge_sync_log WHERE id <= (SELECT max(id) FROM converge_sync_log) - ?", arguments: [max(1, limit)])
        }
    }

    static func entries(in reader: any DatabaseReader, limit: Int) throws -> [Entry] {
        try reader.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM converge_sync_log ORDER BY id DESC LIMIT ?", arguments: [limit]).map { row in
                Entry(
                    id: row["id"], peer: row["peer"], startedAt: Date(timeIntervalSince1970: row["started_at"]),
                    durationSeconds: row["duration"], requests: row["requests"], pushedRecords: row["pushed_records"],
                    pushedBytes: row["pushed_bytes"], pulledRecords: row["pulled_records"], pulledBytes: row["pulled_bytes"],
                    result: row["result"], error: row["error"])
            }
        }
    }

    static func serverReplica(for peer: String, in reader: any DatabaseReader) throws -> ReplicaID? {
        try reader.read { db in
            try String.fetchOne(db, sql: "SELECT server_replica FROM converge_sync_state WHERE peer = ?", arguments: [peer]).flatMap(ReplicaID.init)
        }
    }

    static func setServerReplica(_ replica: ReplicaID, for peer: String, in writer: any DatabaseWriter) throws {
        try writer.write { db in
            try db.execute(
                sql: "INSERT INTO converge_sync_state(peer, server_replica) VALUES (?, ?) ON CONFLICT(peer) DO UPDATE SET server_replica = excluded.server_replica",
                arguments: [peer, replica.uuidString()])
        }
    }
}
