import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// Unique constraints as conflicts (DESIGN §4): a clash between replicas never fails an
/// apply; every replica shows the same holder and holds the same records.
@Suite(.computeBound) struct ConstraintConflictTests {
    let clock = TestClock()

    /// `people(id, email UNIQUE, name)` and `slots(id, day, room, label)` with UNIQUE(day, room).
    func makeStore() throws -> ReplicatedDatabase {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email UNIQUE, name);
                CREATE TABLE slots(id TEXT PRIMARY KEY NOT NULL, day, room, label);
                CREATE UNIQUE INDEX slots_day_room ON slots(day, room);
                """)
        }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "people", allowUniqueIndexes: true)
        try store.replicate(table: "slots", allowUniqueIndexes: true)
        return store
    }

    func sql(_ store: ReplicatedDatabase, _ statement: String) throws {
        try store.writer.write { db in try db.execute(sql: statement) }
    }

    func people(_ store: ReplicatedDatabase) throws -> [[Value]] { try StoreFixtures.rows(store, "people") }

    /// Everything each store has that the other lacks, both ways, until neither changes.
    func exchange(_ stores: [ReplicatedDatabase]) throws {
        let everything = try stores.map { try $0.changes(since: 0).changeset }
        for store in stores {
            for changeset in everything { try store.apply(changeset) }
        }
    }

    func constraintConflicts(_ store: ReplicatedDatabase) throws -> [ConstraintConflict] {
        try store.conflicts().compactMap(\.constraint)
    }

    @Test func twoDevicesCreateTheSameEmailOffline() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email, name) VALUES ('pa', 'ann@example.com', 'Ann on A')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO people(id, email, name) VALUES ('pb', 'ann@example.com', 'Ann on B')")
        try sql(b, "INSERT INTO people(id, email, name) VALUES ('other', 'bob@example.com', 'Bob')")
        try exchange([a, b])

        // The first claim holds; the other change of the same sync flowed on.
        let shown: [[Value]] = [
            [.text("other"), .text("bob@example.com"), .text("Bob")],
            [.text("pa"), .text("ann@example.com"), .text("Ann on A")],
        ]
        #expect(try people(a) == shown)
        #expect(try people(b) == shown)
        let conflicts = try constraintConflicts(a)
        #expect(conflicts == (try constraintConflicts(b)))
        #expect(conflicts.count == 1)
        let clash = try #require(conflicts.first)
        #expect(clash.table == "people" && clash.columns == ["email"] && clash.values == [.text("ann@example.com")])
        #expect(clash.holder.key == .text("pa"))
        #expect(clash.held.map(\.key) == [.text("pb")])
        #expect(clash.held.first?.values["name"] == .text("Ann on B"))
        #expect(clash.holder.stamp < clash.held[0].stamp)
        #expect(try a.conflicts() == b.conflicts())

        // Editing the held record's e-mail through Converge shows it everywhere.
        try b.update(table: "people", key: .text("pb"), values: ["email": .text("ann@b.example.com")])
        try exchange([a, b])
        for store in [a, b] {
            #expect(try people(store).count == 3)
            #expect(try constraintConflicts(store).isEmpty)
        }
    }

    @Test func deletingTheHolderShowsTheHeldRecord() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email, name) VALUES ('pa', 'x@example.com', 'A')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO people(id, email, name) VALUES ('pb', 'x@example.com', 'B')")
        try exchange([a, b])
        #expect(try people(b) == [[.text("pa"), .text("x@example.com"), .text("A")]])

        // Deleted with plain SQL on b: the held record takes its place there and everywhere.
        try sql(b, "DELETE FROM people WHERE id = 'pa'")
        try exchange([a, b])
        for store in [a, b] {
            #expect(try people(store) == [[.text("pb"), .text("x@example.com"), .text("B")]])
            #expect(try constraintConflicts(store).isEmpty)
        }
    }

    @Test func aHeldRecordCanBeDeletedThroughConverge() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email) VALUES ('pa', 'x@example.com')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO people(id, email) VALUES ('pb', 'x@example.com')")
        try exchange([a, b])
        #expect(throws: RecordNotFound.self) { try a.delete(table: "people", key: .text("nobody")) }
        try a.delete(table: "people", key: .text("pb"))
        try exchange([a, b])
        for store in [a, b] {
            #expect(try people(store) == [[.text("pa"), .text("x@example.com"), .null]])
            #expect(try store.conflicts().isEmpty)
        }
    }

    @Test func threeWayClashMaterializesInStampOrder() throws {
        let stores = try (0..<3).map { _ in try makeStore() }
        for (index, store) in stores.enumerated() {
            try sql(store, "INSERT INTO people(id, email, name) VALUES ('p\(index)', 'same@example.com', 'n\(index)')")
            clock.advance(by: 5)
        }
        // Delivered in different orders, twice over.
        let everything = try stores.map { try $0.changes(since: 0).changeset }
        for (index, store) in stores.enumerated() {
            for changeset in (everything + everything).shuffledDeterministically(seed: UInt64(index)) { try store.apply(changeset) }
        }
        let first = try people(stores[0])
        #expect(first.map { $0[0] } == [.text("p0")])
        for store in stores {
            #expect(try people(store) == first)
            #expect(try constraintConflicts(store).first?.held.map(\.key) == [.text("p1"), .text("p2")])
        }
        // The holder changes its value: the next claimant in stamp order shows.
        try sql(stores[0], "UPDATE people SET email = 'moved@example.com' WHERE id = 'p0'")
        try exchange(stores)
        for store in stores {
            #expect(try people(store).map { $0[0] } == [.text("p0"), .text("p1")])
            #expect(try constraintConflicts(store).first?.held.map(\.key) == [.text("p2")])
        }
    }

    @Test func multiColumnIndexAndNullsNeverClash() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO slots(id, day, room, label) VALUES ('s1', 'mon', 1, 'A'), ('s3', 'mon', NULL, 'A null')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO slots(id, day, room, label) VALUES ('s2', 'mon', 1, 'B'), ('s4', 'mon', 2, 'B two'), ('s5', 'mon', NULL, 'B null')")
        try exchange([a, b])
        for store in [a, b] {
            #expect(try StoreFixtures.rows(store, "slots").map { $0[0] } == [.text("s1"), .text("s3"), .text("s4"), .text("s5")])
            let clash = try #require(try constraintConflicts(store).first)
            #expect(clash.index == "slots_day_room" && clash.columns == ["day", "room"] && clash.values == [.text("mon"), .integer(1)])
            #expect(clash.held.map(\.key) == [.text("s2")])
        }
    }

    @Test func aClashThroughAnUpdate() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email) VALUES ('pa', 'a@example.com')")
        try sql(a, "INSERT INTO people(id, email) VALUES ('pb', 'b@example.com')")
        try exchange([a, b])
        // Offline: a renames pa to c, b renames pb to c later.
        try sql(a, "UPDATE people SET email = 'c@example.com' WHERE id = 'pa'")
        clock.advance(by: 10)
        try sql(b, "UPDATE people SET email = 'c@example.com' WHERE id = 'pb'")
        try exchange([a, b])
        for store in [a, b] {
            #expect(try people(store) == [[.text("pa"), .text("c@example.com"), .null]])
            #expect(try constraintConflicts(store).first?.held.map(\.key) == [.text("pb")])
        }
    }

    @Test func heldRecordEditedWhileTheHolderIsDeletedElsewhere() throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email, name) VALUES ('pa', 'x@example.com', 'A')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO people(id, email, name) VALUES ('pb', 'x@example.com', 'B')")
        try exchange([a, b])
        // Concurrently: a deletes the holder, b edits the held record's name.
        try sql(a, "DELETE FROM people WHERE id = 'pa'")
        try b.update(table: "people", key: .text("pb"), values: ["name": .text("B edited")])
        try exchange([a, b])
        for store in [a, b] {
            #expect(try people(store) == [[.text("pb"), .text("x@example.com"), .text("B edited")]])
            #expect(try store.conflicts().isEmpty)
        }
    }

    @Test func aLocalWriteCollidingWithAShownRowFailsAndCapturesNothing() throws {
        let a = try makeStore()
        try sql(a, "INSERT INTO people(id, email) VALUES ('pa', 'x@example.com')")
        let before = try a.changes(since: 0).next
        #expect(throws: DatabaseError.self) { try sql(a, "INSERT INTO people(id, email) VALUES ('pz', 'x@example.com')") }
        #expect(try a.changes(since: before).changeset.records.isEmpty)
        #expect(try people(a).count == 1)
    }

    @Test func theValidatorDoesNotSeeAHeldRecord() throws {
        let a = try makeStore(), server = try makeStore()
        try sql(server, "INSERT INTO people(id, email, name) VALUES ('ps', 'x@example.com', 'server')")
        clock.advance(by: 10)
        try sql(a, "INSERT INTO people(id, email, name) VALUES ('pa', 'x@example.com', 'device')")
        var seen = [ProposedChange]()
        try server.apply(try a.changes(since: 0).changeset, origin: "a") { change in
            seen.append(change)
            return nil
        }
        #expect(seen.isEmpty, "the held record is not visible")
        // Once the holder goes, the validator sees the held record arrive.
        try sql(server, "DELETE FROM people WHERE id = 'ps'")
        try server.apply(try a.changes(since: 0).changeset)  // folds the delete; nothing new
        #expect(try people(server) == [[.text("pa"), .text("x@example.com"), .text("device")]])
    }

    @Test func replicatingATableWithParkedClaimsDecidesTheHolders() throws {
        let a = try makeStore()
        try sql(a, "INSERT INTO people(id, email, name) VALUES ('pa', 'x@example.com', 'A')")
        // A store that does not replicate people yet parks a's record, then replicates
        // the table with a row of its own claiming the same e-mail later.
        let queue = try DatabaseQueue()
        try queue.write { db in try db.execute(sql: "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email UNIQUE, name)") }
        let b = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try b.apply(try a.changes(since: 0).changeset)
        clock.advance(by: 10)
        try queue.write { db in try db.execute(sql: "INSERT INTO people(id, email, name) VALUES ('pb', 'x@example.com', 'B')") }
        try b.replicate(table: "people", allowUniqueIndexes: true)
        #expect(try people(b) == [[.text("pa"), .text("x@example.com"), .text("A")]])
        #expect(try constraintConflicts(b).first?.held.map(\.key) == [.text("pb")])
    }

    @Test func partialAndExpressionIndexesAreRefused() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE a(id TEXT PRIMARY KEY NOT NULL, email);
                CREATE UNIQUE INDEX a_email ON a(email) WHERE email IS NOT NULL;
                CREATE TABLE b(id TEXT PRIMARY KEY NOT NULL, email);
                CREATE UNIQUE INDEX b_email ON b(lower(email));
                CREATE TABLE c(id TEXT PRIMARY KEY NOT NULL, email);
                CREATE UNIQUE INDEX c_email ON c(email COLLATE NOCASE);
                """)
        }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        #expect(throws: SchemaError(table: "a", reason: .partialUniqueIndex("a_email"))) { try store.replicate(table: "a", allowUniqueIndexes: true) }
        #expect(throws: SchemaError(table: "b", reason: .expressionUniqueIndex("b_email"))) { try store.replicate(table: "b", allowUniqueIndexes: true) }
        #expect(throws: SchemaError(table: "c", reason: .uniqueIndexCollation("c_email", "NOCASE"))) { try store.replicate(table: "c", allowUniqueIndexes: true) }
        #expect(throws: SchemaError(table: "a", reason: .uniqueIndex("a_email"))) { try store.replicate(table: "a") }
    }

    @Test func constraintConflictsAreObservable() async throws {
        let a = try makeStore(), b = try makeStore()
        try sql(a, "INSERT INTO people(id, email) VALUES ('pa', 'x@example.com')")
        clock.advance(by: 10)
        try sql(b, "INSERT INTO people(id, email) VALUES ('pb', 'x@example.com')")
        try exchange([a, b])
        let observed = try await a.observeConflicts().values(in: a.writer).first { _ in true }
        #expect(observed?.compactMap(\.constraint).count == 1)
    }
}

extension Array {
    /// A fixed permutation per seed (a tiny LCG), so a failure replays.
    func shuffledDeterministically(seed: UInt64) -> [Element] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        var result = self
        for index in result.indices.reversed() where index > 0 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            result.swapAt(index, Int((state >> 33) % UInt64(index + 1)))
        }
        return result
    }
}
