/// Encodes changesets in wire format v1 (see ``WireFormat``).
public enum WireEncoder {
    /// The encoded bytes of `changeset`: grouped by table in first-appearance order, so that
    /// a decoded changeset (always grouped) re-encodes to the same bytes.
    ///
    /// - Complexity: O(n) in the changeset's size.
    public static func encode(_ changeset: Changeset) -> [UInt8] {
        var writer = Writer()
        writer.bytes.reserveCapacity(64 + changeset.records.count * 48)
        writer.bytes += WireFormat.magic
        writer.bytes.append(WireFormat.version)

        var tableOrder = [String]()
        var recordsByTable = [String: [RecordDelta]]()
        for delta in changeset.records {
            if recordsByTable[delta.table] == nil { tableOrder.append(delta.table) }
            recordsByTable[delta.table, default: []].append(delta)
        }
        // Replica indexes follow the grouped order, so a decoded changeset re-encodes alike.
        for table in tableOrder {
            for delta in recordsByTable[table]! {
                writer.noteReplicas(of: delta.state.membership)
                for field in delta.state.fields.values { field.forEachStamp { writer.note($0.replica) } }
            }
        }
        writer.replicaTable()

        writer.varint(UInt64(tableOrder.count))
        for table in tableOrder {
            let records = recordsByTable[table]!
            var columns = [String]()
            var columnIndex = [String: Int]()
            for delta in records {
                for column in delta.state.fields.keys where columnIndex[column] == nil {
                    columnIndex[column] = columns.count
                    columns.append(column)
                }
            }
            writer.string(table)
            writer.varint(UInt64(columns.count))
            for column in columns { writer.string(column) }
            writer.varint(UInt64(records.count))
            for delta in records {
                writer.value(delta.key)
                writer.recordBody(delta.state) { columnIndex[$0]! }
            }
        }
        writer.checksum()
        return writer.bytes
    }

    struct Writer {
        var bytes: [UInt8] = []
        var replicas: [ReplicaID] = []
        var replicaIndex: [ReplicaID: Int] = [:]
        var previous = Stamp.zero

        /// Adds `replica` to the replica table, if it is not there yet.
        mutating func note(_ replica: ReplicaID) {
            // Most changesets name a handful of replicas: a scan beats hashing until they grow.
            if replicas.count < 16 {
                if !replicas.contains(replica) { replicas.append(replica) }
                if replicas.count == 16 { for (index, id) in replicas.enumerated() { replicaIndex[id] = index } }
            } else if replicaIndex[replica] == nil {
                replicaIndex[replica] = replicas.count
                replicas.append(replica)
            }
        }

        /// Notes the replicas of a membership's dots and context, in the order they are written.
        mutating func noteReplicas(of membership: ORSet) {
            for dot in membership.dots { note(dot.replica) }
            for entry in membership.context.entries { note(entry.replica) }
        }

        /// Writes the replica table noted so far.
        mutating func replicaTable() {
            varint(UInt64(replicas.count))
            for replica in replicas { bytes += replica.bytes }
        }

        /// A record's membership and fields (everything of `record` after its key), each field
        /// under the column number `column` gives it, in ascending column number.
        mutating func recordBody(_ state: RecordState, column: (String) -> Int) {
            let numbers = state.fields.keys.map(column)
            recordMembership(state.membership)
            varint(UInt64(numbers.count))
            if zip(numbers, numbers.dropFirst()).allSatisfy({ $0 < $1 }) {
                // The table's columns were numbered in the order records list them: no sort.
                for (number, field) in zip(numbers, state.fields.values) { self.field(number, field) }
            } else {
                for index in numbers.indices.sorted(by: { numbers[$0] < numbers[$1] }) { field(numbers[index], state.fields.values[index]) }
            }
        }

        /// ``recordBody(_:column:)`` with each field numbered by its position in `fields`.
        mutating func recordBody(membership: ORSet, numberedInOrder fields: [FieldState]) {
            recordMembership(membership)
            varint(UInt64(fields.count))
            for (number, state) in fields.enumerated() { field(number, state) }
        }

        private mutating func recordMembership(_ membership: ORSet) {
            bytes.append(membership.isBottom ? 0 : 1)
            if !membership.isBottom {
                varint(UInt64(membership.dots.count))
                for dot in membership.dots { stamp(dot) }
                context(membership.context)
            }
        }

        /// One field under column number `number`.
        private mutating func field(_ number: Int, _ state: FieldState) {
            let index = UInt64(number)
            switch state {
            case .plain(.lww(let register)):
                varint(index << 2 | WireFormat.FieldKind.lww.rawValue)
                value(register.value)
                stamp(register.stamp)
            case .plain(.multi(let register)):
                varint(index << 2 | WireFormat.FieldKind.multi.rawValue)
                multiValue(register)
            case .incarnated(let entries):
                varint(index << 2 | WireFormat.FieldKind.incarnated.rawValue)
                varint(UInt64(entries.count))
                for entry in entries {
                    stamp(entry.incarnation)
                    switch entry.register {
                    case .lww(let register):
                        bytes.append(UInt8(WireFormat.FieldKind.lww.rawValue))
                        value(register.value)
                        stamp(register.stamp)
                    case .multi(let register):
                        bytes.append(UInt8(WireFormat.FieldKind.multi.rawValue))
                        multiValue(register)
                    }
                }
            }
        }

        /// Ends the bytes with their CRC-32C, little-endian.
        mutating func checksum() {
            let checksum = CRC32C.checksum(bytes)
            for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
        }

        func index(of replica: ReplicaID) -> Int {
            if replicas.count < 16 { return replicas.firstIndex(of: replica)! }
            return replicaIndex[replica]!
        }

