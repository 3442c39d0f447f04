import ConvergeCore

/// Which replica implementation a simulation runs.
public enum StoreKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// Pure-model replicas (`ConvergeCore.Replica`): cheap, for thousands of replicas.
    case core
    /// Real `ConvergeSQLite` stores, in memory or on temporary files.
    case sqlite
}

/// Who syncs with whom.
public enum Topology: String, Sendable, Hashable, CaseIterable, Codable {
    /// Replica 0 is the server; every other replica syncs with it only.
    case hub
    /// Gossip: every replica syncs with random peers.
    case mesh
}

/// How replicas reach their peers.
public enum SimulationTransport: String, Sendable, Hashable, CaseIterable, Codable {
    /// The simulator's own in-process network: virtual time, messages as bytes in a heap.
    case memory
    /// The real sync server over loopback HTTP: every replica is a device with a
    /// `SyncEngine`, and the hub is a Hummingbird server with its own SQLite store
    /// (ConvergeSimulationHTTP; hub topology and SQLite stores only).
    case http
}

/// Where the real sync server keeps its namespaces, over `--transport http`.
public enum ServerStorageKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// The embedded default: one SQLite file per namespace, one server process.
    case sqlite
    /// ConvergePostgres (DESIGN §10): shared tables in PostgreSQL, and any number of server
    /// instances on them (`--servers`), each device's requests spread over the instances.
    case postgres
}

/// The faults a simulation can inject, each with its own rate.
public enum FaultKind: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    /// `drop`: messages lost; `dup`: delivered twice; `reorder`: out of order; `delay`: held
    /// back; `partition`: replicas cut off from each other for a while; `skew`: steady clock
    /// offsets; `jump`: clock jumps, some far beyond the drift allowance; `crash`:
    /// crash-restarts on durable stores (and, over HTTP, server kills). Rates in ``FaultRates``.
    case drop, dup, reorder, delay, partition, skew, jump, crash

    /// Orders kinds as `allCases` lists them.
    public static func < (lhs: FaultKind, rhs: FaultKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Parses `none`, `all`, or a comma-separated list of kinds.
    public static func parseList(_ text: String) throws(OptionError) -> Set<FaultKind> {
        let trimmed = text.trimmingSpaces.lowercased()
        if trimmed == "none" || trimmed.isEmpty { return [] }
        if trimmed == "all" { return Set(allCases) }
        var result = Set<FaultKind>()
        for part in trimmed.split(separator: ",") {
            let name = String(part).trimmingSpaces
            guard let kind = FaultKind(rawValue: name) else {
                throw OptionError("unknown fault kind '\(name)' (expected none, all, or a list of \(allCases.map(\.rawValue).joined(separator: ",")))")
            }
            result.insert(kind)
        }
        return result
    }

    /// The canonical text form of a set of faults (`none`, `all` or a sorted list).
    public static func describe(_ faults: Set<FaultKind>) -> String {
        if faults.isEmpty { return "none" }
        if faults.count == allCases.count { return "all" }
        return faults.sorted().map(\.rawValue).joined(separator: ",")
    }
}

/// A deliberately broken behaviour, so tests and CI can show the checkers are not vacuous
/// (`converge-sim --mutation NAME`; `--mutation list` names them). Never used by a normal run.
public enum Mutation: String, Sendable, Hashable, CaseIterable, Codable {
    /// Deltas lose the causal context of their membership: a delete no longer removes
    /// what it saw, and an add no longer supersedes older tags (a join that drops the context).
    case dropMembershipContext = "drop-context"
    /// Received last-writer-wins stamps lose their replica: ties between equal clocks are
    /// then broken by value instead of by replica (a tie-break that ignores the replica).
    case tieIgnoresReplica = "tie-ignores-replica"
    /// The device's sync engine shows a pulled page's values over local writes it has not
    /// pushed yet (the reverted local writes Jepsen found in PowerSync, powersync.dart #253).
    case pullOverUnpushed = "pull-over-unpushed"
    /// The server answers a device's pull from a stale snapshot: a page older than one it
    /// already served that device.
    case stalePull = "stale-pull"
    /// The device's sync engine saves its pull cursor past a page before the page is
    /// committed, so a commit that fails loses the page.
    case cursorBeforeCommit = "cursor-before-commit"
    /// The in-memory hub collects every deleted record up to its feed's head instead of up
    /// to the frontier: deletes that are not causally stable yet (needs `--collect`).
    case collectAboveFrontier = "collect-above-frontier"
    /// A device the in-memory hub retired resets keeping none of its unacknowledged local
    /// writes: what its user typed offline is lost (needs `--collect`).
    case resetLosesWrites = "reset-loses-writes"

