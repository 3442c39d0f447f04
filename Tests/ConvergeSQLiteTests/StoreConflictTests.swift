import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import GRDB
import GRDBSQLite
import Testing

@Suite(.computeBound) struct StoreConflictTests {
    let clock = TestClock()

    func concurrentEdits() throws -> (ReplicatedDatabase, ReplicatedDatabase) {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, amount) VALUES ('n', 10)") }
        try b.apply(try a.changes(since: 0).changeset)
        let cursorA = try a.changes(since: 0).next, cursorB = try b.changes(since: 0).next
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 11 WHERE id = 'n'") }
        try b.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 12 WHERE id = 'n'") }
        try a.apply(try b.changes(since: cursorB).changeset)
        try b.apply(try a.changes(since: cursorA).changeset)
        return (a, b)
    }

    @Test func conflictsAreObservable() async throws {
        let (a, _) = try concurrentEdits()
        let observed = try await a.observeConflicts().values(in: a.writer).first { _ in true }
        #expect(observed?.count == 1)
    }

    @Test func criticalFieldConflictIsListedAndResolved() throws {
        let (a, b) = try concurrentEdits()
        let conflicts = try a.conflicts()
        #expect(conflicts.count == 1)
        let siblings: [MVRegister.Sibling] = conflicts[0].field?.siblings ?? []
        #expect(Set(siblings.map(\.value)) == [Value.integer(11), .integer(12)])
        #expect(conflicts == (try b.conflicts()))
        #expect(try StoreFixtures.rows(a, "notes") == StoreFixtures.rows(b, "notes"))  // same provisional value

        try b.resolve(table: "notes", key: .text("n"), column: "amount", to: .integer(20))
        try a.apply(try b.changes(since: 0).changeset)
        #expect(try a.conflicts().isEmpty && b.conflicts().isEmpty)
        #expect(try StoreFixtures.rows(a, "notes") == [[.text("n"), .null, .null, .integer(20)]])
    }

    /// Reads never write (DESIGN §8): listing conflicts and counting pending changes fold
    /// nothing and open no write transaction, yet see local writes at once.
    @Test func readingConflictsAndCountsWritesNothing() throws {
        let (a, _) = try concurrentEdits()
        let head = try a.changes(since: 0).next
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 30 WHERE id = 'n'") }
        let logged = { try a.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM converge_log_notes") ?? 0 } }
        #expect(try logged() == 1)
        let changes = try a.writer.read { db in db.totalChangesCount }
        #expect(try a.conflicts().isEmpty)  // the local write resolved it
        #expect(try a.changedRecordCount(since: head) == 1)
        #expect(try logged() == 1)  // not folded
        #expect(try a.writer.read { db in db.totalChangesCount } == changes)
        // A local delete of a conflicted record closes its conflict too.
        let (b, _) = try concurrentEdits()
        try b.writer.write { db in try db.execute(sql: "DELETE FROM notes WHERE id = 'n'") }
        #expect(try b.conflicts().isEmpty)
    }

    /// A feed read folds the captured log first (a write transaction), but once the log is
    /// empty it writes nothing: not even the sequence row, which it left as it was. A sync
    /// engine reads its feed once per pushed batch; each such read appended a page to the WAL.
    @Test func aFeedReadWithNothingToFoldWritesNothing() throws {
        let (a, _) = try concurrentEdits()
        let changes = { try a.writer.read { db in db.totalChangesCount } }
        _ = try a.changes(since: 0)
        let folded = try changes()
        _ = try a.changes(since: 0)
        _ = try a.changes(since: 1, maxRecords: 1)
        #expect(try changes() == folded)
        // The control: a local write makes the next feed read fold it, which writes.
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 31 WHERE id = 'n'") }
        let written = try changes()
        #expect(try a.changes(since: 0).changeset.records.count == 1)
        #expect(try changes() > written)
    }

    /// The store's reads keep the connection's compiled statements on a `DatabaseQueue`.
    /// GRDB's `read` toggles `PRAGMA query_only`, which expires every prepared statement of
    /// the connection, so each later apply or fold compiled all of its statements again.
    /// The control (a plain `read`) shows the check can fail.
    @Test func storeReadsKeepTheWritersCompiledStatements() throws {
        let (a, _) = try concurrentEdits()
        let sql = "SELECT count(*) FROM converge_records WHERE seq > ?"
        func recompilations() throws -> Int32 {
            try a.writer.write { db in
                let statement = try db.cachedStatement(sql: sql)
                _ = try Int.fetchOne(statement, arguments: [0])
                return sqlite3_stmt_status(statement.sqliteStatement, SQLITE_STMTSTATUS_REPREPARE, 0)
            }
        }
        let before = try recompilations()
        _ = try a.conflicts()
        _ = try a.changedRecordCount(since: 0)
        _ = try a.quarantinedCount()
        _ = try a.tombstoneCount()
        _ = try a.keptWriteCount()
        _ = try a.rejectionCounts()
        _ = try a.cursor(for: "peer")
        _ = try a.feedHead()
        #expect(try recompilations() == before)
        _ = try a.writer.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
        #expect(try recompilations() == before + 1)
    }

    /// Batched `IN` reads pad their keys to a power of two with the last key, so batches of
    /// any length share a few cached statement texts.
    @Test func inListsArePaddedToAPowerOfTwo() {
        for (count, width) in [(1, 1), (2, 2), (3, 4), (5, 8), (129, 256), (256, 256)] {
            let keys = (0..<count).map { DatabaseValue(value: $0)! }
            let (marks, arguments) = paddedInList(keys)
            #expect(arguments.count == width)
            #expect(marks.split(separator: ",").count == width)
            #expect(Array(arguments.prefix(count)) == keys)
            #expect(arguments.dropFirst(count).allSatisfy { $0 == keys[count - 1] })
        }
    }
}
