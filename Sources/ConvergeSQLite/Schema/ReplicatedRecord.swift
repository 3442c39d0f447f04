import ConvergeCore
import GRDB

/// How a table replicates: its columns' merge policies, its delete policy, and whether it
/// may keep UNIQUE indexes. Declared beside a record type with ``ReplicatedRecord``, or
/// given to ``ReplicatedDatabase/replicate(table:policies:deletePolicy:allowUniqueIndexes:encrypted:)``
/// as strings for raw tables.
///
/// ```swift
/// struct Item: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
///     var id: String
///     var name: String
///     var quantity: Int
///
///     enum Columns {
///         static let quantity = Column(CodingKeys.quantity)
///     }
///     static let replication = Replication(columns: [.critical(Columns.quantity)], deletePolicy: .deleteWins)
/// }
///
/// try converge.replicate(Item.self)
/// ```
public struct Replication: Sendable, Hashable {
    /// One column's policy, named by a GRDB column so that a renamed property is caught by
    /// the compiler, and a misnamed column by ``ReplicatedDatabase/replicate(_:)``.
    public struct ColumnRule: Sendable, Hashable {
        /// The column's name.
        public var column: String
        /// How the column's concurrent writes merge.
        public var policy: ColumnPolicy

        /// A rule by column name; prefer `critical(_:)` and its siblings, which take a GRDB `Column`.
        public init(_ column: String, _ policy: ColumnPolicy) {
            self.column = column
            self.policy = policy
        }

        /// Concurrent values are all kept until someone chooses (see `ColumnPolicy.critical`).
        public static func critical(_ column: Column) -> ColumnRule { ColumnRule(column.name, .critical) }
        /// Concurrent values resolve to the sync server's (see `ColumnPolicy.authority`).
        public static func authority(_ column: Column) -> ColumnRule { ColumnRule(column.name, .authority) }
        /// The default: the last writer wins. Spelled out only for clarity.
        public static func lastWriterWins(_ column: Column) -> ColumnRule { ColumnRule(column.name, .lww) }
    }

    /// Policies of the columns that are not last-writer-wins, by column name.
    public var policies: [String: ColumnPolicy]
    /// What wins when an edit races a delete.
    public var deletePolicy: DeletePolicy
    /// Whether the table's UNIQUE indexes are kept as constraint conflicts; when false, such an index is refused.
    public var allowUniqueIndexes: Bool
    /// Columns whose values leave the device only encrypted, whatever their policy (see
    /// the `encrypted` parameter of ``ReplicatedDatabase/replicate(table:policies:deletePolicy:allowUniqueIndexes:encrypted:)``).
    public var encryptedColumns: Set<String>

    /// - Parameters:
    ///   - columns: Policies of the columns that are not last-writer-wins.
    ///   - deletePolicy: What wins when an edit races a delete.
    ///   - allowUniqueIndexes: Keep the table's UNIQUE indexes as constraint conflicts.
    ///   - encrypted: Columns sealed with the app's keys before they leave the device, so
    ///     that the server holds only ciphertext of them (`[Columns.notes]`).
    public init(columns: [ColumnRule] = [], deletePolicy: DeletePolicy = .updateWins, allowUniqueIndexes: Bool = false, encrypted: [Column] = []) {
        var policies = [String: ColumnPolicy]()
        for rule in columns { policies[rule.column] = rule.policy }
        self.policies = policies
        self.deletePolicy = deletePolicy
        self.allowUniqueIndexes = allowUniqueIndexes
        self.encryptedColumns = Set(encrypted.map(\.name))
    }
}

/// A GRDB record type whose table Converge replicates, declaring how next to its definition.
public protocol ReplicatedRecord: TableRecord {
    /// How the record's table replicates.
    static var replication: Replication { get }
}

extension ReplicatedDatabase {
    /// Starts replicating `Record`'s table (GRDB's `TableRecord.databaseTableName`) as its
    /// ``ReplicatedRecord/replication`` declares; call it on every launch, after migrations.
    ///
    /// - Throws: ``SchemaError`` as ``replicate(table:policies:deletePolicy:allowUniqueIndexes:encrypted:)``
    ///   does, including ``SchemaError/Reason/unknownColumn(_:)`` for a policy naming a
    ///   column the table does not have.
    public func replicate<Record: ReplicatedRecord>(_ record: Record.Type) throws {
        let replication = Record.replication
        try replicate(
            table: Record.databaseTableName, policies: replication.policies, deletePolicy: replication.deletePolicy,
            allowUniqueIndexes: replication.allowUniqueIndexes, encrypted: replication.encryptedColumns)
    }
}
