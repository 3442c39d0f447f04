import ConvergeCore
import Foundation
import GRDB

/// A replicated table as Converge stores it: the merge schema and the key's declared type.
///
/// Public so that other shells around the same planner (the PostgreSQL server storage)
/// check incoming records exactly as this store does (``checkAddress(_:tables:)``).
public struct ReplicatedTable: Codable, Sendable, Hashable {
    /// The table's merge schema: key, columns, policies.
    public internal(set) var schema: TableSchema
    /// The primary key's declared SQL type, upper-cased ("TEXT", "BLOB", "INTEGER", ...).
    public internal(set) var keyType: String

    /// Maximum non-key columns: the update trigger reports changed columns in a 62-bit mask.
    static let columnsMax = 62

    /// Whether `key` has the storage class the key column expects.
    public func accepts(_ key: Value) -> Bool { KeyClasses(keyType).accepts(key) }

    /// The storage classes a key column of a declared type takes (SQLite's affinity rules).
    struct KeyClasses: OptionSet {
        let rawValue: UInt8
        static let text = KeyClasses(rawValue: 1), blob = KeyClasses(rawValue: 2), integer = KeyClasses(rawValue: 4), real = KeyClasses(rawValue: 8)

        init(rawValue: UInt8) { self.rawValue = rawValue }

        init(_ keyType: String) {
            let integer = keyType.contains("INT"), blob = keyType.contains("BLOB")
            let text = keyType.contains("CHAR") || keyType.contains("CLOB") || keyType.contains("TEXT")
            self = []
            if text || keyType.isEmpty { insert(.text) }
            if blob || keyType.isEmpty { insert(.blob) }
            if integer || keyType.isEmpty || !(text || blob) { insert(.integer) }
            if !(integer || text || blob) { insert(.real) }
        }

        func accepts(_ key: Value) -> Bool {
            switch key {
            case .null: return false
            case .text: return contains(.text)
            case .blob: return contains(.blob)
            case .integer: return contains(.integer)
            case .real: return contains(.real)
            }
        }
    }

    /// Refuses a delta no replicated store may take: a table name that is not a plain
    /// identifier or names Converge's or SQLite's own tables, one that differs only in case
    /// from a replicated table's, a NULL key, or a key of the wrong type.
    public static func checkAddress(_ delta: RecordDelta, tables: [String: ReplicatedTable]) throws(ApplyError) {
        try checkTableName(delta, tables: tables)
        try checkKey(delta, tables[delta.table], classes: tables[delta.table].map { KeyClasses($0.keyType) })
    }

    /// ``checkAddress(_:tables:)`` for every delta of `changeset`, in order, refusing the first
    /// bad one: a table's name is checked, and its key's classes worked out, once per run of
    /// deltas of that table instead of once per delta (an apply checks every delta first).
    public static func checkAddresses(of changeset: Changeset, tables: [String: ReplicatedTable]) throws(ApplyError) {
        var checked: (name: String, table: ReplicatedTable?, classes: KeyClasses?)?
        for delta in changeset.records {
            if checked?.name != delta.table {
                try checkTableName(delta, tables: tables)
                let table = tables[delta.table]
                checked = (delta.table, table, table.map { KeyClasses($0.keyType) })
            }
            try checkKey(delta, checked!.table, classes: checked!.classes)
        }
    }

    private static func checkTableName(_ delta: RecordDelta, tables: [String: ReplicatedTable]) throws(ApplyError) {
        guard isPlainIdentifier(delta.table), !isReservedName(delta.table) else {
            throw ApplyError(table: delta.table, key: delta.key, reason: .invalidTableName)
        }
        if tables[delta.table] == nil, let replicated = tables.keys.first(where: { $0.lowercased() == delta.table.lowercased() }) {
            throw ApplyError(table: delta.table, key: delta.key, reason: .tableNameCase(replicated: replicated))
        }
    }

    private static func checkKey(_ delta: RecordDelta, _ table: ReplicatedTable?, classes: KeyClasses?) throws(ApplyError) {
        guard delta.key != .null else { throw ApplyError(table: delta.table, key: delta.key, reason: .nullKey) }
        if let table, let classes, !classes.accepts(delta.key) {
            throw ApplyError(table: delta.table, key: delta.key, reason: .keyTypeMismatch(expected: table.keyType, actual: delta.key.storageClassName))
        }
    }

    static func load(_ db: Database) throws -> [String: ReplicatedTable] {
        var result = [String: ReplicatedTable]()
        for row in try Row.fetchAll(db, sql: "SELECT name, schema FROM converge_tables") {
            let name: String = row["name"]
            let json: String = row["schema"]
            do {
                result[name] = try JSONDecoder().decode(ReplicatedTable.self, from: Data(json.utf8))
            } catch {
                throw MetadataCorruption(table: name, key: nil, detail: "unreadable table description: \(error)")
            }
        }
        return result
    }

