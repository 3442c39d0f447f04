import Benchmark
import BenchmarkSupport
import ConvergeCore

// ConvergeCore's in-memory hot paths: the join of two 100,000-record states, and the wire
// codec on a 500,000-field changeset. Fixtures are built once, outside measurement.
//
// Units: the merge benchmarks use `scalingFactor: .mega` with one outer iteration doing
// exactly 1,000,000 field joins, so the scaled `throughput` column (marked `*`, in M) reads
// directly as fields per second. The codec benchmarks do one changeset per iteration and
// add custom metrics: kB/s (of encoded bytes; MB/s = kB/s ÷ 1000), fields/s (K), and bytes per field (x100).

enum CustomMetrics {
    static let kilobytesPerSecond = BenchmarkMetric.custom("kB/s", polarity: .prefersLarger, useScalingFactor: false)
    static let kilofieldsPerSecond = BenchmarkMetric.custom("K fields/s", polarity: .prefersLarger, useScalingFactor: false)
    static let centibytesPerField = BenchmarkMetric.custom("bytes/field x100", polarity: .prefersSmaller, useScalingFactor: false)
}

/// Fixtures, built on first use (in a benchmark's setup, outside measurement) and then only
/// read. package-benchmark runs setups and bodies one at a time, hence `@unchecked`.
final class Fixtures: @unchecked Sendable {
    static let shared = Fixtures()
    let records = 100_000
    lazy var mergePair = Workloads.mergePair(records: records)
    lazy var applyPair = Workloads.applyPair(mergePair)
    lazy var changesetW = Workloads.changesetW(records: records)
    lazy var bytesW = WireEncoder.encode(changesetW)
    lazy var changesetSmall = Workloads.changesetSmall(records: records)
    lazy var bytesSmall = WireEncoder.encode(changesetSmall)
}

let benchmarks: @Sendable () -> Void = {
    let fixtures = Fixtures.shared
    let records = fixtures.records
    let fieldsPerRecord = Workloads.fieldsPerRecord

    let mergeConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal, .peakMemoryResident],
        warmupIterations: 1,
        scalingFactor: .mega,
        maxDuration: .seconds(10),
        maxIterations: 20,
        setup: { _ = fixtures.applyPair }
    )

    // 1. Join of two 100,000 × 5-field states, both directions of an exchange
    //    (A ⊔ B and B ⊔ A): 2 × 500,000 = 1,000,000 field joins per iteration.
    Benchmark("Merge 2×100k records × 5 fields (RecordState join, fields/s)", configuration: mergeConfiguration) { benchmark in
        let pair = fixtures.mergePair
        precondition(benchmark.scaledIterations.count == 2 * records * fieldsPerRecord)
        var intoA = pair.a, intoB = pair.b
        // Force unique buffers before measuring, so copy-on-write is not timed.
        intoA.reserveCapacity(records + 1)
        intoB.reserveCapacity(records + 1)
        benchmark.startMeasurement()
        // Each step of the scaled range is one field join; a record join is 2 × 5 of them.
        var index = 0
        for _ in stride(from: 0, to: benchmark.scaledIterations.count, by: 2 * fieldsPerRecord) {
            Workloads.mergeBothWays(pair, records: index..<index + 1, intoA: &intoA, intoB: &intoB)
            index += 1
        }
        benchmark.stopMeasurement()
        blackHole(intoA)
        blackHole(intoB)
    }

    // 1b. The same join through the replica's apply path (address lookup, change
    //     detection, sequence bookkeeping): B's 500,000 fields applied to A's state,
    //     twice per iteration (into two copies) to keep the 1,000,000-field unit.
    Benchmark("Apply 100k records × 5 fields into ReplicaState (fields/s)", configuration: mergeConfiguration) { benchmark in
        let (original, incoming) = fixtures.applyPair
        precondition(benchmark.scaledIterations.count == 2 * incoming.fieldCount)
        var first = original, second = original
        Workloads.makeUnique(&first)
        Workloads.makeUnique(&second)
        benchmark.startMeasurement()
        blackHole(first.apply(incoming))
        blackHole(second.apply(incoming))
        benchmark.stopMeasurement()
        blackHole(first)
        blackHole(second)
    }

    // 2. Wire codec on 100,000 records × 5 fields.
    func codecConfiguration(_ setup: @escaping @Sendable () -> Void) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident,
                      CustomMetrics.kilobytesPerSecond, CustomMetrics.kilofieldsPerSecond,
                      CustomMetrics.centibytesPerField],
            warmupIterations: 1,
            scalingFactor: .one,
            maxDuration: .seconds(10),
            maxIterations: 20,
            setup: setup
        )
    }

    @Sendable func report(_ benchmark: Benchmark, bytes: Int, fields: Int, elapsed: Duration) {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        benchmark.measurement(CustomMetrics.kilobytesPerSecond, Int((Double(bytes) / 1e3 / seconds).rounded()))
        benchmark.measurement(CustomMetrics.kilofieldsPerSecond, Int((Double(fields) / 1e3 / seconds).rounded()))
        benchmark.measurement(CustomMetrics.centibytesPerField, Int((100 * Double(bytes) / Double(fields)).rounded()))
    }

    let codecCases: [(label: String, changeset: @Sendable () -> Changeset, bytes: @Sendable () -> [UInt8])] = [
        ("workload W", { fixtures.changesetW }, { fixtures.bytesW }),
        ("small ints + short texts", { fixtures.changesetSmall }, { fixtures.bytesSmall }),
    ]
    for codecCase in codecCases {
        let configuration = codecConfiguration { _ = codecCase.bytes() }

        Benchmark("Encode 100k records × 5 fields, \(codecCase.label)", configuration: configuration) { benchmark in
            let input = codecCase.changeset()
            let fields = input.fieldCount
            let clock = ContinuousClock()
            benchmark.startMeasurement()
            let start = clock.now
            let encoded = WireEncoder.encode(input)
            let elapsed = start.duration(to: clock.now)
            benchmark.stopMeasurement()
            report(benchmark, bytes: encoded.count, fields: fields, elapsed: elapsed)
            blackHole(encoded)
        }

        Benchmark("Decode 100k records × 5 fields, \(codecCase.label)", configuration: configuration) { benchmark in
            let input = codecCase.bytes()
            let fields = codecCase.changeset().fieldCount
            let clock = ContinuousClock()
            benchmark.startMeasurement()
            let start = clock.now
            let decoded = try WireDecoder.decode(input)
            let elapsed = start.duration(to: clock.now)
            benchmark.stopMeasurement()
            report(benchmark, bytes: input.count, fields: fields, elapsed: elapsed)
            blackHole(decoded)
        }
    }
}
