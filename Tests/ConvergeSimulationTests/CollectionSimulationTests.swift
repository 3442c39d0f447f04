import ConvergeCore
@testable import ConvergeSimulation
import ConvergeTestSupport
import Testing

/// `--collect` (DESIGN §9): the simulator's hub collects tombstones, retires devices and
/// makes them reset, and the oracle knows what that may drop, and nothing more.
@Suite("Simulator with tombstone collection", .computeBound)
struct CollectionSimulationTests {
    /// Runs that sync often enough for the frontier to pass deletes while replicas still
    /// write, with keys enough for a deleted record to stay deleted a while: collection
    /// happens during the run, not only while healing, and a short retention window
    /// retires devices now and then.
    static func options(seed: UInt64, store: StoreKind, replicas: Int = 6, ops: Int = 400) -> SimulationOptions {
        var options = SimulationOptions(seed: seed, replicas: replicas, ops: ops, store: store, keysPerTable: 20, syncRate: 0.5)
        options.collect = true
        return options
    }

    @Test("core replicas converge with collection on, under all faults", arguments: 0..<4)
    func coreSweep(chunk: Int) {
        var whileWriting = 0, resets = 0
        for seed in UInt64(chunk * 10 + 1)...UInt64(chunk * 10 + 10) {
            let options = Self.options(seed: seed, store: .core)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            #expect((report.collection?.collectedRecords ?? 0) > 0, "\(report.text)")
            #expect(report.sessionChecks > report.writes)
            whileWriting += report.collection?.collectedWhileWriting ?? 0
            resets += report.collection?.resets ?? 0
        }
        // Not vacuous: the hub collects while replicas write, and devices reset.
        #expect(whileWriting > 10)
        #expect(resets > 2)
    }

    @Test("SQLite replicas converge with collection on, under all faults", arguments: 0..<2)
    func sqliteSweep(chunk: Int) {
        var whileWriting = 0, resets = 0
        for seed in UInt64(chunk * 4 + 1)...UInt64(chunk * 4 + 4) {
            let options = Self.options(seed: seed, store: .sqlite, replicas: 5, ops: 300)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            #expect((report.collection?.collectedRecords ?? 0) > 0, "\(report.text)")
            whileWriting += report.collection?.collectedWhileWriting ?? 0
            resets += report.collection?.resets ?? 0
        }
        #expect(whileWriting > 0)
        #expect(resets > 0)
    }

    @Test("core and SQLite replicas collect, reset and end byte-identical from the same seed")
    func coreMatchesSQLite() {
        for seed in UInt64(3)...5 {
            let core = simulate(Self.options(seed: seed, store: .core, replicas: 4, ops: 250))
            let sqlite = simulate(Self.options(seed: seed, store: .sqlite, replicas: 4, ops: 250))
            #expect(core.passed && sqlite.passed, "\(core.text)\n\(sqlite.text)")
            #expect(core.digest == sqlite.digest)
            #expect(core.collection == sqlite.collection)
        }
    }

    @Test("the same seed replays the same run with collection on")
    func determinism() {
        let options = Self.options(seed: 7, store: .core)
        let first = simulate(options), second = simulate(options)
        #expect(first.passed && second.passed)
        #expect(first.digest == second.digest && first.messages == second.messages)
        #expect(first.collection == second.collection)
    }

    /// The oracle does not take whatever the hub drops: collecting deletes the frontier has
    /// not passed leaves writes concurrent with them orphaned, on devices still active.
    @Test("collecting above the frontier is caught")
    func collectingAboveTheFrontierIsCaught() {
        var caught = 0
        for seed in UInt64(1)...4 {
            var options = Self.options(seed: seed, store: .core, replicas: 8, ops: 600)
            options.mutation = .collectAboveFrontier
            let report = simulate(options)
            if !report.passed { caught += 1 }
            #expect(report.passed || report.failure?.contains("was not stable") == true || report.divergence != nil, "\(report.text)")
        }
        #expect(caught >= 3)
    }

    /// Nor is a reset taken on trust: one that drops what the device's user typed offline
    /// is caught by what the reset must bring back.
    @Test("a reset that loses the device's unacknowledged writes is caught")
    func lossyResetIsCaught() {
        var caught = 0
        for seed in UInt64(1)...4 {
            var options = Self.options(seed: seed, store: .core, replicas: 8, ops: 600)
            options.mutation = .resetLosesWrites
            let report = simulate(options)
            if !report.passed {
                caught += 1
                #expect(report.failure?.contains("lost what its user typed") == true || report.divergence != nil, "\(report.text)")
            }
        }
        #expect(caught >= 3)
    }

    @Test("options: --collect needs a hub, and replays")
    func optionsAreChecked() throws {
        var options = SimulationOptions(seed: 2, replicas: 4, ops: 100, topology: .mesh)
        options.collect = true
        #expect(throws: OptionError.self) { try options.validate() }
        options.topology = .hub
        try options.validate()
        #expect(options.replayCommand.hasSuffix("--faults all --collect"))
        #expect(options.summary.contains("collecting (retention \(options.effectiveRetentionMilliseconds) ms)"))
        options.retentionMilliseconds = 500
        #expect(options.effectiveRetentionMilliseconds == 500)
        #expect(options.replayCommand.hasSuffix("--collect --retention-ms 500"))
        var plain = SimulationOptions()
        plain.retentionMilliseconds = 500
        #expect(throws: OptionError.self) { try plain.validate() }
        for mutation in Mutation.allCases where mutation.needsCollect {
            #expect(throws: OptionError.self) { try SimulationOptions(mutation: mutation).validate() }
            var collecting = SimulationOptions(mutation: mutation)
            collecting.collect = true
            try collecting.validate()
        }
        // A run without --collect reports nothing of it.
        #expect(simulate(SimulationOptions(seed: 2, replicas: 3, ops: 50)).collection == nil)
        let report = simulate(Self.options(seed: 2, store: .core, replicas: 4, ops: 100))
        #expect(report.json.contains("\"collect\":true") && report.json.contains("\"collected_records\":"))
        #expect(report.text.contains("records collected"))
    }
}