    /// What the mutation breaks, for `--mutation list`.
    public var summary: String {
        switch self {
        case .dropMembershipContext: return "merge: deltas lose their membership context (deletes stop removing what they saw)"
        case .tieIgnoresReplica: return "merge: equal clocks break ties by value, not by replica"
        case .pullOverUnpushed: return "client: a pulled page is shown over local writes not pushed yet (needs --transport http)"
        case .stalePull: return "server: a pull is answered from a snapshot older than one already served (needs --transport http)"
        case .cursorBeforeCommit: return "client: the pull cursor moves before the page is committed (needs --transport http)"
        case .collectAboveFrontier: return "hub: tombstones are collected above the frontier, before their deletes are stable (needs --collect)"
        case .resetLosesWrites: return "client: a retired device resets without keeping its unacknowledged writes (needs --collect)"
        }
    }

    /// Whether it breaks the sync engine or the server, which only `--transport http` runs.
    public var needsHTTP: Bool {
        switch self {
        case .dropMembershipContext, .tieIgnoresReplica, .collectAboveFrontier, .resetLosesWrites: return false
        case .pullOverUnpushed, .stalePull, .cursorBeforeCommit: return true
        }
    }

    /// Whether it breaks tombstone collection in the simulator's own hub, which only
    /// `--collect` over the memory transport runs.
    public var needsCollect: Bool { self == .collectAboveFrontier || self == .resetLosesWrites }
}

/// What the replicas write.
public enum WorkloadKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// Inserts, edits, deletes, re-inserts, concurrent creates, critical writes and
    /// resolves over every table and both delete policies.
    case mixed
    /// Shaped like jepsen-powersync's: each transaction reads many keys of one table and
    /// writes four (upserts of one last-writer-wins column); run it with 5 to 10 clients.
    case jepsen
}

/// A bad option value.
public struct OptionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, in the words of the command line's flags.
    public let description: String
    /// An error saying `description`.
    public init(_ description: String) { self.description = description }
}

/// Everything that determines a run: the same options replay the same run, event for event.
public struct SimulationOptions: Sendable, Hashable, Codable {
    /// The seed of the run's one generator: the same options and seed replay the same run.
    public var seed: UInt64 = 1
    /// Replicas in the run (at least 2); in a hub over memory, replica 0 is the hub.
    public var replicas: Int = 6
    /// Local write operations in the writing phase.
    public var ops: Int = 300
    /// The replicas' implementation.
    public var store: StoreKind = .core
    /// Who syncs with whom.
    public var topology: Topology = .hub
    /// The faults injected while writing (all by default).
    public var faults: Set<FaultKind> = Set(FaultKind.allCases)
    /// SQLite stores on temporary files instead of in memory (forced on by crash faults).
    public var files: Bool = false
    /// Keys per table; `nil` picks one from the number of operations.
    public var keysPerTable: Int?
    /// Sync round trips started per operation; `nil` picks a rate from the shape of the run.
    public var syncRate: Double?
    /// Records per sync message at most.
    public var batchRecords: Int = 1_000
    /// The drift allowance of every replica.
    public var maxDriftMilliseconds: UInt64 = HybridClock.defaultMaxDriftMilliseconds
    /// Test-only: a broken merge injected on delivery.
    public var mutation: Mutation?
    /// The simulator's network, or the real server over HTTP.
    public var transport: SimulationTransport = .memory
    /// What the replicas write.
    public var workload: WorkloadKind = .mixed
    /// `--unique`: tables with unique indexes, whose values clash between replicas
    /// (constraint conflicts, DESIGN §4; see ``SimulationSchema/unique``).
    public var unique: Bool = false
    /// `--collect`: the hub collects tombstones (DESIGN §9): devices report their stable
    /// positions, the hub computes the frontier, drops the records deleted at or below it,
    /// retires devices not seen for the retention window, and retired devices reset.
    public var collect: Bool = false
    /// `--retention-ms`: the retention window, in the run's virtual time; `nil` picks one
    /// from the shape of the run (``effectiveRetentionMilliseconds``).
    public var retentionMilliseconds: UInt64?
    /// `--storage`: the real server's storage, over `--transport http`.
    public var serverStorage: ServerStorageKind = .sqlite
    /// `--servers`: server instances on one PostgreSQL database (`--storage postgres`); a
    /// device's requests go to them in turn, and a crash fault kills the one it talks to.
    public var servers: Int = 1
    /// `--postgres`: the database of `--storage postgres` (default: the environment's
    /// `CONVERGE_POSTGRES_URL`). Each run makes a schema of its own in it and drops it after.
    public var postgresURL: String?

