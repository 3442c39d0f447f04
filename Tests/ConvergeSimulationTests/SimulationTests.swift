import ConvergeCore
@testable import ConvergeSimulation
import ConvergeTestSupport
import Testing

@Suite("Simulator", .computeBound)
struct SimulationTests {
    /// 200 seeds of small core runs, all faults, both topologies (in chunks, run in parallel).
    @Test("core replicas converge to the oracle under all faults", arguments: 0..<8)
    func coreSweep(chunk: Int) {
        for seed in UInt64(chunk * 25 + 1)...UInt64(chunk * 25 + 25) {
            let options = SimulationOptions(seed: seed, replicas: 6, ops: 300, store: .core, topology: seed % 2 == 0 ? .mesh : .hub)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            #expect(report.writes > 150)
            #expect(report.sessionChecks > report.writes)
        }
    }

    /// 40 seeds of small SQLite runs, all faults (crashes reopen temporary files).
    @Test("SQLite replicas converge to the oracle under all faults", arguments: 0..<4)
    func sqliteSweep(chunk: Int) {
        for seed in UInt64(chunk * 10 + 1)...UInt64(chunk * 10 + 10) {
            let options = SimulationOptions(seed: seed, replicas: 4, ops: 200, store: .sqlite, topology: seed % 2 == 0 ? .mesh : .hub)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            #expect(report.sessionChecks > report.writes)
        }
    }

    @Test("SQLite replicas in memory, no crashes")
    func sqliteInMemory() {
        var faults = Set(FaultKind.allCases)
        faults.remove(.crash)
        let options = SimulationOptions(seed: 99, replicas: 5, ops: 300, store: .sqlite, faults: faults)
        #expect(!options.usesFiles)
        let report = simulate(options)
        #expect(report.converged, "\(report.text)")
    }

    @Test("the same seed replays the same run")
    func determinism() {
        for store in StoreKind.allCases {
            let options = SimulationOptions(seed: 42, replicas: 5, ops: 300, store: store, topology: .mesh)
            let first = simulate(options), second = simulate(options)
            #expect(first.converged && second.converged)
            #expect(first.digest == second.digest)
            #expect(first.messages == second.messages && first.bytes == second.bytes)
            #expect(first.faultCounts == second.faultCounts && first.writes == second.writes)
            #expect(first.quarantinedDuringRun == second.quarantinedDuringRun)
        }
        let other = simulate(SimulationOptions(seed: 43, replicas: 5, ops: 300, topology: .mesh))
        #expect(other.digest != simulate(SimulationOptions(seed: 42, replicas: 5, ops: 300, topology: .mesh)).digest)
    }

    @Test("core and SQLite replicas reach byte-identical states from the same seed")
    func coreMatchesSQLite() {
        let core = simulate(SimulationOptions(seed: 5, replicas: 4, ops: 250, store: .core))
        let sqlite = simulate(SimulationOptions(seed: 5, replicas: 4, ops: 250, store: .sqlite))
        #expect(core.converged && sqlite.converged)
        #expect(core.digest == sqlite.digest)
        #expect(core.writes == sqlite.writes && core.bytes == sqlite.bytes)
    }

    /// The checker is not vacuous: a join that drops the membership context is caught,
    /// and shrunk to a small failing run.
    @Test("a broken merge is caught and shrunk", arguments: [Mutation.dropMembershipContext, .tieIgnoresReplica])
    func brokenMergeIsCaught(mutation: Mutation) {
        var options = SimulationOptions(seed: 1, replicas: 6, ops: 300, store: .core)
        options.mutation = mutation
        let report = simulate(options)
        #expect(!report.converged)
        #expect(report.divergence != nil)
        let shrunk = shrink(options, report: report, maxAttempts: 60)
        #expect(!shrunk.report.converged)
        #expect(shrunk.options.ops < options.ops || shrunk.options.replicas < options.replicas)
        #expect(shrunk.options.mutation == mutation)
        #expect(shrunk.options.replayCommand.contains("--mutation \(mutation.rawValue)"))
        // The shrunk options replay the failure.
        #expect(!simulate(shrunk.options).converged)
    }

    /// Far-future clock jumps: receivers quarantine the jumped replicas' changes instead of
    /// letting their clocks be dragged forward, and everything converges once virtual time
    /// has caught up in the healing phase.
    @Test("far-future jumps are quarantined, then converge")
    func farFutureJumps() {
        let options = SimulationOptions(seed: 3, replicas: 5, ops: 400, store: .core, faults: [.jump])
        let simulation = Simulation(options: options)
        simulation.rates.farFutureJumpShare = 1
        simulation.rates.jumpsPerReplica = 1
        let report = simulation.run()
        #expect(report.converged, "\(report.text)")
        #expect(report.faultCounts["jump", default: 0] > 0)
        #expect(report.quarantinedDuringRun > 0)
        #expect(report.quarantinedAtHeal > 0)
        #expect(report.lostWrites == 0)

        let sqlite = Simulation(options: SimulationOptions(seed: 3, replicas: 4, ops: 300, store: .sqlite, faults: [.jump]))
        sqlite.rates.farFutureJumpShare = 1
        sqlite.rates.jumpsPerReplica = 1
        let sqliteReport = sqlite.run()
        #expect(sqliteReport.converged, "\(sqliteReport.text)")
        #expect(sqliteReport.quarantinedAtHeal > 0)
    }

