/// One record as a store keeps it: its merge state, and the feed positions at which its
/// membership and each field last changed, so that a feed sends only the parts newer than
/// a cursor (DESIGN §8: the feed is decided once, for every shell).
///
/// Every store that serves a feed (SQLite, PostgreSQL) keeps its records in this shape and
/// in the blob formats of ``RecordEntry/encodeState(_:)`` and
/// ``RecordEntry/encodeSequences()``, so the two backends read and write the same bytes.
public struct RecordEntry: Sendable, Equatable {
    /// The record's merge state.
    public var state: RecordState
    /// The feed position at which the membership last changed.
    public var membershipSequence: UInt64
    /// The feed position at which each field last changed.
    public var fieldSequences: ColumnMap<UInt64>

    /// A record with `state`, last changed at these positions.
    public init(state: RecordState, membershipSequence: UInt64, fieldSequences: ColumnMap<UInt64>) {
        self.state = state
        self.membershipSequence = membershipSequence
        self.fieldSequences = fieldSequences
    }

    /// A record with `state`, last changed at these positions (given as a dictionary).
    public init(state: RecordState, membershipSequence: UInt64, fieldSequences: [String: UInt64]) {
        self.init(state: state, membershipSequence: membershipSequence, fieldSequences: ColumnMap(fieldSequences))
    }

    /// A record never seen: bottom state, position 0.
    public static let empty = RecordEntry(state: RecordState(), membershipSequence: 0, fieldSequences: ColumnMap<UInt64>())

    /// The position at which anything last changed.
    public var sequence: UInt64 { fieldSequences.values.reduce(membershipSequence, max) }

    /// Records that `new` replaced `state` at `sequence`: the parts that differ take it.
    ///
    /// - Complexity: O(f + g) for the fields of the two states: both are in column order,
    ///   and so are the sequences, so one walk pairs them up.
    public mutating func update(to new: RecordState, at sequence: UInt64) {
        if new.membership != state.membership { membershipSequence = sequence }
        var sequences = ColumnMap<UInt64>()
        sequences.reserveCapacity(new.fields.count)
        var old = 0, kept = 0
        for (column, field) in new.fields {
            guard let index = state.fields.index(forKey: column, advancing: &old), state.fields.values[index] == field else {
                sequences.append(column, sequence)
                continue
            }
            // Unchanged: the field keeps the position it had (if it had one).
            if let index = fieldSequences.index(forKey: column, advancing: &kept) {
                sequences.append(column, fieldSequences.values[index])
            }
        }
        fieldSequences = sequences
        state = new
    }

    /// The delta of the parts changed after `cursor`.
    public func delta(after cursor: UInt64) -> RecordState {
        var delta = RecordState()
        if membershipSequence > cursor { delta.membership = state.membership }
        var field = 0
        for (column, sequence) in fieldSequences where sequence > cursor {
            guard let index = state.fields.index(forKey: column, advancing: &field) else { continue }
            delta.fields.append(column, state.fields.values[index])
        }
        return delta
    }
}

/// A stored record blob that cannot be read: the detail says what is wrong with it.
public struct RecordBlobCorruption: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong with the blob.
    public let detail: String
    /// An error saying `detail`.
    public init(_ detail: String) { self.detail = detail }
    public var description: String { detail }
}

extension RecordEntry {
    /// The state's blob, in the metadata row's own format (not the wire's):
    ///
    /// ```
    /// state   := 0xC5 · version 1 · replicas · columns · body · crc32c (4 bytes, LE)
    /// columns := varint c · c × string      (the written columns, in UTF-8 byte order)
    /// body    := the wire format's record after its key (flags · [membership] · fields)
    /// ```
    ///
    /// It shares the wire format's value, stamp and register encodings (one codec), but
    /// leaves out what the row already holds (table and key) and the changeset's grouping,
    /// so it costs a fraction of a one-record changeset to write. It is checksummed, so a
    /// damaged row is reported, never misread. The same state always gives the same bytes.
    public static func encodeState(_ state: RecordState) -> [UInt8] {
        var writer = WireEncoder.Writer()
        writer.bytes.reserveCapacity(32 + state.fields.count * 24)
        writer.bytes.append(stateMagic)
        writer.bytes.append(stateVersion)
        // The fields are in column order already: the column list and the body take it.
        writer.noteReplicas(of: state.membership)
        for field in state.fields.values { field.forEachStamp { writer.note($0.replica) } }
        writer.replicaTable()
        writer.varint(UInt64(state.fields.count))
        for column in state.fields.keys { writer.string(column) }
        writer.recordBody(membership: state.membership, numberedInOrder: state.fields.values)
        writer.checksum()
        return writer.bytes
    }

