import ConvergeCore
import ConvergeSQLite
import ConvergeTestSupport
import GRDB
import Testing

/// Record-type policies (issue #22): a GRDB record declares its replication beside its
/// definition and `replicate(Item.self)` uses it; a misnamed column is caught.
@Suite(.computeBound) struct ReplicatedRecordTests {
    struct Item: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
        var id: String
        var name: String
        var quantity: Int

        enum Columns {
            static let quantity = Column(CodingKeys.quantity)
        }
        static let replication = Replication(columns: [.critical(Columns.quantity)], deletePolicy: .deleteWins)
    }

    struct Misnamed: TableRecord, ReplicatedRecord {
        static let databaseTableName = "item"
        static let replication = Replication(columns: [.critical(Column("qty"))])
    }

    func makeStore() throws -> ReplicatedDatabase {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE item(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', quantity INTEGER NOT NULL DEFAULT 0)")
        }
        return try ReplicatedDatabase(queue)
    }

    @Test func aRecordTypeDeclaresItsReplication() throws {
        let store = try makeStore()
        try store.replicate(Item.self)
        let schema = try #require(store.replicatedTables["item"])
        #expect(schema.policy(of: "quantity") == .critical)
        #expect(schema.policy(of: "name") == .lww)
        #expect(schema.deletePolicy == .deleteWins)
        // Writes through the record type are captured like any other.
        try store.writer.write { db in try Item(id: "pen", name: "Pen", quantity: 2).insert(db) }
        #expect(try store.changes(since: 0).changeset.records.count == 1)
    }

    @Test func aMisnamedColumnIsCaught() throws {
        let store = try makeStore()
        #expect(throws: SchemaError(table: "item", reason: .unknownColumn("qty"))) { try store.replicate(Misnamed.self) }
    }
}