    /// Found by the simulator: a feed page cut by `limit` moves the cursor past parts of
    /// records whose latest change lies beyond the page, so those parts are never sent.
    @Test("paged feeds deliver every part")
    func pagedFeeds() {
        // Tiny pages: a record that changed again beyond a page must still send its older
        // parts (found by this simulator: the cursor must stay fixed while paging).
        for store in [StoreKind.core, .sqlite] {
            for seed in UInt64(1)...8 {
                var options = SimulationOptions(seed: seed, replicas: 3, ops: 60, store: store, faults: [], keysPerTable: 5)
                options.batchRecords = 2
                let report = simulate(options)
                #expect(report.converged, "\(report.text)")
            }
        }
    }

    /// jepsen-powersync's shape: a few clients, transactions that read many keys and write four.
    @Test("the jepsen workload converges and keeps the session guarantees", arguments: StoreKind.allCases)
    func jepsenWorkload(store: StoreKind) {
        for seed in UInt64(1)...4 {
            let options = SimulationOptions(seed: seed, replicas: 7, ops: 300, store: store, topology: seed % 2 == 0 ? .mesh : .hub, workload: .jepsen)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            // Every transaction reads at least eight keys: each is a check of what it shows.
            #expect(report.sessionChecks > 8 * report.writes)
            #expect(options.replayCommand.contains("--workload jepsen"))
        }
        let first = simulate(SimulationOptions(seed: 9, replicas: 6, ops: 200, store: store, workload: .jepsen))
        let second = simulate(SimulationOptions(seed: 9, replicas: 6, ops: 200, store: store, workload: .jepsen))
        #expect(first.digest == second.digest && first.sessionChecks == second.sessionChecks)
    }

    /// `--unique`: clashes on unique indexes between replicas, every replica showing the
    /// first claim and holding the others, as the oracle derives them.
    @Test("unique indexes: constraint conflicts converge to the oracle", arguments: StoreKind.allCases)
    func uniqueIndexes(store: StoreKind) {
        var clashes = 0, held = 0
        for seed in UInt64(1)...(store == .core ? 20 : 6) {
            let options = SimulationOptions(seed: seed, replicas: 5, ops: 300, store: store, topology: seed % 2 == 0 ? .mesh : .hub, unique: true)
            let report = simulate(options)
            #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
            #expect(report.lostWrites == 0)
            #expect(options.replayCommand.hasSuffix(" --unique"))
            clashes += report.constraintConflicts
            held += report.heldRecords
        }
        // The few values of the unique columns clash often: the checks are not vacuous.
        #expect(clashes > 10 && held >= clashes)
    }

    @Test("unique indexes: core and SQLite replicas reach byte-identical states from the same seed")
    func uniqueCoreMatchesSQLite() {
        for seed in UInt64(5)...7 {
            let core = simulate(SimulationOptions(seed: seed, replicas: 4, ops: 250, store: .core, unique: true))
            let sqlite = simulate(SimulationOptions(seed: seed, replicas: 4, ops: 250, store: .sqlite, unique: true))
            #expect(core.passed && sqlite.passed, "\(core.text)\n\(sqlite.text)")
            #expect(core.digest == sqlite.digest)
            #expect(core.writes == sqlite.writes && core.constraintConflicts == sqlite.constraintConflicts && core.heldRecords == sqlite.heldRecords)
        }
    }

    @Test("options parse and print")
    func options() throws {
        #expect(try FaultKind.parseList("all") == Set(FaultKind.allCases))
        #expect(try FaultKind.parseList("none").isEmpty)
        #expect(try FaultKind.parseList("drop, jump") == [.drop, .jump])
        #expect(throws: OptionError.self) { try FaultKind.parseList("drop,meteor") }
        #expect(throws: OptionError.self) { try SimulationOptions(replicas: 1).validate() }
        // The engine and server mutations need the real engine and server.
        for mutation in Mutation.allCases where mutation.needsHTTP {
            #expect(throws: OptionError.self) { try SimulationOptions(mutation: mutation).validate() }
            try SimulationOptions(store: .sqlite, mutation: mutation, transport: .http).validate()
        }
        let options = SimulationOptions(seed: 9, replicas: 3, ops: 10, store: .sqlite, topology: .mesh, faults: [.drop, .crash])
        #expect(options.usesFiles)
        #expect(options.replayCommand == "swift run -c release converge-sim --seed 9 --replicas 3 --ops 10 --store sqlite --topology mesh --faults drop,crash")
        #expect(throws: OptionError.self) { try SimulationOptions(workload: .jepsen, unique: true).validate() }
        #expect(SimulationOptions(seed: 3, unique: true).replayCommand.hasSuffix("--faults all --unique"))
        #expect(SimulationOptions(unique: true).summary.contains("unique indexes"))
        #expect(!SimulationOptions().replayCommand.contains("--unique"))
        let report = simulate(SimulationOptions(seed: 2, replicas: 3, ops: 50))
        #expect(report.json.hasPrefix("{\"converged\":true,\"replicas\":3,\"ops\":50,\"seed\":2,\"elapsed_s\":"))
        for key in ["messages", "bytes", "faults", "lost_writes", "session_checks", "session_violations"] { #expect(report.json.contains("\"\(key)\":")) }
        #expect(report.json.contains("\"session_violations\":0"))
    }
}
