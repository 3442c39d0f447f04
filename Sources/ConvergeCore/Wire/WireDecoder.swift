/// Decodes wire format v1 from untrusted bytes.
///
/// It never traps and never allocates more than the input justifies: every count is
/// checked against the bytes that remain (each element takes at least one byte) before
/// anything is reserved, and every error says what was being read and at which offset.
public enum WireDecoder {
    /// Decodes `bytes`, checking magic, version and checksum first.
    ///
    /// The result is normalized (states satisfy their invariants) and has passed
    /// `checkInvariants()`; encoding it again gives bytes that decode to an equal changeset.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Changeset {
        guard bytes.count >= WireFormat.overheadBytes else { throw WireError(.tooShort, offset: 0, context: "header") }
        guard bytes[0..<4].elementsEqual(WireFormat.magic) else { throw WireError(.badMagic, offset: 0, context: "magic") }
        guard bytes[4] == WireFormat.version else { throw WireError(.unsupportedVersion(bytes[4]), offset: 4, context: "version") }
        let bodyEnd = bytes.count - 4
        var expected: UInt32 = 0
        for index in 0..<4 { expected |= UInt32(bytes[bodyEnd + index]) << UInt32(8 * index) }
        let actual = CRC32C.checksum(bytes[0..<bodyEnd])
        guard expected == actual else {
            throw WireError(.checksumMismatch(expected: expected, actual: actual), offset: bodyEnd, context: "checksum")
        }
        var reader = Reader(bytes: bytes, position: 5, end: bodyEnd)
        let changeset = try reader.changeset()
        guard reader.position == bodyEnd else {
            throw WireError(.trailingBytes(bodyEnd - reader.position), offset: reader.position, context: "end of changeset")
        }
        do {
            try changeset.checkInvariants()
        } catch {
            // Normalization above makes this unreachable; a failure here is a decoder bug.
            preconditionFailure("decoded changeset breaks an invariant: \(error)")
        }
        return changeset
    }

    struct Reader {
        let bytes: [UInt8]
        var position: Int
        let end: Int
        var replicas: [ReplicaID] = []
        var previous = Stamp.zero

        var remaining: Int { end - position }

        mutating func byte(_ context: @autoclosure () -> String) throws(WireError) -> UInt8 {
            guard position < end else { throw WireError(.truncated, offset: position, context: context()) }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func varint(_ context: @autoclosure () -> String) throws(WireError) -> UInt64 {
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

        /// A count of elements that each take at least `minimumBytes` bytes.
        mutating func count(_ context: @autoclosure () -> String, minimumBytes: Int = 1) throws(WireError) -> Int {
            let start = position
            let value = try varint(context())
            guard value <= UInt64(remaining / max(minimumBytes, 1)) else {
                throw WireError(.countTooLarge(value), offset: start, context: context())
            }
            return Int(value)
        }

        mutating func raw(_ length: Int, _ context: @autoclosure () -> String) throws(WireError) -> ArraySlice<UInt8> {
            guard length <= remaining else { throw WireError(.truncated, offset: position, context: context()) }
            defer { position += length }
            return bytes[position..<position + length]
        }

        mutating func string(_ context: @autoclosure () -> String) throws(WireError) -> String {
            let start = position
            let length = try count(context())
            let slice = try raw(length, context())
            guard let text = String(validating: slice, as: UTF8.self) else {
                throw WireError(.invalidUTF8, offset: start, context: context())
            }
            return text
        }

        mutating func stamp(_ context: @autoclosure () -> String) throws(WireError) -> Stamp {
            let start = position
            let tag = try varint(context())
            if tag == 0 {
                guard previous.hlc > .zero else { throw WireError(.replicaIndexOutOfRange(0), offset: start, context: context()) }
                return previous
            }
            guard tag <= UInt64(replicas.count) else { throw WireError(.replicaIndexOutOfRange(tag - 1), offset: start, context: context()) }
            let delta = unzigzag(try varint(context()))
            let hlc = HLC(rawValue: previous.hlc.rawValue &+ UInt64(bitPattern: delta))
            guard hlc > .zero, hlc.milliseconds <= HLC.acceptedMillisecondsMax else {
                throw WireError(.clockOutOfRange(hlc.rawValue), offset: start, context: context())
            }
            previous = Stamp(hlc: hlc, replica: replicas[Int(tag - 1)])
            return previous
        }

        mutating func context(_ what: @autoclosure () -> String) throws(WireError) -> CausalContext {
            let count = try count("\(what()) context")
            var entries = [CausalContext.Entry]()
            entries.reserveCapacity(count)
            for _ in 0..<count {
                let dot = try stamp("\(what()) context entry")
                entries.append(CausalContext.Entry(replica: dot.replica, hlc: dot.hlc))
            }
            return CausalContext(entries)
        }

        mutating func value(_ context: @autoclosure () -> String) throws(WireError) -> Value {
            let start = position
            let tagByte = try byte(context())
            guard let tag = WireFormat.ValueTag(rawValue: tagByte) else {
                throw WireError(.invalidTag(tagByte), offset: start, context: context())
            }
            switch tag {
            case .null: return .null
            case .integer: return .integer(unzigzag(try varint(context())))
            case .real:
                var pattern: UInt64 = 0
                for (index, byte) in try raw(8, context()).enumerated() { pattern |= UInt64(byte) << UInt64(8 * index) }
                return .real(normalizing: Double(bitPattern: pattern))
            case .decimal:
                let scale = try byte(context())
                guard scale <= WireFormat.decimalScaleMax else { throw WireError(.invalidTag(scale), offset: position - 1, context: context()) }
                let mantissa = unzigzag(try varint(context()))
                return .real(Double(mantissa) / WireFormat.powersOfTen[Int(scale)])
            case .text: return .text(try string(context()))
            case .blob:
                let length = try count(context())
                return .blob(Array(try raw(length, context())))
            case .uuidLower, .uuidUpper:
                guard let uuid = ReplicaID(bytes: try raw(16, context())) else { throw WireError(.truncated, offset: start, context: context()) }
                return .text(uuid.uuidString(uppercase: tag == .uuidUpper))
            }
        }

        mutating func multiValue(_ what: @autoclosure () -> String) throws(WireError) -> MVRegister {
            let count = try count("\(what()) siblings", minimumBytes: 2)
            var siblings = [MVRegister.Sibling]()
            siblings.reserveCapacity(count)
            for _ in 0..<count {
                let stamp = try stamp("\(what()) sibling stamp")
                siblings.append(MVRegister.Sibling(stamp: stamp, value: try value("\(what()) sibling value")))
            }
            return MVRegister(siblings: siblings, context: try context(what()))
        }

        mutating func register(kind: UInt64, _ what: @autoclosure () -> String) throws(WireError) -> Register {
            switch WireFormat.FieldKind(rawValue: kind) {
            case .lww:
                let value = try value("\(what()) value")
                return .lww(LWWRegister(value: value, stamp: try stamp("\(what()) stamp")))
            case .multi:
                return .multi(try multiValue(what()))
            default:
                throw WireError(.invalidTag(UInt8(truncatingIfNeeded: kind)), offset: position - 1, context: "\(what()) register kind")
            }
        }

        mutating func changeset() throws(WireError) -> Changeset {
            let replicaCount = try count("replica table", minimumBytes: 16)
            replicas.reserveCapacity(replicaCount)
            for _ in 0..<replicaCount {
                replicas.append(ReplicaID(bytes: try raw(16, "replica id"))!)
            }
            let tableCount = try count("table count", minimumBytes: 3)
            var records = [RecordDelta]()
            var seenTables = Set<String>()
            for _ in 0..<tableCount {
                let tableOffset = position
                let table = try string("table name")
                guard seenTables.insert(table).inserted else { throw WireError(.duplicateTable(table), offset: tableOffset, context: "table name") }
                let columnCount = try count("column count of \(table)")
                var columns = [String]()
                columns.reserveCapacity(columnCount)
                for _ in 0..<columnCount { columns.append(try string("column name of \(table)")) }
                let recordCount = try count("record count of \(table)", minimumBytes: 3)
                records.reserveCapacity(records.count + recordCount)
                for _ in 0..<recordCount {
                    records.append(try record(table: table, columns: columns))
                }
            }
            return Changeset(records: records)
        }

        mutating func record(table: String, columns: [String]) throws(WireError) -> RecordDelta {
            let key = try value("record key in \(table)")
            let flagsOffset = position
            let flags = try byte("record flags")
            guard flags & ~1 == 0 else { throw WireError(.invalidFlags(flags), offset: flagsOffset, context: "record flags") }
            var membership = ORSet()
            if flags & 1 == 1 {
                let dotCount = try count("membership dots")
                var dots = [Stamp]()
                dots.reserveCapacity(dotCount)
                for _ in 0..<dotCount { dots.append(try stamp("membership dot")) }
                membership = ORSet(dots: dots, context: try context("membership"))
            }
            let fieldCount = try count("field count", minimumBytes: 2)
            var fields = [String: FieldState]()
            for _ in 0..<fieldCount {
                let headerOffset = position
                let header = try varint("field header")
                let index = header >> 2
                guard index < UInt64(columns.count) else {
                    throw WireError(.columnIndexOutOfRange(index), offset: headerOffset, context: "field header in \(table)")
                }
                let column = columns[Int(index)]
                let state: FieldState
                switch WireFormat.FieldKind(rawValue: header & 3) {
                case .lww, .multi:
                    state = .plain(try register(kind: header & 3, "field \(column)"))
                case .incarnated:
                    let entryCount = try count("incarnations of \(column)", minimumBytes: 3)
                    var byIncarnation = [Stamp: Register]()
                    for _ in 0..<entryCount {
                        let incarnation = try stamp("incarnation of \(column)")
                        let kindOffset = position
                        let kind = try byte("register kind of \(column)")
                        guard kind <= 1 else { throw WireError(.invalidTag(kind), offset: kindOffset, context: "register kind of \(column)") }
                        let register = try register(kind: UInt64(kind), "field \(column)")
                        byIncarnation[incarnation] = byIncarnation[incarnation].map { $0.merging(register) } ?? register
                    }
                    state = .incarnated(byIncarnation.sorted { $0.key < $1.key }.map {
                        FieldState.Incarnated(incarnation: $0.key, register: $0.value)
                    })
                case nil:
                    throw WireError(.invalidTag(UInt8(header & 3)), offset: headerOffset, context: "field kind of \(column)")
                }
                fields[column] = fields[column].map { $0.merging(state) } ?? state
            }
            return RecordDelta(table: table, key: key, state: RecordState(membership: membership, fields: fields))
        }
    }
}
