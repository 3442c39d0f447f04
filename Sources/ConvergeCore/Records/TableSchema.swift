/// How a column's concurrent writes merge.
public enum ColumnPolicy: Sendable, Hashable, Codable {
    /// Last writer wins, by stamp (the default).
    case lww
    /// Concurrent values are all kept until someone resolves them (a multi-value register).
    case critical
    /// Concurrent values resolve to the one written by the authority replica (the sync
    /// server): "server wins" that still merges as a join, since it is a multi-value
    /// register underneath and only the *shown* value depends on the resolver. A write
    /// that had seen the server's value replaces it as usual. Which replica is the
    /// authority is a property of the database, not of the column (a device learns the
    /// server's identity on its first sync); until it is known, the largest stamp shows.
    case authority
}

/// What happens when an edit races a delete of the same record.
public enum DeletePolicy: String, Sendable, Hashable, Codable, CaseIterable {
    /// An edit made without seeing the delete keeps the record: nothing typed is lost.
    case updateWins
    /// Only a new insert revives a deleted record; edits of a deleted incarnation never
    /// show again.
    case deleteWins
}

/// The replicated shape of one table: its key, its columns and their merge policies.
public struct TableSchema: Sendable, Hashable, Codable {
    /// The app table's name, as it appears in SQL and in changesets.
    public var name: String
    /// The single column that identifies a record on every replica.
    public var primaryKey: String
    /// The non-key columns, in table order.
    public var columns: [String]
    /// Policies of columns that are not `.lww`.
    public var policies: [String: ColumnPolicy]
    /// What wins when an edit races a delete; fixed once the table is replicated.
    public var deletePolicy: DeletePolicy
    /// UNIQUE indexes beyond the key, the app's opt-in to constraint conflicts (DESIGN §4).
    /// The merge ignores them; only which records are *shown* depends on them
    /// (``UniquePlanner``).
    public var uniqueIndexes: [UniqueIndex]
    /// Columns whose values travel encrypted (DESIGN §11): the sync engine seals them as
    /// they leave the device and opens them as they arrive, so the server and the wire
    /// only ever hold ciphertext. The merge never reads a value to order it, so it is
    /// the same for these columns; only what the server *shows* in them is opaque.
    public var encryptedColumns: Set<String>

    /// Describes a table; columns absent from `policies` merge as `.lww`.
    public init(
        name: String,
        primaryKey: String,
        columns: [String],
        policies: [String: ColumnPolicy] = [:],
        deletePolicy: DeletePolicy = .updateWins,
        uniqueIndexes: [UniqueIndex] = [],
        encryptedColumns: Set<String> = []
    ) {
        self.name = name
        self.primaryKey = primaryKey
        self.columns = columns
        self.policies = policies
        self.deletePolicy = deletePolicy
        self.uniqueIndexes = uniqueIndexes
        self.encryptedColumns = encryptedColumns
    }

    private enum CodingKeys: String, CodingKey {
        case name, primaryKey, columns, policies, deletePolicy, uniqueIndexes, encryptedColumns
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        primaryKey = try container.decode(String.self, forKey: .primaryKey)
        columns = try container.decode([String].self, forKey: .columns)
        policies = try container.decode([String: ColumnPolicy].self, forKey: .policies)
        deletePolicy = try container.decode(DeletePolicy.self, forKey: .deletePolicy)
        // Absent from schemas saved before constraint conflicts existed.
        uniqueIndexes = try container.decodeIfPresent([UniqueIndex].self, forKey: .uniqueIndexes) ?? []
        // Absent from schemas saved before field-level encryption existed.
        encryptedColumns = try container.decodeIfPresent(Set<String>.self, forKey: .encryptedColumns) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(primaryKey, forKey: .primaryKey)
        try container.encode(columns, forKey: .columns)
        try container.encode(policies, forKey: .policies)
        try container.encode(deletePolicy, forKey: .deletePolicy)
        if !uniqueIndexes.isEmpty { try container.encode(uniqueIndexes, forKey: .uniqueIndexes) }
        // Sorted, so that the saved description of a table is the same on every launch.
        if !encryptedColumns.isEmpty { try container.encode(encryptedColumns.sorted(), forKey: .encryptedColumns) }
    }

    /// The merge policy of `column`: its entry in `policies`, else `.lww`.
    public func policy(of column: String) -> ColumnPolicy {
        policies[column] ?? .lww
    }

    /// Whether `column`'s values travel encrypted (see ``encryptedColumns``).
    public func isEncrypted(_ column: String) -> Bool {
        encryptedColumns.contains(column)
    }
}
