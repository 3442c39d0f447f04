/// One field's value, with SQLite's five storage classes.
///
/// Equality is exact, as the bytes SQLite would store: text compares by its UTF-8 bytes
/// (not Swift's canonical equivalence, under which `"é"` precomposed and decomposed are
/// equal but would be stored differently) and reals by their bit pattern.
///
/// The order `null < integer < real < text < blob`, then by value (reals by IEEE-754
/// `totalOrder`, text and blobs by bytes), is total; it breaks ties between two writes
/// that carry the same stamp, which only corruption can produce.
public enum Value: Sendable, Codable, CustomStringConvertible {
    /// SQL `NULL`.
    case null
    /// A 64-bit signed integer.
    case integer(Int64)
    /// An IEEE-754 double (SQLite stores NaN as NULL).
    case real(Double)
    /// UTF-8 text.
    case text(String)
    /// Bytes.
    case blob([UInt8])

    /// The rank of the storage class in the tie-break order.
    @inlinable
    public var storageClassRank: Int {
        switch self {
        case .null: return 0
        case .integer: return 1
        case .real: return 2
        case .text: return 3
        case .blob: return 4
        }
    }

    /// SQLite stores a NaN as NULL, so a NaN value is kept as `.null`.
    public static func real(normalizing value: Double) -> Value {
        value.isNaN ? .null : .real(value)
    }

    public var description: String {
        switch self {
        case .null: return "NULL"
        case .integer(let value): return String(value)
        case .real(let value): return String(value)
        case .text(let value): return "'\(value)'"
        case .blob(let bytes): return "x'" + bytes.map { hexByte($0) }.joined() + "'"
        }
    }
}

extension Value: Hashable {
    public static func == (lhs: Value, rhs: Value) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.integer(let a), .integer(let b)): return a == b
        case (.real(let a), .real(let b)): return a.bitPattern == b.bitPattern
        case (.text(let a), .text(let b)): return utf8Equal(a, b)
        case (.blob(let a), .blob(let b)): return a == b
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storageClassRank)
        switch self {
        case .null: break
        case .integer(let value): hasher.combine(value)
        case .real(let value): hasher.combine(value.bitPattern)
        case .text(var value):
            hasher.combine(value.utf8.count)
            value.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        case .blob(let bytes): hasher.combine(bytes)
        }
    }
}

extension Value: Comparable {
    public static func < (lhs: Value, rhs: Value) -> Bool {
        let (left, right) = (lhs.storageClassRank, rhs.storageClassRank)
        if left != right { return left < right }
        switch (lhs, rhs) {
        case (.integer(let a), .integer(let b)): return a < b
        case (.real(let a), .real(let b)): return a.isTotallyOrdered(belowOrEqualTo: b) && a.bitPattern != b.bitPattern
        case (.text(let a), .text(let b)): return utf8Less(a, b)
        case (.blob(let a), .blob(let b)): return a.lexicographicallyPrecedes(b)
        default: return false
        }
    }
}

func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}
