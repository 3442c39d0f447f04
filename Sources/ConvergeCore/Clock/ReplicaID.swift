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

    /// The identity with these 128 bits.
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
        var text = text
        guard let parsed = text.withUTF8({ ReplicaID.parse($0).map { ReplicaID(high: $0.0, low: $0.1) } }) else { return nil }
        self = parsed
    }

    /// The 128 bits of a canonical UUID text, with whether its hex digits were all
    /// lowercase (`true`), all uppercase (`false`) or mixed (`nil`: parsed, case mixed).
    static func parse(_ utf8: UnsafeBufferPointer<UInt8>) -> (UInt64, UInt64, isLowercase: Bool?)? {
        guard utf8.count == 36 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        var sawLower = false, sawUpper = false
        var digitIndex = 0
        for offset in 0..<36 {
            let unit = utf8[offset]
            if offset == 8 || offset == 13 || offset == 18 || offset == 23 {
                guard unit == UInt8(ascii: "-") else { return nil }
                continue
            }
            guard let digit = hexDigitValue(unit) else { return nil }
            if unit >= UInt8(ascii: "a") { sawLower = true } else if unit >= UInt8(ascii: "A") { sawUpper = true }
            if digitIndex < 16 { high = high << 4 | UInt64(digit) } else { low = low << 4 | UInt64(digit) }
            digitIndex += 1
        }
        return (high, low, sawLower && sawUpper ? nil : !sawUpper)
    }

    /// The canonical UUID text form, lowercase by default.
    public func uuidString(uppercase: Bool = false) -> String {
        let alphabet: StaticString = uppercase ? "0123456789ABCDEF" : "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { buffer in
            alphabet.withUTF8Buffer { digits in
                var position = 0
                for index in 0..<32 {
                    if index == 8 || index == 12 || index == 16 || index == 20 {
                        buffer[position] = UInt8(ascii: "-")
                        position += 1
                    }
                    let word = index < 16 ? high : low
                    let shift = UInt64(60 - 4 * (index % 16))
                    buffer[position] = digits[Int((word >> shift) & 0xF)]
                    position += 1
                }
            }
            return 36
        }
    }

    /// The canonical lowercase UUID text form.
    public var description: String { uuidString() }

    public static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// The all-zero identity. No real replica has it (version 4 sets bits), so it marks
    /// "no replica" where a placeholder is needed.
    public static let zero = ReplicaID(high: 0, low: 0)
    /// The all-ones identifier (the largest UUID).
    public static let max = ReplicaID(high: .max, low: .max)

    /// Identifiers no replica may take: ``zero`` and ``max`` (`ReplicaID.random()` never
    /// makes either; a sender declaring one is not an honest replica).
    public var isReserved: Bool { self == .zero || self == .max }
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
