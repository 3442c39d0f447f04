import ConvergeCore
import GRDB

/// Writes a record's merged state into its app table: the visible row, or no row.
///
/// Runs with capture off, so these writes are not taken for local ones.
enum Materializer {
    static func materialize(_ state: RecordState, key: Value, in table: ReplicatedTable, _ db: Database) throws {
        let schema = table.schema
        let name = quoted(schema.name)
        let keyColumn = quoted(schema.primaryKey)
        guard state.isAlive else {
            try db.cachedStatement(sql: "DELETE FROM \(name) WHERE \(keyColumn) = ?").execute(arguments: [key.databaseValue])
            return
        }
        var columns = [String]()
        var arguments: [DatabaseValue] = [key.databaseValue]
        for column in schema.columns {
            guard let value = state.value(of: column, policy: schema.policy(of: column)) else { continue }
            columns.append(quoted(column))
            arguments.append(value.databaseValue)
        }
        let insertColumns = ([keyColumn] + columns).joined(separator: ", ")
        let placeholders = Array(repeating: "?", count: columns.count + 1).joined(separator: ", ")
        let update = columns.isEmpty ? "NOTHING" : "UPDATE SET " + columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
        let sql = "INSERT INTO \(name)(\(insertColumns)) VALUES (\(placeholders)) ON CONFLICT(\(keyColumn)) DO \(update)"
        do {
            try db.cachedStatement(sql: sql).execute(arguments: StatementArguments(arguments))
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw ApplyError(table: schema.name, key: key, reason: .constraintViolation(error.message ?? "\(error)"))
        }
    }
}