    func save(_ db: Database) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = String(decoding: try encoder.encode(self), as: UTF8.self)
        try db.execute(sql: "INSERT OR REPLACE INTO converge_tables(name, schema) VALUES (?, ?)", arguments: [schema.name, json])
    }

    /// Inspects an app table and checks that it can converge.
    static func inspect(
        _ db: Database, table: String, policies: [String: ColumnPolicy], deletePolicy: DeletePolicy, allowUniqueIndexes: Bool,
        encrypted: Set<String> = []
    ) throws -> ReplicatedTable {
        func refuse(_ reason: SchemaError.Reason) -> SchemaError { SchemaError(table: table, reason: reason) }
        guard isPlainIdentifier(table) else { throw refuse(.invalidIdentifier) }
        guard !isReservedName(table) else { throw refuse(.reservedName) }
        guard try db.tableExists(table) else { throw refuse(.noSuchTable) }
        let primaryKey = try db.primaryKey(table)
        if primaryKey.rowIDColumn == nil && primaryKey.isRowID { throw refuse(.noPrimaryKey) }
        if let rowID = primaryKey.rowIDColumn { throw refuse(.autoIncrementKey(rowID)) }
        guard primaryKey.columns.count == 1, let key = primaryKey.columns.first else { throw refuse(.compositePrimaryKey(primaryKey.columns)) }
        let sql = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", arguments: [table]) ?? ""
        if sql.uppercased().contains("AUTOINCREMENT") { throw refuse(.autoIncrementKey(key)) }

        let columns = try db.columns(in: table)
        var names = [String]()
        var keyType = ""
        for column in columns {
            if column.name == key { keyType = column.type.uppercased(); continue }
            guard isPlainIdentifier(column.name) else { throw refuse(.invalidIdentifier) }
            if column.isNotNull && column.defaultValueSQL == nil { throw refuse(.notNullWithoutDefault(column.name)) }
            names.append(column.name)
        }
        guard isPlainIdentifier(key) else { throw refuse(.invalidIdentifier) }
        guard names.count <= columnsMax else { throw refuse(.tooManyColumns(names.count)) }
        for column in policies.keys where !names.contains(column) { throw refuse(.unknownColumn(column)) }
        if !allowUniqueIndexes {
            for index in try db.indexes(on: table) where index.isUnique && index.columns != [key] {
                throw refuse(.uniqueIndex(index.name))
            }
        }
        let uniqueIndexes = allowUniqueIndexes ? try self.uniqueIndexes(db, table: table, key: key, refuse: refuse) : []
        // DESIGN §11: the server never holds the key, so nothing it decides may read an
        // encrypted value.
        for column in encrypted.sorted() {
            if column == key { throw refuse(.encryptedPrimaryKey(column)) }
            guard names.contains(column) else { throw refuse(.unknownColumn(column)) }
            if policies[column] == .authority { throw refuse(.encryptedAuthority(column)) }
            if let index = uniqueIndexes.first(where: { $0.columns.contains(column) }) {
                throw refuse(.encryptedUniqueIndex(column: column, index: index.name))
            }
        }
        let schema = TableSchema(
            name: table, primaryKey: key, columns: names, policies: policies.filter { $0.value != .lww }, deletePolicy: deletePolicy,
            uniqueIndexes: uniqueIndexes, encryptedColumns: encrypted)
        return ReplicatedTable(schema: schema, keyType: keyType)
    }

    /// The table's UNIQUE indexes beyond its key, sorted by name: constraint conflicts
    /// (DESIGN §4). Refused are the ones Converge could not decide the same way as SQLite:
    /// partial indexes (whether a row is indexed depends on other columns), indexes on
    /// expressions, and collations other than BINARY (which compare text otherwise).
    private static func uniqueIndexes(
        _ db: Database, table: String, key: String, refuse: (SchemaError.Reason) -> SchemaError
    ) throws -> [UniqueIndex] {
        var result = [UniqueIndex]()
        for index in try Row.fetchAll(db, sql: "SELECT name, \"unique\" AS isUnique, partial FROM pragma_index_list(?)", arguments: [table]) {
            let name: String = index["name"]
            guard index["isUnique"] as Bool else { continue }
            let parts = try Row.fetchAll(db, sql: "SELECT cid, name, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", arguments: [name])
            let columns = parts.compactMap { $0["name"] as String? }
            if columns == [key] { continue }
            if index["partial"] as Bool { throw refuse(.partialUniqueIndex(name)) }
            if parts.contains(where: { ($0["cid"] as Int) < 0 }) || columns.count != parts.count { throw refuse(.expressionUniqueIndex(name)) }
            if let collation = parts.lazy.compactMap({ $0["coll"] as String? }).first(where: { $0.uppercased() != "BINARY" }) {
                throw refuse(.uniqueIndexCollation(name, collation))
            }
            // The key makes every combination with it unique already.
            if columns.contains(key) { continue }
            result.append(UniqueIndex(name: name, columns: columns))
        }
        return result.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }
}
