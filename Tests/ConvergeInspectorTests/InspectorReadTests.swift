import ConvergeCore
import ConvergeInspector
import ConvergeSQLite
import Foundation
import GRDB
import Testing

/// The reading commands on real files: status, conflicts, history.
@Suite struct InspectorReadTests {
    @Test func statusReportsIdentityTablesPeersAndConflicts() throws {
        let fixture = try Fixture()
        let (a, _) = try fixture.conflictedPair()
        let (result, status) = try fixture.json(.status, "a.sqlite")
        #expect(result.exitCode == 0)
        #expect(status["replica"] as? String == a.uuidString())
        #expect(status["conflicts"] as? Int == 1)
        #expect(status["quarantined_records"] as? Int == 0)
        let tables = status["tables"] as? [[String: Any]] ?? []
        #expect(tables.map { $0["name"] as? String } == ["items", "notes"])
        let notes = tables.first { $0["name"] as? String == "notes" } ?? [:]
        #expect(notes["alive"] as? Int == 2 && notes["rows"] as? Int == 2)
        #expect(notes["delete_policy"] as? String == "updateWins")
        let policies = (notes["columns"] as? [[String: Any]] ?? []).map { "\($0["name"] ?? "")=\($0["policy"] ?? "")" }
        #expect(policies == ["title=lww", "body=lww", "amount=critical"])
        // The cursor was set before the conflicting edit and the merge: 'n' is pending.
        let peers = status["peers"] as? [[String: Any]] ?? []
        #expect(peers.count == 1 && peers.first?["peer"] as? String == "laptop")
        #expect(peers.first?["pending"] as? Int == 1)
        #expect((status[path: "sizes", "file_bytes"] as? Int ?? 0) > 0)

        let human = Inspector.run(.status, database: fixture.path("a.sqlite"), json: false)
        #expect(human.exitCode == 0)
        #expect(human.output.contains(Format8.short(a)) && !human.output.contains(a.uuidString()))
        #expect(human.output.contains("amount=critical"))
        #expect(human.output.contains("laptop"))
    }

    @Test func conflictsListEverySiblingWithItsWriter() throws {
        let fixture = try Fixture()
        let (a, b) = try fixture.conflictedPair()
        let (result, report) = try fixture.json(.conflicts, "b.sqlite")
        #expect(result.exitCode == 0)
        let conflicts = report["conflicts"] as? [[String: Any]] ?? []
        #expect(conflicts.count == 1)
        #expect(conflicts.first?["column"] as? String == "amount")
        let siblings = conflicts.first?["siblings"] as? [[String: Any]] ?? []
        #expect(siblings.compactMap { ($0["value"] as? [String: Any])?["value"] as? Int }.sorted() == [11, 12])
        #expect(Set(siblings.compactMap { ($0["stamp"] as? [String: Any])?["replica"] as? String }) == [a.uuidString(), b.uuidString()])
        #expect(siblings.filter { $0["shown"] as? Bool == true }.count == 1)

        let human = Inspector.run(.conflicts, database: fixture.path("b.sqlite"), json: false).output
        #expect(human.contains("notes 'n' amount: 2 values"))
        #expect(human.contains("2023-11-14T22:13:21.000Z"))  // the edits' time, ISO-8601 from the HLC
    }

    @Test func historyShowsWhoWroteWhatWhen() throws {
        let fixture = try Fixture()
        let (a, b) = try fixture.conflictedPair()
        let (result, history) = try fixture.json(.history(table: "notes", key: "n"), "a.sqlite")
        #expect(result.exitCode == 0)
        #expect(history[path: "membership", "alive"] as? Bool == true)
        let fields = history["fields"] as? [[String: Any]] ?? []
        #expect(fields.map { $0["column"] as? String } == ["title", "body", "amount"])
        let amount = fields[2]
        #expect(amount["conflict"] as? Bool == true)
        let writes = (amount["register"] as? [String: Any])?["writes"] as? [[String: Any]] ?? []
        #expect(writes.count == 2)
        #expect(Set(writes.compactMap { ($0["stamp"] as? [String: Any])?["replica"] as? String }) == [a.uuidString(), b.uuidString()])
        let title = (fields[0]["register"] as? [String: Any]) ?? [:]
        #expect(title["kind"] as? String == "lww")
        #expect(((title["writes"] as? [[String: Any]])?.first?["stamp"] as? [String: Any])?["replica"] as? String == a.uuidString())
        // body: the insert wrote every column, NULL included.
        #expect((fields[1]["shown"] as? [String: Any])?["type"] as? String == "null")
        let row = history["row"] as? [[String: Any]] ?? []
        #expect(row.map { $0["column"] as? String } == ["title", "body", "amount"])

        let human = Inspector.run(.history(table: "notes", key: "n"), database: fixture.path("a.sqlite"), json: false).output
        #expect(human.contains("amount (critical)") && human.contains("CONFLICT"))
        #expect(human.contains("2023-11-14T22:13:20.000Z by \(Format8.short(a))"))

        // A key that has no record, and a table that is not replicated, are clear errors.
        let missing = Inspector.run(.history(table: "notes", key: "nope"), database: fixture.path("a.sqlite"), json: false)
        #expect(missing.exitCode == 2 && missing.errorOutput.contains("no record 'nope' in notes"))
        let (_, unknown) = try fixture.json(.history(table: "nope", key: "n"), "a.sqlite")
        #expect(unknown[path: "error", "code"] as? String == "no_such_table")
    }

    /// An app on a `DatabasePool` leaves its file in WAL mode; the read-only inspector
    /// must still read it, the local writes not folded yet included.
    @Test func readsAWALFileAndItsUnfoldedWrites() throws {
        let fixture = try Fixture()
        do {
            let store = try fixture.store("wal.sqlite", pool: true)
            try store.writer.write { db in try db.execute(sql: "INSERT INTO items(id, name) VALUES ('w', 'Wal')") }
        }
        let (result, status) = try fixture.json(.status, "wal.sqlite")
        #expect(result.exitCode == 0, "\(result.errorOutput)")
        let items = (status["tables"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "items" } ?? [:]
        #expect(items["unfolded_writes"] as? Int == 1)
        #expect(items["rows"] as? Int == 1)
        let history = Inspector.run(.history(table: "items", key: "w"), database: fixture.path("wal.sqlite"), json: false)
        #expect(history.exitCode == 0 && history.output.contains("name (lww)  shows 'Wal'"))
    }
}

enum Format8 {
    /// The short replica id human output shows.
    static func short(_ id: ReplicaID) -> String { String(id.uuidString().prefix(8)) }
}
