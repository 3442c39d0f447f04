import ConvergeCore

/// Why Converge refused to replicate a table.
public struct SchemaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What about the table Converge could not accept.
    public enum Reason: Sendable, Hashable {
        /// The table does not exist, or is not replicated.
        case noSuchTable
        /// The table has no declared primary key (only SQLite's implicit rowid).
        case noPrimaryKey
        /// Composite keys are not supported yet: one column must identify a record.
        case compositePrimaryKey([String])
        /// An `INTEGER PRIMARY KEY` (a rowid alias) or `AUTOINCREMENT` key: two devices
        /// would hand out the same numbers. Use random keys (UUID text or blob).
        case autoIncrementKey(String)
        /// A UNIQUE constraint beyond the key, while the app has not opted in to constraint
        /// conflicts (`allowUniqueIndexes`): concurrent inserts on two devices could each be
        /// valid alone and clash together.
        case uniqueIndex(String)
        /// A partial UNIQUE index (`... WHERE`): not supported as a constraint conflict.
        case partialUniqueIndex(String)
        /// A UNIQUE index on an expression: not supported as a constraint conflict.
        case expressionUniqueIndex(String)
        /// A UNIQUE index whose collation is not BINARY (index, collation): not supported.
        case uniqueIndexCollation(String, String)
        /// A NOT NULL column without a default: a record created elsewhere without it
        /// could not be inserted here.
        case notNullWithoutDefault(String)
        /// The table name is reserved for Converge's or SQLite's own tables.
        case reservedName
        /// A table or column name is not a plain SQL identifier.
        case invalidIdentifier
        /// A policy, index or value names a column the table does not have.
        case unknownColumn(String)
        /// The table has more non-key columns (the count given) than the 62 Converge can track.
        case tooManyColumns(Int)
        /// A table's delete policy cannot change once it is replicated.
        case deletePolicyChanged(from: DeletePolicy, to: DeletePolicy)
        /// An encrypted column that is also an `.authority` column: the server's writes
        /// and choices need to read the values it resolves, and it never holds the key.
        case encryptedAuthority(String)
        /// An encrypted column in a UNIQUE index: the server would compare ciphertexts,
        /// which never collide, while devices compare plaintexts, so the two would show
        /// different holders of the same value.
        case encryptedUniqueIndex(column: String, index: String)
        /// The primary key cannot be encrypted: it addresses the record on the server.
        case encryptedPrimaryKey(String)
    }

    /// The table that was refused.
    public let table: String
    /// Why it was refused.
    public let reason: Reason

    /// Makes the error for `table`.
    public init(table: String, reason: Reason) {
        self.table = table
        self.reason = reason
    }

    public var description: String { "cannot replicate table \(table): \(reason)" }
}

/// Why a changeset was refused. The database is left exactly as it was.
public struct ApplyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What in the changeset Converge could not accept.
    public enum Reason: Sendable, Hashable {
        /// A table name that is not a plain identifier, or that names Converge's or
        /// SQLite's own tables.
        case invalidTableName
        /// A NULL primary key: no record can have it.
        case nullKey
        /// The key's type disagrees with the replicated table's primary key.
        case keyTypeMismatch(expected: String, actual: String)
        /// The app table refused the merged row (a constraint failed).
        case constraintViolation(String)
        /// The changeset carries an event of a replica other than the sender's that this
        /// store does not hold exactly (see ``ReplicatedDatabase/ApplyOptions/author``): the sender would be
        /// writing in another replica's name.
        case notAuthor(Stamp)
        /// The table name differs only in case from a replicated table's (SQLite takes
        /// them for the same table, Converge would park it as another).
        case tableNameCase(replicated: String)
        /// The apply would hold more records than the configured quota (``ReplicatedDatabase/Configuration``):
        /// `what` names it (`"quarantine"`, `"parked"`), `limit` its size in records.
        case quotaExceeded(what: String, limit: Int)
    }

    /// The table of the refused record, as the changeset names it.
    public let table: String
    /// The refused record's key, or nil when the refusal is not about one record (a quota).
    public let key: Value?
    /// Why the changeset was refused.
    public let reason: Reason

    /// Makes the error for the record at `key` of `table` (nil for the whole changeset).
    public init(table: String, key: Value?, reason: Reason) {
        self.table = table
        self.key = key
        self.reason = reason
    }

    public var description: String {
        "changeset refused at table \(table)\(key.map { ", key \($0)" } ?? ""): \(reason)"
    }
}

/// Converge's own metadata is unreadable (a corrupt or foreign database).
public struct MetadataCorruption: Error, Sendable, Hashable, CustomStringConvertible {
    /// The table (or Converge metadata table) whose metadata is unreadable.
    public let table: String
    /// The affected record's key, or nil when the corruption is not about one record.
    public let key: Value?
    /// What is wrong, for logs and bug reports.
    public let detail: String

    public var description: String { "corrupt Converge metadata for \(table)\(key.map { " key \($0)" } ?? ""): \(detail)" }
}
