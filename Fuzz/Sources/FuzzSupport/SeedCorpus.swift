import ConvergeCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Seed inputs built from real runs, so that fuzzing starts from states and encodings the
/// library actually produces. Deterministic: the same build writes the same files.
public enum SeedCorpus {
    /// Encoded changesets of several shapes: single transactions, partial feeds, snapshots,
    /// and a changeset holding every fixture value once.
    public static func decodeSeeds() -> [[UInt8]] {
        var seeds = [WireEncoder.encode(Changeset()), WireEncoder.encode(everyValue())]
        for seed in UInt64(1)...6 {
            var rng = SeededGenerator(seed: seed)
            var replicas = FuzzFixtures.makeReplicas()
            var time = FuzzFixtures.startMilliseconds
            var produced = [Changeset]()
            for _ in 0..<40 {
                time += UInt64(rng.below(4))
                let who = rng.below(replicas.count)
                switch rng.below(6) {
                case 0...2:
                    let operations = (0..<(1 + rng.below(3))).map { _ in randomOperation(&rng) }
                    let changeset = replicas[who].perform(operations, physicalMilliseconds: time)
                    if !changeset.isEmpty { produced.append(changeset) }
                    replicas[rng.below(replicas.count)].apply(changeset, physicalMilliseconds: time)
                case 3:
                    if let conflict = replicas[who].conflicts().compactMap(\.field).first {
                        produced.append(replicas[who].resolve(
                            table: conflict.table, key: conflict.key, column: conflict.column,
                            to: FuzzFixtures.values[rng.below(FuzzFixtures.values.count)], physicalMilliseconds: time))
                    }
                default:
                    let sequence = replicas[who].state.sequence
                    let cursor = UInt64(rng.below(Int(sequence) + 1))
                    let feed = replicas[who].state.changes(since: cursor, limit: 1 + rng.below(4)).changeset
                    replicas[rng.below(replicas.count)].apply(feed, physicalMilliseconds: time)
                }
            }
            // A few transactions, one partial feed and one snapshot from each run.
            for index in stride(from: seed % 3, to: UInt64(produced.count), by: 9) { seeds.append(WireEncoder.encode(produced[Int(index)])) }
            seeds.append(WireEncoder.encode(replicas[0].state.changes(since: replicas[0].state.sequence / 2, limit: 3).changeset))
            seeds.append(WireEncoder.encode(replicas[Int(seed) % replicas.count].state.snapshot))
        }
        return unique(seeds.filter { $0.count <= 2_048 })
    }

    /// A changeset with one record per fixture value, as key and as field value.
    static func everyValue() -> Changeset {
        let replica = FuzzFixtures.replicaID(0)
        return Changeset(records: FuzzFixtures.values.enumerated().map { index, value in
            let stamp = Stamp(hlc: HLC(milliseconds: FuzzFixtures.startMilliseconds, counter: UInt16(index)), replica: replica)
            return RecordDelta(table: "t", key: value, state: RecordState(
                membership: ORSet(dots: [stamp], context: CausalContext()),
                fields: ["c": .plain(.lww(LWWRegister(value: value, stamp: stamp)))]))
        })
    }

    static func randomOperation(_ rng: inout SeededGenerator) -> Replica.Operation {
        let schema = FuzzFixtures.schemas[rng.below(FuzzFixtures.schemas.count)]
        let key = FuzzFixtures.keys[rng.below(FuzzFixtures.keys.count)]
        var values = [String: Value]()
        for column in schema.columns where rng.chance(0.6) { values[column] = FuzzFixtures.values[rng.below(FuzzFixtures.values.count)] }
        switch rng.below(10) {
        case 0...2:
            for column in schema.columns where values[column] == nil { values[column] = .null }
            return .insert(table: schema.name, key: key, values: values)
        case 3: return .delete(table: schema.name, key: key)
        default:
            if values.isEmpty { values[schema.columns[0]] = .integer(Int64(rng.below(3))) }
            return .update(table: schema.name, key: key, values: values)
        }
    }

