import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import GRDB
import Testing

/// Hostile and mistaken input gets a typed error or the quarantine, and leaves the
/// database exactly as it was.
@Suite(.computeBound) struct StoreBadInputTests {
    let clock = TestClock()

    /// Everything stored, Converge's metadata included, as text.
    func dump(_ store: ReplicatedDatabase) throws -> String {
        try store.writer.read { db in
            var out = ""
            for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") {
                for row in try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\"") { out += "\(table) \(row)\n" }
            }
            return out
        }
    }

    func populated() throws -> (ReplicatedDatabase, Changeset) {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n1', 'x'), ('n2', 'y')") }
        try b.writer.write { db in try db.execute(sql: "INSERT INTO items(id, name) VALUES ('i1', 'z')") }
        return (b, try a.changes(since: 0).changeset)
    }

    @Test func corruptBytesAreRefusedByTheDecoder() throws {
        let (_, changeset) = try populated()
        let bytes = WireEncoder.encode(changeset)
        #expect(throws: WireError.self) { try WireDecoder.decode(Array(bytes.dropLast(3))) }   // truncated
        var flipped = bytes
        flipped[bytes.count / 2] ^= 0x10
        #expect(throws: WireError.self) { try WireDecoder.decode(flipped) }                    // corrupt
    }

    @Test func invalidOrReservedTableNamesLeaveTheDatabaseUnchanged() throws {
        let (store, changeset) = try populated()
        let before = try dump(store)
        for name in ["converge_records", "sqlite_master", "no spaces", "x\"; DROP TABLE notes; --", ""] {
            var hostile = changeset
            hostile.records.append(RecordDelta(table: name, key: .text("k"), state: changeset.records[0].state))
            #expect(throws: ApplyError.self) { try store.apply(hostile) }
            #expect(try dump(store) == before)
        }
    }

    @Test func wrongKeyTypeLeavesTheDatabaseUnchanged() throws {
        let (store, changeset) = try populated()
        let before = try dump(store)
        var hostile = changeset
        hostile.records.append(RecordDelta(table: "notes", key: .integer(42), state: changeset.records[0].state))
        #expect(throws: ApplyError(table: "notes", key: .integer(42), reason: .keyTypeMismatch(expected: "TEXT", actual: "INTEGER"))) {
            try store.apply(hostile)
        }
        #expect(try dump(store) == before)
    }

    @Test func farFutureStampsAreQuarantinedThenReleased() throws {
        let a = try StoreFixtures.makeStore(clock: clock), b = try StoreFixtures.makeStore(clock: clock)
        let skewed = TestClock()
        skewed.set(clock.now + 3_600_000)  // an hour ahead
        let future = try StoreFixtures.makeStore(clock: skewed)
        try future.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('f', 'from the future')") }
        try a.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('now', 'present')") }
        var changeset = try future.changes(since: 0).changeset
        changeset.records += try a.changes(since: 0).changeset.records
        let report = try b.apply(changeset)
        #expect(report.quarantinedRecords == 1 && report.changedRecords == 1)
        #expect(try b.quarantinedCount() == 1)
        #expect(b.clock.milliseconds <= clock.now)  // not dragged forward
        #expect(try StoreFixtures.rows(b, "notes").map { $0[0] } == [.text("now")])
        clock.advance(by: 3_600_000)
        #expect(try b.apply(Changeset()).releasedRecords == 1)
        #expect(try StoreFixtures.rows(b, "notes").map { $0[0] } == [.text("f"), .text("now")])
        #expect(try b.quarantinedCount() == 0)
    }

    @Test func explicitReleaseAdvancesTheClock() throws {
        let b = try StoreFixtures.makeStore(clock: clock)
        let skewed = TestClock()
        skewed.set(clock.now + 3_600_000)
        let future = try StoreFixtures.makeStore(clock: skewed)
        try future.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('f', 'x')") }
        try b.apply(try future.changes(since: 0).changeset)
        #expect(try b.releaseQuarantine(force: true) == 1)
        #expect(b.clock.milliseconds >= skewed.now)
    }
}

@Suite(.computeBound) struct NullKeyTests {
    /// Found by FuzzApply: a NULL key for a table not replicated here reached SQLite's NOT
    /// NULL constraint as an untyped error. It is refused up front now.
    @Test func nullKeysAreRefusedWithATypedError() throws {
        let clock = TestClock()
        let store = try StoreFixtures.makeStore(clock: clock)
        let state = RecordState(membership: ORSet(dots: [Stamp(hlc: HLC(milliseconds: clock.now), replica: .random())], context: CausalContext()), fields: [:])
        for table in ["parked", "notes"] {
            #expect(throws: ApplyError(table: table, key: .null, reason: .nullKey)) {
                try store.apply(Changeset(records: [RecordDelta(table: table, key: .null, state: state)]))
            }
        }
    }
}
