import ArgumentParser
import ConvergeCore
import ConvergeSimulation
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The simulator's command line, shared by `converge-sim` (the simulator's network and the
/// SQLite stores: no server stack, so that the README's main job builds in minutes) and
/// `converge-sim-http` (the same options, plus the real sync server over loopback HTTP).
struct ConvergeSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "converge-sim",
        abstract: "Runs many Converge replicas through faults and checks they converge to an oracle.",
        discussion: """
            Deterministic: one seeded generator, virtual time, one thread per run (a sweep \
            runs its seeds side by side, --jobs). The same options replay the same run (over \
            --transport http: the same writes and faults; timing differs). After every local \
            write and every applied sync on every replica, the session guarantees are \
            checked (read-your-writes, monotonic reads, no reverted local write). Exit \
            status: 0 converged with every guarantee kept, 1 diverged or broke a guarantee, \
            2 bad options.
            """)

    @Option(help: "The seed of the run (the first one with --sweep).")
    var seed: UInt64 = 1

    @Option(help: "Number of replicas.")
    var replicas: Int = 50

    @Option(help: "Number of local write operations.")
    var ops: Int = 20_000

    @Option(help: "Replica kind: core (pure model) or sqlite (ConvergeSQLite stores).")
    var store: String = "sqlite"

    @Option(help: "hub (replica 0 is the server) or mesh (gossip among random peers).")
    var topology: String = "hub"

    @Option(help: "memory (the simulator's network) or http (the real sync server on loopback; needs --store sqlite and --topology hub, and converge-sim-http). Default: memory in converge-sim, http in converge-sim-http.")
    var transport: String?

    @Option(help: "With --transport http: the server's storage, sqlite (one file per namespace) or postgres (ConvergePostgres, the database of --postgres).")
    var storage: String = "sqlite"

    @Option(help: "With --storage postgres: server instances on the one database; each device's requests go to them in turn.")
    var servers: Int = 1

    @Option(help: "With --storage postgres: the database URL (default: $CONVERGE_POSTGRES_URL). Each run makes a schema of its own there and drops it after.")
    var postgres: String?

    @Option(help: "none, all, or a list of drop,dup,reorder,delay,partition,skew,jump,crash.")
    var faults: String = "all"

    @Option(help: "mixed (every kind of write on every table) or jepsen (jepsen-powersync's shape: transactions that read many keys and write four; run it with --replicas 5 to 10).")
    var workload: String = "mixed"

    @Flag(help: "Tables with unique indexes: notes and items get a code column with a UNIQUE index whose few values clash between replicas (constraint conflicts: the first claim is shown, the others held; needs --workload mixed).")
    var unique = false

    @Flag(help: "Tombstone collection (hub topology only): devices report stable positions, the hub collects deletes at or below the frontier, retires devices not seen for the retention window, and retired devices reset; the oracle knows what that may drop.")
    var collect = false

    @Option(name: .customLong("retention-ms"), help: "With --collect: the retention window in virtual milliseconds (default: three times a device's mean time between syncs).")
    var retentionMs: UInt64?

    @Option(help: "Run this many consecutive seeds and report how many converged.")
    var sweep: Int?

    @Option(help: "With --sweep: seeds run at once, each on a thread of its own (default: the number of processor cores). Each run stays deterministic; only the order in which they finish changes.")
    var jobs: Int?

    @Flag(help: "End with one JSON line.")
    var json = false

    @Flag(help: "SQLite stores on temporary files instead of in memory (implied by crash faults).")
    var files = false

    @Option(help: "Keys per table (default: from --ops).")
    var keys: Int?

    @Option(name: .customLong("sync-rate"), help: "Sync round trips started per operation (default: from the shape of the run).")
    var syncRate: Double?

    @Option(help: "Records per sync message at most.")
    var batch: Int = 1_000

    @Option(name: .customLong("max-drift-ms"), help: "Drift allowance of every replica, in milliseconds.")
    var maxDriftMs: UInt64 = HybridClock.defaultMaxDriftMilliseconds

    @Flag(name: .customLong("no-shrink"), help: "Do not shrink a failing run.")
    var noShrink = false

    @Option(help: "Test the checkers: run with a deliberately broken merge, engine or server (`list` names them); the run must fail.")
    var mutation: String?

    func makeOptions(defaultTransport: SimulationTransport) throws -> SimulationOptions {
        let transport = self.transport ?? defaultTransport.rawValue
        guard let storeKind = StoreKind(rawValue: store) else { throw ValidationError("--store must be core or sqlite (got '\(store)')") }
        guard let topologyKind = Topology(rawValue: topology) else { throw ValidationError("--topology must be hub or mesh (got '\(topology)')") }
        guard let transportKind = SimulationTransport(rawValue: transport) else { throw ValidationError("--transport must be memory or http (got '\(transport)')") }
        guard let workloadKind = WorkloadKind(rawValue: workload) else { throw ValidationError("--workload must be mixed or jepsen (got '\(workload)')") }
        var options = SimulationOptions(seed: seed, replicas: replicas, ops: ops, store: storeKind, topology: topologyKind, transport: transportKind, workload: workloadKind)
        do {
            options.faults = try FaultKind.parseList(faults)
        } catch {
            throw ValidationError(error.description)
        }
        options.files = files
        guard let storageKind = ServerStorageKind(rawValue: storage) else { throw ValidationError("--storage must be sqlite or postgres (got '\(storage)')") }
        options.serverStorage = storageKind
        options.servers = servers
        options.postgresURL = postgres ?? ProcessInfo.processInfo.environment["CONVERGE_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
        if storageKind == .postgres && options.postgresURL == nil {
            throw ValidationError("--storage postgres needs a database: --postgres URL, or CONVERGE_POSTGRES_URL in the environment")
        }
        options.unique = unique
        options.collect = collect
        options.retentionMilliseconds = retentionMs
        options.keysPerTable = keys
        options.syncRate = syncRate
        options.batchRecords = batch
        options.maxDriftMilliseconds = maxDriftMs
        if let mutation {
            guard let kind = Mutation(rawValue: mutation) else {
                throw ValidationError("--mutation must be list or one of \(Mutation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            options.mutation = kind
        }
        if let sweep, sweep < 1 { throw ValidationError("--sweep must be at least 1 (got \(sweep))") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1 (got \(jobs))") }
        do {
            try options.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return options
    }
}

/// Prints a `\r` progress line when stdout is a terminal.
final class ProgressLine {
    let enabled = isatty(STDOUT_FILENO) != 0
    private let start = ContinuousClock.now
    private var last = ContinuousClock.now - .seconds(1)
    private var printed = false
    var prefix = ""

    func update(_ progress: SimulationProgress) {
        guard enabled else { return }
        let now = ContinuousClock.now
        guard now - last >= .milliseconds(100) || progress.phase != "writing" else { return }
        last = now
        let elapsed = now - start
        let seconds = max(0.001, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        let rate = Int(Double(progress.opsDone) / seconds)
        let line = "\(prefix)\(progress.phase): \(progress.opsDone)/\(progress.ops) ops, \(progress.replicas) replicas, \(progress.faults) faults, \(progress.messages) messages, \(rate) ops/s"
        print("\r\u{1B}[K" + line, terminator: "")
        fflush(nil)
        printed = true
    }

    /// A line of its own, e.g. a sweep's count of finished seeds.
    func note(_ line: String) {
        guard enabled else { return }
        print("\r\u{1B}[K" + prefix + line, terminator: "")
        fflush(nil)
        printed = true
    }

    func clear() {
        guard enabled, printed else { return }
        print("\r\u{1B}[K", terminator: "")
        fflush(nil)
        printed = false
    }
}

/// The entry point of both simulator executables.
///
/// `converge-sim` passes no HTTP runner: it links no server stack (Hummingbird, NIO,
/// PostgreSQL), so its release build, the README's first command, takes minutes rather than
/// the better part of half an hour on two cores. `converge-sim-http` passes the runner that
/// drives the real sync server over loopback; every other option means the same in both.
package enum SimulatorMain {
    /// Runs one HTTP simulation to its end on the calling thread.
    package typealias HTTPRunner = @Sendable (SimulationOptions, ((SimulationProgress) -> Void)?) -> SimulationReport

    /// Parses the process's arguments, runs the simulation or the sweep they name and exits
    /// with the documented status (0 converged, 1 diverged or broke a guarantee, 2 bad options).
    package static func main(commandName: String, httpRunner: HTTPRunner?) -> Never {
        let command: ConvergeSim
        let options: SimulationOptions
        do {
            command = try ConvergeSim.parse(Array(CommandLine.arguments.dropFirst()))
            if command.mutation == "list" {
                for mutation in Mutation.allCases { print("\(mutation.rawValue.padding(toLength: 22, withPad: " ", startingAt: 0)) \(mutation.summary)") }
                exit(0)
            }
            options = try command.makeOptions(defaultTransport: httpRunner == nil ? .memory : .http)
            if options.transport == .http && httpRunner == nil {
                throw ValidationError(
                    "--transport http drives the real sync server, which \(commandName) does not link (it stays free of the server stack): run converge-sim-http with the same options (\(options.replayCommand))")
            }
        } catch {
            // The usage lines name the executable that runs (the command's name is the shorter one).
            let message = ConvergeSim.fullMessage(for: error).replacingOccurrences(of: "converge-sim ", with: "\(commandName) ")
            if ConvergeSim.exitCode(for: error) == .success {
                FileHandleOutput.standardOutput(message)
                exit(0)
            }
            FileHandleOutput.standardError(message)
            exit(2)
        }
        let runner = Runner(httpRunner: httpRunner)
        let progress = ProgressLine()
        if let sweep = command.sweep {
            exit(runner.runSweep(options, count: sweep, command: command, progress: progress))
        }
        exit(runner.runOne(options, command: command, progress: progress))
    }
}

/// Runs simulations through the simulator's network or, where the executable links it, the
/// real server.
struct Runner: Sendable {
    let httpRunner: SimulatorMain.HTTPRunner?

    /// One run, through the simulator's network or the real server (blocking this thread).
    func run(_ options: SimulationOptions, progress: ((SimulationProgress) -> Void)? = nil) -> SimulationReport {
        switch options.transport {
        case .memory: return simulate(options, progress: progress)
        case .http:
            guard let httpRunner else { preconditionFailure("an HTTP run was let through by an executable without the server stack") }
            return httpRunner(options, progress)
        }
    }

    func runOne(_ options: SimulationOptions, command: ConvergeSim, progress: ProgressLine) -> Int32 {
        let report = run(options, progress: progress.update)
        progress.clear()
        print(report.text)
        if !report.passed {
            print("seed: \(options.seed)")
            print("replay: \(options.replayCommand)")
            if !command.noShrink {
                print("shrinking...")
                let result = shrink(options, report: report, onStep: { candidate, _ in
                    if progress.enabled { print("  still fails: \(candidate.summary)") }
                }, run: { run($0) })
                print("smallest failing run (\(result.attempts) runs tried): \(result.options.summary)")
                print("replay: \(result.options.replayCommand)")
                if let violation = result.report.sessionViolation { print(violation.description) }
                if let divergence = result.report.divergence { print(divergence.description) }
                if let failure = result.report.failure { print("failure: \(failure)") }
            }
        }
        if command.json { print(report.json) }
        return report.passed ? 0 : 1
    }

    func runSweep(_ base: SimulationOptions, count: Int, command: ConvergeSim, progress: ProgressLine) -> Int32 {
        let start = ContinuousClock.now
        let jobs = min(count, command.jobs ?? ProcessInfo.processInfo.activeProcessorCount)
        let sweep = Sweep(base: base, count: count, progress: progress)
        if jobs == 1 {
            // One seed at a time on this thread, with the run's own progress line.
            while let options = sweep.next() {
                progress.prefix = "seed \(options.seed) (\(options.seed &- base.seed + 1)/\(count)) "
                sweep.finish(options, run(options, progress: progress.update))
            }
        } else {
            // Seeds are independent runs: each worker takes the next seed until none is left.
            let group = DispatchGroup()
            for _ in 0..<jobs {
                group.enter()
                let worker = Thread {
                    while let options = sweep.next() { sweep.finish(options, run(options)) }
                    group.leave()
                }
                worker.name = "converge-sim-sweep"
                worker.stackSize = 16 << 20
                worker.start()
            }
            group.wait()
        }
        let reports = sweep.reports
        let failed = reports.filter { !$0.passed }
        let converged = reports.count - failed.count
        func total(_ figure: (SimulationReport) -> Int) -> Int { reports.reduce(0) { $0 + figure($1) } }
        let messages = total(\.messages), bytes = total(\.bytes), faults = total(\.faults), lost = total(\.lostWrites)
        let sessionChecks = total(\.sessionChecks), sessionViolations = total(\.sessionViolations)
        let constraintConflicts = total(\.constraintConflicts), heldRecords = total(\.heldRecords)
        let collected = total { $0.collection?.collectedRecords ?? 0 }
        let collectedWhileWriting = total { $0.collection?.collectedWhileWriting ?? 0 }
        let resets = total { $0.collection?.resets ?? 0 }
        progress.clear()
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("sweep: \(converged)/\(count) seeds converged with every session guarantee kept (\(base.summary.replacingOccurrences(of: "seed \(base.seed)", with: "seeds \(base.seed)...\(base.seed &+ UInt64(count - 1))")), \(messages) messages, \(faults) faults, \(sessionChecks) session checks, \(sessionViolations) violations\(base.unique ? ", \(constraintConflicts) constraint conflicts holding \(heldRecords) records at the end" : "")\(base.collect ? ", \(collected) records collected (\(collectedWhileWriting) while writing), \(resets) resets" : ""), \(Int(seconds)) s")
        if let first = failed.first, !command.noShrink {
            print("shrinking seed \(first.options.seed)...")
            let result = shrink(first.options, report: first, run: { run($0) })
            print("smallest failing run (\(result.attempts) runs tried): \(result.options.summary)")
            print("replay: \(result.options.replayCommand)")
            if let violation = result.report.sessionViolation { print(violation.description) }
            if let divergence = result.report.divergence { print(divergence.description) }
            if let failure = result.report.failure { print("failure: \(failure)") }
        }
        if command.json {
            let fields = [
                "\"converged\":\(failed.isEmpty)", "\"replicas\":\(base.replicas)", "\"ops\":\(base.ops)", "\"seed\":\(base.seed)",
                "\"elapsed_s\":\(Double(Int(seconds * 100)) / 100)", "\"messages\":\(messages)", "\"bytes\":\(bytes)", "\"faults\":\(faults)",
                "\"lost_writes\":\(lost)", "\"session_checks\":\(sessionChecks)", "\"session_violations\":\(sessionViolations)",
                "\"runs\":\(count)", "\"converged_runs\":\(converged)",
            ] + (base.collect ? ["\"collected_records\":\(collected)", "\"collected_while_writing\":\(collectedWhileWriting)", "\"resets\":\(resets)"] : [])
            print("{" + fields.joined(separator: ",") + "}")
        }
        return failed.isEmpty ? 0 : 1
    }
}

/// The seeds of a sweep, handed out to its workers, and their reports in seed order.
/// Every access holds the lock; the progress line and the failure printing too, so lines
/// never interleave.
final class Sweep: @unchecked Sendable {
    private let base: SimulationOptions
    private let count: Int
    private let progress: ProgressLine
    private let lock = NSLock()
    private var nextIndex = 0
    private var finished = 0
    private var byIndex: [SimulationReport?]

    init(base: SimulationOptions, count: Int, progress: ProgressLine) {
        self.base = base
        self.count = count
        self.progress = progress
        byIndex = Array(repeating: nil, count: count)
    }

    /// The options of the next seed to run, or nil when every seed is taken.
    func next() -> SimulationOptions? {
        lock.withLock {
            guard nextIndex < count else { return nil }
            var options = base
            options.seed = base.seed &+ UInt64(nextIndex)
            nextIndex += 1
            return options
        }
    }

    /// Keeps a seed's report; prints it at once if it failed.
    func finish(_ options: SimulationOptions, _ report: SimulationReport) {
        lock.withLock {
            byIndex[Int(options.seed &- base.seed)] = report
            finished += 1
            if !report.passed {
                progress.clear()
                print("seed \(options.seed) \(report.converged ? "BROKE A SESSION GUARANTEE" : "DIVERGED")")
                print(report.text)
                print("replay: \(options.replayCommand)")
            }
            progress.note("\(finished)/\(count) seeds done")
        }
    }

    /// Every report, in seed order (call once the workers are done).
    var reports: [SimulationReport] {
        lock.withLock { byIndex.compactMap { $0 } }
    }
}

enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func standardOutput(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}

