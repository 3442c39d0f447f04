import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// The store's side of tombstone collection (DESIGN §9) and of a reset for resync.
@Suite(.computeBound) struct CollectionStoreTests {
    let clock = TestClock()

    func sql(_ store: ReplicatedDatabase, _ statement: String) throws {
        try store.writer.write { db in try db.execute(sql: statement) }
    }

    func visible(_ store: ReplicatedDatabase) throws -> [[Value]] {
        try StoreFixtures.rows(store, "notes") + StoreFixtures.rows(store, "items")
    }

    @Test func collectionDropsOnlyDeletedRecordsAndShowsTheSame() throws {
        let a = try StoreFixtures.makeStore(clock: clock)
        try sql(a, "INSERT INTO notes(id, title, body) VALUES ('gone', 't', 'b'), ('kept', 't', 'b'), ('revived', 't', 'b')")
        try sql(a, "DELETE FROM notes WHERE id IN ('gone', 'revived')")
        let position = try a.changes(since: 0).next  // folds the captured writes
        try sql(a, "INSERT INTO notes(id, title) VALUES ('revived', 'again')")
        _ = try a.changes(since: 0)
        #expect(try a.tombstoneCount() == 1)
        #expect(try a.collectableRecords(through: position).map(\.key) == [.text("gone")])
        #expect(try a.collectableRecords(through: 0).isEmpty)

        let before = try visible(a)
        let report = try a.collect([RecordAddress(table: "notes", key: .text("gone")), RecordAddress(table: "notes", key: .text("revived")),
                                    RecordAddress(table: "notes", key: .text("kept")), RecordAddress(table: "notes", key: .text("absent"))])
        #expect(report.collected.map(\.key) == [.text("gone")])
        #expect(try visible(a) == before)
        #expect(try a.tombstoneCount() == 0)
        #expect(try a.snapshot().records.map(\.key) == [.text("kept"), .text("revived")])
        // Idempotent.
        #expect(try a.collect([RecordAddress(table: "notes", key: .text("gone"))]).collected.isEmpty)
    }

