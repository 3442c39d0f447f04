import ConvergeSQLite
import GRDB

/// A product on the shelf: an ordinary GRDB record, which declares how its table
/// replicates next to its definition.
///
/// - `quantity` is *critical*: two devices that change a stock count concurrently (one
///   sells, one receives a delivery) keep both values until someone counts the shelf,
///   instead of silently keeping one of them.
/// - `status` belongs to the server (*authority*): a value it writes wins over concurrent
///   device writes.
/// - every other column is last-writer-wins, field by field: a rename on one device and a
///   stock change on another both survive.
/// - `sku` is UNIQUE: two devices that create a product with the same SKU while offline
///   get a constraint conflict (the first claim is shown, the other held) instead of a
///   sync that fails.
/// - a deleted product stays deleted (`.deleteWins`): an edit made without seeing the
///   delete does not bring it back.
///
/// The server's schema (`Examples/schema.json`) declares the same table, policies and
/// unique index.
struct Item: Codable, Hashable, FetchableRecord, PersistableRecord, ReplicatedRecord {
    var id: String
    var name: String
    var sku: String?
    var quantity: Int
    var status: String?

    enum Columns {
        static let name = Column(CodingKeys.name)
        static let sku = Column(CodingKeys.sku)
        static let quantity = Column(CodingKeys.quantity)
        static let status = Column(CodingKeys.status)
    }

    static let replication = Replication(
        columns: [.critical(Columns.quantity), .authority(Columns.status)],
        deletePolicy: .deleteWins,
        allowUniqueIndexes: true)
}

extension Item {
    /// The app's migrations, run before Converge replicates the table (on every launch).
    /// A replicated table needs a primary key that is not an auto-increment integer (the
    /// app makes UUIDs) and a default for every NOT NULL column.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: items") { db in
            try db.create(table: "item") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().defaults(to: "")
                t.column("sku", .text)
                t.column("quantity", .integer).notNull().defaults(to: 0)
                t.column("status", .text)
            }
            try db.create(index: "item_sku", on: "item", columns: ["sku"], options: .unique)
        }
        return migrator
    }
}
