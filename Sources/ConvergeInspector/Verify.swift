import ConvergeCore
import ConvergeSQLite
import GRDB

/// `converge verify`: rebuilds every replicated table's visible rows from the metadata and
/// compares them with the app tables, value by value and storage class by storage class.
/// A difference means the file was changed behind Converge's back (or is corrupt): exit 1.
///
/// Local writes the triggers captured but the store has not folded into the metadata yet
/// are folded here in memory, with the store's own planner (``CapturePlanner/fold(_:schema:stored:keys:)``
/// over ``ReplicatedDatabase/capturedWrites(_:table:replica:)``), instead of letting the
/// store fold them (`capturedFeedPosition()`): a corruption check must not write to the
/// file it checks, and opening a ``ReplicatedDatabase`` on a copied file, the usual way to
/// inspect a device's database, would even give it a new identity. Ignoring logged keys
/// instead would leave exactly the freshest rows unchecked.
struct VerifyReport: InspectorReport {
    struct Difference: Encodable, Hashable {
        var table: String
        var key: JSONValue?
        /// `sqlite_integrity` (SQLite's own check of the file failed), `corrupt_metadata`
        /// (a record's stored state does not decode), `missing_table`, `missing_column`,
        /// `missing_row` (alive in the metadata and not held by a unique index, not in the
        /// table), `extra_row` (in the table, not alive in the metadata, or held), `value`.
        var kind: String
        var column: String?
        var expected: JSONValue?
        var actual: JSONValue?
        /// What SQLite's integrity check or the metadata decoder said.
        var detail: String?
    }

    struct TableSummary: Encodable {
        var table: String
        var records: Int
        var alive: Int
        var rows: Int
        /// Fields that no write reached and whose column default varies (a time, a
        /// function): the row may hold any value there.
        var uncheckedFields: Int
    }

    var ok: Bool
    var tables: [TableSummary]
    var differenceCount: Int
    /// The first ``maxListed`` differences, by table and key.
    var differences: [Difference]
    var unfoldedWrites: Int

    static let maxListed = 1_000

    var exitCode: Int32 { ok ? 0 : Inspector.exitDifferences }

    static func make(_ file: InspectedFile) throws -> VerifyReport {
        try file.read { db in
            let identity = try ReplicatedDatabase.storedIdentity(db)
            var summaries = [TableSummary]()
            var differences = [Difference]()
            var unfolded = 0
            // The file itself first: a damaged b-tree can hide rows from both sides alike.
            for message in try String.fetchAll(db, sql: "PRAGMA integrity_check(\(maxListed))") where message != "ok" {
                differences.append(Difference(table: "", kind: "sqlite_integrity", detail: message))
            }
            for (name, table) in try ReplicatedDatabase.storedTables(db).sorted(by: { $0.key < $1.key }) {
                let writes = try ReplicatedDatabase.capturedWrites(db, table: table, replica: identity.replica)
                unfolded += writes.count
                let result = try verify(db, table: table, writes: writes, authority: identity.authority)
                differences += result.differences
                summaries.append(TableSummary(table: name, records: result.records, alive: result.alive, rows: result.rows, uncheckedFields: result.unchecked))
            }
            return VerifyReport(
                ok: differences.isEmpty, tables: summaries, differenceCount: differences.count,
                differences: Array(differences.prefix(maxListed)), unfoldedWrites: unfolded)
        }
    }

    private struct TableResult {
        var differences: [Difference] = []
        var records = 0, alive = 0, rows = 0, unchecked = 0
    }