    @Test func aCollectedAndAnUncollectedReplicaConvergeAfterLaterWrites() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try sql(a, "INSERT INTO notes(id, title, body) VALUES ('n', 'old title', 'old body')")
        try sql(a, "DELETE FROM notes WHERE id = 'n'")
        try b.apply(try a.changes(since: 0).changeset)
        // Stable: every later write is causally after the delete. Only a collects.
        try a.collect([RecordAddress(table: "notes", key: .text("n"))])
        clock.advance(by: 10)
        let cursor = try b.feedHead()
        try sql(b, "INSERT INTO notes(id, title) VALUES ('n', 'new')")  // a whole row, as every insert
        try a.apply(try b.changes(since: cursor).changeset)
        try b.apply(try a.changes(since: 0).changeset)
        #expect(try visible(a) == visible(b))
        #expect(try StoreFixtures.rows(a, "notes") == [[.text("n"), .text("new"), .null, .null]])
    }

    @Test func aQuarantinedChangeKeepsItsRecord() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try sql(a, "INSERT INTO notes(id, title) VALUES ('n', 't')")
        try b.apply(try a.changes(since: 0).changeset)
        let cursor = try a.feedHead()
        try sql(b, "DELETE FROM notes WHERE id = 'n'")
        try a.apply(try b.changes(since: cursor).changeset)
        // A far-future edit of the record arrives and waits in quarantine.
        let future = TestClock()
        future.set(clock.now + 3_600_000)
        let c = try StoreFixtures.makeStore(clock: future)
        try c.apply(try a.changes(since: 0).changeset)
        try sql(c, "INSERT INTO notes(id, title) VALUES ('n', 'from the future')")
        try a.apply(try c.changes(since: 0).changeset)
        #expect(try a.quarantinedCount() == 1)
        let address = RecordAddress(table: "notes", key: .text("n"))
        #expect(try a.collectableRecords(through: .max).isEmpty)
        #expect(try a.collect([address]).collected.isEmpty)
    }

    @Test func collectionFreesSpaceInAFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-collect-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = try StoreFixtures.makeStore(clock: clock, path: directory.appendingPathComponent("a.sqlite").path)
        #expect(try a.writer.read { db in try Int.fetchOne(db, sql: "PRAGMA auto_vacuum") } == 2)
        let body = String(repeating: "x", count: 2_000)
        try a.writer.write { db in
            for index in 0..<500 { try db.execute(sql: "INSERT INTO notes(id, body) VALUES (?, ?)", arguments: ["n\(index)", body]) }
        }
        try sql(a, "DELETE FROM notes")
        _ = try a.changes(since: 0)  // folds the log
        let pages = { try a.writer.read { db in try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0 } }
        let full = try pages()
        let report = try a.collect(try a.collectableRecords(through: .max))
        #expect(report.collected.count == 500)
        #expect(report.freedPages > 0)
        #expect(try pages() < full / 2, "the deleted rows' metadata pages went back to the file system")
    }

    @Test func aResetKeepsTheUnacknowledgedWritesAndWritesThemAgain() throws {
        let a = try StoreFixtures.makeStore(clock: clock), server = try StoreFixtures.makeStore(clock: clock)
        try sql(a, "INSERT INTO notes(id, title, body) VALUES ('synced', 't', 'b'), ('edited', 't', 'b'), ('deleted', 't', 'b')")
        try server.apply(try a.changes(since: 0).changeset)
        let acknowledged = try a.feedHead()
        clock.advance(by: 10)
        try sql(a, "UPDATE notes SET title = 'edited offline' WHERE id = 'edited'")
        try sql(a, "DELETE FROM notes WHERE id = 'deleted'")
        try sql(a, "INSERT INTO notes(id, title) VALUES ('new', 'typed offline')")
        // Meanwhile on the server: someone else edits another column of 'edited'.
        try sql(server, "UPDATE notes SET body = 'server body' WHERE id = 'edited'")

        let old = a.replicaID
        #expect(try a.resetForResync(acknowledged: acknowledged) == 3)
        #expect(a.replicaID != old)
        #expect(try visible(a).isEmpty && a.snapshot().records.isEmpty)
        #expect(try a.keptWriteCount() == 3)
        // The fresh snapshot, then the kept writes as new writes.
        clock.advance(by: 10)
        try a.apply(try server.changes(since: 0).changeset)
        #expect(try a.reapplyKeptWrites() == 3)
        #expect(try a.keptWriteCount() == 0)
        let rows = try StoreFixtures.rows(a, "notes")
        #expect(rows == [
            [.text("edited"), .text("edited offline"), .text("server body"), .null],
            [.text("new"), .text("typed offline"), .null, .null],
            [.text("synced"), .text("t"), .text("b"), .null],
        ])
        try server.apply(try a.changes(since: 0).changeset)
        #expect(try StoreFixtures.rows(server, "notes") == StoreFixtures.rows(a, "notes"))
        #expect(try a.snapshot().records.allSatisfy { record in
            var own = false
            record.state.forEachStamp { if $0.replica == old { own = true } }
            return !own || record.key == .text("synced") || record.key == .text("edited") || record.key == .text("deleted")
        })
    }

    @Test func tombstonesOfAnOlderDatabaseAreListedOnUpgrade() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("a.sqlite").path
        do {
            let a = try StoreFixtures.makeStore(clock: clock, path: path)
            try sql(a, "INSERT INTO notes(id) VALUES ('x'), ('y')")
            try sql(a, "DELETE FROM notes WHERE id = 'x'")
            _ = try a.changes(since: 0)
            // As a release before `converge_dead` left it.
            try a.writer.write { db in
                try db.execute(sql: "DELETE FROM converge_dead")
                try db.execute(sql: "UPDATE converge_identity SET schema_version = 3")
            }
        }
        let reopened = try StoreFixtures.makeStore(clock: clock, path: path)
        #expect(try reopened.tombstoneCount() == 1)
        #expect(try reopened.collectableRecords(through: .max).map(\.key) == [.text("x")])
    }

    @Test func stateBlobsOfAnOlderDatabaseAreRewrittenOnOpen() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("a.sqlite").path
        let before: Changeset
        do {
            let a = try StoreFixtures.makeStore(clock: clock, path: path)
            try sql(a, "INSERT INTO notes(id, title, body) VALUES ('x', 't', 'b'), ('y', 'u', NULL)")
            try sql(a, "DELETE FROM notes WHERE id = 'x'")
            before = try a.changes(since: 0).changeset
            // As a release before the state format left it: one-record wire changesets.
            try a.writer.write { db in
                let rows = try Row.fetchAll(db, sql: "SELECT tbl, key, state FROM converge_records")
                for row in rows {
                    let key = Value(row["key"] as DatabaseValue)
                    let state = try RecordEntry.decodeState([UInt8](row["state"] as Data))
                    let legacy = WireEncoder.encode(Changeset(records: [RecordDelta(table: row["tbl"], key: key, state: state)]))
                    try db.execute(sql: "UPDATE converge_records SET state = ? WHERE tbl = ? AND key = ?", arguments: [Data(legacy), row["tbl"] as String, key.databaseValue])
                }
                try db.execute(sql: "UPDATE converge_identity SET schema_version = 4")
            }
            #expect(try a.writer.read { db in try Data.fetchAll(db, sql: "SELECT state FROM converge_records") }.allSatisfy { RecordEntry.isLegacyState([UInt8]($0)) })
        }
        let reopened = try StoreFixtures.makeStore(clock: clock, path: path)
        let blobs = try reopened.writer.read { db in try Data.fetchAll(db, sql: "SELECT state FROM converge_records") }
        #expect(blobs.count == 2)
        #expect(blobs.allSatisfy { !RecordEntry.isLegacyState([UInt8]($0)) })
        #expect(try reopened.changes(since: 0).changeset.normalized == before.normalized)
        #expect(try reopened.tombstoneCount() == 1)
        #expect(try StoreFixtures.rows(reopened, "notes") == [[.text("y"), .text("u"), .null, .null]])
    }
}
