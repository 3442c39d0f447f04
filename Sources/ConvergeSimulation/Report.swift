import ConvergeCore

/// A failure that stops a run (a store error, a broken expectation of the harness).
struct SimulationFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The first place where replicas disagree with each other or with the oracle.
public struct Divergence: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The table of the record where the replicas disagree.
    public var table: String
    /// The record's primary key, as text.
    public var key: String
    /// The field, `(row)` for the row's presence, `(conflict)` for a sibling list,
    /// `(state)` for the merge metadata.
    public var field: String
    /// What the oracle expects.
    public var expected: String
    /// The value each group of replicas shows: `replicas 0,2: 'x'`.
    public var observed: [String]
    /// The record's write history (small runs only).
    public var history: [String]

    public var description: String {
        var lines = ["first divergence: table \(table), key \(key), field \(field)", "  oracle expects: \(expected)"]
        lines += observed.map { "  \($0)" }
        if !history.isEmpty {
            lines.append("  history of the record (replica, stamp, write):")
            lines += history.map { "    \($0)" }
        }
        return lines.joined(separator: "\n")
    }
}

/// Live figures, for a progress line.
public struct SimulationProgress: Sendable {
    /// Operations done so far.
    public var opsDone: Int
    /// Operations of the whole run.
    public var ops: Int
    /// Replicas in the run.
    public var replicas: Int
    /// Faults injected so far.
    public var faults: Int
    /// Sync messages sent so far.
    public var messages: Int
    /// The phase the run is in: writing, healing or checking.
    public var phase: String
}

/// `--collect`: what tombstone collection did in a run.
public struct CollectionStats: Sendable, Codable, Hashable {
    /// The retention window, in virtual milliseconds.
    public var retentionMilliseconds: UInt64
    /// Records the hub (the simulator's, or the server) collected, in all and while the
    /// replicas were writing (before healing).
    public var collectedRecords = 0
    /// Of ``collectedRecords``, those collected while the replicas were writing.
    public var collectedWhileWriting = 0
    /// Records devices dropped after the hub listed them.
    public var droppedByDevices = 0
    /// Devices the simulator's hub retired (the server's retirements show as resets).
    public var retirements = 0
    /// Resets for resync, the local writes they withdrew (they never reached the hub), and
    /// the records the resets wrote again as new writes.
    public var resets = 0
    /// Records the resets wrote again as new writes.
    public var reappliedRecords = 0
    /// Local writes the resets withdrew because they never reached the hub (written again
    /// as new writes).
    public var withdrawnWrites = 0

    /// Makes the figures of a run with the given retention window (all counts zero by default).
    public init(retentionMilliseconds: UInt64, collectedRecords: Int = 0, collectedWhileWriting: Int = 0, droppedByDevices: Int = 0,
                retirements: Int = 0, resets: Int = 0, reappliedRecords: Int = 0, withdrawnWrites: Int = 0) {
        self.retentionMilliseconds = retentionMilliseconds
        self.collectedRecords = collectedRecords
        self.collectedWhileWriting = collectedWhileWriting
        self.droppedByDevices = droppedByDevices
        self.retirements = retirements
        self.resets = resets
        self.reappliedRecords = reappliedRecords
        self.withdrawnWrites = withdrawnWrites
    }
}

