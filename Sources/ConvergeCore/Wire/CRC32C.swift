/// CRC-32C (Castagnoli), the checksum that ends every encoded changeset and state blob.
///
/// Chosen over CRC-32 for its better error detection on short messages; reflected
/// polynomial `0x82F63B78`, initial and final XOR `0xFFFFFFFF`. Computed eight bytes at a
/// step ("slicing by 8"): every metadata write checksums its blob, so the byte-at-a-time
/// loop showed in the store's profile.
public enum CRC32C {
    /// `tables[k][b]`: the CRC of byte `b` followed by `k` zero bytes.
    static let tables: [UInt32] = {
        var result = [UInt32](repeating: 0, count: 8 * 256)
        for index in 0..<256 {
            var crc = UInt32(index)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            result[index] = crc
        }
        for slice in 1..<8 {
            for index in 0..<256 {
                let previous = result[(slice - 1) * 256 + index]
                result[slice * 256 + index] = (previous >> 8) ^ result[Int(previous & 0xFF)]
            }
        }
        return result
    }()

    /// The checksum of `bytes`.
    ///
    /// - Complexity: O(n)
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        if let crc = bytes.withContiguousStorageIfAvailable({ update(0xFFFF_FFFF, $0) }) { return crc ^ 0xFFFF_FFFF }
        return update(0xFFFF_FFFF, Array(bytes)) ^ 0xFFFF_FFFF
    }

    private static func update(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { update(crc, $0) }
    }

    private static func update(_ start: UInt32, _ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        tables.withUnsafeBufferPointer { t in
            var crc = start
            var index = 0
            let count = bytes.count
            while index + 8 <= count {
                let low = crc ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
                crc = t[7 * 256 + Int(low & 0xFF)] ^ t[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((low >> 16) & 0xFF)] ^ t[4 * 256 + Int(low >> 24)]
                    ^ t[3 * 256 + Int(bytes[index + 4])] ^ t[2 * 256 + Int(bytes[index + 5])]
                    ^ t[256 + Int(bytes[index + 6])] ^ t[Int(bytes[index + 7])]
                index += 8
            }
            while index < count {
                crc = t[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
            return crc
        }
    }
}
