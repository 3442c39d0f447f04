import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import Foundation
import GRDB
import NIOCore
import PostgresNIO

/// The app's tables as ordinary PostgreSQL tables: a `namespace` column, the key, and the
/// app's columns typed from the server schema, so that backend services and reports read
/// the synced rows with SQL (DESIGN §10). They are written by pushes, never read by
/// Converge: the record states are the truth, and these rows are what every device shows.
struct MaterializedTables: Sendable {
    struct Table: Sendable {
        var replicated: ReplicatedTable
        var keyType: ColumnType
        /// The app columns, in the schema's order (``TableSchema/columns``).
        var columnTypes: [ColumnType]
        /// Each app column's default, when the schema declares a constant one (`DEFAULT 'open'`,
        /// `DEFAULT 0`): what a row shows in a column no write reached, as in SQLite. A
        /// default SQLite computes per row (`CURRENT_TIMESTAMP`, an expression) is `nil`: each
        /// store would compute its own, so it stays NULL here.
        var defaults: [Value?]
        var schema: TableSchema { replicated.schema }
    }

    /// How an app column is stored, from its declared SQLite type (its affinity).
    enum ColumnType: String, Sendable {
        case integer = "bigint", real = "double precision", text = "text", blob = "bytea", numeric = "numeric"

        init(declared: String) {
            let type = declared.uppercased()
            if type.contains("INT") {
                self = .integer
            } else if type.contains("CHAR") || type.contains("CLOB") || type.contains("TEXT") {
                self = .text
            } else if type.contains("BLOB") {
                self = .blob
            } else if type.isEmpty {
                // No declared type keeps any value in SQLite; text reads best in reports.
                self = .text
            } else if type.contains("REAL") || type.contains("FLOA") || type.contains("DOUB") {
                self = .real
            } else {
                self = .numeric
            }
        }
    }

    let tables: [String: Table]

    /// What the merge needs of each table (the same descriptions the SQLite store checks
    /// incoming keys against). Made once: every push reads them, some once per record.
    let descriptions: [String: ReplicatedTable]

    let schemas: [String: TableSchema]

