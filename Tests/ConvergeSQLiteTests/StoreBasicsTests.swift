import ConvergeCore
@testable import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

@Suite(.computeBound) struct StoreBasicsTests {
    let clock = TestClock()

    @Test func localWritesFlowToAnotherStore() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in
            try db.execute(sql: "INSERT INTO notes(id, title, body, amount) VALUES ('n1', 'hello', 'world', 3), ('n2', 'x', NULL, 1)")
        }
        let batch = try a.changes(since: 0)
        #expect(batch.changeset.records.count == 2)
        #expect(!batch.hasMore)
        try b.apply(batch.changeset)
        #expect(try StoreFixtures.rows(b, "notes") == StoreFixtures.rows(a, "notes"))
        // Applying twice changes nothing, and applied changes are not captured as local ones.
        #expect(try b.apply(batch.changeset).changedRecords == 0)
        #expect(try a.snapshot() == b.snapshot())
    }

    @Test func oneTransactionTakesOneStamp() throws {
        let a = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in
            try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n1', 'a')")
            try db.execute(sql: "INSERT INTO items(id, name) VALUES ('i1', 'b')")
            try db.execute(sql: "UPDATE notes SET body = 'c' WHERE id = 'n1'")
        }
        var stamps = Set<Stamp>()
        for record in try a.snapshot().records {
            stamps.formUnion(record.state.membership.dots)
        }
        #expect(stamps.count == 1)
    }

    @Test func writesThatChangeNothingProduceNoChange() throws {
        let a = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n1', 'a')") }
        let cursor = try a.changes(since: 0).next
        let clockBefore = a.clock
        try a.writer.write { db in
            try db.execute(sql: "UPDATE notes SET title = 'a' WHERE id = 'n1'")
            try db.execute(sql: "UPDATE notes SET title = 'z' WHERE id = 'missing'")
            try db.execute(sql: "DELETE FROM notes WHERE id = 'missing'")
        }
        #expect(try a.changes(since: cursor).changeset.isEmpty)
        #expect(a.clock == clockBefore)
    }

    @Test func captureSeesEveryWritePath() throws {
        struct Note: Codable, FetchableRecord, PersistableRecord {
            static let databaseTableName = "notes"
            var id: String
            var title: String?
            var body: String?
            var amount: Int?
        }
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in
            try Note(id: "r1", title: "record", body: nil, amount: 1).insert(db)
            try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('m1', 'multi'), ('m2', 'row')")
            try db.execute(sql: "INSERT OR REPLACE INTO notes(id, title) VALUES ('m1', 'replaced')")
            try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('m2', 'upsert') ON CONFLICT(id) DO UPDATE SET title = excluded.title")
            var note = try Note.fetchOne(db, key: "r1")!
            note.body = "saved"
            try note.update(db)
            try db.execute(sql: "UPDATE notes SET id = 'm3' WHERE id = 'm2'")  // a new key: delete + insert
        }
        try b.apply(try a.changes(since: 0).changeset)
        let rows = try StoreFixtures.rows(b, "notes")
        #expect(rows == [
            [.text("m1"), .text("replaced"), .null, .null],
            [.text("m3"), .text("upsert"), .null, .null],
            [.text("r1"), .text("record"), .text("saved"), .integer(1)],
        ])
    }

    @Test func relayDeliversThroughAMiddleReplica() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock), c = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO items(id, name, qty) VALUES ('i1', 'pen', 2)") }
        try b.apply(try a.changes(since: 0).changeset)
        try c.apply(try b.changes(since: 0).changeset)
        #expect(try StoreFixtures.rows(c, "items") == StoreFixtures.rows(a, "items"))
        #expect(try c.snapshot() == a.snapshot())
    }

    @Test func feedPagesAreBoundedAndResumable() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in
            for index in 0..<25 { try db.execute(sql: "INSERT INTO notes(id, title) VALUES (?, 'x')", arguments: ["n\(index)"]) }
        }
        var cursor: UInt64 = 0
        var position: UInt64?
        var pages = 0
        while true {
            let batch = try a.changes(since: 0, after: position, maxRecords: 10)
            #expect(batch.changeset.records.count <= 10)
            try b.apply(batch.changeset)
            position = batch.next
            pages += 1
            if !batch.hasMore { break }
        }
        cursor = position!
        #expect(pages == 3)
        #expect(try StoreFixtures.rows(b, "notes").count == 25)
        // Only fields changed after the cursor are sent.
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET title = 'y' WHERE id = 'n3'") }
        let delta = try a.changes(since: cursor).changeset
        #expect(delta.records.count == 1)
        #expect(Set(delta.records[0].state.fields.keys) == ["title"])
    }

    @Test func peerCursorsPersist() throws {
        let a = try StoreFixtures.makeStore(clock: clock)
        #expect(try a.cursor(for: "server") == .init())
        try a.setCursor(.init(sent: 5, received: 9), for: "server")
        #expect(try a.cursor(for: "server") == .init(sent: 5, received: 9))
    }
}

/// A record that changed again beyond a page keeps its older parts: paging with a fixed
/// cursor sends them with the record when its turn comes (the simulator's first find).
@Suite(.computeBound) struct FeedPagingTests {
    @Test func pagesNeverDropOlderPartsOfLaterRecords() throws {
        let clock = TestClock()
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('r', 'first')") }  // membership + fields
        for index in 0..<4 {
            try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES (?, 'x')", arguments: ["o\(index)"]) }
        }
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET body = 'later' WHERE id = 'r'") }  // r moves to the end
        var position: UInt64?
        var pages = 0
        while true {
            let batch = try a.changes(since: 0, after: position, maxRecords: 2)
            try b.apply(batch.changeset)
            position = batch.next
            pages += 1
            if !batch.hasMore { break }
        }
        #expect(pages == 3)
        #expect(try b.snapshot() == a.snapshot())
        #expect(try StoreFixtures.rows(b, "notes") == StoreFixtures.rows(a, "notes"))
    }

    @Test func corePagesNeverDropOlderPartsOfLaterRecords() {
        let schema = StoreFixtures.notes
        var a = Replica(id: .random()), b = Replica(id: .random())
        a.replicate(schema); b.replicate(schema)
        a.perform([.insert(table: "notes", key: .text("r"), values: ["title": .text("first")])], physicalMilliseconds: 1)
        for index in 0..<4 { a.perform([.insert(table: "notes", key: .text("o\(index)"), values: ["title": .text("x")])], physicalMilliseconds: 2) }
        a.perform([.update(table: "notes", key: .text("r"), values: ["body": .text("later")])], physicalMilliseconds: 3)
        var position: UInt64?
        while true {
            let page = a.state.changes(since: 0, after: position, limit: 2)
            b.apply(page.changeset, physicalMilliseconds: 4)
            position = page.next
            if !page.hasMore { break }
        }
        #expect(b.state.snapshot == a.state.snapshot)
    }
}
