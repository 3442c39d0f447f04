import ConvergeCore
import ConvergeSQLite
import GRDB

/// One concurrent value of a conflicted field.
struct SiblingReport: Encodable {
    var value: JSONValue
    var stamp: JSONStamp
    /// The value every replica shows until someone chooses (the latest sibling's).
    var shown: Bool
}

/// `converge conflicts`: the open conflicts: critical fields holding concurrent values
/// (`conflicts`), then unique-index clashes (`constraints`, DESIGN §4).
struct ConflictsReport: InspectorReport {
    struct Entry: Encodable {
        var table: String
        var key: JSONValue
        var column: String
        var siblings: [SiblingReport]
    }

    /// Live records claiming the same values on a unique index: the holder is shown (unless
    /// a clash on another index holds it), the others are held out of the app table.
    struct Constraint: Encodable {
        struct Claimant: Encodable {
            var key: JSONValue
            /// Every column of the record as it would show.
            var values: [String: JSONValue]
            /// Its claim: when it last wrote one of the index's columns (the earliest holds).
            var stamp: JSONStamp

            init(_ claimant: ConstraintConflict.Claimant) {
                key = JSONValue(claimant.key)
                values = claimant.values.mapValues(JSONValue.init)
                stamp = JSONStamp(claimant.stamp)
            }
        }

        var table: String
        var index: String
        var columns: [String]
        var values: [JSONValue]
        var holder: Claimant
        /// In the order they would take over.
        var held: [Claimant]
    }

    var conflicts: [Entry]
    var constraints: [Constraint]

    static func make(_ file: InspectedFile) throws -> ConflictsReport {
        // The store's own query only reads (local writes close conflicts as they happen).
        let all = try file.read { db in try ReplicatedDatabase.conflicts(db) }
        var report = ConflictsReport(conflicts: [], constraints: [])
        for conflict in all {
            switch conflict {
            case .field(let conflict):
                report.conflicts.append(Entry(table: conflict.table, key: JSONValue(conflict.key), column: conflict.column, siblings: siblings(conflict.siblings)))
            case .constraint(let clash):
                report.constraints.append(Constraint(
                    table: clash.table, index: clash.index, columns: clash.columns, values: clash.values.map(JSONValue.init),
                    holder: Constraint.Claimant(clash.holder), held: clash.held.map(Constraint.Claimant.init)))
            }
        }
        return report
    }

    static func siblings(_ siblings: [MVRegister.Sibling]) -> [SiblingReport] {
        siblings.enumerated().map { index, sibling in
            SiblingReport(value: JSONValue(sibling.value), stamp: JSONStamp(sibling.stamp), shown: index == siblings.count - 1)
        }
    }

    var human: String {
        let count = conflicts.count + constraints.count
        guard count > 0 else { return "no open conflicts\n" }
        var text = "\(count) open conflict\(count == 1 ? "" : "s")\n"
        for conflict in conflicts {
            text += "\n\(conflict.table) \(Format.value(conflict.key.value)) \(conflict.column): \(Set(conflict.siblings.map(\.value)).count) values\n"
            text += Format.table(["VALUE", "WRITTEN", "BY", ""], conflict.siblings.map { sibling in
                let stamp = Stamp(hlc: HLC(rawValue: sibling.stamp.hlc), replica: ReplicaID(sibling.stamp.replica) ?? .zero)
                return [Format.value(sibling.value.value), Format.time(stamp.hlc), Format.replica(stamp.replica), sibling.shown ? "shown" : ""]
            })
            text += "  resolve: converge resolve DATABASE \(conflict.table) \(ArgumentSpelling.spell(conflict.key.value)) \(conflict.column) VALUE\n"
        }
        for clash in constraints {
            let values = zip(clash.columns, clash.values).map { "\($0)=\(Format.value($1.value))" }.joined(separator: ", ")
            text += "\n\(clash.table) unique \(clash.index) (\(values)): \(clash.held.count + 1) records\n"
            let claimants = [(clash.holder, "holder")] + clash.held.map { ($0, "held") }
            text += Format.table(["KEY", "CLAIMED", "BY", "", "VALUES"], claimants.map { claimant, role in
                let stamp = Stamp(hlc: HLC(rawValue: claimant.stamp.hlc), replica: ReplicaID(claimant.stamp.replica) ?? .zero)
                let row = claimant.values.sorted { $0.key < $1.key }.map { "\($0.key)=\(Format.value($0.value.value))" }.joined(separator: " ")
                return [Format.value(claimant.key.value), Format.time(stamp.hlc), Format.replica(stamp.replica), role, row]
            })
            text += "  resolve: edit or delete a held record through Converge (update(table:key:values:), delete(table:key:)), or change the holder\n"
        }
        return text
    }
}

/// How to type a value on the command line so that ``ArgumentValue`` reads it back.
enum ArgumentSpelling {
    static func spell(_ value: Value) -> String {
        switch value {
        case .text(let text)
        where !text.isEmpty && text.uppercased() != "NULL" && Double(text) == nil
            && text.unicodeScalars.allSatisfy({ $0.properties.isAlphabetic || ("0"..."9").contains($0) || "_.-@".unicodeScalars.contains($0) }):
            // Reads back as this text in any column: no quotes needed.
            return text
        case .text(let text):
            // Quoted for the shell (single quotes) around the SQL-quoted text.
            let sql = "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
            return "\"" + sql.replacingOccurrences(of: "\"", with: "\\\"") + "\""
        default: return value.description
        }
    }
}