    /// Options of a run. The defaults make a small run: six core replicas in a hub, 300
    /// operations, every fault on, seed 1. Set the other properties afterwards.
    public init(
        seed: UInt64 = 1, replicas: Int = 6, ops: Int = 300, store: StoreKind = .core,
        topology: Topology = .hub, faults: Set<FaultKind> = Set(FaultKind.allCases), files: Bool = false,
        keysPerTable: Int? = nil, syncRate: Double? = nil, mutation: Mutation? = nil,
        transport: SimulationTransport = .memory, workload: WorkloadKind = .mixed, unique: Bool = false
    ) {
        self.seed = seed
        self.replicas = replicas
        self.ops = ops
        self.store = store
        self.topology = topology
        self.faults = faults
        self.files = files
        self.keysPerTable = keysPerTable
        self.syncRate = syncRate
        self.mutation = mutation
        self.transport = transport
        self.workload = workload
        self.unique = unique
    }

    /// Checks the values; throws a message fit for the command line.
    public func validate() throws(OptionError) {
        guard replicas >= 2 else { throw OptionError("--replicas must be at least 2 (got \(replicas))") }
        guard replicas <= 100_000 else { throw OptionError("--replicas must be at most 100000 (got \(replicas))") }
        guard ops >= 0 else { throw OptionError("--ops must not be negative (got \(ops))") }
        if let keysPerTable, keysPerTable < 1 { throw OptionError("--keys must be at least 1 (got \(keysPerTable))") }
        if let syncRate, !(syncRate >= 0 && syncRate <= 100) { throw OptionError("--sync-rate must be between 0 and 100 (got \(syncRate))") }
        guard batchRecords >= 1 else { throw OptionError("--batch must be at least 1 (got \(batchRecords))") }
        guard maxDriftMilliseconds >= 1_000 else { throw OptionError("--max-drift-ms must be at least 1000") }
        if transport == .http {
            guard store == .sqlite else {
                throw OptionError("--transport http needs --store sqlite (its replicas are devices: SQLite stores syncing with the real server)")
            }
            guard topology == .hub else {
                throw OptionError("--transport http needs --topology hub (devices sync only with the server)")
            }
        }
        if unique && workload != .mixed {
            throw OptionError("--unique needs --workload mixed (the \(workload.rawValue) workload writes no unique column)")
        }
        if let mutation, mutation.needsHTTP, transport != .http {
            throw OptionError("--mutation \(mutation.rawValue) breaks the sync engine or the server: it needs --transport http")
        }
        if collect && topology != .hub {
            throw OptionError("--collect needs --topology hub: only a hub can tell when a delete is stable, so a mesh keeps its tombstones (DESIGN §9)")
        }
        if retentionMilliseconds != nil && !collect { throw OptionError("--retention-ms needs --collect") }
        if let retentionMilliseconds, retentionMilliseconds < 1 { throw OptionError("--retention-ms must be at least 1") }
        if serverStorage == .postgres && transport != .http {
            throw OptionError("--storage postgres needs --transport http (it is the real server's storage)")
        }
        guard (1...16).contains(servers) else { throw OptionError("--servers must be between 1 and 16 (got \(servers))") }
        if servers > 1 && serverStorage != .postgres {
            throw OptionError("--servers \(servers) needs --storage postgres (server instances share one database; SQLite namespaces belong to one process)")
        }
        if let mutation, mutation.needsCollect, !collect || transport != .memory {
            throw OptionError("--mutation \(mutation.rawValue) breaks the simulator's own hub: it needs --collect and --transport memory")
        }
    }

    /// Whether the run injects `fault`.
    public func has(_ fault: FaultKind) -> Bool { faults.contains(fault) }

    /// SQLite stores live on files when asked, when crashes must reopen them, or when they
    /// are devices of the real server (each with its own file).
    public var usesFiles: Bool { store == .sqlite && (files || has(.crash) || transport == .http) }

