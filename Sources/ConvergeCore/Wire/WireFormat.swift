/// Constants of wire format version 1.
///
/// ```
/// changeset := magic "CVGS" · version 1 · replicas · tables · crc32c (4 bytes, LE)
/// replicas  := varint n · n × 16-byte ReplicaID (big-endian)
/// tables    := varint n · n × (string name · varint c · c × string column · varint r · r × record)
/// record    := value key · flags (bit 0: membership present) · [membership] · varint f · f × field
/// membership:= varint d · d × stamp · context
/// context   := varint n · n × stamp            (replica, high-water mark)
/// field     := varint (column << 2 | kind) · body
///              kind 0: lww (value · stamp); 1: mv; 2: incarnated (varint n · n × (stamp · kind · register))
/// mv        := varint s · s × (stamp · value) · context
/// stamp     := varint 0 (same as previous) | varint (replica index + 1) · zigzag varint (hlc − previous hlc)
/// value     := tag · payload; tags in `ValueTag`
/// ```
/// Stamps are delta-encoded against the previous stamp in the stream, so fields written by
/// one transaction cost one byte each for their stamp.
public enum WireFormat {
    /// The four bytes every changeset starts with: `CVGS`.
    public static let magic: [UInt8] = Array("CVGS".utf8)
    /// The format version this encoder writes and this decoder reads.
    public static let version: UInt8 = 1
    /// Magic, version and checksum.
    public static let overheadBytes = 4 + 1 + 4

    enum ValueTag: UInt8 {
        case null = 0
        case integer = 1
        case real = 2
        case text = 3
        case blob = 4
        /// A real that is exactly `mantissa / 10^scale`: scale byte, zigzag varint mantissa.
        case decimal = 5
        /// Text in canonical lowercase UUID form, as its 16 bytes.
        case uuidLower = 6
        /// Text in canonical uppercase UUID form, as its 16 bytes.
        case uuidUpper = 7
    }

    enum FieldKind: UInt64 {
        case lww = 0
        case multi = 1
        case incarnated = 2
    }

    static let decimalScaleMax: UInt8 = 15

    static let powersOfTen: [Double] = (0...Int(decimalScaleMax)).map { exponent in
        var value = 1.0
        for _ in 0..<exponent { value *= 10 }
        return value
    }
}
