import ConvergeCore
import ConvergeInspector
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// The reading commands on real files: status, conflicts, history.
@Suite(.computeBound) struct InspectorReadTests {
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

    /// `a.sqlite` and `b.sqlite` created `ann@example.com` offline, a first, and synced: a
    /// unique-index clash with `pa` holding and `pb` held. Returns the replica ids.
    func clashedPair(_ fixture: Fixture) throws -> (a: ReplicaID, b: ReplicaID) {
        func store(_ name: String) throws -> ReplicatedDatabase {
            let store = try fixture.store(name)
            try store.writer.write { db in
                try db.execute(sql: "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email, name)")
                try db.execute(sql: "CREATE UNIQUE INDEX people_email ON people(email)")
            }
            try store.replicate(table: "people", allowUniqueIndexes: true)
            return store
        }
        let a = try store("a.sqlite"), b = try store("b.sqlite")
        try a.writer.write { db in try db.execute(sql: "INSERT INTO people(id, email, name) VALUES ('pa', 'ann@example.com', 'Ann on A')") }
        fixture.clock.advance(by: 1_000)
        try b.writer.write { db in try db.execute(sql: "INSERT INTO people(id, email, name) VALUES ('pb', 'ann@example.com', 'Ann on B')") }
        let fromA = try a.changes(since: 0).changeset, fromB = try b.changes(since: 0).changeset
        try a.apply(fromB)
        try b.apply(fromA)
        return (a.replicaID, b.replicaID)
    }

    @Test func conflictsListUniqueIndexClashesWithHolderAndHeld() throws {
        let fixture = try Fixture()
        let (a, b) = try clashedPair(fixture)
        let (result, report) = try fixture.json(.conflicts, "a.sqlite")
        #expect(result.exitCode == 0)
        #expect((report["conflicts"] as? [Any])?.isEmpty == true)
        let constraints = report["constraints"] as? [[String: Any]] ?? []
        #expect(constraints.count == 1)
        let clash = constraints.first ?? [:]
        #expect(clash["table"] as? String == "people" && clash["index"] as? String == "people_email")
        #expect(clash["columns"] as? [String] == ["email"])
        #expect((clash["values"] as? [[String: Any]])?.map { $0["value"] as? String } == ["ann@example.com"])
        #expect(clash[path: "holder", "key", "value"] as? String == "pa")
        #expect(clash[path: "holder", "stamp", "replica"] as? String == a.uuidString())
        #expect(clash[path: "holder", "values", "name", "value"] as? String == "Ann on A")
        let held = clash["held"] as? [[String: Any]] ?? []
        #expect(held.count == 1)
        #expect(held.first?[path: "key", "value"] as? String == "pb")
        #expect(held.first?[path: "stamp", "replica"] as? String == b.uuidString())
        #expect(held.first?[path: "stamp", "time"] as? String == "2023-11-14T22:13:21.000Z")
        #expect(held.first?[path: "values", "name", "value"] as? String == "Ann on B")

        let human = Inspector.run(.conflicts, database: fixture.path("b.sqlite"), json: false).output
        #expect(human.hasPrefix("1 open conflict\n"))
        #expect(human.contains("people unique people_email (email='ann@example.com'): 2 records"))
        let lines = human.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("'pa'") && $0.contains(Format8.short(a)) && $0.contains("holder") && $0.contains("name='Ann on A'") })
        #expect(lines.contains { $0.contains("'pb'") && $0.contains(Format8.short(b)) && $0.contains("held") && $0.contains("2023-11-14T22:13:21.000Z") })

        // Status counts it; verify expects no row for the held record.
        #expect(try fixture.json(.status, "a.sqlite").object["conflicts"] as? Int == 1)
        let (verified, verify) = try fixture.json(.verify, "b.sqlite")
        #expect(verified.exitCode == 0, "\(verify)")
        #expect(verify["ok"] as? Bool == true)
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
