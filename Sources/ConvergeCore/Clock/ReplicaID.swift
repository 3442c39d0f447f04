/// The identity of one replica: 128 random bits (a UUID v4), made on first open.
///
/// Replica identities break ties between stamps with equal clocks, so two replicas must
/// never share one. They are ordered as unsigned 128-bit integers in big-endian order,
/// which is the order of `high` then `low`.
public struct ReplicaID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The most significant 64 bits.
    public let high: UInt64
    /// The least significant 64 bits.
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A fresh random identity (UUID version 4 layout) drawn from `generator`.
    public init<G: RandomNumberGenerator>(using generator: inout G) {
        let high = (generator.next() & ~0xF000) | 0x4000            // version 4
        let low = (generator.next() & ~(0xC000 << 48)) | (0x8000 << 48) // RFC 4122 variant
        self.init(high: high, low: low)
    }

    /// A fresh random identity from the system's generator.
    public static func random() -> ReplicaID {
        var generator = SystemRandomNumberGenerator()
        return ReplicaID(using: &generator)
    }

    /// The 16 bytes in big-endian order, as a UUID lays them out.
    public var bytes: [UInt8] {
        var result = [UInt8]()
        result.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) { result.append(UInt8(truncatingIfNeeded: high >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { result.append(UInt8(truncatingIfNeeded: low >> UInt64(shift))) }
        return result
    }

    /// Reads 16 big-endian bytes; `nil` if `bytes` does not hold exactly 16.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// Parses the canonical UUID text form (`8-4-4-4-12` hexadecimal digits, either case).
    public init?(_ text: String) {
        var digits = [UInt8]()
        digits.reserveCapacity(32)
        for (offset, unit) in text.utf8.enumerated() {
            if [8, 13, 18, 23].contains(offset) {
                guard unit == UInt8(ascii: "-") else { return nil }
                continue
            }
            guard let digit = hexDigitValue(unit) else { return nil }
            digits.append(digit)
        }
        guard digits.count == 32, text.utf8.count == 36 else { return nil }
        var bytes = [UInt8]()
        for pair in stride(from: 0, to: 32, by: 2) { bytes.append(digits[pair] << 4 | digits[pair + 1]) }
        self.init(bytes: bytes)
    }

    /// The canonical lowercase UUID text form.
    public var description: String {
        let hex = bytes.map { byte -> String in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
        }
        let groups = [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }
        return groups.joined(separator: "-")
    }

    public static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// The all-zero identity. No real replica has it (version 4 sets bits), so it marks
    /// "no replica" where a placeholder is needed.
    public static let zero = ReplicaID(high: 0, low: 0)
}

@inline(__always)
func hexDigitValue(_ unit: UInt8) -> UInt8? {
    switch unit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return unit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return unit - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return unit - UInt8(ascii: "A") + 10
    default: return nil
    }
}
