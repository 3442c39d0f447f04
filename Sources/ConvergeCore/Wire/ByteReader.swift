/// Bounds-checked reading of untrusted bytes: the one varint and byte reader of the wire
/// format (``WireDecoder``), the metadata blobs (``RecordEntry``) and the sync messages
/// (ConvergeProtocol).
///
/// It never traps and never reads past ``end``; a count is trusted only as far as the
/// bytes left could hold it. Every error names the offset and what was being read.
public struct ByteReader: Sendable {
    /// The bytes being read.
    public let bytes: [UInt8]
    /// The offset of the next byte to read.
    public var position: Int
    /// The offset where reading stops (before a checksum, say).
    public let end: Int

    /// A reader of `bytes` from `position` up to `end` (default: all of them).
    public init(_ bytes: [UInt8], position: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.end = min(end ?? bytes.count, bytes.count)
        self.position = min(max(position, 0), self.end)
    }

    /// The bytes left to read.
    public var remaining: Int { end - position }

    /// Whether every byte up to ``end`` has been read.
    public var isAtEnd: Bool { position == end }

    /// One byte.
    @inlinable
    public mutating func byte(_ context: @autoclosure () -> String) throws(WireError) -> UInt8 {
        guard position < end else { throw WireError(.truncated, offset: position, context: context()) }
        defer { position += 1 }
        return bytes[position]
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    @inlinable
    public mutating func varint(_ context: @autoclosure () -> String) throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < end else { throw WireError(.truncated, offset: position, context: context()) }
            let byte = bytes[position]
            position += 1
            if shift == 63 && byte > 1 { throw WireError(.varintTooLong, offset: start, context: context()) }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw WireError(.varintTooLong, offset: start, context: context()) }
        }
    }

    /// A count of elements that each take at least `minimumBytes` bytes: refused when the
    /// bytes left could not hold that many, so no caller reserves more than the input justifies.
    @inlinable
    public mutating func count(_ context: @autoclosure () -> String, minimumBytes: Int = 1) throws(WireError) -> Int {
        let start = position
        let value = try varint(context())
        guard value <= UInt64(remaining / max(minimumBytes, 1)) else {
            throw WireError(.countTooLarge(value), offset: start, context: context())
        }
        return Int(value)
    }

    /// The next `length` bytes.
    @inlinable
    public mutating func raw(_ length: Int, _ context: @autoclosure () -> String) throws(WireError) -> ArraySlice<UInt8> {
        guard length >= 0, length <= remaining else { throw WireError(.truncated, offset: position, context: context()) }
        defer { position += length }
        return bytes[position..<position + length]
    }

    /// A varint length, then that many bytes.
    public mutating func lengthPrefixed(_ context: @autoclosure () -> String) throws(WireError) -> ArraySlice<UInt8> {
        let length = try count(context())
        return try raw(length, context())
    }

    /// A varint length, then that many bytes of valid UTF-8.
    public mutating func string(_ context: @autoclosure () -> String) throws(WireError) -> String {
        let start = position
        guard let text = String(validating: try lengthPrefixed(context()), as: UTF8.self) else {
            throw WireError(.invalidUTF8, offset: start, context: context())
        }
        return text
    }
}

/// The one varint writer of the encodings (``ByteReader/varint(_:)`` reads it back).
public enum Varint {
    /// Appends `value` to `bytes` as an unsigned LEB128 varint.
    @inlinable
    public static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }
}
