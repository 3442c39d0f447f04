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

/// `converge conflicts`: the open conflicts on critical fields.
struct ConflictsReport: InspectorReport {
    struct Entry: Encodable {
        var table: String
        var key: JSONValue
        var column: String
        var siblings: [SiblingReport]
    }

    var conflicts: [Entry]

    static func make(_ file: InspectedFile) throws -> ConflictsReport {
        // The store's own query only reads (local writes close conflicts as they happen).
        let conflicts = try file.read { db in try ReplicatedDatabase.conflicts(db) }
        return ConflictsReport(conflicts: conflicts.compactMap(\.field).map { conflict in
            Entry(table: conflict.table, key: JSONValue(conflict.key), column: conflict.column, siblings: siblings(conflict.siblings))
        })
    }

    static func siblings(_ siblings: [MVRegister.Sibling]) -> [SiblingReport] {
        siblings.enumerated().map { index, sibling in
            SiblingReport(value: JSONValue(sibling.value), stamp: JSONStamp(sibling.stamp), shown: index == siblings.count - 1)
        }
    }

    var human: String {
        guard !conflicts.isEmpty else { return "no open conflicts\n" }
        var text = "\(conflicts.count) open conflict\(conflicts.count == 1 ? "" : "s")\n"
        for conflict in conflicts {
            text += "\n\(conflict.table) \(Format.value(conflict.key.value)) \(conflict.column): \(Set(conflict.siblings.map(\.value)).count) values\n"
            text += Format.table(["VALUE", "WRITTEN", "BY", ""], conflict.siblings.map { sibling in
                let stamp = Stamp(hlc: HLC(rawValue: sibling.stamp.hlc), replica: ReplicaID(sibling.stamp.replica) ?? .zero)
                return [Format.value(sibling.value.value), Format.time(stamp.hlc), Format.replica(stamp.replica), sibling.shown ? "shown" : ""]
            })
            text += "  resolve: converge resolve DATABASE \(conflict.table) \(ArgumentSpelling.spell(conflict.key.value)) \(conflict.column) VALUE\n"
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