    /// Keys per table actually used: few enough that writes collide.
    public var effectiveKeysPerTable: Int {
        keysPerTable ?? min(500, max(8, ops / 80))
    }

    /// Sync round trips started per operation actually used.
    ///
    /// Each replica syncs about every 40 of its own operations (3 to 20 times a run). A
    /// pull costs up to the number of records, so with many replicas the total is capped
    /// at about 2 million record deltas; the healing phase still brings everyone up to date.
    public var effectiveSyncRate: Double {
        if let syncRate { return syncRate }
        guard ops > 0 else { return 0 }
        let perReplicaOps = Double(ops) / Double(replicas)
        let syncsPerReplica = min(20, max(3, perReplicaOps / 40))
        let records = Double(SimulationSchema.of(self).tables.count * 2 * effectiveKeysPerTable)
        let syncs = min(syncsPerReplica * Double(replicas), max(2 * Double(replicas), 2_000_000 / records))
        return min(2, syncs / Double(ops))
    }

    /// The retention window actually used with `--collect`, in virtual milliseconds: three
    /// times the mean time between two sync rounds of one device, so that a device a
    /// partition, a crash or bad luck keeps away for a while is retired now and then (and
    /// resets), while most stay active and let the frontier move. Virtual time advances
    /// about a millisecond per operation; healing does not count (see ``Simulation``).
    public var effectiveRetentionMilliseconds: UInt64 {
        if let retentionMilliseconds { return retentionMilliseconds }
        let rate = effectiveSyncRate
        guard rate > 0 else { return 1_000 }
        // Over HTTP every replica is a device; in memory replica 0 is the hub.
        let devices = Double(transport == .http ? replicas : max(1, replicas - 1))
        return UInt64(max(50, min(3_600_000, 3 * devices / rate)))
    }

    /// The one-line command that replays this run (runs over the real server replay through
    /// `converge-sim-http`, the executable that links it).
    public var replayCommand: String {
        var parts = [transport == .http ? "swift run -c release converge-sim-http" : "swift run -c release converge-sim", "--seed \(seed)", "--replicas \(replicas)", "--ops \(ops)",
                     "--store \(store.rawValue)", "--topology \(topology.rawValue)", "--faults \(FaultKind.describe(faults))"]
        if transport != .memory { parts.append("--transport \(transport.rawValue)") }
        if serverStorage != .sqlite { parts.append("--storage \(serverStorage.rawValue)") }
        if servers != 1 { parts.append("--servers \(servers)") }
        if files && !(store == .sqlite && (has(.crash) || transport == .http)) { parts.append("--files") }
        if let keysPerTable { parts.append("--keys \(keysPerTable)") }
        if let syncRate { parts.append("--sync-rate \(syncRate)") }
        if batchRecords != 1_000 { parts.append("--batch \(batchRecords)") }
        if maxDriftMilliseconds != HybridClock.defaultMaxDriftMilliseconds { parts.append("--max-drift-ms \(maxDriftMilliseconds)") }
        if workload != .mixed { parts.append("--workload \(workload.rawValue)") }
        if unique { parts.append("--unique") }
        if collect { parts.append("--collect") }
        if let retentionMilliseconds { parts.append("--retention-ms \(retentionMilliseconds)") }
        if let mutation { parts.append("--mutation \(mutation.rawValue)") }
        return parts.joined(separator: " ")
    }

    /// A short description: `6 core replicas, 300 ops, hub, faults all, seed 1` (the
    /// topology reads `hub over http` for the real server).
    public var summary: String {
        let instances = serverStorage == .sqlite ? "" : " (\(servers) \(servers == 1 ? "instance" : "instances") on \(serverStorage.rawValue))"
        let network = transport == .memory ? topology.rawValue : "\(topology.rawValue) over \(transport.rawValue)\(instances)"
        let writes = (workload == .mixed ? "" : ", \(workload.rawValue) workload") + (unique ? ", unique indexes" : "")
            + (collect ? ", collecting (retention \(effectiveRetentionMilliseconds) ms)" : "")
        return "\(replicas) \(store.rawValue) replicas, \(ops) ops\(writes), \(network), faults \(FaultKind.describe(faults)), seed \(seed)"
    }
}

extension String {
    var trimmingSpaces: String {
        var slice = Substring(self)
        while slice.first == " " { slice.removeFirst() }
        while slice.last == " " { slice.removeLast() }
        return String(slice)
    }
}
