import ConvergeCore

/// The replicated tables every simulated replica holds: both delete policies, critical
/// fields and plain ones; with `--unique`, unique indexes too.
public struct SimulationSchema: Sendable {
    /// Edits revive (`.updateWins`); `amount` is critical.
    public static let notes = TableSchema(
        name: "notes", primaryKey: "id", columns: ["title", "body", "amount"],
        policies: ["amount": .critical], deletePolicy: .updateWins)
    /// Deletes win (`.deleteWins`); `qty` is critical.
    public static let items = TableSchema(
        name: "items", primaryKey: "id", columns: ["name", "qty", "status"],
        policies: ["qty": .critical], deletePolicy: .deleteWins)
    /// Deletes win, last writer wins on every field.
    public static let docs = TableSchema(
        name: "docs", primaryKey: "id", columns: ["title", "body"], deletePolicy: .deleteWins)

    /// The tables of a run without `--unique`.
    public static let standard = SimulationSchema(tables: [notes, items, docs])
    /// `--unique`: `notes` and `items` (one per delete policy) get a last-writer-wins
    /// `code` column with a UNIQUE index, whose few values clash between replicas
    /// (constraint conflicts, DESIGN §4); `docs` stays as it is.
    public static let unique = SimulationSchema(tables: [withCode(notes), withCode(items), docs])

    /// The tables of a run with `options`.
    public static func of(_ options: SimulationOptions) -> SimulationSchema { options.unique ? unique : standard }

    /// The replicated tables, in the order replicas create them.
    public let tables: [TableSchema]
    private let byName: [String: TableSchema]

    init(tables: [TableSchema]) {
        self.tables = tables
        byName = Dictionary(uniqueKeysWithValues: tables.map { ($0.name, $0) })
    }

    /// The table named `name`, if the run replicates it.
    public func table(named name: String) -> TableSchema? { byName[name] }

    /// Whether some table has a unique index.
    public var hasUniqueIndexes: Bool { tables.contains { !$0.uniqueIndexes.isEmpty } }

    private static func withCode(_ table: TableSchema) -> TableSchema {
        TableSchema(
            name: table.name, primaryKey: table.primaryKey, columns: table.columns + ["code"], policies: table.policies,
            deletePolicy: table.deletePolicy, uniqueIndexes: [UniqueIndex(name: "\(table.name)_code", columns: ["code"])])
    }

    /// The app's DDL for a table (SQLite replicas, and the server's schema over HTTP).
    public static func createSQL(_ schema: TableSchema) -> String {
        let columns = schema.columns.map { "\($0) \(schema.policy(of: $0) == .lww ? "TEXT" : "INTEGER")" }
        return "CREATE TABLE IF NOT EXISTS \(schema.name)(\(schema.primaryKey) TEXT PRIMARY KEY NOT NULL, \(columns.joined(separator: ", ")))"
    }

    /// The DDL of a table's unique indexes, named as its schema names them (conflicts
    /// carry the name, so every replica and the server must agree on it).
    public static func indexSQL(_ schema: TableSchema) -> [String] {
        schema.uniqueIndexes.map { "CREATE UNIQUE INDEX IF NOT EXISTS \($0.name) ON \(schema.name)(\($0.columns.joined(separator: ", ")))" }
    }

    static func criticalColumn(of schema: TableSchema) -> String? {
        schema.columns.first { schema.policy(of: $0) != .lww }
    }

    /// The columns of a table's unique indexes.
    static func uniqueColumns(of schema: TableSchema) -> Set<String> {
        Set(schema.uniqueIndexes.flatMap(\.columns))
    }
}

/// What the workload reads of the replica it writes on (asked only for what it draws).
struct WorkloadView {
    /// The record's merge state, as the replica holds it (what a write observes).
    var state: (RecordAddress) -> RecordState?
    /// `--unique`, for a table with a unique index: the keys of the live records a unique
    /// index holds out of the app table (written through Converge, not SQL).
    var held: (String) -> Set<Value> = { _ in [] }
    /// `--unique`, for a table with a unique index: the rows the app table shows, by key (a
    /// local SQL write must not take a value one of them shows).
    var shown: (String) -> [Value: [String: Value]] = { _ in [:] }

    func isHeld(_ table: String, _ key: Value) -> Bool { held(table).contains(key) }
}

/// One local transaction the workload asks a replica to run.
enum Transaction {
    /// Plain writes (on distinct records), one stamp for the lot, and the records the
    /// transaction read first (the session checker checks what they show).
    case operations([Replica.Operation], reads: [RecordAddress] = [])
    /// A resolve of a conflicted critical field.
    case resolve(table: String, key: Value, column: String, value: Value)
}

