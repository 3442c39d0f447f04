import ConvergeCore
import ConvergeSQLite
import GRDB

/// `converge resolve TABLE KEY COLUMN VALUE`: chooses the value of a conflicted field.
struct ResolveReport: InspectorReport {
    var table: String
    var key: JSONValue
    var column: String
    var value: JSONValue
    /// The concurrent values the choice replaced.
    var replaced: [SiblingReport]

    static func make(_ file: InspectedFile, table name: String, key keyText: String, column: String, value valueText: String) throws -> ResolveReport {
        let table = try file.table(name)
        guard table.schema.columns.contains(column) else {
            throw InspectorError(.noSuchColumn, "\(name) has no replicated column \(column) (columns: \(table.schema.columns.joined(separator: ", ")))")
        }
        let (key, value, conflict) = try file.read { db in
            let key = try ArgumentValue.parse(keyText, declaredType: table.keyType)
            let declared = try db.columns(in: name).first { $0.name == column }?.type ?? ""
            let value = try ArgumentValue.parse(valueText, declaredType: declared)
            let conflict = try ReplicatedDatabase.conflicts(db).compactMap(\.field).first { $0.table == name && $0.key == key && $0.column == column }
            return (key, value, conflict)
        }
        // Only a conflicted field: a resolve is a write like any other, and a typo in the
        // key or column of a command run on a user's database must not become one.
        guard let conflict else {
            throw InspectorError(.notInConflict, "\(name) \(key) \(column) is not in conflict (see converge conflicts); nothing written")
        }
        try file.openStore().resolve(table: name, key: key, column: column, to: value)
        return ResolveReport(table: name, key: JSONValue(key), column: column, value: JSONValue(value), replaced: ConflictsReport.siblings(conflict.siblings))
    }

    var human: String {
        "resolved \(table) \(Format.value(key.value)) \(column) = \(Format.value(value.value)) (replacing "
            + replaced.map { Format.value($0.value.value) }.joined(separator: ", ")
            + "); other replicas take it on their next sync\n"
    }
}
