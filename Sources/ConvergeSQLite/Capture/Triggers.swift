import ConvergeCore
import GRDB

/// The capture: a log table and three triggers per replicated table.
///
/// Every local INSERT, UPDATE and DELETE on the table, whatever issued it (raw SQL, GRDB
/// records, `INSERT OR REPLACE`, multi-row statements), appends one row to the table's log
/// with the transaction's stamp. An UPDATE that changes no value appends nothing; an UPDATE
/// of the primary key is a delete of the old key and an insert of the new one.
///
/// One exception to "no change, no capture" (DESIGN §2): an UPDATE that names a critical
/// column in its SET clause while that field is in conflict resolves the conflict, even
/// when it writes the value already shown, since choosing the provisional value is a
/// choice. A trigger per critical column (`AFTER UPDATE OF column`, which fires only when
/// the statement names the column) captures such a write as an update of that column.
///
/// Local writes keep `converge_conflicts` current themselves (a write that resolves a
/// conflict takes it off the list in the same statement), so that ``ReplicatedDatabase/conflicts()``
/// and its observation only read: no fold, no write transaction. A second identical write
/// then finds no conflict and captures nothing.
enum CaptureTriggers {
    enum Operation: Int64 {
        case insert = 1
        case update = 2
        case delete = 3
    }

    static func install(_ db: Database, table: ReplicatedTable) throws {
        try remove(db, table: table.schema.name)
        let log = quoted(MetadataSchema.logTable(table.schema.name))
        let valueColumns = table.schema.columns.indices.map { "c\($0)" }
        try db.execute(sql: """
            CREATE TABLE \(log) (
                id INTEGER PRIMARY KEY,
                hlc INTEGER NOT NULL,
                op INTEGER NOT NULL,
                mask INTEGER NOT NULL,
                key\(valueColumns.map { ", \($0)" }.joined())
            )
            """)
        try installTriggers(db, table: table)
    }

    /// (Re)creates the table's capture triggers, keeping its log: what a newer release's
    /// triggers need on a database made by an older one (see ``MetadataSchema``).
    static func installTriggers(_ db: Database, table: ReplicatedTable) throws {
        try removeTriggers(db, table: table.schema.name)
        let name = table.schema.name
        let key = quoted(table.schema.primaryKey)
        let columns = table.schema.columns
        let log = quoted(MetadataSchema.logTable(name))
        let valueColumns = columns.indices.map { "c\($0)" }
        let insertColumns = (["hlc", "op", "mask", "key"] + valueColumns).joined(separator: ", ")
        let newValues = columns.map { "NEW.\(quoted($0))" }
        // SQL's `IS NOT` takes 3 and 3.0 for equal; the type check keeps the change, so the
        // metadata never disagrees with the row about a value's storage class.
        let mask = columns.isEmpty ? "0" : columns.enumerated().map { index, column in
            let new = "NEW.\(quoted(column))", old = "OLD.\(quoted(column))"
            return "((\(new) IS NOT \(old) OR typeof(\(new)) IS NOT typeof(\(old))) << \(index))"
        }.joined(separator: " | ")
        let all = columns.isEmpty ? "0" : String((Int64(1) << Int64(columns.count)) - 1)
        func values(_ op: Operation, _ mask: String, _ keyExpression: String, _ rowValues: [String]) -> String {
            (["converge_stamp()", String(op.rawValue), mask, keyExpression] + rowValues).joined(separator: ", ")
        }
        let nulls = columns.map { _ in "NULL" }
        // A local insert, delete or rekey observes every value of the record: it closes the
        // record's open conflicts at once, so that reading them needs no fold.
        let hasCritical = columns.contains { table.schema.policy(of: $0) == .critical }
        func closeConflicts(_ keyExpression: String) -> String {
            hasCritical ? "DELETE FROM converge_conflicts WHERE tbl = \(literal(name)) AND key = \(keyExpression);" : ""
        }
        try db.execute(sql: """
            CREATE TRIGGER \(quoted("converge_\(name)_insert")) AFTER INSERT ON \(quoted(name))
            WHEN converge_capturing() BEGIN
                INSERT INTO \(log)(\(insertColumns)) VALUES (\(values(.insert, all, "NEW.\(key)", newValues)));
                \(closeConflicts("NEW.\(key)"))
            END;
            CREATE TRIGGER \(quoted("converge_\(name)_update")) AFTER UPDATE ON \(quoted(name))
            WHEN converge_capturing() AND NEW.\(key) IS OLD.\(key) AND (\(mask)) != 0 BEGIN
                INSERT INTO \(log)(\(insertColumns)) VALUES (\(values(.update, "(\(mask))", "NEW.\(key)", newValues)));
            END;
            CREATE TRIGGER \(quoted("converge_\(name)_rekey")) AFTER UPDATE ON \(quoted(name))
            WHEN converge_capturing() AND NEW.\(key) IS NOT OLD.\(key) BEGIN
                INSERT INTO \(log)(\(insertColumns)) VALUES (\(values(.delete, "0", "OLD.\(key)", nulls)));
                INSERT INTO \(log)(\(insertColumns)) VALUES (\(values(.insert, all, "NEW.\(key)", newValues)));
                \(closeConflicts("OLD.\(key)"))
                \(closeConflicts("NEW.\(key)"))
            END;
            CREATE TRIGGER \(quoted("converge_\(name)_delete")) AFTER DELETE ON \(quoted(name))
            WHEN converge_capturing() BEGIN
                INSERT INTO \(log)(\(insertColumns)) VALUES (\(values(.delete, "0", "OLD.\(key)", nulls)));
                \(closeConflicts("OLD.\(key)"))
            END;
            """)
        if !table.schema.uniqueIndexes.isEmpty { try installReplaceCapture(db, table: table, insertColumns: insertColumns, nulls: nulls) }
        for (index, column) in columns.enumerated() where table.schema.policy(of: column) == .critical {
            let new = "NEW.\(quoted(column))", old = "OLD.\(quoted(column))"
            // Changed values are the general update trigger's; this one takes the unchanged.
            let unchanged = "\(new) IS \(old) AND typeof(\(new)) IS typeof(\(old))"
            let inConflict = "SELECT 1 FROM converge_conflicts WHERE tbl = \(literal(name)) AND key = NEW.\(key) AND col = \(literal(column))"
            // A changed value is captured by the general update trigger; either way the
            // write resolves the conflict, which leaves the list at once.
            try db.execute(sql: """
                CREATE TRIGGER \(quoted(resolveTrigger(name, index))) AFTER UPDATE OF \(quoted(column)) ON \(quoted(name))
                WHEN converge_capturing() AND NEW.\(key) IS OLD.\(key) AND EXISTS (\(inConflict)) BEGIN
                    INSERT INTO \(log)(\(insertColumns)) SELECT \(values(.update, String(Int64(1) << Int64(index)), "NEW.\(key)", newValues)) WHERE \(unchanged);
                    DELETE FROM converge_conflicts WHERE tbl = \(literal(name)) AND key = NEW.\(key) AND col = \(literal(column));
                END;
                """)
        }
    }