/// Draws the workload: inserts, edits, deletes, re-inserts of old ids, concurrent creates
/// of one id, critical writes and resolves, on keys drawn with a heavy skew; with
/// `--unique`, values of unique columns drawn from a few, so that replicas clash.
struct WorkloadGenerator {
    let keysPerTable: Int
    let kind: WorkloadKind
    let schema: SimulationSchema
    /// How many values a unique column draws from: few, so that replicas writing
    /// concurrently take the same one.
    let uniqueValueCount: Int
    private var valueCounter: UInt64 = 0
    private var createCounter: Int = 0
    /// Unique-column values the transaction being drawn has taken, by table and column.
    private var taken: [String: Set<Value>] = [:]

    init(keysPerTable: Int, kind: WorkloadKind = .mixed, schema: SimulationSchema = .standard) {
        self.keysPerTable = keysPerTable
        self.kind = kind
        self.schema = schema
        uniqueValueCount = max(4, keysPerTable / 4)
    }

    /// A key with a Zipf-like skew: half the draws hit the first eighth of the keys.
    func skewedKey(_ rng: inout SeededGenerator) -> Value {
        let u = Double(rng.next() >> 11) * 0x1.0p-53
        let index = min(keysPerTable - 1, Int(Double(keysPerTable) * u * u * u))
        return .text("k\(index)")
    }

    /// A value no other write has written (so every LWW write changes its field and is
    /// recognisable in the final state).
    mutating func uniqueText(replica: Int) -> Value {
        valueCounter += 1
        return .text("\(replica).\(valueCounter)")
    }

    /// A value for the unique column `column` of record `key`: now and then NULL (NULLs
    /// never clash), else one of a few. SQL refuses a value another row shows, so a write
    /// made with SQL takes none the replica shows on another record, nor one the
    /// transaction took already (NULL when all are). An edit of a held record goes through
    /// Converge (`throughConverge`), which takes any value (the record may stay held).
    mutating func uniqueColumnValue(
        _ table: TableSchema, _ column: String, key: Value, throughConverge: Bool = false, rng: inout SeededGenerator, view: WorkloadView
    ) -> Value {
        if rng.chance(0.1) { return .null }
        let candidates = (0..<uniqueValueCount).map { Value.text("u\($0)") }
        if throughConverge { return candidates[rng.below(candidates.count)] }
        var unavailable = taken["\(table.name).\(column)"] ?? []
        for (other, row) in view.shown(table.name) where other != key {
            if let value = row[column] { unavailable.insert(value) }
        }
        let free = candidates.filter { !unavailable.contains($0) }
        guard !free.isEmpty else { return .null }
        let value = free[rng.below(free.count)]
        taken["\(table.name).\(column)", default: []].insert(value)
        return value
    }

    /// A small integer (so equal values meet), different from `current` when there is one.
    func criticalValue(_ rng: inout SeededGenerator, avoiding current: Value?) -> Value {
        if case .integer(let c)? = current, (0..<4).contains(c) {
            return .integer((c + 1 + Int64(rng.below(3))) % 4)
        }
        return .integer(Int64(rng.below(4)))
    }

    mutating func insertValues(
        _ schema: TableSchema, key: Value, replica: Int, rng: inout SeededGenerator, view: WorkloadView, criticalDefault: Bool = false
    ) -> [String: Value] {
        let unique = SimulationSchema.uniqueColumns(of: schema)
        var values = [String: Value]()
        for column in schema.columns {
            if unique.contains(column) {
                values[column] = uniqueColumnValue(schema, column, key: key, rng: &rng, view: view)
                continue
            }
            values[column] = schema.policy(of: column) == .lww
                ? uniqueText(replica: replica)
                : (criticalDefault ? .integer(0) : .integer(Int64(rng.below(4))))
        }
        return values
    }

