import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import GRDB
import Testing

@Suite(.computeBound) struct StoreSchemaTests {
    let clock = TestClock()

    func refusal(_ sql: String, table: String = "t") throws -> SchemaError.Reason? {
        let queue = try DatabaseQueue()
        try queue.write { try $0.execute(sql: sql) }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        do {
            try store.replicate(table: table)
            return nil
        } catch let error as SchemaError {
            return error.reason
        }
    }

    @Test func refusesTablesThatCannotConverge() throws {
        #expect(try refusal("CREATE TABLE t(a, b)") == .noPrimaryKey)
        #expect(try refusal("CREATE TABLE t(id INTEGER PRIMARY KEY, a)") == .autoIncrementKey("id"))
        #expect(try refusal("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, a)") == .autoIncrementKey("id"))
        #expect(try refusal("CREATE TABLE t(a TEXT, b TEXT, PRIMARY KEY (a, b))") == .compositePrimaryKey(["a", "b"]))
        #expect(try refusal("CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, email TEXT UNIQUE)") != nil)
        #expect(try refusal("CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)") == .notNullWithoutDefault("n"))
        #expect(try refusal("CREATE TABLE converge_x(id TEXT PRIMARY KEY)", table: "converge_x") == .reservedName)
        #expect(try refusal("CREATE TABLE t(id TEXT PRIMARY KEY)", table: "missing") == .noSuchTable)
        #expect(try refusal("CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL DEFAULT 0, b BLOB)") == nil)
        #expect(try refusal("CREATE TABLE t(id BLOB PRIMARY KEY NOT NULL, v) WITHOUT ROWID") == nil)
    }

    @Test func existingRowsBecomeRecords() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, v)")
            try db.execute(sql: "INSERT INTO t VALUES ('a', 1), ('b', 2)")
        }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "t")
        #expect(try store.changes(since: 0).changeset.records.count == 2)
        try store.replicate(table: "t")  // again, unchanged: nothing new
        #expect(try store.changes(since: 0).changeset.records.count == 2)
    }

    @Test func deletePolicyCannotChange() throws {
        let store = try StoreFixtures.makeStore(clock: clock)
        #expect(throws: SchemaError(table: "items", reason: .deletePolicyChanged(from: .deleteWins, to: .updateWins))) {
            try store.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .updateWins)
        }
    }

    /// A newer schema elsewhere: the unknown column is kept, forwarded, and written into the
    /// table once the app's migration adds it.
    @Test func unknownColumnsAreKeptForwardedAndMaterialized() throws {
        let newer = try StoreFixtures.makeStore(clock: clock), older = try StoreFixtures.makeStore(clock: clock), third = try StoreFixtures.makeStore(clock: clock)
        try newer.writer.write { db in try db.execute(sql: "ALTER TABLE notes ADD COLUMN color TEXT") }
        try newer.replicate(table: "notes", policies: ["amount": .critical])
        try newer.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title, color) VALUES ('n1', 'hi', 'red')") }
        try older.apply(try newer.changes(since: 0).changeset)
        #expect(try StoreFixtures.rows(older, "notes") == [[.text("n1"), .text("hi"), .null, .null]])
        try third.apply(try older.changes(since: 0).changeset)  // relayed with the unknown column
        try older.writer.write { db in try db.execute(sql: "ALTER TABLE notes ADD COLUMN color TEXT") }
        try older.replicate(table: "notes", policies: ["amount": .critical])
        #expect(try StoreFixtures.rows(older, "notes") == [[.text("n1"), .text("hi"), .null, .null, .text("red")]])
        #expect(try third.snapshot() == newer.snapshot())
    }

    /// Changes for a table not replicated here are parked, forwarded, and materialized when
    /// the app later replicates the table; they never touch an unreplicated app table.
    @Test func unreplicatedTablesAreParkedThenMaterialized() throws {
        let a = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "CREATE TABLE tags(id TEXT PRIMARY KEY NOT NULL, label)") }
        try a.replicate(table: "tags")
        try a.writer.write { db in try db.execute(sql: "INSERT INTO tags VALUES ('t1', 'urgent')") }
        let b = try StoreFixtures.makeStore(clock: clock)
        try b.writer.write { db in try db.execute(sql: "CREATE TABLE tags(id TEXT PRIMARY KEY NOT NULL, label)") }
        try b.apply(try a.changes(since: 0).changeset)
        #expect(try b.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM tags") } == 0)
        try b.replicate(table: "tags")
        #expect(try StoreFixtures.rows(b, "tags") == [[.text("t1"), .text("urgent")]])
    }
}