    /// The rows a REPLACE deletes. An `INSERT OR REPLACE` (or `UPDATE OR REPLACE`, or a
    /// column declared `UNIQUE ON CONFLICT REPLACE`) that meets another row's unique value
    /// deletes that row without firing its delete trigger (unless `recursive_triggers` is
    /// on, which Converge does not impose on the app's own triggers). A BEFORE trigger notes
    /// the rows whose values the new row takes; the AFTER trigger captures the ones that are
    /// gone as deletes, with the same stamp. (An `OR IGNORE` that leaves the row out fires no
    /// AFTER trigger, and the next BEFORE clears the note.)
    private static func installReplaceCapture(_ db: Database, table: ReplicatedTable, insertColumns: String, nulls: [String]) throws {
        let name = table.schema.name
        let key = quoted(table.schema.primaryKey)
        let log = quoted(MetadataSchema.logTable(name))
        let noted = quoted(replacedTable(name))
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS \(noted)(key PRIMARY KEY) WITHOUT ROWID")
        let clash = table.schema.uniqueIndexes.map { index in
            "(" + index.columns.map { "\(quoted($0)) = NEW.\(quoted($0))" }.joined(separator: " AND ") + ")"
        }.joined(separator: " OR ")
        let capture = (["converge_stamp()", String(Operation.delete.rawValue), "0", "r.key"] + nulls).joined(separator: ", ")
        let closeConflicts = table.schema.columns.contains { table.schema.policy(of: $0) == .critical }
            ? "DELETE FROM converge_conflicts WHERE tbl = \(literal(name)) AND key IN (SELECT key FROM \(noted) r WHERE NOT EXISTS (SELECT 1 FROM \(quoted(name)) WHERE \(key) = r.key));"
            : ""
        for (event, others) in [("INSERT", "\(key) IS NOT NEW.\(key)"), ("UPDATE", "\(key) IS NOT NEW.\(key) AND \(key) IS NOT OLD.\(key)")] {
            let suffix = event.lowercased()
            try db.execute(sql: """
                CREATE TRIGGER \(quoted("converge_\(name)_before_\(suffix)")) BEFORE \(event) ON \(quoted(name))
                WHEN converge_capturing() BEGIN
                    DELETE FROM \(noted);
                    INSERT OR IGNORE INTO \(noted)(key) SELECT \(key) FROM \(quoted(name)) WHERE \(others) AND (\(clash));
                END;
                CREATE TRIGGER \(quoted("converge_\(name)_replaced_\(suffix)")) AFTER \(event) ON \(quoted(name))
                WHEN converge_capturing() BEGIN
                    INSERT INTO \(log)(\(insertColumns))
                        SELECT \(capture) FROM \(noted) r WHERE NOT EXISTS (SELECT 1 FROM \(quoted(name)) WHERE \(key) = r.key);
                    \(closeConflicts)
                    DELETE FROM \(noted);
                END;
                """)
        }
    }

    /// The note of rows a REPLACE may delete (see ``installReplaceCapture``).
    static func replacedTable(_ table: String) -> String { "converge_replaced_\(table)" }

    static func remove(_ db: Database, table name: String) throws {
        try removeTriggers(db, table: name)
        try db.execute(sql: "DROP TABLE IF EXISTS \(quoted(MetadataSchema.logTable(name)))")
        try db.execute(sql: "DROP TABLE IF EXISTS \(quoted(replacedTable(name)))")
    }

    static func removeTriggers(_ db: Database, table name: String) throws {
        for suffix in ["insert", "update", "rekey", "delete", "before_insert", "before_update", "replaced_insert", "replaced_update"] {
            try db.execute(sql: "DROP TRIGGER IF EXISTS \(quoted("converge_\(name)_\(suffix)"))")
        }
        // The critical columns' triggers, whatever the table's columns were when made.
        let prefix = resolveTrigger(name, 0).dropLast()
        for trigger in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", arguments: [name])
        where trigger.hasPrefix(prefix) {
            try db.execute(sql: "DROP TRIGGER IF EXISTS \(quoted(trigger))")
        }
    }
}

extension CaptureTriggers {
    /// The name of the trigger that captures a write of critical column `index` to the
    /// value it shows while in conflict.
    static func resolveTrigger(_ table: String, _ index: Int) -> String { "converge_\(table)_resolve_\(index)" }

    /// `text` as an SQL string literal.
    static func literal(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
}
