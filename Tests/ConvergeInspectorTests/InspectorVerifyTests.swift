import ConvergeCore
import ConvergeInspector
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// verify's expected rows go through the app table's affinities and defaults; export pages
/// through a feed longer than one page.
@Suite(.computeBound) struct InspectorVerifyTests {
    /// A record created elsewhere by a replica whose `items` has only `name`, which it
    /// wrote as an integer: here the TEXT column stores it as text, and `qty` and `price`,
    /// which no write reached, keep their defaults. Neither is a difference; a value that
    /// replaces such a default behind Converge's back is.
    @Test func verifyComparesThroughAffinitiesAndDefaults() throws {
        let fixture = try Fixture()
        do {
            let store = try fixture.store("a.sqlite")
            let older = TableSchema(name: "items", primaryKey: "id", columns: ["name"], deletePolicy: .deleteWins)
            var state = RecordState()
            state.insert(["name": .integer(7)], at: Stamp(hlc: HLC(milliseconds: fixture.clock.now), replica: .random()), schema: older)
            try store.apply(Changeset(records: [RecordDelta(table: "items", key: .text("r"), state: state)]))
            let row = try store.writer.read { db in
                try Row.fetchOne(db, sql: "SELECT name, typeof(name) AS type, qty, price FROM items WHERE id = 'r'").map { row -> [Value] in
                    (0..<4).map { Value(row[$0] as DatabaseValue) }
                }
            }
            #expect(row == [.text("7"), .text("text"), .integer(0), .null])
        }
        let (result, report) = try fixture.json(.verify, "a.sqlite")
        #expect(result.exitCode == 0, "\(result.output)")
        #expect(report["ok"] as? Bool == true)

        try fixture.tamper("a.sqlite", "UPDATE items SET qty = 5 WHERE id = 'r'")
        let (tampered, after) = try fixture.json(.verify, "a.sqlite")
        #expect(tampered.exitCode == 1)
        let difference = (after["differences"] as? [[String: Any]])?.first ?? [:]
        #expect(difference["column"] as? String == "qty")
        #expect((difference["expected"] as? [String: Any])?["value"] as? Int == 0)  // the column's default
        #expect((difference["actual"] as? [String: Any])?["value"] as? Int == 5)
    }

    /// The metadata itself damaged: a record whose stored state no longer decodes is named
    /// (exit 1), and the other records are still checked.
    @Test func verifyNamesRecordsWhoseMetadataIsCorrupt() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        try fixture.tamper("a.sqlite", "UPDATE converge_records SET state = x'00ff00ff' WHERE tbl = 'notes' AND key = 'm'")
        try fixture.tamper("a.sqlite", "UPDATE notes SET title = 'Tampered' WHERE id = 'n'")
        let (result, report) = try fixture.json(.verify, "a.sqlite")
        #expect(result.exitCode == 1)
        let kinds = (report["differences"] as? [[String: Any]] ?? []).map { "\($0["kind"] ?? "") \(($0["key"] as? [String: Any])?["value"] ?? "")" }
        #expect(kinds == ["corrupt_metadata m", "value n"])
        let human = Inspector.run(.verify, database: fixture.path("a.sqlite"), json: false).output
        #expect(human.contains("notes 'm': metadata unreadable"))
    }

    /// The file damaged below SQL: an index entry changed on disk. SQLite's integrity check
    /// (which verify runs first) sees the index disagree with its table.
    @Test func verifyRunsSQLitesIntegrityCheck() throws {
        let fixture = try Fixture()
        do {
            let store = try fixture.store("a.sqlite")
            // An app table Converge does not replicate, with an index: its pages come last.
            try store.writer.write { db in
                try db.execute(sql: "CREATE TABLE scratch(word TEXT); CREATE INDEX scratch_word ON scratch(word)")
                try db.execute(sql: "INSERT INTO scratch VALUES ('zqxjzqxj')")
            }
        }
        let url = URL(fileURLWithPath: fixture.path("a.sqlite"))
        var bytes = [UInt8](try Data(contentsOf: url))
        let word = Array("zqxjzqxj".utf8)
        let found = (0...(bytes.count - word.count)).filter { bytes[$0..<$0 + word.count].elementsEqual(word) }
        #expect(found.count == 2)  // the table's cell, then the index's (created after it)
        guard let index = found.last else { return }
        bytes[index] = UInt8(ascii: "a")  // still sorted: the index is one entry
        try Data(bytes).write(to: url)

        let (result, report) = try fixture.json(.verify, "a.sqlite")
        #expect(result.exitCode == 1)
        let kinds = (report["differences"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
        #expect(!kinds.isEmpty && kinds.allSatisfy { $0 == "sqlite_integrity" })
        #expect(Inspector.run(.verify, database: fixture.path("a.sqlite"), json: false).output.contains("file: SQLite integrity check:"))
    }

    /// More records than one feed page (1,000): every page is exported, once.
    @Test func exportPagesThroughTheWholeFeed() throws {
        let fixture = try Fixture()
        let count = 2_100
        do {
            let store = try fixture.store("a.sqlite")
            try store.writer.write { db in
                try db.execute(sql: """
                    WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?)
                    INSERT INTO items(id, name, qty) SELECT 'k' || i, 'item ' || i, i FROM s
                    """, arguments: [count])
            }
            _ = try fixture.store("c.sqlite")
        }
        let file = fixture.path("all.changes")
        let (exported, export) = try fixture.json(.export(since: 0, file: file, overwrite: false), "a.sqlite")
        #expect(exported.exitCode == 0, "\(exported.errorOutput)")
        #expect(export["records"] as? Int == count)
        let (imported, report) = try fixture.json(.import(file: file), "c.sqlite")
        #expect(imported.exitCode == 0 && report["changed_records"] as? Int == count)
        #expect(try fixture.snapshot("c.sqlite") == fixture.snapshot("a.sqlite"))
        #expect(Inspector.run(.verify, database: fixture.path("c.sqlite"), json: false).exitCode == 0)
    }
}
