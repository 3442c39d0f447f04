/// Why bytes did not decode as a changeset, and where.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong with the bytes.
    public enum Reason: Sendable, Hashable {
        /// Fewer bytes than magic, version and checksum take.
        case tooShort
        /// The bytes do not start with ``WireFormat/magic``.
        case badMagic
        /// A format version this decoder does not read.
        case unsupportedVersion(UInt8)
        /// The CRC-32C trailer does not match the bytes.
        case checksumMismatch(expected: UInt32, actual: UInt32)
        /// The input ended inside a value.
        case truncated
        /// A varint longer than ten bytes.
        case varintTooLong
        /// A count or length larger than the bytes that remain could hold.
        case countTooLarge(UInt64)
        /// A value or field tag the format does not define.
        case invalidTag(UInt8)
        /// Text that is not valid UTF-8.
        case invalidUTF8
        /// A stamp naming a replica beyond the changeset's replica table.
        case replicaIndexOutOfRange(UInt64)
        /// A field naming a column beyond its table's column list.
        case columnIndexOutOfRange(UInt64)
        /// A clock reading outside the range a stamp may hold.
        case clockOutOfRange(UInt64)
        /// A table listed twice.
        case duplicateTable(String)
        /// Flag bits the format does not define.
        case invalidFlags(UInt8)
        /// Bytes left over after the changeset.
        case trailingBytes(Int)
        /// More than the decoder's ``WireDecoder/Limits`` allow (`limit` is the bound).
        case limitExceeded(WireDecoder.Limit, limit: Int, actual: Int)
    }

    /// What was wrong.
    public let reason: Reason
    /// Byte offset in the input where decoding failed.
    public let offset: Int
    /// What the decoder was reading (for example "record key").
    public let context: String

    /// An error for `reason` at byte `offset`, while reading `context`.
    public init(_ reason: Reason, offset: Int, context: String) {
        self.reason = reason
        self.offset = offset
        self.context = context
    }

    public var description: String { "wire error at byte \(offset) (\(context)): \(reason)" }
}