    /// Reads a state blob: the current format of ``encodeState(_:)``, or the one-record wire
    /// changeset that releases before it wrote (so a row not yet migrated still reads).
    public static func decodeState(_ bytes: [UInt8]) throws(RecordBlobCorruption) -> RecordState {
        if isLegacyState(bytes) { return try decodeLegacyState(bytes) }
        guard bytes.count >= 2, bytes[0] == stateMagic else { throw RecordBlobCorruption("not a record state (first byte \(bytes.first ?? 0))") }
        guard bytes[1] == stateVersion else { throw RecordBlobCorruption("record state format \(bytes[1]) is not known to this release") }
        do throws(WireError) {
            let end = try WireDecoder.checkedBodyEnd(bytes)
            var reader = WireDecoder.Reader(bytes: bytes, position: 2, end: end, limits: .none)
            try reader.replicaTable()
            let columnCount = try reader.count("column count")
            var columns = [String]()
            columns.reserveCapacity(columnCount)
            for _ in 0..<columnCount { columns.append(try reader.string("column name")) }
            let state = try reader.recordBody(table: "record state", columns: WireDecoder.NumberedColumns(columns))
            guard reader.position == end else {
                throw WireError(.trailingBytes(end - reader.position), offset: reader.position, context: "end of record state")
            }
            return state
        } catch {
            throw RecordBlobCorruption(error.description)
        }
    }

    /// Whether `bytes` is a state blob of the format releases before ``encodeState(_:)``'s
    /// wrote (a one-record wire changeset), which ``decodeState(_:)`` still reads.
    public static func isLegacyState(_ bytes: [UInt8]) -> Bool {
        bytes.count >= WireFormat.magic.count && bytes[0..<WireFormat.magic.count].elementsEqual(WireFormat.magic)
    }

    /// The first byte of a state blob: `0xC5`, never the first byte of a wire changeset (`C`).
    static let stateMagic: UInt8 = 0xC5
    /// The state blob's format version.
    static let stateVersion: UInt8 = 1

    private static func decodeLegacyState(_ bytes: [UInt8]) throws(RecordBlobCorruption) -> RecordState {
        let changeset: Changeset
        do {
            changeset = try WireDecoder.decode(bytes)
        } catch {
            throw RecordBlobCorruption(error.description)
        }
        guard changeset.records.count == 1 else { throw RecordBlobCorruption("state holds \(changeset.records.count) records") }
        return changeset.records[0].state
    }

    /// The sequences' blob: varints (the membership's, then each field's, in column order).
    public func encodeSequences() -> [UInt8] {
        var bytes = [UInt8]()
        Varint.append(membershipSequence, to: &bytes)
        Varint.append(UInt64(fieldSequences.count), to: &bytes)
        for (column, sequence) in fieldSequences {
            Varint.append(UInt64(column.utf8.count), to: &bytes)
            bytes += column.utf8
            Varint.append(sequence, to: &bytes)
        }
        return bytes
    }

    /// Reads a sequences blob written by ``encodeSequences()``.
    public static func decodeSequences(_ bytes: [UInt8]) throws(RecordBlobCorruption) -> (membership: UInt64, fields: ColumnMap<UInt64>) {
        var reader = ByteReader(bytes)
        do throws(WireError) {
            let membership = try reader.varint("membership sequence")
            let count = try reader.count("sequence count", minimumBytes: 2)
            var fields = ColumnMap<UInt64>()
            fields.reserveCapacity(count)
            for _ in 0..<count {
                // Names were written from Swift strings: decoded leniently, as before.
                let name = String(decoding: try reader.lengthPrefixed("column name"), as: UTF8.self)
                fields[name] = try reader.varint("sequence of \(name)")
            }
            guard reader.isAtEnd else { throw WireError(.trailingBytes(reader.remaining), offset: reader.position, context: "end of sequences") }
            return (membership, fields)
        } catch {
            throw RecordBlobCorruption(error.description)
        }
    }
}
