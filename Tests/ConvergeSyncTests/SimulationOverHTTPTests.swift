import ConvergeCore
import Foundation
import ConvergeSimulation
import ConvergeSimulationHTTP
import Testing

/// The simulator's hub mode through the real server (`converge-sim-http`):
/// device SQLite stores → SyncEngine over HTTP → Hummingbird → the server's SQLite store →
/// the other devices, checked against the oracle.
///
/// Each test runs whole simulations in a debug build, beside the rest of the run: the limit
/// is there to stop a hang, not to time them.
@Suite("Simulator over HTTP", .timeLimit(.minutes(10)))
struct SimulationOverHTTPTests {
    func httpOptions(seed: UInt64, replicas: Int = 4, ops: Int = 300) -> SimulationOptions {
        SimulationOptions(seed: seed, replicas: replicas, ops: ops, store: .sqlite, topology: .hub, syncRate: 0.3, transport: .http)
    }

    @Test("devices converge through the real server under all faults", arguments: [UInt64(1), 2])
    func convergesUnderFaults(seed: UInt64) async {
        let options = httpOptions(seed: seed, replicas: 5, ops: 400)
        // Every kind often enough to show up in a small run.
        var rates = FaultRates()
        rates.drop = 0.25
        rates.duplicate = 0.15
        rates.delay = 0.1
        rates.partitionsPer10kOps = 200
        rates.crashesPerReplica = 1
        rates.jumpsPerReplica = 1
        rates.serverKill = 0.03
        rates.commitFailure = 0.1
        let report = await simulateOverHTTP(options, rates: rates)
        #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
        #expect(report.lostWrites == 0)
        #expect(report.failure == nil)
        #expect(report.writes > 200)
        #expect(report.roundTrips > 100)
        #expect(report.sessionChecks > report.writes)
        for kind in ["drop", "lost-response", "server-error", "dup", "delay", "reorder", "partition", "crash", "skew", "jump", "server-kill", "commit-failure"] {
            #expect(report.faultCounts[kind, default: 0] > 0, "no \(kind) fault injected: \(report.faultCounts)")
        }
        #expect(report.visibleRows > 0)
    }

    /// `--unique` over HTTP: the server's store has the unique indexes too (its schema says
    /// so), and holds the same records as the devices.
    @Test("unique indexes: devices and the server hold the same records", arguments: [UInt64(1), 2])
    func uniqueIndexes(seed: UInt64) async {
        var options = httpOptions(seed: seed)
        options.unique = true
        let report = await simulateOverHTTP(options)
        #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
        #expect(report.lostWrites == 0)
        #expect(report.failure == nil)
    }

    @Test("tiny batches page pushes and pulls through the server")
    func pagedRounds() async {
        var options = httpOptions(seed: 3, replicas: 3, ops: 150)
        options.batchRecords = 2
        options.keysPerTable = 6
        let report = await simulateOverHTTP(options)
        #expect(report.converged, "\(report.text)")
        #expect(report.continuations > 0)
        #expect(report.lostWrites == 0)
    }

    @Test("the same seed writes the same things over HTTP")
    func deterministic() async {
        let options = httpOptions(seed: 11)
        let first = await simulateOverHTTP(options)
        let second = await simulateOverHTTP(options)
        #expect(first.converged && second.converged, "\(first.text)\n\(second.text)")
        #expect(first.digest == second.digest)
        #expect(first.writes == second.writes && first.noOpWrites == second.noOpWrites)
        #expect(first.faultCounts == second.faultCounts)
        #expect(first.messages == second.messages && first.bytes == second.bytes)
    }

    /// The checker is not vacuous over HTTP either: devices whose merge of pulled pages is
    /// broken are caught (a divergence from the oracle, or the server refusing what they
    /// push back).
    @Test("a broken merge on the devices is caught", arguments: [Mutation.dropMembershipContext, .tieIgnoresReplica])
    func brokenMergeIsCaught(mutation: Mutation) async {
        var options = httpOptions(seed: 1)
        options.mutation = mutation
        let report = await simulateOverHTTP(options)
        #expect(!report.converged, "\(report.text)")
        #expect(report.divergence != nil || report.failure != nil)
        if mutation == .dropMembershipContext {
            #expect(report.divergence != nil)
            #expect(report.lostWrites > 0)
        }
    }