    /// Reads the schema the way the SQLite server does (its `CREATE TABLE` statements run in
    /// an in-memory SQLite database and replicated there), so both backends accept the same
    /// schema files and decide the same merges.
    init(schema: ServerSchema) throws {
        var tables = [String: Table]()
        let queue = try DatabaseQueue()
        try queue.write { db in
            for table in schema.tables { try db.execute(sql: table.create) }
        }
        let database = try ReplicatedDatabase(queue)
        for table in schema.tables {
            for statement in table.uniqueIndexStatements { try queue.write { db in try db.execute(sql: statement) } }
            try database.replicate(
                table: table.name, policies: table.policies.mapValues(\.columnPolicy), deletePolicy: table.deletePolicy,
                allowUniqueIndexes: !table.uniqueIndexes.isEmpty, encrypted: Set(table.encrypted))
        }
        let declared = try queue.read { db in
            try schema.tables.reduce(into: [String: [String: ColumnInfo]]()) { result, table in
                result[table.name] = Dictionary(try db.columns(in: table.name).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            }
        }
        let encrypted = Dictionary(schema.tables.map { ($0.name, Set($0.encrypted)) }, uniquingKeysWith: { first, _ in first })
        for (name, replicated) in database.tableDescriptions {
            let columns = declared[name] ?? [:]
            let sealed = encrypted[name] ?? []
            let defaults = try replicated.schema.columns.map { column in
                try columns[column]?.defaultValueSQL.flatMap { try Self.constantDefault($0, in: queue) }
            }
            tables[name] = Table(
                replicated: replicated, keyType: ColumnType(declared: replicated.keyType),
                // An encrypted column holds ciphertext whatever type it declares (DESIGN §11).
                columnTypes: replicated.schema.columns.map { sealed.contains($0) ? .blob : ColumnType(declared: columns[$0]?.type ?? "") },
                defaults: zip(replicated.schema.columns, defaults).map { sealed.contains($0.0) ? nil : $0.1 })
        }
        self.tables = tables
        self.descriptions = tables.mapValues(\.replicated)
        self.schemas = tables.mapValues(\.schema)
    }

    /// The value of a column's `DEFAULT` expression when it is a constant (a literal, maybe
    /// signed or parenthesized), as SQLite evaluates it; `nil` for one it computes per row.
    static func constantDefault(_ expression: String, in queue: DatabaseQueue) throws -> Value? {
        let upper = expression.uppercased()
        guard !upper.contains("CURRENT_"), !upper.contains("RANDOM"), !expression.contains("(") || expression.hasPrefix("(") && !expression.dropFirst().contains("(") else { return nil }
        return try queue.read { db in
            try Row.fetchOne(db, sql: "SELECT \(expression)").map { Value($0[0] as DatabaseValue) }
        }
    }

    /// The statements that create (or extend, for columns added to the schema later) the
    /// app tables.
    var createStatements: [String] {
        tables.values.sorted { $0.schema.name < $1.schema.name }.flatMap { table -> [String] in
            let name = quoted(table.schema.name)
            let key = quoted(table.schema.primaryKey)
            var statements = [
                "CREATE TABLE IF NOT EXISTS \(name)(namespace text NOT NULL, \(key) \(table.keyType.rawValue) NOT NULL, PRIMARY KEY (namespace, \(key)))"
            ]
            for (column, type) in zip(table.schema.columns, table.columnTypes) {
                statements.append("ALTER TABLE \(name) ADD COLUMN IF NOT EXISTS \(quoted(column)) \(type.rawValue)")
            }
            // Converge shows one record per value (the first claim); the constraint states it
            // for the database's readers, checked at commit (a batch may swap two values).
            for index in table.schema.uniqueIndexes {
                let constraint = "\(table.schema.name)_\(index.name)"
                statements.append("""
                    DO $$ BEGIN
                        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = \(literal(constraint)) AND conrelid = to_regclass(\(literal(name)))) THEN
                            ALTER TABLE \(name) ADD CONSTRAINT \(quoted(constraint)) UNIQUE (namespace, \(index.columns.map(quoted).joined(separator: ", ")))
                                DEFERRABLE INITIALLY DEFERRED;
                        END IF;
                    END $$
                    """)
            }
            return statements
        }
    }

    /// Writes the row changes of a plan (upserts and deletes), batched per table.
    func write(_ rows: [(address: RecordAddress, row: ApplyPlanner.RowChange)], namespace: String, on connection: PostgresConnection, logger: Logger) async throws {
        var byTable = [String: [(Value, ApplyPlanner.RowChange)]]()
        for (address, row) in rows where row != .none { byTable[address.table, default: []].append((address.key, row)) }
        for (name, changes) in byTable.sorted(by: { $0.key < $1.key }) {
            guard let table = tables[name] else { continue }
            let deletes = changes.filter { $0.1 == .delete }.map(\.0)
            if !deletes.isEmpty {
                var binds = PostgresBindings()
                binds.append(namespace)
                for key in deletes { Self.bind(key, as: table.keyType, into: &binds) }
                let marks = (0..<deletes.count).map { "$\($0 + 2)::\(table.keyType.rawValue)" }.joined(separator: ", ")
                try await connection.query(
                    PostgresQuery(unsafeSQL: "DELETE FROM \(quoted(name)) WHERE namespace = $1 AND \(quoted(table.schema.primaryKey)) IN (\(marks))", binds: binds),
                    logger: logger)
            }
            // A column no write reached (`nil`) takes its default on insert and keeps its value
            // on update, as in the SQLite store: rows are grouped by which columns they leave
            // unwritten, so that each statement updates only the others.
            var byUnwritten = [[Bool]: [(Value, [Value?])]]()
            for (key, row) in changes {
                guard case .upsert(let values) = row else { continue }
                byUnwritten[values.map { $0 == nil }, default: []].append((key, values))
            }
            let perRow = table.schema.columns.count + 2
            for (unwritten, upserts) in byUnwritten.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) { !$0 && $1 } }) {
                for chunk in stride(from: 0, to: upserts.count, by: max(1, 30_000 / perRow)).map({ Array(upserts[$0..<min($0 + max(1, 30_000 / perRow), upserts.count)]) }) {
                    var binds = PostgresBindings()
                    var tuples = [String]()
                    for (key, values) in chunk {
                        let base = binds.count
                        binds.append(namespace)
                        Self.bind(key, as: table.keyType, into: &binds)
                        for (index, type) in table.columnTypes.enumerated() {
                            Self.bind(values[index] ?? table.defaults[index] ?? .null, as: type, into: &binds)
                        }
                        let types = [table.keyType] + table.columnTypes
                        tuples.append("($\(base + 1), " + types.enumerated().map { "$\(base + $0.offset + 2)::\($0.element.rawValue)" }.joined(separator: ", ") + ")")
                    }
                    let columns = ["namespace", table.schema.primaryKey] + table.schema.columns
                    let assignments = zip(table.schema.columns, unwritten).filter { !$0.1 }.map { "\(quoted($0.0)) = excluded.\(quoted($0.0))" }
                    let conflict = assignments.isEmpty ? "DO NOTHING" : "DO UPDATE SET " + assignments.joined(separator: ", ")
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL: "INSERT INTO \(quoted(name))(\(columns.map(quoted).joined(separator: ", "))) VALUES \(tuples.joined(separator: ", ")) ON CONFLICT (namespace, \(quoted(table.schema.primaryKey))) \(conflict)",
                            binds: binds),
                        logger: logger)
                }
            }
        }
    }

    /// Binds `value` as a value of the column's type: converted as SQLite's affinity would
    /// store it, NULL when it cannot be (the record state keeps the value itself).
    static func bind(_ value: Value, as type: ColumnType, into binds: inout PostgresBindings) {
        switch (type, value) {
        case (_, .null): binds.appendNull()
        case (.integer, .integer(let v)): binds.append(v)
        case (.integer, .real(let v)) where v.rounded() == v && abs(v) < 9.2e18: binds.append(Int64(v))
        case (.integer, .text(let v)) where Int64(v) != nil: binds.append(Int64(v)!)
        case (.real, .integer(let v)): binds.append(Double(v))
        case (.real, .real(let v)): binds.append(v)
        case (.real, .text(let v)) where Double(v) != nil: binds.append(Double(v)!)
        case (.numeric, .integer(let v)): binds.append("\(v)")
        case (.numeric, .real(let v)) where v.isFinite: binds.append("\(v)")
        case (.numeric, .text(let v)) where Double(v)?.isFinite == true: binds.append(v)
        case (.text, .text(let v)): binds.append(v)
        case (.text, .integer(let v)): binds.append("\(v)")
        case (.text, .real(let v)): binds.append("\(v)")
        case (.text, .blob(let v)): if let text = String(validating: v, as: UTF8.self) { binds.append(text) } else { binds.appendNull() }
        case (.blob, .blob(let v)): binds.append(ByteBuffer(bytes: v))
        case (.blob, .text(let v)): binds.append(ByteBuffer(string: v))
        default: binds.appendNull()
        }
    }
}

/// A PostgreSQL string literal.
func literal(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
}

/// PostgreSQL's quoting of an identifier.
func quoted(_ identifier: String) -> String {
    "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// Record keys as `bytea` (``Value/encodeTuple(_:)`` of the key): a key is equal to another
/// only when their values are, whatever their storage classes.
enum KeyCodec {
    static func encode(_ key: Value) -> ByteBuffer { ByteBuffer(bytes: Value.encodeTuple([key])) }

    static func decode(_ buffer: ByteBuffer) throws -> Value {
        guard let values = try? Value.decodeTuple(Array(buffer: buffer)), values.count == 1 else { throw StorageCorruption("an unreadable record key") }
        return values[0]
    }
}
