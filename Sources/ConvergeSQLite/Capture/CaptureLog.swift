import ConvergeCore
import GRDB

/// Reads a table's capture log, the rows its triggers wrote (``CaptureTriggers``), as the
/// planner's local writes: the one reader of the fold and of the inspector.
///
/// Columns by position: id, hlc, op, mask, key, c0, c1, ... Each row's values become a
/// ``ColumnMap`` in the columns' UTF-8 order, built by position with one key array shared
/// by every row of the table: no dictionary per row, and no name hashed or sorted.
enum CaptureLog {
    /// The writes of `schema`'s capture log in capture order, stamped as `replica`'s, and
    /// the largest clock reading among them (`.zero` for an empty log).
    ///
    /// A log with fewer value columns than the schema (written before a column was added)
    /// gives the columns it has.
    static func writes(_ db: Database, schema: TableSchema, replica: ReplicaID) throws -> (writes: [CapturePlanner.Write], latest: HLC) {
        let log = quoted(MetadataSchema.logTable(schema.name))
        // Cached: every fold reads every log, and compiling a statement costs more than
        // reading an empty table.
        let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT * FROM \(log) ORDER BY id"))
        // Each column's position in the schema, in the columns' UTF-8 order.
        let positions = ColumnMap(uniqueKeysWithValues: schema.columns.enumerated().map { ($1, $0) })
        var present: ColumnMap<Int>?
        var writes = [CapturePlanner.Write]()
        var latest = HLC.zero
        while let row = try rows.next() {
            let columns = present ?? positions.filter { 5 + $0.value < row.count }
            present = columns
            let hlc = HLC(rawValue: UInt64(bitPattern: row[1]))
            latest = max(latest, hlc)
            let operation = CaptureTriggers.Operation(rawValue: row[2]) ?? .update
            let captured: CapturePlanner.Operation
            if operation == .delete {
                captured = .delete
            } else {
                var values = [Value]()
                values.reserveCapacity(columns.count)
                for position in columns.values { values.append(Value(row[5 + position] as DatabaseValue)) }
                let all = ColumnMap(ascendingKeys: columns.keys, values: values)
                if operation == .insert {
                    captured = .insert(all)
                } else {
                    let mask: Int64 = row[3]
                    var changedKeys = [String](), changedValues = [Value]()
                    for (index, position) in columns.values.enumerated() where mask & (1 << Int64(position)) != 0 {
                        changedKeys.append(columns.keys[index])
                        changedValues.append(values[index])
                    }
                    captured = .update(changed: ColumnMap(ascendingKeys: changedKeys, values: changedValues), row: all)
                }
            }
            writes.append(CapturePlanner.Write(key: Value(row[4] as DatabaseValue), stamp: Stamp(hlc: hlc, replica: replica), operation: captured))
        }
        return (writes, latest)
    }
}
