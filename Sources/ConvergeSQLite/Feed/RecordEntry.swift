import ConvergeCore

/// One record's metadata row: its merge state and the local sequence numbers at which its
/// membership and each field last changed (the feed sends only parts newer than a cursor).
struct RecordEntry: Sendable, Equatable {
    var state: RecordState
    var membershipSequence: UInt64
    var fieldSequences: [String: UInt64]

    static let empty = RecordEntry(state: RecordState(), membershipSequence: 0, fieldSequences: [:])

    /// The sequence at which anything last changed.
    var sequence: UInt64 { fieldSequences.values.reduce(membershipSequence, max) }

    /// Records that `new` replaced `state` at `sequence`: the parts that differ take it.
    mutating func update(to new: RecordState, at sequence: UInt64) {
        if new.membership != state.membership { membershipSequence = sequence }
        for (column, field) in new.fields where state.fields[column] != field { fieldSequences[column] = sequence }
        for column in fieldSequences.keys where new.fields[column] == nil { fieldSequences[column] = nil }
        state = new
    }

    /// The delta of the parts changed after `cursor`.
    func delta(after cursor: UInt64) -> RecordState {
        var delta = RecordState()
        if membershipSequence > cursor { delta.membership = state.membership }
        for (column, sequence) in fieldSequences where sequence > cursor { delta.fields[column] = state.fields[column] }
        return delta
    }
}

/// The metadata row's blob formats: the state as a one-record wire changeset (checksummed,
/// so corruption is detected), the sequences as varints.
enum RecordEntryCodec {
    static func encodeState(_ state: RecordState, table: String, key: Value) -> [UInt8] {
        WireEncoder.encode(Changeset(records: [RecordDelta(table: table, key: key, state: state)]))
    }

    static func decodeState(_ bytes: [UInt8], table: String, key: Value) throws -> RecordState {
        do {
            let changeset = try WireDecoder.decode(bytes)
            guard changeset.records.count == 1 else { throw MetadataCorruption(table: table, key: key, detail: "state holds \(changeset.records.count) records") }
            return changeset.records[0].state
        } catch let error as WireError {
            throw MetadataCorruption(table: table, key: key, detail: error.description)
        }
    }

    static func encodeSequences(_ entry: RecordEntry) -> [UInt8] {
        var bytes = [UInt8]()
        appendVarint(entry.membershipSequence, to: &bytes)
        appendVarint(UInt64(entry.fieldSequences.count), to: &bytes)
        for (column, sequence) in entry.fieldSequences.sorted(by: { $0.key < $1.key }) {
            appendVarint(UInt64(column.utf8.count), to: &bytes)
            bytes += column.utf8
            appendVarint(sequence, to: &bytes)
        }
        return bytes
    }

    static func decodeSequences(_ bytes: [UInt8], table: String, key: Value) throws -> (UInt64, [String: UInt64]) {
        var position = 0
        func varint() throws -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while position < bytes.count, shift < 64 {
                let byte = bytes[position]
                position += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
            throw MetadataCorruption(table: table, key: key, detail: "truncated sequence list")
        }
        let membership = try varint()
        let count = try varint()
        guard count <= UInt64(bytes.count) else { throw MetadataCorruption(table: table, key: key, detail: "sequence count too large") }
        var fields = [String: UInt64]()
        for _ in 0..<count {
            let length = Int(clamping: try varint())
            guard length <= bytes.count - position else { throw MetadataCorruption(table: table, key: key, detail: "truncated column name") }
            let name = String(decoding: bytes[position..<position + length], as: UTF8.self)
            position += length
            fields[name] = try varint()
        }
        return (membership, fields)
    }

    private static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }
}