    /// The checkers catch a sync engine or a server that breaks what a user sees: each
    /// mutation makes the run fail, and the session checker names the guarantee.
    @Test("a broken engine or server is caught", arguments: [Mutation.pullOverUnpushed, .stalePull, .cursorBeforeCommit])
    func brokenEngineOrServerIsCaught(mutation: Mutation) async {
        var options = httpOptions(seed: 1, replicas: 5, ops: 400)
        options.mutation = mutation
        var rates = FaultRates()
        rates.commitFailure = 0.2
        let report = await simulateOverHTTP(options, rates: rates)
        #expect(!report.passed, "\(report.text)")
        switch mutation {
        case .pullOverUnpushed:
            // The row shows the server's older value over the device's own write.
            #expect(report.sessionViolation?.guarantee == "no reverted local write" || report.sessionViolation?.guarantee == "read-your-writes",
                    "\(report.text)")
        case .stalePull:
            #expect(report.sessionViolation?.field == "(pull cursor)", "\(report.text)")
        default:
            // A page lost to a failed commit: the device never pulls it again.
            #expect(report.divergence != nil || report.sessionViolations > 0, "\(report.text)")
        }
    }

    /// A session failure shrinks like a divergence, to a run that replays it.
    @Test("a broken session guarantee shrinks to a smaller failing run")
    func sessionFailureShrinks() async {
        var options = httpOptions(seed: 2, replicas: 4, ops: 200)
        options.mutation = .stalePull
        let report = await simulateOverHTTP(options)
        #expect(report.converged && !report.passed, "\(report.text)")
        // Shrinking replays runs over HTTP, which block their thread: not one of the pool's.
        let failing = options
        let shrunk = await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: shrink(failing, report: report, maxAttempts: 6, run: { simulateOverHTTPBlocking($0) }))
            }
            thread.stackSize = 16 << 20
            thread.start()
        }
        #expect(!shrunk.report.passed)
        #expect(shrunk.report.sessionViolation != nil)
        #expect(shrunk.options.ops < options.ops || shrunk.options.replicas < options.replicas || shrunk.options.faults != options.faults)
        #expect(shrunk.options.replayCommand.contains("--mutation stale-pull"))
    }

    @Test("the jepsen workload through the real server keeps the session guarantees")
    func jepsenOverHTTP() async {
        var options = httpOptions(seed: 4, replicas: 6, ops: 300)
        options.workload = .jepsen
        let report = await simulateOverHTTP(options)
        #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
        #expect(report.sessionChecks > 8 * report.writes)
    }

    /// `--collect` over HTTP: the server collects with a retention window of milliseconds
    /// of virtual time, retires devices, and their engines reset; every device, the server
    /// and the oracle agree, and nothing a user typed is lost.
    @Test("tombstone collection through the real server converges", arguments: [UInt64(2), 3])
    func collection(seed: UInt64) async {
        var options = httpOptions(seed: seed, replicas: 5, ops: 400)
        options.collect = true
        let report = await simulateOverHTTP(options)
        #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
        #expect(report.lostWrites == 0)
        #expect((report.collection?.collectedWhileWriting ?? 0) > 0, "\(report.text)")
        #expect((report.collection?.droppedByDevices ?? 0) > 0, "\(report.text)")
        #expect((report.collection?.resets ?? 0) > 0, "\(report.text)")
    }

    @Test("options: http needs SQLite stores and a hub, and says so")
    func optionsAreChecked() throws {
        #expect(throws: OptionError.self) { try SimulationOptions(store: .core, transport: .http).validate() }
        #expect(throws: OptionError.self) { try SimulationOptions(store: .sqlite, topology: .mesh, transport: .http).validate() }
        let options = httpOptions(seed: 9, replicas: 3, ops: 10)
        try options.validate()
        #expect(options.usesFiles)
        #expect(options.summary == "3 sqlite replicas, 10 ops, hub over http, faults all, seed 9")
        #expect(options.replayCommand.contains("--transport http"))
        #expect(!options.replayCommand.contains("--files"))
        // The plain simulator cannot run it by itself.
        let report = simulate(options)
        #expect(!report.converged)
        #expect(report.failure?.contains("simulateOverHTTP") == true)
        #expect(report.json.contains("\"transport\":\"http\""))
    }
}
