import ConvergeCore
import ConvergeInspector
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// verify on good and tampered files, resolve, export and import.
@Suite(.computeBound) struct InspectorWriteTests {
    @Test func verifyPassesOnAGoodFileWithUnfoldedLocalWrites() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        // A local write the store captured and has not folded (no feed read, no apply
        // since): the metadata alone says 'Ink', the table 'Pencil'.
        do {
            let a = try fixture.store("a.sqlite")
            try a.writer.write { db in try db.execute(sql: "UPDATE notes SET title = 'Pencil' WHERE id = 'm'") }
        }
        for name in ["a.sqlite", "b.sqlite"] {
            let (result, report) = try fixture.json(.verify, name)
            #expect(result.exitCode == 0, "\(name): \(result.output)")
            #expect(report["ok"] as? Bool == true)
            #expect(report["difference_count"] as? Int == 0)
        }
        let (_, report) = try fixture.json(.verify, "a.sqlite")
        #expect(report["unfolded_writes"] as? Int == 1)
        let human = Inspector.run(.verify, database: fixture.path("a.sqlite"), json: false)
        #expect(human.output.contains("ok: every table matches its metadata"))
        // verify only reads: the write is still in the log, unfolded.
        let logged = try DatabaseQueue(path: fixture.path("a.sqlite")).read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_log_notes") }
        #expect(logged == 1)
    }

    @Test func verifyFailsOnAFileChangedBehindConvergesBack() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        try fixture.tamper("a.sqlite", "UPDATE notes SET title = 'Tampered' WHERE id = 'n'")
        try fixture.tamper("a.sqlite", "UPDATE notes SET amount = '1' WHERE id = 'm'")  // same number, another storage class
        try fixture.tamper("a.sqlite", "DELETE FROM items WHERE id = 'i1'")
        try fixture.tamper("a.sqlite", "INSERT INTO notes(id, title) VALUES ('ghost', 'Boo')")

        let (result, report) = try fixture.json(.verify, "a.sqlite")
        #expect(result.exitCode == 1)
        #expect(report["ok"] as? Bool == false)
        let differences = (report["differences"] as? [[String: Any]] ?? []).map { difference in
            let key = (difference["key"] as? [String: Any])?["value"] as? String ?? ""
            return "\(difference["table"] ?? "") \(key) \(difference["kind"] ?? "") \(difference["column"] ?? "-")"
        }
        #expect(differences == ["items i1 missing_row -", "notes ghost extra_row -", "notes m value amount", "notes n value title"])
        let amount = (report["differences"] as? [[String: Any]] ?? []).first { $0["column"] as? String == "amount" } ?? [:]
        #expect((amount["expected"] as? [String: Any])?["type"] as? String == "integer")
        #expect((amount["actual"] as? [String: Any])?["type"] as? String == "text")

        let human = Inspector.run(.verify, database: fixture.path("a.sqlite"), json: false)
        #expect(human.exitCode == 1)
        #expect(human.output.contains("4 differences"))
        #expect(human.output.contains("notes 'n': title is 'Tampered' (TEXT), the metadata says 'Pen' (TEXT)"))
        #expect(human.output.contains("notes 'm': amount is '1' (TEXT), the metadata says 1 (INTEGER)"))
        #expect(human.output.contains("items 'i1': row missing"))
        #expect(human.output.contains("notes 'ghost': row present"))
        // The untouched replica still verifies.
        #expect(Inspector.run(.verify, database: fixture.path("b.sqlite"), json: false).exitCode == 0)
    }

    @Test func resolveWritesTheChoiceAndOnlyForAConflict() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        let (result, report) = try fixture.json(.resolve(table: "notes", key: "n", column: "amount", value: "20"), "a.sqlite")
        #expect(result.exitCode == 0, "\(result.errorOutput)")
        // No declared type on `amount`: a number typed is a number.
        #expect(report[path: "value", "type"] as? String == "integer")
        #expect((report["replaced"] as? [Any])?.count == 2)
        let (_, conflicts) = try fixture.json(.conflicts, "a.sqlite")
        #expect((conflicts["conflicts"] as? [Any])?.isEmpty == true)
        let amount = try DatabaseQueue(path: fixture.path("a.sqlite")).read { db in
            try Row.fetchOne(db, sql: "SELECT amount, typeof(amount) AS type FROM notes WHERE id = 'n'")
        }
        #expect(amount?["amount"] == 20 && amount?["type"] == "integer")
        #expect(Inspector.run(.verify, database: fixture.path("a.sqlite"), json: false).exitCode == 0)

        // The choice travels like any write: b takes it and its conflict closes too.
        let a = try fixture.store("a.sqlite"), b = try fixture.store("b.sqlite", realTime: true)
        try b.apply(try a.changes(since: 0).changeset)
        #expect(try b.conflicts().isEmpty)

        // Not in conflict any more, or never: refused, nothing written.
        let again = Inspector.run(.resolve(table: "notes", key: "n", column: "amount", value: "21"), database: fixture.path("a.sqlite"), json: false)
        #expect(again.exitCode == 2 && again.errorOutput.contains("not in conflict"))
        let (_, column) = try fixture.json(.resolve(table: "notes", key: "n", column: "nope", value: "1"), "a.sqlite")
        #expect(column[path: "error", "code"] as? String == "no_such_column")
        #expect(try fixture.store("a.sqlite").snapshot() == a.snapshot())
    }

    @Test func exportAndImportConvergeTwoFiles() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        _ = try fixture.store("c.sqlite")  // an empty device with the same tables
        let file = fixture.path("a.changes")
        let (exported, export) = try fixture.json(.export(since: 0, file: file, overwrite: false), "a.sqlite")
        #expect(exported.exitCode == 0, "\(exported.errorOutput)")
        #expect(export["records"] as? Int == 3)
        let next = export["next_cursor"] as? Int ?? -1
        #expect(UInt64(next) == (try fixture.store("a.sqlite").capturedFeedPosition()))

        let (imported, report) = try fixture.json(.import(file: file), "c.sqlite")
        #expect(imported.exitCode == 0, "\(imported.errorOutput)")
        #expect(report["changed_records"] as? Int == 3)
        #expect(try fixture.snapshot("c.sqlite") == fixture.snapshot("a.sqlite"))
        #expect(Inspector.run(.verify, database: fixture.path("c.sqlite"), json: false).exitCode == 0)
        let (_, conflicts) = try fixture.json(.conflicts, "c.sqlite")
        #expect((conflicts["conflicts"] as? [Any])?.count == 1)  // the conflict travelled whole

        // Importing again is a join that changes nothing; nothing new after the cursor.
        let (_, twice) = try fixture.json(.import(file: file), "c.sqlite")
        #expect(twice["changed_records"] as? Int == 0)
        let (_, empty) = try fixture.json(.export(since: UInt64(next), file: fixture.path("none.changes"), overwrite: false), "a.sqlite")
        #expect(empty["records"] as? Int == 0)
        // An existing file is not replaced unless asked.
        let (refused, exists) = try fixture.json(.export(since: 0, file: file, overwrite: false), "a.sqlite")
        #expect(refused.exitCode == 2 && exists[path: "error", "code"] as? String == "file_exists")
        #expect(Inspector.run(.export(since: 0, file: file, overwrite: true), database: fixture.path("a.sqlite"), json: false).exitCode == 0)
    }

    @Test func aCorruptChangesetFileChangesNothing() throws {
        let fixture = try Fixture()
        _ = try fixture.conflictedPair()
        _ = try fixture.store("d.sqlite")
        let file = fixture.path("a.changes")
        #expect(Inspector.run(.export(since: 0, file: file, overwrite: false), database: fixture.path("a.sqlite"), json: false).exitCode == 0)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let before = try fixture.snapshot("d.sqlite")
        bytes[bytes.count / 2] ^= 0x5A
        let flipped = fixture.path("flipped.changes"), truncated = fixture.path("truncated.changes")
        try Data(bytes).write(to: URL(fileURLWithPath: flipped))
        try Data(bytes.prefix(bytes.count / 3)).write(to: URL(fileURLWithPath: truncated))
        for path in [flipped, truncated] {
            let (result, report) = try fixture.json(.import(file: path), "d.sqlite")
            #expect(result.exitCode == 2)
            #expect(report[path: "error", "code"] as? String == "bad_changeset")
        }
        let human = Inspector.run(.import(file: flipped), database: fixture.path("d.sqlite"), json: false)
        #expect(human.errorOutput.hasPrefix("converge: ") && human.errorOutput.contains("is not a readable Converge changeset"))
        #expect(try fixture.snapshot("d.sqlite") == before)
    }

    @Test func filesThatAreNotConvergeDatabasesAreRefusedUntouched() throws {
        let fixture = try Fixture()
        let missing = fixture.path("missing.sqlite")
        for command in [InspectorCommand.status, .verify, .import(file: missing)] {
            let result = Inspector.run(command, database: missing, json: false)
            #expect(result.exitCode == 2)
            #expect(result.errorOutput == "converge: no such file: \(missing)\n")
        }
        #expect(!FileManager.default.fileExists(atPath: missing))  // never created

        let plain = fixture.path("plain.sqlite")
        try DatabaseQueue(path: plain).write { db in try db.execute(sql: "CREATE TABLE t(x)") }
        let (result, report) = try fixture.json(.status, "plain.sqlite")
        #expect(result.exitCode == 2 && report[path: "error", "code"] as? String == "not_converge_database")
        #expect(Inspector.run(.import(file: plain), database: plain, json: false).errorOutput.contains("not a Converge one"))
        let tables = try DatabaseQueue(path: plain).read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        #expect(tables == ["t"])

        let garbage = fixture.path("garbage.sqlite")
        try Data(String(repeating: "not a database at all. ", count: 200).utf8).write(to: URL(fileURLWithPath: garbage))
        let (notSQLite, error) = try fixture.json(.verify, "garbage.sqlite")
        #expect(notSQLite.exitCode == 2 && error[path: "error", "code"] as? String == "not_sqlite")
        #expect(Inspector.run(.status, database: fixture.folder.path, json: false).errorOutput.contains("is a directory"))
    }
}
