import ConvergeCore
import Foundation

/// How values, stamps and replicas read in human output.
enum Format {
    /// The HLC's physical part as ISO-8601 UTC with milliseconds, and its counter when it
    /// is not zero (`2023-11-14T22:13:20.000Z #2`).
    static func time(_ hlc: HLC) -> String {
        let text = iso8601(milliseconds: hlc.milliseconds)
        return hlc.counter == 0 ? text : "\(text) #\(hlc.counter)"
    }

    static func iso8601(milliseconds: UInt64) -> String {
        // A formatter per call: the inspector formats a few hundred at most, and a shared
        // one would need a lock to be Sendable.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1_000))
    }

    /// The first 8 hex digits: enough to tell a handful of devices apart; JSON has the full id.
    static func replica(_ id: ReplicaID) -> String { String(id.uuidString().prefix(8)) }

    static func stamp(_ stamp: Stamp) -> String { "\(time(stamp.hlc)) by \(replica(stamp.replica))" }

    /// A value as SQL would spell it, long ones cut (JSON has them whole).
    static func value(_ value: Value?) -> String {
        guard let value else { return "(no write)" }
        let text = value.description
        let limit = 60
        guard text.count > limit else { return text }
        let size = switch value {
        case .text(let string): "\(string.utf8.count) bytes"
        case .blob(let bytes): "\(bytes.count) bytes"
        default: ""
        }
        return String(text.prefix(limit)) + "… (\(size))"
    }

    static func storageClass(_ value: Value) -> String {
        switch value {
        case .null: "NULL"
        case .integer: "INTEGER"
        case .real: "REAL"
        case .text: "TEXT"
        case .blob: "BLOB"
        }
    }

    static func bytes(_ count: Int) -> String {
        if count < 1024 { return "\(count) B" }
        if count < 1024 * 1024 { return String(format: "%.1f KiB", Double(count) / 1024) }
        return String(format: "%.1f MiB", Double(count) / (1024 * 1024))
    }

    static func policy(_ policy: ColumnPolicy) -> String {
        switch policy {
        case .lww: "lww"
        case .critical: "critical"
        case .authority: "authority"
        }
    }

    /// Rows as aligned columns (the last column is not padded), indented by `indent`.
    static func table(_ header: [String], _ rows: [[String]], indent: String = "  ") -> String {
        let all = [header] + rows
        let count = header.count
        var widths = Array(repeating: 0, count: count)
        for row in all {
            for (index, cell) in row.enumerated() where index < count { widths[index] = max(widths[index], cell.count) }
        }
        return all.map { row in
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            let line = indent + cells.joined(separator: "  ")
            return String(line.reversed().drop { $0 == " " }.reversed())
        }.joined(separator: "\n") + "\n"
    }
}

/// JSON for scripts: sorted keys (stable output), snake_case names, values typed.
enum JSONOutput {
    static func render(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
        } catch {
            // Only a non-finite double could fail, and ``JSONValue`` spells those as text.
            preconditionFailure("unencodable report: \(error)")
        }
    }
}

/// A value with its storage class: `{"type": "integer", "value": 3}`; blobs as hex, and
/// non-finite reals (SQLite stores them) as `"inf"`, `"-inf"`.
struct JSONValue: Encodable, Hashable {
    let value: Value

    init(_ value: Value) { self.value = value }

    private enum Keys: String, CodingKey { case type, value }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(Format.storageClass(value).lowercased(), forKey: .type)
        switch value {
        case .null: break
        case .integer(let number): try container.encode(number, forKey: .value)
        case .real(let number):
            if number.isFinite { try container.encode(number, forKey: .value) } else { try container.encode(number > 0 ? "inf" : "-inf", forKey: .value) }
        case .text(let text): try container.encode(text, forKey: .value)
        case .blob(let bytes): try container.encode(bytes.map { String(format: "%02x", $0) }.joined(), forKey: .value)
        }
    }
}

/// A clock reading: the raw 64 bits, and the time and counter they hold.
struct JSONTime: Encodable, Hashable {
    var hlc: UInt64
    var time: String
    var counter: UInt16

    init(_ hlc: HLC) {
        self.hlc = hlc.rawValue
        time = Format.iso8601(milliseconds: hlc.milliseconds)
        counter = hlc.counter
    }
}

/// A stamp: the clock reading and the full replica id.
struct JSONStamp: Encodable, Hashable {
    var hlc: UInt64
    var time: String
    var counter: UInt16
    var replica: String

    init(_ stamp: Stamp) {
        hlc = stamp.hlc.rawValue
        time = Format.iso8601(milliseconds: stamp.hlc.milliseconds)
        counter = stamp.hlc.counter
        replica = stamp.replica.uuidString()
    }
}