/// The outcome of one run.
public struct SimulationReport: Sendable, Codable {
    /// The options of the run: ``SimulationOptions/replayCommand`` replays it.
    public var options: SimulationOptions
    /// Whether every replica ended with the same merge state and with the rows and conflicts
    /// the oracle expects (see ``passed`` for the session guarantees too).
    public var converged: Bool
    /// Wall-clock seconds the run took.
    public var elapsedSeconds: Double
    /// Local transactions that stamped something (acknowledged writes).
    public var writes: Int
    /// Writes the workload issued that changed nothing (updates of absent rows...).
    public var noOpWrites: Int
    /// Sync messages sent.
    public var messages: Int
    /// Bytes of the sync messages sent.
    public var bytes: Int
    /// Faults injected, in all.
    public var faults: Int
    /// Faults injected, by kind.
    public var faultCounts: [String: Int]
    /// Writes whose effect the oracle says must be visible, and is not on some replica.
    public var lostWrites: Int
    /// Field writes still visible at the end (field winners and siblings).
    public var visibleWrites: Int
    /// Rows visible at the end, over every table.
    public var visibleRows: Int
    /// Critical fields still in conflict at the end.
    public var openConflicts: Int
    /// `--unique`: live records a unique index holds out of the app table (kept, not
    /// lost), and the clashes holding them (constraint conflicts), at the end.
    public var heldRecords = 0
    /// Unique-index clashes open at the end (see ``heldRecords``).
    public var constraintConflicts = 0
    /// Records quarantined while writing: stamped beyond a replica's drift allowance.
    public var quarantinedDuringRun: Int
    /// Records still quarantined when healing began (released as virtual time moved on).
    public var quarantinedAtHeal: Int
    /// Exchange rounds the healing phase took until nothing moved.
    public var healRounds: Int
    /// Sync round trips started, of which continuations (a page said more follows).
    public var roundTrips: Int
    /// Of ``roundTrips``, the continuations: a page said more follows.
    public var continuations: Int
    /// Record deltas carried by all messages.
    public var recordsSent: Int
    /// FNV-1a of replica 0's final merge state: equal runs have equal digests.
    public var digest: String
    /// The first divergence, when the run did not converge.
    public var divergence: Divergence?
    /// Why the run stopped early (a store error, a broken expectation of the harness).
    public var failure: String?
    /// Fields (and, over HTTP, pull cursors) the session checker looked at, after every
    /// local write and every applied sync on every replica.
    public var sessionChecks = 0
    /// Steps that broke read-your-writes, monotonic reads or a local write (DESIGN §7).
    public var sessionViolations = 0
    /// The first of them.
    public var sessionViolation: SessionViolation?
    /// `--collect`: what tombstone collection did.
    public var collection: CollectionStats?

    /// Converged, and kept every session guarantee at every step.
    public var passed: Bool { converged && sessionViolations == 0 }

    /// The short readable report.
    public var text: String {
        var lines = [String]()
        lines.append("\(converged ? (sessionViolations == 0 ? "CONVERGED" : "CONVERGED, SESSION GUARANTEES BROKEN") : "DIVERGED"): \(options.summary)")
        let held = options.unique ? ", \(constraintConflicts) constraint conflicts holding \(heldRecords) records" : ""
        lines.append("  \(writes) writes acknowledged (\(noOpWrites) no-op), \(visibleWrites) still visible in \(visibleRows) rows, \(openConflicts) open conflicts\(held), lost writes: \(lostWrites)")
        lines.append("  \(messages) messages (\(roundTrips) round trips, \(continuations) continued), \(recordsSent) record deltas, \(formatBytes(bytes)), \(faults) faults injected" + (faultCounts.isEmpty ? "" : " (" + faultCounts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"))
        lines.append("  quarantined: \(quarantinedDuringRun) records during the run, \(quarantinedAtHeal) still held when healing began; healed in \(healRounds) round\(healRounds == 1 ? "" : "s")")
        if let collection {
            lines.append("  collection (retention \(collection.retentionMilliseconds) ms): \(collection.collectedRecords) records collected (\(collection.collectedWhileWriting) while writing), "
                + "\(collection.droppedByDevices) dropped by devices; \(collection.retirements) retirements, \(collection.resets) resets "
                + "(\(collection.withdrawnWrites) writes never reached the hub, \(collection.reappliedRecords) records written again)")
        }
        lines.append("  session guarantees: \(sessionChecks) checks, \(sessionViolations) violation\(sessionViolations == 1 ? "" : "s") (read-your-writes, monotonic reads, no reverted local write)")
        lines.append("  state digest \(digest), \(String(format2: elapsedSeconds)) s")
        if let failure { lines.append("  failure: \(failure)") }
        if let sessionViolation { lines.append(sessionViolation.description) }
        if let divergence { lines.append(divergence.description) }
        return lines.joined(separator: "\n")
    }

    /// The one-line JSON summary.
    public var json: String {
        var fields: [(String, String)] = [
            ("converged", converged ? "true" : "false"),
            ("replicas", "\(options.replicas)"),
            ("ops", "\(options.ops)"),
            ("seed", "\(options.seed)"),
            ("elapsed_s", String(format2: elapsedSeconds)),
            ("messages", "\(messages)"),
            ("bytes", "\(bytes)"),
            ("faults", "\(faults)"),
            ("lost_writes", "\(lostWrites)"),
            ("passed", passed ? "true" : "false"),
            ("session_checks", "\(sessionChecks)"),
            ("session_violations", "\(sessionViolations)"),
            ("store", jsonString(options.store.rawValue)),
            ("topology", jsonString(options.topology.rawValue)),
            ("transport", jsonString(options.transport.rawValue)),
            ("fault_kinds", jsonString(FaultKind.describe(options.faults))),
            ("workload", jsonString(options.workload.rawValue)),
            ("writes", "\(writes)"),
            ("quarantined", "\(quarantinedDuringRun)"),
            ("digest", jsonString(digest)),
        ]
        if options.unique {
            fields += [("unique", "true"), ("constraint_conflicts", "\(constraintConflicts)"), ("held_records", "\(heldRecords)")]
        }
        if let collection {
            fields += [("collect", "true"), ("retention_ms", "\(collection.retentionMilliseconds)"), ("collected_records", "\(collection.collectedRecords)"),
                       ("collected_while_writing", "\(collection.collectedWhileWriting)"), ("resets", "\(collection.resets)"),
                       ("reapplied_records", "\(collection.reappliedRecords)")]
        }
        if let divergence { fields.append(("divergence", jsonString("\(divergence.table) \(divergence.key) \(divergence.field)"))) }
        if let violation = sessionViolation {
            fields.append(("session_violation", jsonString("\(violation.guarantee): replica \(violation.replica) \(violation.table) \(violation.key) \(violation.field)")))
        }

        if let failure { fields.append(("failure", jsonString(failure))) }
        return "{" + fields.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",") + "}"
    }
}

func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
    }
    return result + "\""
}

