import ConvergeCore

/// Deterministic workloads shared by the package-benchmark suites and the `figures` tool.
///
/// Everything is drawn from a `SeededGenerator`, so every run (and every machine) measures
/// the same bytes and the same joins.
public enum Workloads {
    /// Workload W's table: a random-UUID text key and five fields.
    public static let schemaW = TableSchema(
        name: "items", primaryKey: "id", columns: ["name", "qty", "price", "note", "updated"])
    /// Small values only: integer keys, three small integers and two short texts.
    public static let schemaSmall = TableSchema(
        name: "counters", primaryKey: "id", columns: ["a", "b", "c", "tag", "unit"])
    public static let fieldsPerRecord = 5
    /// Records per local transaction (one stamp each).
    public static let recordsPerTransaction = 1_000
    /// 2025-11-13T00:00:00Z, so clocks look like real ones (and varints have real widths).
    public static let epochMilliseconds: UInt64 = 1_763_000_000_000

    public static func replicaID(_ index: Int) -> ReplicaID {
        var rng = SeededGenerator(seed: 0xC0FFEE &+ UInt64(index))
        return ReplicaID(using: &rng)
    }

    // MARK: Values

    static let upperHex = Array("0123456789ABCDEF".utf8)
    static let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

    /// A random UUID v4 in canonical uppercase text form (`8-4-4-4-12`).
    public static func uuidUppercase(_ rng: inout SeededGenerator) -> String {
        let id = ReplicaID(using: &rng)
        var utf8 = [UInt8]()
        utf8.reserveCapacity(36)
        for (index, byte) in id.bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { utf8.append(UInt8(ascii: "-")) }
            utf8.append(upperHex[Int(byte >> 4)])
            utf8.append(upperHex[Int(byte & 0xF)])
        }
        return String(decoding: utf8, as: UTF8.self)
    }

    public static func randomLetters(_ count: Int, _ rng: inout SeededGenerator) -> String {
        String(decoding: (0..<count).map { _ in letters[rng.below(letters.count)] }, as: UTF8.self)
    }

    /// One row of workload W, written at `milliseconds`.
    public static func rowW(_ rng: inout SeededGenerator, milliseconds: UInt64) -> [String: Value] {
        [
            "name": .text(randomLetters(12, &rng)),
            "qty": .integer(Int64(rng.below(1_001))),
            "price": .real(Double(rng.below(100_000)) / 100),
            "note": .text(randomLetters(24, &rng)),
            "updated": .integer(Int64(milliseconds) + Int64(rng.below(1_000))),
        ]
    }

    /// One row of small values: integers below 100, texts of one to four letters.
    public static func rowSmall(_ rng: inout SeededGenerator) -> [String: Value] {
        [
            "a": .integer(Int64(rng.below(100))),
            "b": .integer(Int64(rng.below(100))),
            "c": .integer(Int64(rng.below(2))),
            "tag": .text(randomLetters(1 + rng.below(4), &rng)),
            "unit": .text(["kg", "g", "l", "ml", "pcs"][rng.below(5)]),
        ]
    }

    // MARK: Changesets

    /// What a replica sends after inserting `records` rows of workload W in transactions of
    /// 1,000 rows (one stamp each), through `Replica.perform`: 5 fields per record.
    public static func changesetW(records: Int = 100_000, seed: UInt64 = 1) -> Changeset {
        var rng = SeededGenerator(seed: seed)
        return insertChangeset(schema: schemaW, records: records) { _, milliseconds in
            (.text(uuidUppercase(&rng)), rowW(&rng, milliseconds: milliseconds))
        }
    }

    /// The same shape with small values only: integer keys, small integers, short texts.
    public static func changesetSmall(records: Int = 100_000, seed: UInt64 = 2) -> Changeset {
        var rng = SeededGenerator(seed: seed)
        return insertChangeset(schema: schemaSmall, records: records) { index, _ in
            (.integer(Int64(index + 1)), rowSmall(&rng))
        }
    }

    static func insertChangeset(
        schema: TableSchema, records: Int, row: (Int, UInt64) -> (Value, [String: Value])
    ) -> Changeset {
        var replica = Replica(id: replicaID(0))
        replica.replicate(schema)
        var all = [RecordDelta]()
        all.reserveCapacity(records)
        var index = 0
        var milliseconds = epochMilliseconds
        while index < records {
            let count = min(recordsPerTransaction, records - index)
            let operations = (0..<count).map { offset -> Replica.Operation in
                let (key, values) = row(index + offset, milliseconds)
                return .insert(table: schema.name, key: key, values: values)
            }
            all += replica.perform(operations, physicalMilliseconds: milliseconds).records
            index += count
            milliseconds += 37
        }
        return Changeset(records: all)
    }

    // MARK: Merge states

    /// Two replicas' states of the same `records` W records, index-aligned: both sides
    /// inserted from one origin's changeset; then, for every even record, both sides edited
    /// it concurrently (A: name, qty, price; B: qty, price, note, each in 1,000-record
    /// transactions), so those joins merge memberships (two concurrent add-tags) and
    /// overlapping LWW registers. Odd records are equal on both sides.
    public struct MergePair: Sendable {
        public let keys: [Value]
        public let a: [RecordState]
        public let b: [RecordState]
        public var fieldCount: Int { a.reduce(0) { $0 + $1.fields.count } }
    }

    public static func mergePair(records: Int = 100_000, seed: UInt64 = 3) -> MergePair {
        var rng = SeededGenerator(seed: seed)
        let schema = schemaW
        let origin = replicaID(0), replicaA = replicaID(1), replicaB = replicaID(2)
        var keys = [Value]()
        var a = [RecordState]()
        var b = [RecordState]()
        keys.reserveCapacity(records)
        a.reserveCapacity(records)
        b.reserveCapacity(records)
        func stamp(_ replica: ReplicaID, _ milliseconds: UInt64, _ index: Int) -> Stamp {
            Stamp(hlc: HLC(milliseconds: milliseconds + UInt64(index / recordsPerTransaction)), replica: replica)
        }
        for index in 0..<records {
            let milliseconds = epochMilliseconds
            var record = RecordState()
            record.insert(rowW(&rng, milliseconds: milliseconds), at: stamp(origin, milliseconds, index), schema: schema)
            keys.append(.text(uuidUppercase(&rng)))
            var left = record, right = record
            if index % 2 == 0 {
                let later = milliseconds + 10_000
                let row = rowW(&rng, milliseconds: later)
                left.update(["name": row["name"]!, "qty": row["qty"]!, "price": row["price"]!],
                            at: stamp(replicaA, later, index), schema: schema)
                let other = rowW(&rng, milliseconds: later)
                right.update(["qty": other["qty"]!, "price": other["price"]!, "note": other["note"]!],
                             at: stamp(replicaB, later + 1, index), schema: schema)
            }
            a.append(left)
            b.append(right)
        }
        return MergePair(keys: keys, a: a, b: b)
    }

    /// The join of both directions of an exchange (A ⊔ B into `intoA`, B ⊔ A into `intoB`):
    /// 2 × records × 5 field joins. Returns a checksum so the work cannot be optimized away.
    @inline(never)
    public static func mergeBothWays(_ pair: MergePair, intoA: inout [RecordState], intoB: inout [RecordState]) -> Int {
        var alive = 0
        for index in pair.a.indices {
            intoA[index] = pair.a[index].merging(pair.b[index])
            intoB[index] = pair.b[index].merging(pair.a[index])
            alive &+= intoA[index].membership.dots.count &+ intoB[index].membership.dots.count
        }
        return alive
    }

    /// Joins records `range` in both directions (the unit package-benchmark scales by).
    @inline(__always)
    public static func mergeBothWays(_ pair: MergePair, records range: Range<Int>,
                                     intoA: inout [RecordState], intoB: inout [RecordState]) {
        for index in range {
            intoA[index] = pair.a[index].merging(pair.b[index])
            intoB[index] = pair.b[index].merging(pair.a[index])
        }
    }

    /// A's records in a `ReplicaState`, and B's records as the changeset A would receive:
    /// the apply path (dictionary lookup, join, change detection, sequence bookkeeping).
    public static func applyPair(_ pair: MergePair) -> (state: ReplicaState, incoming: Changeset) {
        var state = ReplicaState()
        var incoming = [RecordDelta]()
        incoming.reserveCapacity(pair.b.count)
        for index in pair.a.indices {
            state.merge(pair.a[index], into: RecordAddress(table: schemaW.name, key: pair.keys[index]))
            incoming.append(RecordDelta(table: schemaW.name, key: pair.keys[index], state: pair.b[index]))
        }
        return (state, Changeset(records: incoming))
    }

    /// Forces `state`'s storage to be unique (so a measured apply does not pay the
    /// copy-on-write of the shared original): touches one extra record.
    public static func makeUnique(_ state: inout ReplicaState) {
        var record = RecordState()
        record.insert(["x": .integer(1)], at: Stamp(hlc: HLC(milliseconds: 1), replica: replicaID(9)),
                      schema: TableSchema(name: "_unique", primaryKey: "id", columns: ["x"]))
        state.merge(record, into: RecordAddress(table: "_unique", key: .integer(0)))
    }
}
