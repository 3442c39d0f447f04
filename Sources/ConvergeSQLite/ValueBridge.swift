import ConvergeCore
import Foundation
import GRDB

extension Value {
    /// The value as GRDB binds it (for statement arguments).
    public var databaseValue: DatabaseValue {
        switch self {
        case .null: return .null
        case .integer(let value): return value.databaseValue
        case .real(let value): return value.databaseValue
        case .text(let value): return value.databaseValue
        case .blob(let bytes): return Data(bytes).databaseValue
        }
    }

    /// The value SQLite stored, exactly (a NaN never comes back: SQLite stores it as NULL).
    public init(_ databaseValue: DatabaseValue) {
        switch databaseValue.storage {
        case .null: self = .null
        case .int64(let value): self = .integer(value)
        case .double(let value): self = .real(normalizing: value)
        case .string(let value): self = .text(value)
        case .blob(let data): self = .blob([UInt8](data))
        }
    }

    var storageClassName: String {
        switch self {
        case .null: return "NULL"
        case .integer: return "INTEGER"
        case .real: return "REAL"
        case .text: return "TEXT"
        case .blob: return "BLOB"
        }
    }
}

/// Quotes an identifier for SQL.
func quoted(_ identifier: String) -> String {
    "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// A plain SQL identifier (letters, digits, underscore; not starting with a digit),
/// at most 128 bytes: what Converge accepts as a table or column name from outside.
func isPlainIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, name.utf8.count <= 128 else { return false }
    guard first == UInt8(ascii: "_") || (first | 0x20 >= UInt8(ascii: "a") && first | 0x20 <= UInt8(ascii: "z")) else { return false }
    return name.utf8.allSatisfy { unit in
        unit == UInt8(ascii: "_") || (unit >= UInt8(ascii: "0") && unit <= UInt8(ascii: "9"))
            || (unit | 0x20 >= UInt8(ascii: "a") && unit | 0x20 <= UInt8(ascii: "z"))
    }
}

/// Names Converge reserves: its own metadata and SQLite's internal tables.
func isReservedName(_ name: String) -> Bool {
    let lower = name.lowercased()
    return lower.hasPrefix("converge_") || lower.hasPrefix("sqlite_")
}

extension Array where Element == UInt8 {
    /// The bytes as a SQLite blob.
    var databaseValue: DatabaseValue { Data(self).databaseValue }
}

extension Row {
    /// The bytes of a blob column (empty for anything else).
    func bytes(_ column: String) -> [UInt8] {
        let value: DatabaseValue = self[column]
        if case .blob(let data) = value.storage { return [UInt8](data) }
        return []
    }
}
