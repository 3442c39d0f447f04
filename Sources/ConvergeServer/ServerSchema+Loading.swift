import ConvergeCore
import Foundation

/// Why a server schema file was refused: where in the file, and what was expected.
public struct ServerSchemaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file, when the schema came from one.
    public var file: String?
    /// Where in the JSON: `tables[1].policies.quantity`, or empty for the whole document.
    public var path: String
    /// What was wrong and what was expected.
    public var message: String

    public var description: String {
        "schema\(file.map { " \($0)" } ?? ""): \(path.isEmpty ? "" : "at \(path): ")\(message)"
    }
}

extension ServerSchema {
    /// Reads a schema file (the `--schema` option), explaining a malformed one: which table,
    /// which key, what was expected, instead of a bare decoding error.
    ///
    /// Besides the JSON's shape it checks what the server relies on: table names are plain
    /// identifiers, unique, and not Converge's own; `create` creates that very table; policy
    /// keys are identifiers; unique indexes have identifiers for names (not Converge's or
    /// SQLite's own, each name once) and one or more identifiers for columns; `encrypted`
    /// columns are identifiers, neither `"authority"` nor in a unique index.
    public static func load(from url: URL) throws(ServerSchemaError) -> ServerSchema {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ServerSchemaError(file: url.path, path: "", message: "cannot be read: \(error.localizedDescription)")
        }
        do {
            return try parse(data)
        } catch {
            throw ServerSchemaError(file: url.path, path: error.path, message: error.message)
        }
    }

    /// ``load(from:)`` for bytes in memory.
    public static func parse(_ data: Data) throws(ServerSchemaError) -> ServerSchema {
        let schema: ServerSchema
        do {
            schema = try JSONDecoder().decode(ServerSchema.self, from: data)
        } catch let error as DecodingError {
            throw explain(error)
        } catch {
            throw ServerSchemaError(path: "", message: "\(error)")
        }
        var names = Set<String>(), indexNames = Set<String>()
        for (index, table) in schema.tables.enumerated() {
            let path = "tables[\(index)]"
            guard isIdentifier(table.name) else {
                throw ServerSchemaError(path: "\(path).name", message: "\"\(table.name)\" is not a plain identifier (letters, digits and _, not starting with a digit)")
            }
            let lower = table.name.lowercased()
            guard !lower.hasPrefix("converge_"), !lower.hasPrefix("sqlite_") else {
                throw ServerSchemaError(path: "\(path).name", message: "\"\(table.name)\" is reserved (converge_ and sqlite_ names are the store's own)")
            }
            guard names.insert(lower).inserted else {
                throw ServerSchemaError(path: "\(path).name", message: "table \"\(table.name)\" is declared twice (names are case-insensitive)")
            }
            if !creates(table.create, table: table.name) {
                throw ServerSchemaError(path: "\(path).create", message: "expected a CREATE TABLE statement for table \(table.name), got \"\(table.create.prefix(60))\"")
            }
            for column in table.policies.keys.sorted() where !isIdentifier(column) {
                throw ServerSchemaError(path: "\(path).policies", message: "\"\(column)\" is not a column name")
            }
            for (position, index) in table.uniqueIndexes.enumerated() {
                let at = "\(path).uniqueIndexes[\(position)]"
                let lower = index.name.lowercased()
                guard isIdentifier(index.name), !lower.hasPrefix("converge_"), !lower.hasPrefix("sqlite_") else {
                    throw ServerSchemaError(path: "\(at).name", message: "\"\(index.name)\" is not a plain identifier, or is reserved (converge_ and sqlite_ names are the store's own)")
                }
                guard indexNames.insert(lower).inserted else {
                    throw ServerSchemaError(path: "\(at).name", message: "index \"\(index.name)\" is declared twice (names are case-insensitive, across tables)")
                }
                guard !index.columns.isEmpty else { throw ServerSchemaError(path: "\(at).columns", message: "expected one column or more") }
                for column in index.columns where !isIdentifier(column) {
                    throw ServerSchemaError(path: "\(at).columns", message: "\"\(column)\" is not a column name")
                }
            }
            // DESIGN §11: the server never holds the key, so nothing it decides may read an
            // encrypted column.
            for (position, column) in table.encrypted.enumerated() {
                let at = "\(path).encrypted[\(position)]"
                guard isIdentifier(column) else { throw ServerSchemaError(path: at, message: "\"\(column)\" is not a column name") }
                if table.policies[column] == .authority {
                    throw ServerSchemaError(
                        path: at, message: "column \(column) is encrypted and \"authority\": the server cannot resolve values it cannot read (use lww or critical)")
                }
                if let index = table.uniqueIndexes.first(where: { $0.columns.contains(column) }) {
                    throw ServerSchemaError(
                        path: at, message: "column \(column) is encrypted and in unique index \(index.name): the server would compare ciphertexts, which never collide")
                }
            }
        }
        return schema
    }

    private static func explain(_ error: DecodingError) -> ServerSchemaError {
        func path(_ codingPath: [any CodingKey]) -> String {
            var text = ""
            for key in codingPath {
                if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return text
        }
        switch error {
        case .keyNotFound(let key, let context):
            let at = path(context.codingPath)
            return ServerSchemaError(path: at, message: "missing key \"\(key.stringValue)\"\(expectation(for: key.stringValue, in: context.codingPath))")
        case .typeMismatch(let type, let context):
            return ServerSchemaError(path: path(context.codingPath), message: "expected \(describe(type, context.codingPath))")
        case .valueNotFound(let type, let context):
            return ServerSchemaError(path: path(context.codingPath), message: "expected \(describe(type, context.codingPath)), got null")
        case .dataCorrupted(let context):
            let at = path(context.codingPath)
            if let last = context.codingPath.last?.stringValue, ["deletePolicy"].contains(last) || context.codingPath.dropLast().last?.stringValue == "policies" {
                let allowed = last == "deletePolicy" ? "updateWins or deleteWins" : "lww, critical or authority"
                return ServerSchemaError(path: at, message: "expected \(allowed)")
            }
            if context.codingPath.isEmpty { return ServerSchemaError(path: "", message: "not valid JSON (\(context.debugDescription))") }
            return ServerSchemaError(path: at, message: context.debugDescription)
        @unknown default:
            return ServerSchemaError(path: "", message: "\(error)")
        }
    }

    private static func expectation(for key: String, in codingPath: [any CodingKey]) -> String {
        if codingPath.contains(where: { $0.stringValue == "uniqueIndexes" }) {
            return key == "name" ? " (the index's name)" : key == "columns" ? " (the indexed columns, in index order)" : ""
        }
        switch key {
        case "tables": return " (the document is {\"tables\": [...]})"
        case "name": return " (the table's name)"
        case "create": return " (the CREATE TABLE statement the server runs when the table does not exist)"
        default: return ""
        }
    }

    private static func describe(_ type: Any.Type, _ codingPath: [any CodingKey]) -> String {
        let last = codingPath.last?.stringValue
        if last == "tables" { return "an array of tables" }
        if last == "policies" { return "an object of column names to \"lww\", \"critical\" or \"authority\"" }
        if last == "uniqueIndexes" { return "an array of indexes ({\"name\": ..., \"columns\": [...]})" }
        if type == String.self { return "a string" }
        if type is [Any].Type { return "an array" }
        if type is [String: Any].Type { return "an object" }
        return "\(type)"
    }

    private static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 128, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return name.utf8.allSatisfy { byte in
            byte == UInt8(ascii: "_") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
        }
    }

    /// Whether `sql` reads as `CREATE TABLE [IF NOT EXISTS] <table>(...`.
    private static func creates(_ sql: String, table: String) -> Bool {
        var words = sql.lowercased().split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "(" }).map(String.init)
        guard words.count >= 3, words[0] == "create", words[1] == "table" else { return false }
        words.removeFirst(2)
        if words.count >= 3, words[0] == "if", words[1] == "not", words[2] == "exists" { words.removeFirst(3) }
        guard let name = words.first else { return false }
        return name.trimmingCharacters(in: CharacterSet(charactersIn: "\"`[]")) == table.lowercased()
    }
}
