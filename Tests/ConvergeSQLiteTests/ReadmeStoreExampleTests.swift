import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import GRDB
import Testing

/// The README's store example, compiled and run so that it stays true.
@Suite(.computeBound) struct ReadmeStoreExampleTests {
    @Test func replicateATableAndSyncTwoDatabases() throws {
        func openDevice() throws -> ReplicatedDatabase {
            let dbQueue = try DatabaseQueue()  // or DatabaseQueue(path:) / DatabasePool(path:)
            try dbQueue.write { db in
                try db.execute(sql: """
                    CREATE TABLE item(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', qty INTEGER NOT NULL DEFAULT 0)
                    """)
            }
            let converge = try ReplicatedDatabase(dbQueue)
            try converge.replicate(table: "item", policies: ["qty": .critical], deletePolicy: .updateWins)
            return converge
        }
        let phone = try openDevice(), laptop = try openDevice()

        // The app writes as usual: SQL, GRDB records, anything through the same queue.
        try phone.writer.write { db in try db.execute(sql: "INSERT INTO item(id, name, qty) VALUES ('pen', 'Pen', 1)") }

        // Sync: send what changed after the peer's cursor, apply what comes back.
        let batch = try phone.changes(since: try phone.cursor(for: "laptop").sent)
        let bytes = WireEncoder.encode(batch.changeset)          // over any transport
        try laptop.apply(try WireDecoder.decode(bytes))
        try phone.setCursor(.init(sent: batch.next), for: "laptop")

        let name = try laptop.writer.read { db in try String.fetchOne(db, sql: "SELECT name FROM item WHERE id = 'pen'") }
        #expect(name == "Pen")
        #expect(try laptop.conflicts().isEmpty)
    }
}
