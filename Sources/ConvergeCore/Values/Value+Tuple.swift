extension Value {
    /// The bytes of a tuple of values, for stores that index them: equal tuples have equal
    /// bytes and different tuples different bytes (each value is its storage class, then its
    /// payload, lengths first), so a claim's values or a record key can be a column of an
    /// index in SQLite or PostgreSQL.
    public static func encodeTuple(_ values: [Value]) -> [UInt8] {
        var bytes = [UInt8]()
        func append(_ integer: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: integer >> UInt64(shift))) } }
        for value in values {
            bytes.append(UInt8(value.storageClassRank))
            switch value {
            case .null: break
            case .integer(let integer): append(UInt64(bitPattern: integer))
            case .real(let real): append(real.bitPattern)
            case .text(let text): append(UInt64(text.utf8.count)); bytes.append(contentsOf: text.utf8)
            case .blob(let blob): append(UInt64(blob.count)); bytes.append(contentsOf: blob)
            }
        }
        return bytes
    }

    /// Reads the bytes of ``encodeTuple(_:)``.
    public static func decodeTuple(_ bytes: [UInt8]) throws(RecordBlobCorruption) -> [Value] {
        var offset = 0
        let corrupt = RecordBlobCorruption("unreadable value tuple")
        func integer() throws(RecordBlobCorruption) -> UInt64 {
            guard offset + 8 <= bytes.count else { throw corrupt }
            defer { offset += 8 }
            return bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
        }
        func run() throws(RecordBlobCorruption) -> [UInt8] {
            let count = try integer()
            guard count <= UInt64(bytes.count - offset) else { throw corrupt }
            defer { offset += Int(count) }
            return Array(bytes[offset..<offset + Int(count)])
        }
        var values = [Value]()
        while offset < bytes.count {
            let rank = bytes[offset]
            offset += 1
            switch rank {
            case 0: values.append(.null)
            case 1: values.append(.integer(Int64(bitPattern: try integer())))
            case 2: values.append(.real(Double(bitPattern: try integer())))
            case 3: values.append(.text(String(decoding: try run(), as: UTF8.self)))
            case 4: values.append(.blob(try run()))
            default: throw corrupt
            }
        }
        return values
    }
}
