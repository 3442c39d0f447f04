// The figures the closing notes quote, measured in one run with `ContinuousClock`:
//
//     swift run -c release --package-path Benchmarks figures [--repetitions N] [--records N]
//
// Prints a table, then a last line holding one JSON object. Each figure is the best of N
// repetitions (default 5): on a shared, noisy machine the minimum time is the most
// reproducible estimate of what the code costs.
import BenchmarkSupport
import ConvergeCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

var repetitions = 5
var records = 100_000
var profile: String?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--repetitions": repetitions = max(1, Int(arguments.next() ?? "") ?? repetitions)
    case "--records": records = max(1_000, Int(arguments.next() ?? "") ?? records)
    case "--profile": profile = arguments.next()
    default:
        print("""
            usage: figures [--repetitions N] [--records N] [--profile merge|apply|encode|decode|encode-small|decode-small]
              --profile NAME  only repeat one operation (N times, default 20), for perf/valgrind
            """)
        exit(2)
    }
}

#if DEBUG
print("warning: debug build; run with `swift run -c release --package-path Benchmarks figures`")
#endif

let clock = ContinuousClock()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
}

@MainActor
/// Runs `prepare` untimed, then `body` timed, `repetitions` times; returns the best time.
func best<State>(prepare: () -> State, _ body: (inout State) -> Void) -> (best: Double, median: Double) {
    var times = [Double]()
    for _ in 0..<repetitions {
        var state = prepare()
        let start = clock.now
        body(&state)
        times.append(seconds(start.duration(to: clock.now)))
        withExtendedLifetime(state) {}
    }
    times.sort()
    return (times[0], times[times.count / 2])
}

@inline(never)
func consume<T>(_ value: T) { withExtendedLifetime(value) {} }

