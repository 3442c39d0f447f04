/// Decodes wire format v1 from untrusted bytes.
///
/// It never traps and never allocates more than the input justifies: every count is
/// checked against the bytes that remain (each element takes at least one byte) before
/// anything is reserved, and every error says what was being read and at which offset.
///
/// With ``Limits`` it also refuses, as soon as the count or length is read and before any
/// of it is materialized, changesets that carry more than a receiver is willing to handle.
///
/// - Complexity: O(n log n) in the input's size, whatever its order or duplicates, but for
///   the pruning of a record's incarnations by its membership, O(dots × incarnations) per
///   record, which ``Limits/maxDotsPerRecord`` bounds.
public enum WireDecoder {
    /// Bounds on what one changeset may carry (the sync server's request limits).
    public struct Limits: Sendable, Hashable {
        /// Entries of the replica table.
        public var maxReplicas: Int
        /// Records, over all tables.
        public var maxRecords: Int
        /// Field states, over all records (a column listed twice in a record counts twice).
        public var maxFields: Int
        /// UTF-8 bytes of a text key, bytes of a blob key.
        public var maxKeyBytes: Int
        /// UTF-8 bytes of a text value, bytes of a blob value.
        public var maxValueBytes: Int
        /// UTF-8 bytes of a table or column name.
        public var maxNameBytes: Int
        /// Add-tags of one record, as listed: its membership's live dots plus its fields'
        /// incarnations. An honest record holds about one per replica that re-added it
        /// concurrently, in its membership and in each field; the pruning of incarnations
        /// by membership compares each of them with every dot, so this bounds its cost.
        public var maxDotsPerRecord: Int

        /// Bounds on what one changeset may hold; each defaults to no bound.
        public init(
            maxReplicas: Int = .max, maxRecords: Int = .max, maxFields: Int = .max, maxKeyBytes: Int = .max, maxValueBytes: Int = .max,
            maxDotsPerRecord: Int = .max, maxNameBytes: Int = .max
        ) {
            self.maxNameBytes = maxNameBytes
            self.maxDotsPerRecord = maxDotsPerRecord
            self.maxReplicas = maxReplicas
            self.maxRecords = maxRecords
            self.maxFields = maxFields
            self.maxKeyBytes = maxKeyBytes
            self.maxValueBytes = maxValueBytes
        }

        /// No bounds beyond the input's own size.
        public static let none = Limits()
    }

    /// Which of the ``Limits`` a changeset exceeded.
    public enum Limit: String, Sendable, Hashable {
        /// ``Limits/maxReplicas``.
        case replicas
        /// ``Limits/maxRecords``.
        case records
        /// ``Limits/maxFields``.
        case fields
        /// ``Limits/maxKeyBytes``.
        case keyBytes
        /// ``Limits/maxValueBytes``.
        case valueBytes
        /// ``Limits/maxDotsPerRecord``.
        case dotsPerRecord
        /// ``Limits/maxNameBytes``.
        case nameBytes
    }

