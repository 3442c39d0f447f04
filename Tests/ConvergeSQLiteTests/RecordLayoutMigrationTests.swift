import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// Schema version 6 keys `converge_records` by sequence number: a database made by an
/// earlier release (keyed by `(tbl, key)`, indexed by `seq`) is rebuilt on open, and reads
/// and syncs exactly as it did.
@Suite(.computeBound) struct RecordLayoutMigrationTests {
    let clock = TestClock()

    func sql(_ store: ReplicatedDatabase, _ statement: String) throws {
        try store.writer.write { db in try db.execute(sql: statement) }
    }

    /// Rebuilds the store's `converge_records` in the layout of schema version 5.
    func downgradeToVersion5(_ store: ReplicatedDatabase, then tamper: String? = nil) throws {
        try store.writer.write { db in
            try db.execute(sql: """
                CREATE TABLE converge_records_v5 (
                    tbl TEXT NOT NULL, key NOT NULL, seq INTEGER NOT NULL, state BLOB NOT NULL, seqs BLOB NOT NULL,
                    PRIMARY KEY (tbl, key)
                ) WITHOUT ROWID;
                INSERT INTO converge_records_v5(tbl, key, seq, state, seqs) SELECT tbl, key, seq, state, seqs FROM converge_records;
                DROP TABLE converge_records;
                ALTER TABLE converge_records_v5 RENAME TO converge_records;
                CREATE INDEX converge_records_by_seq ON converge_records(seq);
                UPDATE converge_identity SET schema_version = 5;
                """)
            if let tamper { try db.execute(sql: tamper) }
        }
    }

    func layout(_ store: ReplicatedDatabase) throws -> (indexes: [String], rowIDColumn: String?, version: Int?) {
        try store.writer.read { db in
            (try db.indexes(on: "converge_records").map(\.name).sorted(),
             try db.primaryKey("converge_records").rowIDColumn,
             try Int.fetchOne(db, sql: "SELECT schema_version FROM converge_identity"))
        }
    }

    func sequences(_ store: ReplicatedDatabase) throws -> [Int64] {
        try store.writer.read { db in try Int64.fetchAll(db, sql: "SELECT seq FROM converge_records ORDER BY seq") }
    }

    @Test func aDatabaseKeyedByRecordIsRekeyedBySequenceOnOpen() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-layout-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("a.sqlite").path
        let whole: Changeset, sinceMiddle: Changeset, head: UInt64, middle: UInt64, snapshot: Changeset
        do {
            let a = try StoreFixtures.makeStore(clock: clock, path: path)
            try sql(a, "INSERT INTO notes(id, title, body) VALUES ('x', 't', 'b'), ('y', 'u', NULL), ('z', 'v', 'w')")
            middle = try a.changes(since: 0).next
            try sql(a, "UPDATE notes SET title = 'u2' WHERE id = 'y'")
            try sql(a, "DELETE FROM notes WHERE id = 'x'")
            whole = try a.changes(since: 0).changeset
            sinceMiddle = try a.changes(since: middle).changeset
            head = try a.feedHead()
            snapshot = try a.snapshot()
            try downgradeToVersion5(a)
            let old = try layout(a)
            #expect(old.indexes.contains("converge_records_by_seq") && old.rowIDColumn == nil)
        }
        let reopened = try StoreFixtures.makeStore(clock: clock, path: path)
        let new = try layout(reopened)
        #expect(new.indexes == ["converge_records_by_key"])
        #expect(new.rowIDColumn == "seq")
        #expect(new.version == 6)
        #expect(try reopened.changes(since: 0).changeset == whole)
        #expect(try reopened.changes(since: middle).changeset == sinceMiddle)
        #expect(try reopened.feedHead() == head)
        #expect(try reopened.snapshot() == snapshot)
        #expect(try reopened.tombstoneCount() == 1)
        #expect(try StoreFixtures.rows(reopened, "notes") == [[.text("y"), .text("u2"), .null, .null], [.text("z"), .text("v"), .text("w"), .null]])
        // It goes on as a store of the new layout: a write takes the next number, past the
        // old ones, and the feed after the old head holds only it.
        try sql(reopened, "UPDATE notes SET body = 'w2' WHERE id = 'z'")
        let next = try reopened.changes(since: head)
        #expect(next.changeset.records.map(\.key) == [.text("z")])
        #expect(next.next > head)
        #expect(try sequences(reopened).last == Int64(next.next))
        // Opening again changes nothing.
        let again = try StoreFixtures.makeStore(clock: clock, path: path)
        #expect(try again.snapshot() == reopened.snapshot())
    }

    @Test func rowsOfAnOlderLayoutThatShareASequenceNumberAreAllKept() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-layout-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("a.sqlite").path
        let snapshot: Changeset, head: UInt64
        do {
            let a = try StoreFixtures.makeStore(clock: clock, path: path)
            try sql(a, "INSERT INTO notes(id, title) VALUES ('x', 't'), ('y', 'u'), ('z', 'v')")
            head = try a.changes(since: 0).next
            snapshot = try a.snapshot()
            // A damaged file: two records at one position (no release writes that).
            try downgradeToVersion5(a, then: "UPDATE converge_records SET seq = (SELECT min(seq) FROM converge_records) WHERE key = 'y'")
        }
        let reopened = try StoreFixtures.makeStore(clock: clock, path: path)
        #expect(try reopened.snapshot() == snapshot, "no record lost")
        let numbers = try sequences(reopened)
        #expect(numbers.count == 3 && Set(numbers).count == 3)
        #expect(numbers.last! > Int64(head), "the second holder of a number takes a new one, past every other")
        // A peer that had nothing gets everything; one at the old head gets the renumbered
        // record again (its fields keep their positions: nothing newer than it has).
        #expect(try reopened.changes(since: 0).changeset.records.count == 3)
        let renumbered = try reopened.changes(since: head).changeset.records
        #expect(renumbered.count == 1 && renumbered[0].state.fields.isEmpty && renumbered[0].state.membership.isBottom)
        // New writes take numbers past the renumbered row.
        try sql(reopened, "INSERT INTO notes(id, title) VALUES ('w', 'n')")
        #expect(try reopened.changes(since: UInt64(numbers.last!)).changeset.records.map(\.key) == [.text("w")])
    }
}