    /// - Complexity: O(n log n) for n records and rows, all held in memory at once.
    private static func verify(_ db: Database, table: ReplicatedDatabase.StoredTable, writes: [CapturePlanner.Write], authority: ReplicaID?) throws -> TableResult {
        let schema = table.schema
        let name = schema.name
        var result = TableResult()
        guard try db.tableExists(name) else {
            result.differences.append(Difference(table: name, kind: "missing_table"))
            return result
        }
        var states = [Value: RecordState]()
        var corrupt = Set<Value>()
        do {
            for record in try ReplicatedDatabase.storedRecords(db, table: name) { states[record.key] = record.state }
        } catch is MetadataCorruption {
            // Record by record, to name every corrupt one and check the others.
            states = [:]
            for key in try ReplicatedDatabase.storedKeys(db, table: name) {
                do {
                    if let record = try ReplicatedDatabase.storedRecord(db, table: name, key: key) { states[key] = record.state }
                } catch let error as MetadataCorruption {
                    corrupt.insert(key)
                    result.differences.append(Difference(table: name, key: JSONValue(key), kind: "corrupt_metadata", detail: error.detail))
                }
            }
        }
        result.records = states.count + corrupt.count
        let touched = Set(writes.map(\.key))
        for change in CapturePlanner.fold(writes, schema: schema, stored: states.filter { touched.contains($0.key) }) {
            states[change.key] = change.after
        }

        let present = Set(try db.columns(in: name).map(\.name))
        for column in schema.columns where !present.contains(column) {
            result.differences.append(Difference(table: name, kind: "missing_column", column: column))
        }
        let checked = schema.columns.enumerated().filter { present.contains($0.element) }
        let shadow = try ShadowTable.of(db, table: name, columns: schema.columns)

        // What the table should hold: the visible row, through the columns' affinities and
        // defaults (a field no write reached keeps the column's default); no row for a
        // record a unique index holds out of the table (DESIGN §4).
        let held = UniquePlanner.heldKeys(states.map { (key: $0.key, state: $0.value) }, schema: schema, authority: authority)
        var expected = [Value: [Value]]()
        var volatile = [Value: Set<Int>]()
        for (key, state) in states {
            guard let visible = ApplyPlanner.visibleRow(state, schema, authority) else { continue }
            result.alive += 1
            guard !held.contains(key) else { continue }
            expected[key] = try shadow.stored(visible)
            let unchecked = Set(visible.indices.filter { visible[$0] == nil && ShadowTable.isVolatileDefault(shadow.columns[$0].defaultSQL) })
            if !unchecked.isEmpty { volatile[key] = unchecked }
        }
        result.unchecked = volatile.values.reduce(0) { $0 + $1.count }

        let selected = ([schema.primaryKey] + checked.map(\.element)).map(SQL.quoted).joined(separator: ", ")
        var actual = [Value: Row]()
        let rows = try Row.fetchCursor(db, sql: "SELECT \(selected) FROM \(SQL.quoted(name))")
        while let row = try rows.next() { actual[Value(row[0] as DatabaseValue)] = row.copy() }
        result.rows = actual.count

        // A row whose record is unreadable was reported as such; there is nothing to compare it with.
        for key in Set(expected.keys).union(actual.keys).subtracting(corrupt).sorted() {
            switch (expected[key], actual[key]) {
            case (nil, _?):
                result.differences.append(Difference(table: name, key: JSONValue(key), kind: "extra_row"))
            case (_?, nil):
                result.differences.append(Difference(table: name, key: JSONValue(key), kind: "missing_row"))
            case (let values?, let row?):
                for (position, (index, column)) in checked.enumerated() where volatile[key]?.contains(index) != true {
                    let stored = Value(row[position + 1] as DatabaseValue)
                    // Exact: the storage class too (`Value`'s equality), as the metadata
                    // and the capture triggers keep it.
                    if stored != values[index] {
                        result.differences.append(Difference(
                            table: name, key: JSONValue(key), kind: "value", column: column, expected: JSONValue(values[index]), actual: JSONValue(stored)))
                    }
                }
            case (nil, nil): break
            }
        }
        return result
    }

    var human: String {
        var text = Format.table(["TABLE", "RECORDS", "ALIVE", "ROWS", "UNCHECKED"], tables.map {
            [$0.table, "\($0.records)", "\($0.alive)", "\($0.rows)", "\($0.uncheckedFields)"]
        }, indent: "")
        if unfoldedWrites > 0 { text += "\(unfoldedWrites) captured local write(s) not folded yet: checked as folded\n" }
        guard !ok else { return text + "ok: every table matches its metadata\n" }
        text += "\n\(differenceCount) difference\(differenceCount == 1 ? "" : "s") between the metadata and the tables:\n"
        for difference in differences {
            let key = difference.key.map { " \(Format.value($0.value))" } ?? ""
            let what = switch difference.kind {
            case "sqlite_integrity": "SQLite integrity check: \(difference.detail ?? "")"
            case "corrupt_metadata": "metadata unreadable: \(difference.detail ?? "")"
            case "missing_table": "the table is missing"
            case "missing_column": "column \(difference.column ?? "") is missing"
            case "missing_row": "row missing (the record is alive in the metadata)"
            case "extra_row": "row present, but the record is not alive in the metadata, or a unique index holds it"
            default: Self.describe(difference)
            }
            text += "  " + (difference.table.isEmpty ? "file" : difference.table) + "\(key): \(what)\n"
        }
        if differenceCount > differences.count { text += "  … and \(differenceCount - differences.count) more (all counted in --json)\n" }
        return text
    }

    private static func describe(_ difference: Difference) -> String {
        func spell(_ value: JSONValue?) -> String {
            guard let value = value?.value else { return "?" }
            return "\(Format.value(value)) (\(Format.storageClass(value)))"
        }
        return "\(difference.column ?? "") is \(spell(difference.actual)), the metadata says \(spell(difference.expected))"
    }
}