    /// Decodes `bytes`, checking magic, version and checksum first.
    ///
    /// The result is normalized (states satisfy their invariants) and has passed
    /// `checkInvariants()`; encoding it again gives bytes that decode to an equal changeset.
    ///
    /// - Throws: ``WireError``; with reason ``WireError/Reason/limitExceeded(_:limit:actual:)``
    ///   when the changeset carries more than `limits` allow.
    public static func decode(_ bytes: [UInt8], limits: Limits = .none) throws(WireError) -> Changeset {
        guard bytes.count >= WireFormat.overheadBytes else { throw WireError(.tooShort, offset: 0, context: "header") }
        guard bytes[0..<4].elementsEqual(WireFormat.magic) else { throw WireError(.badMagic, offset: 0, context: "magic") }
        guard bytes[4] == WireFormat.version else { throw WireError(.unsupportedVersion(bytes[4]), offset: 4, context: "version") }
        let bodyEnd = try checkedBodyEnd(bytes)
        var reader = Reader(bytes: bytes, position: 5, end: bodyEnd, limits: limits)
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

    /// Where the body of `bytes` ends: before its last four bytes, a CRC-32C of everything
    /// before them, which must match.
    static func checkedBodyEnd(_ bytes: [UInt8]) throws(WireError) -> Int {
        guard bytes.count >= 4 else { throw WireError(.tooShort, offset: 0, context: "checksum") }
        let bodyEnd = bytes.count - 4
        var expected: UInt32 = 0
        for index in 0..<4 { expected |= UInt32(bytes[bodyEnd + index]) << UInt32(8 * index) }
        let actual = CRC32C.checksum(bytes[0..<bodyEnd])
        guard expected == actual else {
            throw WireError(.checksumMismatch(expected: expected, actual: actual), offset: bodyEnd, context: "checksum")
        }
        return bodyEnd
    }

    struct Reader {
        /// The bytes, read through the shared ``ByteReader``.
        var input: ByteReader
        let limits: Limits
        var replicas: [ReplicaID] = []
        /// Records and field states read so far (checked against `limits`).
        var recordsRead = 0
        var fieldsRead = 0
        var previous = Stamp.zero

        init(bytes: [UInt8], position: Int, end: Int, limits: Limits) {
            input = ByteReader(bytes, position: position, end: end)
            self.limits = limits
        }

        var position: Int {
            get { input.position }
            set { input.position = newValue }
        }

        var remaining: Int { input.remaining }

        mutating func byte(_ context: @autoclosure () -> String) throws(WireError) -> UInt8 { try input.byte(context()) }

        mutating func varint(_ context: @autoclosure () -> String) throws(WireError) -> UInt64 { try input.varint(context()) }

        /// A count of elements that each take at least `minimumBytes` bytes.
        mutating func count(_ context: @autoclosure () -> String, minimumBytes: Int = 1) throws(WireError) -> Int {
            try input.count(context(), minimumBytes: minimumBytes)
        }

        mutating func raw(_ length: Int, _ context: @autoclosure () -> String) throws(WireError) -> ArraySlice<UInt8> {
            try input.raw(length, context())
        }

        /// Throws when `actual` exceeds `limit`'s bound, naming the offset where it was read.
        func check(_ limit: Limit, _ actual: Int, offset: Int, _ context: @autoclosure () -> String) throws(WireError) {
            let bound: Int
            switch limit {
            case .replicas: bound = limits.maxReplicas
            case .records: bound = limits.maxRecords
            case .fields: bound = limits.maxFields
            case .keyBytes: bound = limits.maxKeyBytes
            case .valueBytes: bound = limits.maxValueBytes
            case .dotsPerRecord: bound = limits.maxDotsPerRecord
            case .nameBytes: bound = limits.maxNameBytes
            }
            guard actual <= bound else {
                throw WireError(.limitExceeded(limit, limit: bound, actual: actual), offset: offset, context: context())
            }
        }

        /// A string; with `limit`, its UTF-8 length is checked against that bound before it is read.
        mutating func string(_ context: @autoclosure () -> String, limit: Limit? = nil) throws(WireError) -> String {
            let start = position
            let length = try count(context())
            if let limit { try check(limit, length, offset: start, context()) }
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

        /// A causal context, in any order (sorted once by ``CausalContext/init(_:)``).
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

        /// A value; text and blob lengths are checked against `limit` before they are read.
        mutating func value(_ context: @autoclosure () -> String, limit: Limit = .valueBytes) throws(WireError) -> Value {
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
            case .text: return .text(try string(context(), limit: limit))
            case .blob:
                let lengthOffset = position
                let length = try count(context())
                try check(limit, length, offset: lengthOffset, context())
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
            // Widened by the siblings first: MVRegister's own widening records them one by
            // one, quadratic for siblings in descending replica order.
            return MVRegister(siblings: siblings, context: try context(what()).recording(siblings.lazy.map(\.stamp)))
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

        /// The replica table that stamps index.
        mutating func replicaTable() throws(WireError) {
            let replicaOffset = position
            let replicaCount = try count("replica table", minimumBytes: 16)
            try check(.replicas, replicaCount, offset: replicaOffset, "replica table")
            replicas.reserveCapacity(replicaCount)
            for _ in 0..<replicaCount {
                replicas.append(ReplicaID(bytes: try raw(16, "replica id"))!)
            }
        }

        mutating func changeset() throws(WireError) -> Changeset {
            try replicaTable()
            let tableCount = try count("table count", minimumBytes: 3)
            var records = [RecordDelta]()
            var seenTables = Set<String>()
            for _ in 0..<tableCount {
                let tableOffset = position
                let table = try string("table name", limit: .nameBytes)
                guard seenTables.insert(table).inserted else { throw WireError(.duplicateTable(table), offset: tableOffset, context: "table name") }
                let columnCount = try count("column count of \(table)")
                var columns = [String]()
                columns.reserveCapacity(columnCount)
                for _ in 0..<columnCount { columns.append(try string("column name of \(table)", limit: .nameBytes)) }
                let numbered = NumberedColumns(columns)
                let recordOffset = position
                let recordCount = try count("record count of \(table)", minimumBytes: 3)
                recordsRead += recordCount
                try check(.records, recordsRead, offset: recordOffset, "record count of \(table)")
                records.reserveCapacity(records.count + recordCount)
                for _ in 0..<recordCount {
                    records.append(try record(table: table, columns: numbered))
                }
            }
            return Changeset(records: records)
        }

        mutating func record(table: String, columns: NumberedColumns) throws(WireError) -> RecordDelta {
            let key = try value("record key in \(table)", limit: .keyBytes)
            return RecordDelta(table: table, key: key, state: try recordBody(table: table, columns: columns))
        }

        /// A record's membership and fields (everything of `record` after its key), its
        /// field headers numbering `columns`.
        mutating func recordBody(table: String, columns numbered: NumberedColumns) throws(WireError) -> RecordState {
            let columns = numbered.names
            let flagsOffset = position
            let flags = try byte("record flags")
            guard flags & ~1 == 0 else { throw WireError(.invalidFlags(flags), offset: flagsOffset, context: "record flags") }
            var membership = ORSet()
            var dotsRead = 0
            if flags & 1 == 1 {
                let dotOffset = position
                let dotCount = try count("membership dots")
                dotsRead += dotCount
                try check(.dotsPerRecord, dotsRead, offset: dotOffset, "membership dots")
                var dots = [Stamp]()
                dots.reserveCapacity(dotCount)
                for _ in 0..<dotCount { dots.append(try stamp("membership dot")) }
                // Widened by the dots first: ORSet's own widening records them one by one,
                // quadratic for dots in descending replica order.
                membership = ORSet(dots: dots, context: try context("membership").recording(dots))
            }
            let fieldOffset = position
            let fieldCount = try count("field count", minimumBytes: 2)
            fieldsRead += fieldCount
            try check(.fields, fieldsRead, offset: fieldOffset, "field count")
            var fields = [(rank: Int, state: FieldState)]()
            fields.reserveCapacity(fieldCount)
            var ascending = true
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
                    let entryOffset = position
                    let entryCount = try count("incarnations of \(column)", minimumBytes: 3)
                    dotsRead += entryCount
                    try check(.dotsPerRecord, dotsRead, offset: entryOffset, "incarnations of \(column)")
                    var entries = [FieldState.Incarnated]()
                    entries.reserveCapacity(entryCount)
                    var ascending = true
                    for _ in 0..<entryCount {
                        let incarnation = try stamp("incarnation of \(column)")
                        let kindOffset = position
                        let kind = try byte("register kind of \(column)")
                        guard kind <= 1 else { throw WireError(.invalidTag(kind), offset: kindOffset, context: "register kind of \(column)") }
                        let register = try register(kind: UInt64(kind), "field \(column)")
                        if let last = entries.last, !(last.incarnation < incarnation) { ascending = false }
                        entries.append(FieldState.Incarnated(incarnation: incarnation, register: register))
                    }
                    // An encoder writes incarnations sorted and once each; anything else is
                    // grouped, sorted, and an incarnation listed again joined.
                    state = .incarnated(ascending ? entries : Self.sortedIncarnations(entries))
                case nil:
                    throw WireError(.invalidTag(UInt8(header & 3)), offset: headerOffset, context: "field kind of \(column)")
                }
                let rank = numbered.ranks[Int(index)]
                if let last = fields.last, last.rank >= rank { ascending = false }
                fields.append((rank, state))
            }
            return RecordState(membership: membership, fields: ascending
                ? ColumnMap(ascendingKeys: fields.map { numbered.sortedNames[$0.rank] }, values: fields.map(\.state))
                : Self.columnMap(of: fields, names: numbered.sortedNames))
        }

        /// Incarnations out of order or listed more than once: sorted, the registers of one
        /// incarnation joined (as a balanced tree).
        static func sortedIncarnations(_ entries: [FieldState.Incarnated]) -> [FieldState.Incarnated] {
            var byIncarnation = [Stamp: [Register]]()
            for entry in entries { byIncarnation[entry.incarnation, default: []].append(entry.register) }
            return byIncarnation.sorted { $0.key < $1.key }.map {
                FieldState.Incarnated(incarnation: $0.key, register: joined($0.value) { $0.merging($1) })
            }
        }

        /// The fields of a record that lists them out of column order, or one column more
        /// than once: sorted, and a column listed again joined with its first state as a
        /// balanced tree (folding k copies into one large state one by one would cost k
        /// times its size).
        static func columnMap(of fields: [(rank: Int, state: FieldState)], names: [String]) -> ColumnMap<FieldState> {
            let sorted = fields.sorted { $0.rank < $1.rank }
            var keys = [String](), values = [FieldState]()
            var start = 0
            while start < sorted.count {
                var end = start + 1
                while end < sorted.count, sorted[end].rank == sorted[start].rank { end += 1 }
                keys.append(names[sorted[start].rank])
                values.append(end - start == 1 ? sorted[start].state : joined(sorted[start..<end].map(\.state)) { $0.merging($1) })
                start = end
            }
            return ColumnMap(ascendingKeys: keys, values: values)
        }
    }

    /// A table's column list as the wire numbers it, with each number's rank in UTF-8 byte
    /// order (a name listed twice has one rank), so a record's fields are put in column
    /// order by comparing integers, and in the common case (columns listed in that order)
    /// not sorted at all.
    struct NumberedColumns {
        /// The names, by column number.
        let names: [String]
        /// The distinct names in UTF-8 byte order.
        let sortedNames: [String]
        /// Each number's position in `sortedNames`.
        let ranks: [Int]

        init(_ names: [String]) {
            self.names = names
            if isStrictlyAscending(names) {
                sortedNames = names
                ranks = Array(names.indices)
                return
            }
            let order = names.indices.sorted { utf8Less(names[$0], names[$1]) }
            var sortedNames = [String](), ranks = [Int](repeating: 0, count: names.count)
            for index in order {
                if sortedNames.last.map({ !utf8Equal($0, names[index]) }) ?? true { sortedNames.append(names[index]) }
                ranks[index] = sortedNames.count - 1
            }
            self.sortedNames = sortedNames
            self.ranks = ranks
        }
    }

    /// The join of `states` (not empty), pairwise as a balanced tree: each state takes part
    /// in O(log n) joins, where a left fold would copy the growing result n times.
    static func joined<T>(_ states: [T], _ join: (T, T) -> T) -> T {
        precondition(!states.isEmpty)
        var level = states
        while level.count > 1 {
            var next = [T]()
            next.reserveCapacity((level.count + 1) / 2)
            var index = 0
            while index + 1 < level.count {
                next.append(join(level[index], level[index + 1]))
                index += 2
            }
            if index < level.count { next.append(level[index]) }
            level = next
        }
        return level[0]
    }
}
