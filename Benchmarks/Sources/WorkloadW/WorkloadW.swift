import ConvergeCore

/// Workload W as an app writes it through SQL: 100,000 rows (by default) of a random
/// UUID v4 text key and five value columns (two texts, two integers, a real), and one
/// random single-field update per row. Seeded: every run writes the same values.
public struct WorkloadW: Sendable {
    /// The app table.
    public static let createTable = """
        CREATE TABLE items(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', qty INTEGER NOT NULL DEFAULT 0,
            price REAL NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '', updated INTEGER NOT NULL DEFAULT 0)
        """
    public static let table = "items"
    /// The value columns, in the order of ``Item``'s fields and of ``Update/column``.
    public static let columns = ["name", "qty", "price", "note", "updated"]
    /// 2025-11-24T16:00:00Z, so timestamps have real widths.
    public static let baseTime: Int64 = 1_764_000_000_000

    public struct Item: Sendable, Hashable {
        public var id: String, name: String, qty: Int64, price: Double, note: String, updated: Int64
    }

    /// A write of one field (`column` indexes ``WorkloadW/columns``) of row number `row`;
    /// the value derives from `seed` (see ``WorkloadW/updateValue(column:seed:)``).
    public struct Update: Sendable, Hashable {
        public var row: Int, column: Int, seed: UInt64
    }

    public let items: [Item]
    public let updates: [Update]

    /// The rows, then one update per row, drawn from one `SeededGenerator`.
    public init(rows: Int, seed: UInt64 = 42) {
        var rng = SeededGenerator(seed: seed)
        func letters(_ count: Int) -> String {
            String((0..<count).map { _ in Character(Unicode.Scalar(UInt8(97 + rng.below(26)))) })
        }
        func uuid() -> String {
            var bytes = (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes[6] = bytes[6] & 0x0F | 0x40
            bytes[8] = bytes[8] & 0x3F | 0x80
            return ReplicaID(bytes: bytes)!.description.uppercased()
        }
        var items = [Item]()
        items.reserveCapacity(rows)
        for index in 0..<rows {
            let id = uuid(), name = letters(12), qty = Int64(rng.below(1_001)), price = Double(rng.below(100_000)) / 100
            items.append(Item(id: id, name: name, qty: qty, price: price, note: letters(24), updated: Self.baseTime + Int64(index)))
        }
        self.items = items
        updates = (0..<rows).map { _ in Update(row: rng.below(rows), column: rng.below(5), seed: rng.next()) }
    }

    /// The value an update writes into `column`.
    public static func updateValue(column: Int, seed: UInt64) -> Value {
        switch column {
        case 0: return .text("u" + String(seed % 1_000_000))
        case 1: return .integer(Int64(seed % 1_001))
        case 2: return .real(Double(seed % 100_000) / 100)
        case 3: return .text("n" + String(seed))
        default: return .integer(baseTime + Int64(seed % 1_000_000))
        }
    }
}
