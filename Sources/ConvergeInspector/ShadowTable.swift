import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// A scratch in-memory table with an app table's declared column types and defaults: a row
/// written into it comes back exactly as SQLite stores it in the app table.
///
/// SQLite itself applies the column affinities (text `'5'` into an INTEGER column is stored
/// as 5) and evaluates the defaults, so the inspector need not reimplement either: `verify`
/// builds the expected row here, and `resolve`/`history` read their command-line values
/// through it.
final class ShadowTable {
    struct Column {
        var name: String
        /// As declared (`VARCHAR(20)`, `INTEGER`, empty).
        var type: String
        var defaultSQL: String?
    }

    let columns: [Column]
    private let queue: DatabaseQueue

    init(_ columns: [Column]) throws {
        self.columns = columns
        queue = try DatabaseQueue()
        let definitions = columns.indices.map { index in
            let column = columns[index]
            return "c\(index) \(column.type)" + (column.defaultSQL.map { " DEFAULT (\($0))" } ?? "")
        }
        // A leading column keeps the table valid when the app table has no value columns.
        try queue.write { db in try db.execute(sql: "CREATE TABLE shadow(id INTEGER PRIMARY KEY\(definitions.map { ", \($0)" }.joined()))") }
    }

    /// The shadow of `table`'s columns named `names`, in that order.
    static func of(_ db: Database, table: String, columns names: [String]) throws -> ShadowTable {
        let declared = Dictionary(try db.columns(in: table).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        // In a STRICT table `ANY` keeps every value as given; in this ordinary shadow table
        // it would mean NUMERIC affinity. No declared type keeps values as given here too.
        // (`pragma_table_list` needs SQLite 3.37; older ones have no STRICT tables.)
        let strict = (try? Bool.fetchOne(db, sql: "SELECT strict FROM pragma_table_list WHERE schema = 'main' AND name = ?", arguments: [table])) ?? false
        return try ShadowTable(names.map { name in
            var type = declared[name]?.type ?? ""
            if strict && type.uppercased() == "ANY" { type = "" }
            return Column(name: name, type: type, defaultSQL: declared[name]?.defaultValueSQL)
        })
    }

    /// `values` (one per column; `nil`: not written, the default applies) as stored.
    func stored(_ values: [Value?]) throws -> [Value] {
        precondition(values.count == columns.count, "one value per column")
        return try queue.write { db in
            let present = values.indices.filter { values[$0] != nil }
            if present.isEmpty {
                try db.execute(sql: "INSERT INTO shadow DEFAULT VALUES")
            } else {
                try db.execute(
                    sql: "INSERT INTO shadow(\(present.map { "c\($0)" }.joined(separator: ", "))) VALUES (\(present.map { _ in "?" }.joined(separator: ", ")))",
                    arguments: StatementArguments(present.map { values[$0]!.databaseValue }))
            }
            let id = db.lastInsertedRowID
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM shadow WHERE id = ?", arguments: [id]) else { return [] }
            try db.execute(sql: "DELETE FROM shadow WHERE id = ?", arguments: [id])
            return (0..<columns.count).map { Value(row[$0 + 1] as DatabaseValue) }
        }
    }

    /// Whether a column's default may differ from one evaluation to the next (a time or a
    /// function call): then a column that no write reached cannot be checked.
    static func isVolatileDefault(_ sql: String?) -> Bool {
        guard let sql else { return false }
        // String literals may hold anything; only the expression around them matters.
        let outside = sql.split(separator: "'", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 0 }.map(\.element).joined(separator: " ")
        let upper = outside.uppercased()
        if upper.contains("CURRENT_") { return true }
        // A function call: a name followed by an opening parenthesis.
        return upper.range(of: "[A-Z_][A-Z0-9_]*\\s*\\(", options: .regularExpression) != nil
    }
}

/// A value typed on the command line, read as SQLite would store it in its column.
///
/// `NULL` is null, `x'00ff'` a blob, `'text'` always text (`''` inside for a quote);
/// anything else is text given the column's affinity: `3` is an integer in an INTEGER
/// column and text in a TEXT one. In a column without a declared type (which keeps any
/// value as given) a number is read as a number, as the sqlite3 shell reads a literal.
enum ArgumentValue {
    static func parse(_ text: String, declaredType: String) throws -> Value {
        if text.uppercased() == "NULL" { return .null }
        if text.count >= 3, text.first == "x" || text.first == "X", text.dropFirst().first == "'", text.last == "'" {
            let hex = Array(text.utf8.dropFirst(2).dropLast())
            guard hex.count % 2 == 0, let bytes = decodeHex(hex) else {
                throw InspectorError(.badArgument, "\(text) is not a blob literal: x'…' needs an even number of hex digits")
            }
            return .blob(bytes)
        }
        if text.count >= 2, text.first == "'", text.last == "'" {
            let inner = String(text.dropFirst().dropLast())
            return .text(inner.replacingOccurrences(of: "''", with: "'"))
        }
        let type = affinity(of: declaredType) == .none ? "NUMERIC" : declaredType
        let shadow = try ShadowTable([ShadowTable.Column(name: "value", type: type, defaultSQL: nil)])
        return try shadow.stored([.text(text)])[0]
    }

    enum Affinity { case integer, text, none, real, numeric }

    /// SQLite's rules for a declared type's affinity (the first that matches).
    static func affinity(of declaredType: String) -> Affinity {
        let type = declaredType.uppercased()
        if type.contains("INT") { return .integer }
        if type.contains("CHAR") || type.contains("CLOB") || type.contains("TEXT") { return .text }
        if type.contains("BLOB") || type.isEmpty { return .none }
        if type.contains("REAL") || type.contains("FLOA") || type.contains("DOUB") { return .real }
        return .numeric
    }

    private static func decodeHex(_ digits: [UInt8]) -> [UInt8]? {
        func nibble(_ unit: UInt8) -> UInt8? {
            switch unit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): unit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): unit - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): unit - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes = [UInt8]()
        var index = 0
        while index < digits.count {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}