    /// The next transaction for `replica`, given its local view of records.
    mutating func next(replica: Int, rng: inout SeededGenerator, view: WorkloadView) -> Transaction {
        taken.removeAll(keepingCapacity: true)
        if kind == .jepsen { return nextJepsen(replica: replica, rng: &rng, view: view) }
        let schema = self.schema.tables[rng.below(self.schema.tables.count)]
        let roll = rng.below(100)
        if roll >= 95 {
            // Two records in one transaction: one stamp, distinct keys.
            let first = skewedKey(&rng)
            var second = skewedKey(&rng)
            if second == first { second = .text("k\(keysPerTable + rng.below(4))") }
            // A held record is written through Converge, one record a transaction.
            if view.isHeld(schema.name, first) || view.isHeld(schema.name, second) {
                return .operations([single(schema: schema, key: first, roll: rng.below(90), replica: replica, rng: &rng, view: view)])
            }
            return .operations([
                single(schema: schema, key: first, roll: rng.below(90), replica: replica, rng: &rng, view: view),
                single(schema: schema, key: second, roll: rng.below(90), replica: replica, rng: &rng, view: view),
            ])
        }
        if roll >= 90 {
            // Concurrent creates: consecutive creates share an id, so two replicas create it
            // without seeing each other, with the same default in the critical field.
            let key = Value.text("c\((createCounter / 2) % keysPerTable)")
            createCounter += 1
            return .operations([.insert(table: schema.name, key: key, values: insertValues(schema, key: key, replica: replica, rng: &rng, view: view, criticalDefault: true))])
        }
        let key = skewedKey(&rng)
        if roll >= 84, let column = SimulationSchema.criticalColumn(of: schema),
           let record = view.state(RecordAddress(table: schema.name, key: key)), record.isAlive,
           let register = record.multiValue(of: column), register.isConflicted {
            // Resolve an open conflict: to one of the values, or to a new one.
            let values = register.values
            let value = rng.chance(0.7) ? values[rng.below(values.count)] : criticalValue(&rng, avoiding: nil)
            return .resolve(table: schema.name, key: key, column: column, value: value)
        }
        return .operations([single(schema: schema, key: key, roll: roll, replica: replica, rng: &rng, view: view)])
    }

    /// jepsen-powersync's transactions: read many keys, write four, on one table whose
    /// values are last-writer-wins (here `notes.title`, upserted: an insert where the row
    /// is absent, an update where it is alive). Keys are uniform, as there.
    private mutating func nextJepsen(replica: Int, rng: inout SeededGenerator, view: WorkloadView) -> Transaction {
        let table = SimulationSchema.notes.name
        let keyCount = max(4, keysPerTable)
        var reads = [RecordAddress]()
        for _ in 0..<min(keyCount, 8 + rng.below(9)) {
            reads.append(RecordAddress(table: table, key: .text("k\(rng.below(keyCount))")))
        }
        var keys = [Value]()
        while keys.count < 4 {
            let key = Value.text("k\(rng.below(keyCount))")
            if !keys.contains(key) { keys.append(key) }
        }
        let writes = keys.map { key -> Replica.Operation in
            if view.state(RecordAddress(table: table, key: key))?.isAlive ?? false {
                return .update(table: table, key: key, values: ["title": uniqueText(replica: replica)])
            }
            // An SQL insert writes every column (the others to their defaults), so the
            // insert branch of the upsert names them all.
            return .insert(table: table, key: key, values: insertValues(SimulationSchema.notes, key: key, replica: replica, rng: &rng, view: view))
        }
        return .operations(writes, reads: reads)
    }

    private mutating func single(
        schema: TableSchema, key: Value, roll: Int, replica: Int, rng: inout SeededGenerator, view: WorkloadView
    ) -> Replica.Operation {
        let record = view.state(RecordAddress(table: schema.name, key: key))
        let alive = record?.isAlive ?? false
        let unique = SimulationSchema.uniqueColumns(of: schema)
        switch roll {
        case 0..<25:
            return .insert(table: schema.name, key: key, values: insertValues(schema, key: key, replica: replica, rng: &rng, view: view))
        case 25..<40 where !alive:
            // Re-insert an id that is absent or deleted here.
            return .insert(table: schema.name, key: key, values: insertValues(schema, key: key, replica: replica, rng: &rng, view: view))
        case 25..<62:
            var values = [String: Value]()
            for column in schema.columns where schema.policy(of: column) == .lww && rng.chance(0.6) {
                values[column] = unique.contains(column)
                    ? uniqueColumnValue(schema, column, key: key, throughConverge: view.isHeld(schema.name, key), rng: &rng, view: view)
                    : uniqueText(replica: replica)
            }
            if let column = SimulationSchema.criticalColumn(of: schema), values.isEmpty || rng.chance(0.3) {
                values[column] = criticalValue(&rng, avoiding: record?.value(of: column, policy: schema.policy(of: column)))
            }
            if values.isEmpty { values[schema.columns[0]] = uniqueText(replica: replica) }
            return .update(table: schema.name, key: key, values: values)
        case 62..<75:
            return .delete(table: schema.name, key: key)
        default:
            if let column = SimulationSchema.criticalColumn(of: schema) {
                let current = record?.value(of: column, policy: schema.policy(of: column))
                return .update(table: schema.name, key: key, values: [column: criticalValue(&rng, avoiding: current)])
            }
            return .update(table: schema.name, key: key, values: [schema.columns[rng.below(schema.columns.count)]: uniqueText(replica: replica)])
        }
    }
}