        @inline(__always)
        mutating func varint(_ value: UInt64) { Varint.append(value, to: &bytes) }

        mutating func string(_ text: String) {
            varint(UInt64(text.utf8.count))
            bytes += text.utf8
        }

        mutating func stamp(_ stamp: Stamp) {
            if stamp == previous { varint(0); return }
            varint(UInt64(index(of: stamp.replica)) + 1)
            varint(zigzag(Int64(bitPattern: stamp.hlc.rawValue &- previous.hlc.rawValue)))
            previous = stamp
        }

        mutating func context(_ context: CausalContext) {
            varint(UInt64(context.entries.count))
            for entry in context.entries { stamp(Stamp(hlc: entry.hlc, replica: entry.replica)) }
        }

        mutating func multiValue(_ register: MVRegister) {
            varint(UInt64(register.siblings.count))
            for sibling in register.siblings {
                stamp(sibling.stamp)
                value(sibling.value)
            }
            context(register.context)
        }

        mutating func value(_ value: Value) {
            switch value {
            case .null:
                bytes.append(WireFormat.ValueTag.null.rawValue)
            case .integer(let integer):
                bytes.append(WireFormat.ValueTag.integer.rawValue)
                varint(zigzag(integer))
            case .real(let real):
                if let (scale, mantissa) = decimalForm(of: real) {
                    bytes.append(WireFormat.ValueTag.decimal.rawValue)
                    bytes.append(scale)
                    varint(zigzag(mantissa))
                } else {
                    bytes.append(WireFormat.ValueTag.real.rawValue)
                    let pattern = real.bitPattern
                    for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: pattern >> UInt64(shift))) }
                }
            case .text(var text):
                if text.utf8.count == 36,
                   case let (high, low, isLowercase?)? = text.withUTF8({ ReplicaID.parse($0) }) {
                    bytes.append((isLowercase ? WireFormat.ValueTag.uuidLower : .uuidUpper).rawValue)
                    bytes += ReplicaID(high: high, low: low).bytes
                    return
                }
                bytes.append(WireFormat.ValueTag.text.rawValue)
                string(text)
            case .blob(let blob):
                bytes.append(WireFormat.ValueTag.blob.rawValue)
                varint(UInt64(blob.count))
                bytes += blob
            }
        }
    }

    /// The shortest `(scale, mantissa)` with `Double(mantissa) / 10^scale` bit-identical to
    /// `real`, when one with a small mantissa exists (prices, quantities, measurements).
    static func decimalForm(of real: Double) -> (UInt8, Int64)? {
        guard real.isFinite, abs(real) < 1e15 else { return nil }
        for scale in 0...WireFormat.decimalScaleMax {
            let scaled = (real * WireFormat.powersOfTen[Int(scale)]).rounded()
            guard abs(scaled) < 9.0e15 else { return nil }
            let mantissa = Int64(scaled)
            if (Double(mantissa) / WireFormat.powersOfTen[Int(scale)]).bitPattern == real.bitPattern {
                return (scale, mantissa)
            }
        }
        return nil
    }
}

@inline(__always)
func zigzag(_ value: Int64) -> UInt64 {
    UInt64(bitPattern: (value << 1) ^ (value >> 63))
}

@inline(__always)
func unzigzag(_ value: UInt64) -> Int64 {
    Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1)
}

/// Whether `a`'s UTF-8 bytes sort before `b`'s: the column order of the encodings (a
/// byte order, so it is the same on every platform and Unicode version).
///
/// Native strings are contiguous UTF-8 already: the buffers are compared, not two
/// iterators (keys and column names are compared on every sort of an apply or a fold).
func utf8Less(_ a: String, _ b: String) -> Bool {
    if sameRepresentation(a, b) { return false }
    let contiguous = a.utf8.withContiguousStorageIfAvailable { x in
        b.utf8.withContiguousStorageIfAvailable { y in
            let common = min(x.count, y.count)
            var index = 0
            while index < common {
                if x[index] != y[index] { return x[index] < y[index] }
                index += 1
            }
            return x.count < y.count
        }
    }
    if let contiguous, let less = contiguous { return less }
    return a.utf8.lexicographicallyPrecedes(b.utf8)
}

/// Whether `a` and `b` are the same string value bit for bit: one storage object, or one
/// small string (names and keys of up to 15 UTF-8 bytes are held inline, so two equal short
/// names always are). Then they hold the same bytes; when not, the bytes decide. Column
/// names compared across one record's fields, or a decoded table's, mostly are.
@inline(__always)
func sameRepresentation(_ a: String, _ b: String) -> Bool {
    guard MemoryLayout<String>.size == 16 else { return false }
    let x = unsafeBitCast(a, to: (UInt64, UInt64).self), y = unsafeBitCast(b, to: (UInt64, UInt64).self)
    return x.0 == y.0 && x.1 == y.1
}

/// Whether `a` and `b` hold the same UTF-8 bytes (not String's `==`, which takes
/// canonically equivalent strings for equal): how ``Value`` compares text, on the buffers
/// like ``utf8Less(_:_:)``.
func utf8Equal(_ a: String, _ b: String) -> Bool {
    if sameRepresentation(a, b) { return true }
    let contiguous = a.utf8.withContiguousStorageIfAvailable { x in
        b.utf8.withContiguousStorageIfAvailable { y in
            guard x.count == y.count else { return false }
            var index = 0
            while index < x.count {
                if x[index] != y[index] { return false }
                index += 1
            }
            return true
        }
    }
    if let contiguous, let equal = contiguous { return equal }
    return a.utf8.elementsEqual(b.utf8)
}
