import ConvergeCore
import Foundation
import GRDB

/// Writes a record's merged state into its app table: the visible row, or no row.
///
/// Runs with capture off, so these writes are not taken for local ones.
enum Materializer {
    private static let cache = UpsertCache()

    /// The upsert of the columns in `present` (a bit per column): columns without any
    /// write keep their default on insert and their value on update.
    static func upsertSQL(_ schema: TableSchema, present: UInt64) -> String {
        // Keyed by the whole shape, not the name alone: two databases of one process may
        // hold different tables of the same name (each test, or an app with two stores).
        cache.sql(for: UpsertCache.Key(table: schema.name, primaryKey: schema.primaryKey, columns: schema.columns, present: present)) {
            let keyColumn = quoted(schema.primaryKey)
            let columns = schema.columns.enumerated().filter { present & (1 << UInt64($0.offset)) != 0 }.map { quoted($0.element) }
            let insertColumns = ([keyColumn] + columns).joined(separator: ", ")
            let placeholders = Array(repeating: "?", count: columns.count + 1).joined(separator: ", ")
            let update = columns.isEmpty ? "NOTHING" : "UPDATE SET " + columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
            return "INSERT INTO \(quoted(schema.name))(\(insertColumns)) VALUES (\(placeholders)) ON CONFLICT(\(keyColumn)) DO \(update)"
        }
    }

    private final class UpsertCache: @unchecked Sendable {
        private let lock = NSLock()
        struct Key: Hashable {
            var table: String
            var primaryKey: String
            var columns: [String]
            var present: UInt64
        }
        private var statements: [Key: String] = [:]
        func sql(for key: Key, make: () -> String) -> String {
            lock.withLock {
                if let sql = statements[key] { return sql }
                let sql = make()
                statements[key] = sql
                return sql
            }
        }
    }

    /// Writes a planned row change: upsert the visible values, delete, or nothing.
    static func write(_ change: ApplyPlanner.RowChange, key: Value, in table: ReplicatedTable, _ db: Database) throws {
        do {
            try rawWrite(change, key: key, in: table, db)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw ApplyError(table: table.schema.name, key: key, reason: .constraintViolation(error.message ?? "\(error)"))
        }
    }

    /// Writes the settled rows of tables with unique indexes, in the order given (removals
    /// first). A row may still meet a unique value another row of the batch gives up later
    /// in it (two records swapping values): such rows wait for the others, and rows that
    /// wait on each other are removed and inserted anew.
    static func write(_ rows: [(RecordAddress, ApplyPlanner.RowChange)], tables: [String: ReplicatedTable], _ db: Database) throws {
        var waiting = [(RecordAddress, ApplyPlanner.RowChange)]()
        func attempt(_ address: RecordAddress, _ change: ApplyPlanner.RowChange) throws -> Bool {
            guard let table = tables[address.table] else { return true }
            do {
                try rawWrite(change, key: address.key, in: table, db)
                return true
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                return false
            } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                throw ApplyError(table: address.table, key: address.key, reason: .constraintViolation(error.message ?? "\(error)"))
            }
        }
        for (address, change) in rows where try !attempt(address, change) { waiting.append((address, change)) }
        while !waiting.isEmpty {
            var still = [(RecordAddress, ApplyPlanner.RowChange)]()
            for (address, change) in waiting where try !attempt(address, change) { still.append((address, change)) }
            if still.count == waiting.count {
                for (address, _) in still { if let table = tables[address.table] { try rawWrite(.delete, key: address.key, in: table, db) } }
                for (address, change) in still { if let table = tables[address.table] { try write(change, key: address.key, in: table, db) } }
                return
            }
            waiting = still
        }
    }

    private static func rawWrite(_ change: ApplyPlanner.RowChange, key: Value, in table: ReplicatedTable, _ db: Database) throws {
        let schema = table.schema
        switch change {
        case .none: return
        case .delete:
            try db.cachedStatement(sql: "DELETE FROM \(quoted(schema.name)) WHERE \(quoted(schema.primaryKey)) = ?").execute(arguments: [key.databaseValue])
        case .upsert(let values):
            var present: UInt64 = 0
            var arguments: [DatabaseValue] = [key.databaseValue]
            arguments.reserveCapacity(values.count + 1)
            for (index, value) in values.enumerated() {
                guard let value else { continue }
                present |= 1 << UInt64(index)
                arguments.append(value.databaseValue)
            }
            try db.cachedStatement(sql: upsertSQL(schema, present: present)).execute(arguments: StatementArguments(converted: arguments))
        }
    }

    /// Writes every record of a table with unique indexes as ``UniquePlanner`` shows them,
    /// and rebuilds its claims: when the table is replicated anew or the authority changes.
    static func rewrite(_ table: ReplicatedTable, states: [(Value, RecordState)], authority: ReplicaID?, _ db: Database) throws {
        let schema = table.schema
        let records = states.map { (key: $0.0, state: $0.1) }
        try ClaimIndex.rebuild(table, states: records, authority: authority, db)
        let held = UniquePlanner.heldKeys(records, schema: schema, authority: authority)
        var removals = [(RecordAddress, ApplyPlanner.RowChange)](), upserts = [(RecordAddress, ApplyPlanner.RowChange)]()
        for (key, state) in records {
            let address = RecordAddress(table: schema.name, key: key)
            if let row = held.contains(key) ? nil : ApplyPlanner.visibleRow(state, schema, authority) {
                upserts.append((address, .upsert(row)))
            } else {
                removals.append((address, .delete))
            }
        }
        try write(removals + upserts, tables: [schema.name: table], db)
    }

    static func materialize(_ state: RecordState, key: Value, in table: ReplicatedTable, authority: ReplicaID?, _ db: Database) throws {
        let schema = table.schema
        let name = quoted(schema.name)
        let keyColumn = quoted(schema.primaryKey)
        guard state.isAlive else {
            try db.cachedStatement(sql: "DELETE FROM \(name) WHERE \(keyColumn) = ?").execute(arguments: [key.databaseValue])
            return
        }
        var present: UInt64 = 0
        var arguments: [DatabaseValue] = [key.databaseValue]
        arguments.reserveCapacity(schema.columns.count + 1)
        for (index, column) in schema.columns.enumerated() {
            guard let value = state.value(of: column, policy: schema.policy(of: column), authority: authority) else { continue }
            present |= 1 << UInt64(index)
            arguments.append(value.databaseValue)
        }
        let sql = upsertSQL(schema, present: present)
        do {
            try db.cachedStatement(sql: sql).execute(arguments: StatementArguments(converted: arguments))
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw ApplyError(table: schema.name, key: key, reason: .constraintViolation(error.message ?? "\(error)"))
        }
    }
}
