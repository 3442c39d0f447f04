/// Why bytes did not decode as a changeset, and where.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case tooShort
        case badMagic
        case unsupportedVersion(UInt8)
        case checksumMismatch(expected: UInt32, actual: UInt32)
        case truncated
        case varintTooLong
        case countTooLarge(UInt64)
        case invalidTag(UInt8)
        case invalidUTF8
        case replicaIndexOutOfRange(UInt64)
        case columnIndexOutOfRange(UInt64)
        case clockOutOfRange(UInt64)
        case duplicateTable(String)
        case invalidFlags(UInt8)
        case trailingBytes(Int)
        /// More than the decoder's ``WireDecoder/Limits`` allow (`limit` is the bound).
        case limitExceeded(WireDecoder.Limit, limit: Int, actual: Int)
    }

    public let reason: Reason
    /// Byte offset in the input where decoding failed.
    public let offset: Int
    /// What the decoder was reading (for example "record key").
    public let context: String

    public init(_ reason: Reason, offset: Int, context: String) {
        self.reason = reason
        self.offset = offset
        self.context = context
    }

    public var description: String { "wire error at byte \(offset) (\(context)): \(reason)" }
}