/// Progress goes to standard error, so standard output is only the table and the JSON line.
func log(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

if let profile {
    // Only the fixture the operation needs, so that the profile is the operation's.
    let operation: () -> Void
    switch profile {
    case "merge":
        let pair = Workloads.mergePair(records: records)
        var a = pair.a, b = pair.b
        operation = { consume(Workloads.mergeBothWays(pair, intoA: &a, intoB: &b)) }
    case "apply":
        let fixture = Workloads.applyPair(Workloads.mergePair(records: records))
        operation = { var state = fixture.state; consume(state.apply(fixture.incoming)) }
    case "encode", "encode-small":
        let changeset = profile == "encode" ? Workloads.changesetW(records: records) : Workloads.changesetSmall(records: records)
        operation = { consume(WireEncoder.encode(changeset)) }
    case "decode", "decode-small":
        let bytes = WireEncoder.encode(profile == "decode" ? Workloads.changesetW(records: records) : Workloads.changesetSmall(records: records))
        operation = { consume(try! WireDecoder.decode(bytes)) }
    default: log("unknown operation \(profile)"); exit(2)
    }
    let count = CommandLine.arguments.contains("--repetitions") ? repetitions : 20
    log("profiling \(profile), \(count) times")
    for _ in 0..<count { operation() }
    exit(0)
}

log("building fixtures (\(records) records × 5 fields)…")
let fixturesStart = clock.now
let pair = Workloads.mergePair(records: records)
let applyFixture = Workloads.applyPair(pair)
let changesetW = Workloads.changesetW(records: records)
let changesetSmall = Workloads.changesetSmall(records: records)
log("fixtures ready in \(String(format2: seconds(fixturesStart.duration(to: clock.now)))) s; measuring, best of \(repetitions)…")

// 1. Join, both directions of an exchange: 2 × records × 5 field joins.
let mergeFields = 2 * pair.fieldCount
let merge = best(prepare: { () -> ([RecordState], [RecordState]) in
    var a = pair.a, b = pair.b
    a.reserveCapacity(a.count + 1) // unique buffers: copy-on-write stays out of the timing
    b.reserveCapacity(b.count + 1)
    return (a, b)
}) { state in
    consume(Workloads.mergeBothWays(pair, intoA: &state.0, intoB: &state.1))
}

// 1b. Through the replica's apply path: B's changeset into a copy of A's state.
let applyFields = applyFixture.incoming.fieldCount
let apply = best(prepare: { () -> ReplicaState in
    var state = applyFixture.state
    Workloads.makeUnique(&state)
    return state
}) { state in
    consume(state.apply(applyFixture.incoming))
}

// 2. Codec.
struct CodecFigures {
    let bytes: Int
    let fields: Int
    let encode: (best: Double, median: Double)
    let decode: (best: Double, median: Double)
    var bytesPerField: Double { Double(bytes) / Double(fields) }
    var encodeMBps: Double { Double(bytes) / 1e6 / encode.best }
    var decodeMBps: Double { Double(bytes) / 1e6 / decode.best }
}

@MainActor
func codec(_ changeset: Changeset) -> CodecFigures {
    let bytes = WireEncoder.encode(changeset)
    guard let decoded = try? WireDecoder.decode(bytes), decoded == changeset, WireEncoder.encode(decoded) == bytes else {
        fatalError("round trip failed")
    }
    let encode = best(prepare: { () }) { _ in consume(WireEncoder.encode(changeset)) }
    let decode = best(prepare: { () }) { _ in consume(try! WireDecoder.decode(bytes)) }
    return CodecFigures(bytes: bytes.count, fields: changeset.fieldCount, encode: encode, decode: decode)
}

let w = codec(changesetW)

// Text keys, as workload W's (UUID strings): sorting the addresses of a changeset and
// finding each in a set, which every apply and fold does for its touched records.
var seededKeys = SeededGenerator(seed: 0x6b657973)
let textAddresses = changesetW.records.map { RecordAddress(table: $0.table, key: $0.key) }.shuffled(using: &seededKeys)
let keySort = best(prepare: { textAddresses }) { addresses in addresses.sort() }
let keySet = Set(textAddresses.map(\.key))
let keyLookup = best(prepare: { 0 }) { found in for address in textAddresses where keySet.contains(address.key) { found += 1 } }
let small = codec(changesetSmall)

// Report.
func format(_ value: Double, _ digits: Int = 2) -> String { String(format2: value, digits: digits) }
func megaPerSecond(_ count: Int, _ time: Double) -> Double { Double(count) / time / 1e6 }

let rows: [(String, String, String, String)] = [
    ("merge (RecordState join, A⊔B and B⊔A)", "\(mergeFields) fields",
     "\(format(megaPerSecond(mergeFields, merge.best))) M fields/s",
     "\(format(merge.best * 1e3, 1)) ms (median \(format(merge.median * 1e3, 1)))"),
    ("apply (ReplicaState.apply, B into A)", "\(applyFields) fields",
     "\(format(megaPerSecond(applyFields, apply.best))) M fields/s",
     "\(format(apply.best * 1e3, 1)) ms (median \(format(apply.median * 1e3, 1)))"),
    ("encode, workload W", "\(w.bytes) B, \(format(w.bytesPerField)) B/field",
     "\(format(w.encodeMBps)) MB/s, \(format(megaPerSecond(w.fields, w.encode.best))) M fields/s",
     "\(format(w.encode.best * 1e3, 1)) ms (median \(format(w.encode.median * 1e3, 1)))"),
    ("decode, workload W", "\(w.bytes) B",
     "\(format(w.decodeMBps)) MB/s, \(format(megaPerSecond(w.fields, w.decode.best))) M fields/s",
     "\(format(w.decode.best * 1e3, 1)) ms (median \(format(w.decode.median * 1e3, 1)))"),
    ("sort of text-key addresses", "\(textAddresses.count) keys",
     "\(format(megaPerSecond(textAddresses.count, keySort.best))) M keys/s",
     "\(format(keySort.best * 1e3, 1)) ms (median \(format(keySort.median * 1e3, 1)))"),
    ("lookup of text keys in a set", "\(textAddresses.count) keys",
     "\(format(megaPerSecond(textAddresses.count, keyLookup.best))) M keys/s",
     "\(format(keyLookup.best * 1e3, 1)) ms (median \(format(keyLookup.median * 1e3, 1)))"),
    ("encode, small ints + short texts", "\(small.bytes) B, \(format(small.bytesPerField)) B/field",
     "\(format(small.encodeMBps)) MB/s, \(format(megaPerSecond(small.fields, small.encode.best))) M fields/s",
     "\(format(small.encode.best * 1e3, 1)) ms (median \(format(small.encode.median * 1e3, 1)))"),
    ("decode, small ints + short texts", "\(small.bytes) B",
     "\(format(small.decodeMBps)) MB/s, \(format(megaPerSecond(small.fields, small.decode.best))) M fields/s",
     "\(format(small.decode.best * 1e3, 1)) ms (median \(format(small.decode.median * 1e3, 1)))"),
]

func pad(_ text: String, _ width: Int) -> String {
    text + String(repeating: " ", count: max(0, width - text.count))
}
let header = ("measure", "size", "throughput (best)", "time (best of \(repetitions))")
let widths = [
    max(header.0.count, rows.map(\.0.count).max()!),
    max(header.1.count, rows.map(\.1.count).max()!),
    max(header.2.count, rows.map(\.2.count).max()!),
]
for row in [header] + rows {
    print(pad(row.0, widths[0]) + "  " + pad(row.1, widths[1]) + "  " + pad(row.2, widths[2]) + "  " + row.3)
}
print("goals: merge ≥ 10 M fields/s per core; ≤ 8 bytes/field for small ints and short texts")

let json: [(String, Double)] = [
    ("merge_fields_per_s", Double(mergeFields) / merge.best),
    ("apply_fields_per_s", Double(applyFields) / apply.best),
    ("encode_mb_per_s", w.encodeMBps),
    ("decode_mb_per_s", w.decodeMBps),
    ("encode_fields_per_s", Double(w.fields) / w.encode.best),
    ("decode_fields_per_s", Double(w.fields) / w.decode.best),
    ("key_sort_per_s", Double(textAddresses.count) / keySort.best),
    ("key_lookup_per_s", Double(textAddresses.count) / keyLookup.best),
    ("bytes_per_field_w", w.bytesPerField),
    ("bytes_per_field_small", small.bytesPerField),
    ("encode_mb_per_s_small", small.encodeMBps),
    ("decode_mb_per_s_small", small.decodeMBps),
    ("records", Double(records)),
    ("repetitions", Double(repetitions)),
]
print("{" + json.map { "\"\($0.0)\": \(format($0.1, $0.1 >= 1000 || $0.1 == $0.1.rounded() ? 0 : 3))" }.joined(separator: ", ") + "}")

extension String {
    /// Fixed-point formatting without Foundation.
    init(format2 value: Double, digits: Int = 2) {
        guard value.isFinite else { self = "\(value)"; return }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = UInt64(scaled / scale)
        var text = (value < 0 && scaled > 0 ? "-" : "") + String(whole)
        if digits > 0 {
            let fraction = String(UInt64(scaled) - whole * UInt64(scale))
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        self = text
    }
}