    /// Merge scripts: hand-written scenarios for the interesting races, then random ones.
    public static func mergeSeeds() -> [[UInt8]] {
        typealias S = MergeScript
        let insertNote = S.Operation(kind: .insert, table: 0, key: 0, values: [9, nil, 1])
        let insertItem = S.Operation(kind: .insert, table: 1, key: 1, values: [9, 1, nil])
        var scripts: [[S.Step]] = [
            // Concurrent critical writes on both tables, exchanged, then resolved.
            [.perform(replica: 0, operations: [insertNote, insertItem]), .sendSnapshot(from: 0, to: 1, delivery: .now),
             .sendSnapshot(from: 0, to: 2, delivery: .viaWire),
             .perform(replica: 1, operations: [S.Operation(kind: .update, table: 0, key: 0, values: [nil, nil, 2]),
                                               S.Operation(kind: .update, table: 1, key: 1, values: [nil, 2, nil])]),
             .perform(replica: 2, operations: [S.Operation(kind: .update, table: 0, key: 0, values: [nil, nil, 3]),
                                               S.Operation(kind: .update, table: 1, key: 1, values: [nil, 3, nil])]),
             .sendChanges(from: 1, to: 0, cursor: 0, limit: 255, delivery: .now),
             .sendChanges(from: 2, to: 0, cursor: 0, limit: 255, delivery: .viaWire),
             .resolve(replica: 0, conflict: 0, value: 5), .resolve(replica: 0, conflict: 0, value: 6)],
            // Update racing a delete, under each policy, then a re-insert from a skewed clock.
            [.perform(replica: 0, operations: [insertNote, insertItem]), .sendSnapshot(from: 0, to: 1, delivery: .now),
             .perform(replica: 0, operations: [S.Operation(kind: .delete, table: 0, key: 0, values: [nil, nil, nil]),
                                               S.Operation(kind: .delete, table: 1, key: 1, values: [nil, nil, nil])]),
             .jumpClock(replica: 1, jump: .farAhead),
             .perform(replica: 1, operations: [S.Operation(kind: .update, table: 0, key: 0, values: [10, nil, nil]),
                                               S.Operation(kind: .update, table: 1, key: 1, values: [10, nil, nil])]),
             .sendChanges(from: 0, to: 1, cursor: 0, limit: 1, delivery: .later),
             .sendChanges(from: 1, to: 0, cursor: 0, limit: 255, delivery: .later),
             .deliver(index: 1, keep: true, viaWire: true), .deliver(index: 0, keep: false, viaWire: false),
             .perform(replica: 2, operations: [S.Operation(kind: .insert, table: 1, key: 1, values: [11, 4, 0])]),
             .deliver(index: 0, keep: false, viaWire: false), .releaseQuarantine(replica: 0, force: true)],
            // Clocks going backwards and to the limits.
            [.rewindClock(replica: 0, milliseconds: 255), .perform(replica: 0, operations: [insertNote]),
             .jumpClock(replica: 1, jump: .toZero), .perform(replica: 1, operations: [insertNote]),
             .jumpClock(replica: 2, jump: .toLimit), .perform(replica: 2, operations: [insertItem]),
             .sendSnapshot(from: 2, to: 0, delivery: .now), .jumpClock(replica: 0, jump: .farBack),
             .perform(replica: 0, operations: [S.Operation(kind: .update, table: 1, key: 1, values: [nil, 7, nil])]),
             .sendSnapshot(from: 0, to: 1, delivery: .viaWire)],
        ]
        for seed in UInt64(1)...21 {
            var rng = SeededGenerator(seed: seed &* 0x9E37)
            scripts.append((0..<(8 + rng.below(40))).map { _ in randomStep(&rng) })
        }
        return unique(scripts.map(MergeScript.print))
    }

    static func randomStep(_ rng: inout SeededGenerator) -> MergeScript.Step {
        let replicas = FuzzFixtures.replicaCount
        func delivery() -> MergeScript.Delivery { MergeScript.Delivery.allCases[rng.below(3)] }
        switch rng.below(20) {
        case 0...7:
            return .perform(replica: rng.below(replicas), operations: (0...rng.below(3)).map { _ in
                let table = rng.below(2)
                let values: [Int?] = (0..<3).map { _ in rng.chance(0.5) ? rng.below(FuzzFixtures.values.count) : nil }
                return MergeScript.Operation(
                    kind: MergeScript.Operation.Kind(rawValue: [0, 0, 1, 1, 1, 2][rng.below(6)])!,
                    table: table, key: rng.below(FuzzFixtures.keys.count), values: values, partialInsert: rng.chance(0.2))
            })
        case 8: return .resolve(replica: rng.below(replicas), conflict: rng.below(4), value: rng.below(FuzzFixtures.values.count))
        case 9, 10: return .advanceClock(replica: rng.below(replicas), milliseconds: rng.below(256))
        case 11: return .rewindClock(replica: rng.below(replicas), milliseconds: rng.below(256))
        case 12: return .jumpClock(replica: rng.below(replicas), jump: MergeScript.ClockJump.allCases[rng.below(4)])
        case 13, 14:
            return .sendChanges(from: rng.below(replicas), to: rng.below(replicas), cursor: rng.below(256), limit: rng.below(256), delivery: delivery())
        case 15: return .sendSnapshot(from: rng.below(replicas), to: rng.below(replicas), delivery: delivery())
        case 16...18: return .deliver(index: rng.below(256), keep: rng.chance(0.3), viaWire: rng.chance(0.5))
        default: return .releaseQuarantine(replica: rng.below(replicas), force: rng.chance(0.5))
        }
    }

    static func unique(_ seeds: [[UInt8]]) -> [[UInt8]] {
        var seen = Set<[UInt8]>()
        return seeds.filter { seen.insert($0).inserted }
    }

    /// Called by ``FuzzerMain``: when the command line is
    /// `<fuzzer> --generate-corpus DIR`, writes `seeds()` into DIR as `seed-NNN` and exits.
    /// (Called before libFuzzer parses its own flags.)
    public static func generateIfAsked(_ seeds: () -> [[UInt8]]) {
        let arguments = CommandLine.arguments
        guard let flag = arguments.firstIndex(of: "--generate-corpus") else { return }
        guard flag + 1 < arguments.count else { fatalError("--generate-corpus needs a directory") }
        let directory = arguments[flag + 1]
        let all = seeds()
        for (index, seed) in all.enumerated() {
            let number = String(index)
            let path = directory + "/seed-" + String(repeating: "0", count: max(0, 3 - number.count)) + number
            guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
            let written = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
            fclose(file)
            guard written == seed.count else { fatalError("short write to \(path)") }
        }
        print("wrote \(all.count) seed inputs to \(directory)")
        exit(0)
    }
}
