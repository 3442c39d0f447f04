import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

/// Server-side rules at the store level: authority columns and validation with
/// compensating writes.
@Suite(.computeBound) struct StoreRulesTests {
    let clock = TestClock()

    /// `prices(id, label, price)` with `price` owned by the authority.
    func makeStore() throws -> ReplicatedDatabase {
        let queue = try DatabaseQueue()
        try queue.write { db in try db.execute(sql: "CREATE TABLE prices(id TEXT PRIMARY KEY NOT NULL, label, price)") }
        let store = try ReplicatedDatabase(queue, configuration: .init(physicalTime: { clock.now }))
        try store.replicate(table: "prices", policies: ["price": .authority])
        return store
    }

    func write(_ store: ReplicatedDatabase, _ sql: String) throws {
        try store.writer.write { db in try db.execute(sql: sql) }
    }

    func rows(_ store: ReplicatedDatabase) throws -> [[Value]] {
        try StoreFixtures.rows(store, "prices")
    }

    @Test func authorityWinsConcurrentWritesOnEveryReplica() throws {
        let server = try makeStore(), device = try makeStore()
        try server.setAuthority(server.replicaID)
        try write(server, "INSERT INTO prices VALUES ('p', 'pen', 100)")
        try device.apply(try server.changes(since: 0).changeset)
        #expect(device.authority == nil)
        // Concurrent edits; the device's is later in time.
        try write(server, "UPDATE prices SET price = 120 WHERE id = 'p'")
        clock.advance(by: 1_000)
        try write(device, "UPDATE prices SET price = 90, label = 'blue pen' WHERE id = 'p'")
        try device.apply(try server.changes(since: 0).changeset)
        try server.apply(try device.changes(since: 0).changeset)
        // Unknown authority: the largest stamp shows (the device's); the server shows its own.
        #expect(try rows(device) == [[.text("p"), .text("blue pen"), .integer(90)]])
        #expect(try rows(server) == [[.text("p"), .text("blue pen"), .integer(120)]])
        // Once the device knows the server, both show the server's price; the LWW label merges as usual.
        try device.setAuthority(server.replicaID)
        #expect(try rows(device) == rows(server))
        #expect(try device.conflicts().isEmpty, "an authority field is resolved, not a conflict")
        // Not captured as a local write: nothing new to push.
        let before = try device.changes(since: 0).next
        try device.setAuthority(server.replicaID)
        #expect(try device.changes(since: 0).next == before)
    }

    @Test func aWriteThatSawTheServersValueWins() throws {
        let server = try makeStore(), device = try makeStore()
        try server.setAuthority(server.replicaID)
        try device.setAuthority(server.replicaID)
        try write(server, "INSERT INTO prices VALUES ('p', 'pen', 100)")
        try device.apply(try server.changes(since: 0).changeset)
        clock.advance(by: 10)
        try write(device, "UPDATE prices SET price = 95 WHERE id = 'p'")
        try server.apply(try device.changes(since: 0).changeset)
        #expect(try rows(server) == [[.text("p"), .text("pen"), .integer(95)]])
        #expect(try rows(device) == rows(server))
    }

    @Test func theAuthoritySurvivesReopening() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("converge-authority-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let authority = ReplicaID.random()
        do {
            let queue = try DatabaseQueue(path: path)
            try queue.write { db in try db.execute(sql: "CREATE TABLE prices(id TEXT PRIMARY KEY NOT NULL, label, price)") }
            let store = try ReplicatedDatabase(queue)
            try store.setAuthority(authority)
        }
        let reopened = try ReplicatedDatabase(try DatabaseQueue(path: path))
        #expect(reopened.authority == authority)
    }

    /// Refuses negative prices and deleting the record `keep`.
    func rule(_ change: ProposedChange) -> String? {
        if case .integer(let price)? = change.after?["price"], price < 0 { return "a price cannot be negative" }
        if change.after == nil, change.key == .text("keep") { return "this record cannot be deleted" }
        if change.before == nil, change.key == .text("forbidden") { return "reserved key" }
        return nil
    }

    @Test func aRejectedChangeIsUndoneEverywhere() throws {
        let server = try makeStore(), device = try makeStore(), other = try makeStore()
        try write(server, "INSERT INTO prices VALUES ('p', 'pen', 100)")
        try write(server, "INSERT INTO prices VALUES ('keep', 'ink', 5)")
        let initial = try server.changes(since: 0).changeset
        try device.apply(initial)
        try other.apply(initial)
        let mark = try device.changes(since: 0).next
        clock.advance(by: 10)
        try write(device, "UPDATE prices SET price = -3, label = 'red pen' WHERE id = 'p'")
        try write(device, "DELETE FROM prices WHERE id = 'keep'")
        try write(device, "INSERT INTO prices VALUES ('forbidden', 'x', 1)")
        try write(device, "INSERT INTO prices VALUES ('ok', 'cap', 2)")
        let push = try device.changes(since: mark).changeset
        let report = try server.apply(push, origin: "phone", validate: rule)
        #expect(Set(report.rejections.map(\.reason)) == ["a price cannot be negative", "this record cannot be deleted", "reserved key"])
        #expect(try server.rejections(origin: "phone").count == 3)
        #expect(try server.rejections(origin: "tablet").isEmpty)
        let expected: [[Value]] = [
            [.text("keep"), .text("ink"), .integer(5)], [.text("ok"), .text("cap"), .integer(2)],
            [.text("p"), .text("pen"), .integer(100)],
        ]
        #expect(try rows(server) == expected)
        // The compensation travels like any write: the device and a third replica converge to it.
        let everything = try server.changes(since: 0).changeset
        try device.apply(everything)
        try other.apply(everything)
        try other.apply(push)  // the refused changes arriving late change nothing visible
        #expect(try rows(device) == expected)
        #expect(try rows(other) == expected)
        // Applying the same push again: nothing new, no new rejection.
        let again = try server.apply(push, origin: "phone", validate: rule)
        #expect(again.rejections.isEmpty && again.changedRecords == 0)
        #expect(try server.rejections().count == 3)
    }

    @Test func aThrowingValidatorLeavesTheDatabaseUnchanged() throws {
        struct Refused: Error {}
        let server = try makeStore(), device = try makeStore()
        try write(device, "INSERT INTO prices VALUES ('p', 'pen', 1)")
        #expect(throws: Refused.self) {
            try server.apply(try device.changes(since: 0).changeset, origin: nil) { _ in throw Refused() }
        }
        #expect(try rows(server).isEmpty)
        #expect(try server.changes(since: 0).changeset.isEmpty)
    }
}
