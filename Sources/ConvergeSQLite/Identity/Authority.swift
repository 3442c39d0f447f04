import ConvergeCore
import Foundation
import GRDB

extension ReplicatedDatabase {
    /// Designates the replica whose concurrent writes show in `.authority` columns.
    ///
    /// A sync client calls this with the server's replica ID from the server's answers (the
    /// `SyncEngine` does it for you); the server designates itself. The merge state does not
    /// depend on it (an authority column is a multi-value register), only the value shown
    /// does, so replicas that agree on the authority show the same rows. The rows of records
    /// whose shown value changes are rewritten at once, without being captured as local
    /// writes. Setting the current authority again does nothing.
    public func setAuthority(_ replica: ReplicaID?) throws {
        guard replica != authority else { return }
        let previous = authority
        let tables = self.tables
        do {
            try writer.write { db in
                try source.withoutCapture {
                    try db.execute(sql: "UPDATE converge_identity SET authority = ?", arguments: [replica.map { Data($0.bytes) }])
                    authority = replica
                    let metadata = try MetadataStore(db, tables: tables, authority: replica)
                    for table in tables.values where table.schema.columns.contains(where: { table.schema.policy(of: $0) == .authority }) {
                        let rows = try Row.fetchAll(db, sql: "SELECT key, state, seqs FROM converge_records WHERE tbl = ?", arguments: [table.schema.name])
                        if !table.schema.uniqueIndexes.isEmpty {
                            // Shown values decide claims: the table's holders are decided anew.
                            let states = try rows.map { row in
                                let key = Value(row["key"] as DatabaseValue)
                                return (key, try metadata.decode(row, RecordAddress(table: table.schema.name, key: key)).state)
                            }
                            try Materializer.rewrite(table, states: states, authority: replica, db)
                            continue
                        }
                        for row in rows {
                            let address = RecordAddress(table: table.schema.name, key: Value(row["key"] as DatabaseValue))
                            let state = try metadata.decode(row, address).state
                            if ApplyPlanner.visibleRow(state, table.schema, previous) != ApplyPlanner.visibleRow(state, table.schema, replica) {
                                try Materializer.materialize(state, key: address.key, in: table, authority: replica, db)
                            }
                        }
                    }
                }
            }
        } catch {
            authority = previous  // the transaction rolled back
            throw error
        }
    }
}