func formatBytes(_ bytes: Int) -> String {
    if bytes < 10_000 { return "\(bytes) B" }
    if bytes < 10_000_000 { return "\(bytes / 1_000) kB" }
    return "\(bytes / 1_000_000) MB"
}

extension String {
    /// A number with two decimals, without Foundation.
    init(format2 value: Double) {
        let scaled = Int((value * 100).rounded())
        let whole = scaled / 100, fraction = abs(scaled % 100)
        self = "\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

/// FNV-1a, 64 bits: a digest stable across processes (unlike `Hasher`).
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func combine(_ bytes: [UInt8]) {
        for byte in bytes {
            value ^= UInt64(byte)
            value &*= 0x0000_0100_0000_01b3
        }
    }
    mutating func combine(_ text: String) { combine(Array(text.utf8)) }
    var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// A compact text form of merge states, replicas named by their simulation index.
struct StateFormatter {
    var names: [ReplicaID: String]

    func stamp(_ stamp: Stamp) -> String { "\(stamp.hlc)@\(names[stamp.replica] ?? "?")" }

    func context(_ context: CausalContext) -> String {
        "{" + context.entries.map { "\(names[$0.replica] ?? "?"):\($0.hlc)" }.joined(separator: " ") + "}"
    }

    func register(_ register: Register) -> String {
        switch register {
        case .lww(let lww): return "\(lww.value)@\(stamp(lww.stamp))"
        case .multi(let mv):
            return "mv[" + mv.siblings.map { "\($0.value)@\(stamp($0.stamp))" }.joined(separator: " | ") + "] ctx" + context(mv.context)
        }
    }

    func record(_ state: RecordState?) -> String {
        guard let state else { return "absent" }
        var parts = ["dots [" + state.membership.dots.map(stamp).joined(separator: " ") + "] ctx" + context(state.membership.context)]
        for (column, field) in state.fields.sorted(by: { $0.key < $1.key }) {
            switch field {
            case .plain(let r): parts.append("\(column)=\(register(r))")
            case .incarnated(let entries):
                parts.append("\(column)={" + entries.map { "inc \(stamp($0.incarnation)): \(register($0.register))" }.joined(separator: "; ") + "}")
            }
        }
        return parts.joined(separator: "; ")
    }
}
