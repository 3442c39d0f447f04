import ConvergeCore
import Foundation

/// Fault rates: each kind has its own.
public struct FaultRates: Sendable, Hashable {
    /// The chance that a message is lost.
    public var drop = 0.05
    /// The chance that a message is delivered twice.
    public var duplicate = 0.03
    /// The chance that a message is delivered out of order.
    public var reorder = 0.25
    /// The chance that a message is held back for a while.
    public var delay = 0.02
    /// Expected partitions, crashes and clock jumps per run are derived from these.
    public var partitionsPer10kOps = 2.0
    /// Expected clock jumps per replica in a run.
    public var jumpsPerReplica = 0.2
    /// Expected crash-restarts per replica in a run.
    public var crashesPerReplica = 0.1
    /// The share of clock jumps that go beyond the drift allowance (far future).
    public var farFutureJumpShare = 0.35
    /// The largest steady clock skew of a replica, either way.
    public var maxSkewMilliseconds: Int64 = 120_000
    /// Over HTTP, with crash faults: the chance that a request kills the server (before it
    /// reaches it, or after it applied it and before the answer), which restarts from its
    /// files; and the chance that a device fails to commit a pulled page (killed mid-apply).
    public var serverKill = 0.004
    /// The chance that a device fails to commit a pulled page (see ``serverKill``).
    public var commitFailure = 0.03
    /// The default rates, those of every `converge-sim` run.
    public init() {}
}

/// A deterministic many-replica simulation: one seeded generator, virtual time, one thread.
///
/// A run has three phases. *Writing*: each operation advances virtual time, delivers the
/// messages due, injects faults, runs one local transaction on a random replica (recorded
/// in the oracle) and starts sync round trips. *Healing*: faults off, crashed replicas
/// back, in-flight messages delivered, virtual time moved past every stamp so quarantines
/// release, then full exchange through replica 0 until nothing moves. *Checking*: every
/// replica's merge state byte for byte, and its visible rows and conflicts against the
/// oracle.
///
/// With `transport == .http` the replicas are devices of a real sync server (the
/// ``SimulationHub``): every replica syncs with it through a `SyncEngine`, the hub injects
/// the network faults, healing syncs every device until nothing moves, and the server's
/// own store is checked with the devices.
public final class Simulation {
    /// The options the run was made with.
    public let options: SimulationOptions
    /// The fault rates; change them before ``run(progress:)``.
    public var rates = FaultRates()
    /// The replicated tables (with unique indexes under `--unique`).
    let schema: SimulationSchema
    let hub: (any SimulationHub)?

    private var rng: SeededGenerator
    var nodes: [any SimNode] = []
    private var down: [Bool] = []
    private var epoch: [Int] = []
    private var skew: [Int64] = []
    private var jump: [Int64] = []
    var now: UInt64 = 1_750_000_000_000
    var oracle: Oracle
    private var workload: WorkloadGenerator
    var heap = MessageHeap()
    private var order: UInt64 = 0
    var cursors: [[Int: PeerCursor]] = []
    private var partitionSide: [Bool]?
    private var partitionEnd = 0
    private var jumpEnds: [(op: Int, replica: Int)] = []
    private var restarts: [(op: Int, replica: Int)] = []
    var healing = false
    private var syncCredit = 0.0
    private var directory: URL?

    private var messages = 0
    private var bytes = 0
    private var faultCounts: [FaultKind: Int] = [:]
    private var writes = 0
    private var noOps = 0
    private var quarantinedDuringRun = 0
    private var quarantinedAtHeal = 0
    var healRounds = 0
    var opsDone = 0
    private var roundTrips = 0
    private var continuations = 0
    private var recordsSent = 0
    /// Records any apply changed (healing with `--collect` runs until it stops growing).
    var appliedChanges = 0
    private var hubFaultCounts: [String: Int] = [:]
    /// The hub's server, as a node of the final check (`--transport http`).
    private var serverNode: HubServerNode?
    /// Read-your-writes, monotonic reads and no reverted local write, after every step.
    var session: SessionChecker
    private var firstViolationHistory: [String] = []
    /// `--collect`: the hub's frontier and collected log, the devices' resets, and what the
    /// oracle needs to know of them (Simulation+Collection.swift).
    var collection: CollectionRun?

    /// Prepares a run; nothing happens until ``run(progress:)``.
    ///
    /// - Parameters:
    ///   - options: Everything that determines the run.
    ///   - hub: The real server, for `options.transport == .http`
    ///     (ConvergeSimulationHTTP's `simulateOverHTTP` provides it).
    public init(options: SimulationOptions, hub: (any SimulationHub)? = nil) {
        self.options = options
        self.hub = hub
        rng = SeededGenerator(seed: options.seed ^ 0x5EED_C0DE_CAFE_F00D)
        schema = SimulationSchema.of(options)
        oracle = Oracle(keepHistory: options.ops <= 50_000, tables: schema, keepsWrites: options.collect)
        workload = WorkloadGenerator(keysPerTable: options.effectiveKeysPerTable, kind: options.workload, schema: schema)
        session = SessionChecker(replicas: max(0, options.replicas), tables: schema)
    }

    /// Runs the simulation and checks it. Never throws: errors are failures in the report.
    public func run(progress: ((SimulationProgress) -> Void)? = nil) -> SimulationReport {
        let start = ContinuousClock.now
        var failure: String?
        var outcome: CheckOutcome?
        do {
            try options.validate()
            try setUp()
            try writePhase(progress)
            progress?(currentProgress("healing"))
            try heal()
            progress?(currentProgress("checking"))
            outcome = try check()
            if let collectionFailure = collectionFailure() { failure = collectionFailure }
        } catch {
            failure = "\(error)"
        }
        for node in nodes { node.close() }
        hub?.stop()
        if let directory { try? FileManager.default.removeItem(at: directory) }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        if failure == nil, let identityResets = (nodes.compactMap { ($0 as? SQLiteNode)?.identityResets }.reduce(0, +) as Int?), identityResets > 0 {
            failure = "\(identityResets) store(s) reset their identity during the run"
        }
        var report = SimulationReport(
            options: options,
            converged: failure == nil && outcome?.divergence == nil && outcome?.failure == nil,
            elapsedSeconds: seconds,
            writes: writes, noOpWrites: noOps, messages: messages, bytes: bytes,
            faults: faultCounts.values.reduce(0, +) + hubFaultCounts.values.reduce(0, +),
            faultCounts: Dictionary(faultCounts.map { ($0.key.rawValue, $0.value) } + hubFaultCounts.map { ($0.key, $0.value) }, uniquingKeysWith: +),
            lostWrites: outcome?.lostWrites ?? 0,
            visibleWrites: outcome?.visibleWrites ?? 0,
            visibleRows: outcome?.visibleRows ?? 0,
            openConflicts: outcome?.openConflicts ?? 0,
            heldRecords: outcome?.heldRecords ?? 0,
            constraintConflicts: outcome?.constraintConflicts ?? 0,
            quarantinedDuringRun: quarantinedDuringRun,
            quarantinedAtHeal: quarantinedAtHeal,
            healRounds: healRounds,
            roundTrips: roundTrips, continuations: continuations, recordsSent: recordsSent,
            digest: outcome?.digest ?? "-",
            divergence: outcome?.divergence,
            failure: failure ?? outcome?.failure,
            sessionChecks: session.checks,
            sessionViolations: session.violations,
            sessionViolation: firstSessionViolation())
        if let collection {
            report.collection = CollectionStats(
                retentionMilliseconds: options.effectiveRetentionMilliseconds, collectedRecords: collection.collectedByHub,
                collectedWhileWriting: collection.collectedWhileWriting, droppedByDevices: collection.droppedByDevices,
                retirements: collection.retirements, resets: collection.resetCount, reappliedRecords: collection.reappliedRecords,
                withdrawnWrites: collection.withdrawnWrites)
        }
        return report
    }

    /// The first session violation, with its record's history.
    private func firstSessionViolation() -> SessionViolation? {
        guard var violation = session.first else { return nil }
        violation.history = firstViolationHistory
        return violation
    }

    // MARK: - Session guarantees

    /// Checks what `replica` shows after a step: the records the step changed, plus `extra`
    /// (what a transaction read). `written`: the records the step's own write wrote fields of.
    func observe(_ replica: Int, extra: [RecordAddress] = [], written: Set<RecordAddress> = [], _ what: @autoclosure () -> String) throws {
        var addresses = nodes[replica].takeChanged()
        addresses += extra
        guard !addresses.isEmpty else { return }
        let shown = try nodes[replica].shown(addresses)
        let op = opsDone, healing = healing
        let before = session.violations
        session.observe(
            replica: replica, records: shown, step: SessionStep(op: op, healing: healing, what: what()), written: written,
            describe: { stamp in StateFormatter(names: self.names).stamp(stamp) })
        // The record's history up to the step that broke the guarantee, not the run's end.
        if before == 0, session.violations > 0, let address = session.firstAddress { firstViolationHistory = historyLines(address) }
    }

    private func currentProgress(_ phase: String) -> SimulationProgress {
        SimulationProgress(opsDone: opsDone, ops: options.ops, replicas: options.replicas,
                           faults: faultCounts.values.reduce(0, +) + hubFaultCounts.values.reduce(0, +), messages: messages, phase: phase)
    }

    // MARK: - Set up

    private static let directoryCounter = Mutex(0)
    static let trace: (table: String, key: String, replica: Int)? = {
        guard let text = ProcessInfo.processInfo.environment["CONVERGE_SIM_TRACE"] else { return nil }
        let parts = text.split(separator: "/").map(String.init)
        guard parts.count == 3, let replica = Int(parts[2]) else { return nil }
        return (parts[0], parts[1], replica)
    }()

    private func setUp() throws {
        if options.transport == .http && hub == nil {
            throw SimulationFailure("--transport http runs the real server: use ConvergeSimulationHTTP's simulateOverHTTP")
        }
        let count = options.replicas
        down = Array(repeating: false, count: count)
        epoch = Array(repeating: 0, count: count)
        jump = Array(repeating: 0, count: count)
        cursors = Array(repeating: [:], count: count)
        skew = (0..<count).map { _ in
            guard options.has(.skew) else { return 0 }
            return Int64(rng.below(Int(2 * rates.maxSkewMilliseconds + 1))) - rates.maxSkewMilliseconds
        }
        if options.has(.skew) { faultCounts[.skew] = skew.filter { $0 != 0 }.count }
        if options.usesFiles {
            let serial = Simulation.directoryCounter.withLock { value -> Int in value += 1; return value }
            let url = FileManager.default.temporaryDirectory
                .appendingPathComponent("converge-sim-\(ProcessInfo.processInfo.processIdentifier)-\(serial)-\(options.seed)")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            directory = url
        }
        for index in 0..<count {
            let id = ReplicaID(using: &rng)
            switch options.store {
            case .core:
                nodes.append(CoreNode(id: id, maxDriftMilliseconds: options.maxDriftMilliseconds, schema: schema))
            case .sqlite:
                let path = directory?.appendingPathComponent("replica-\(index).sqlite").path
                nodes.append(try SQLiteNode(id: id, path: path, maxDriftMilliseconds: options.maxDriftMilliseconds, now: physical(index), schema: schema))
            }
        }
        if options.collect { collection = CollectionRun(replicas: count) }
        if let hub {
            try hub.start(options: options, rates: rates)
            serverNode = HubServerNode(hub: hub)
        }
    }

    func physical(_ replica: Int) -> UInt64 {
        UInt64(max(0, Int64(now) + skew[replica] + jump[replica]))
    }

    private func count(_ fault: FaultKind, _ amount: Int = 1) {
        faultCounts[fault, default: 0] += amount
    }

    // MARK: - Writing phase

    private func writePhase(_ progress: ((SimulationProgress) -> Void)?) throws {
        let rate = options.effectiveSyncRate
        let ops = max(1, options.ops)
        let pPartition = options.has(.partition) ? max(2.0, rates.partitionsPer10kOps * Double(ops) / 10_000) / Double(ops) : 0
        let pJump = options.has(.jump) ? max(2.0, rates.jumpsPerReplica * Double(options.replicas)) / Double(ops) : 0
        let pCrash = options.has(.crash) ? max(2.0, rates.crashesPerReplica * Double(options.replicas)) / Double(ops) : 0
        for index in 0..<options.ops {
            now += UInt64(rng.below(3))
            try deliverDue()
            try injectFaults(op: index, pPartition: pPartition, pJump: pJump, pCrash: pCrash)
            try localWrite()
            syncCredit += rate
            while syncCredit >= 1 {
                syncCredit -= 1
                try startRandomSync()
            }
            opsDone = index + 1
            if opsDone & 1023 == 0 { progress?(currentProgress("writing")) }
        }
        progress?(currentProgress("writing"))
    }

    private func injectFaults(op index: Int, pPartition: Double, pJump: Double, pCrash: Double) throws {
        let count = options.replicas
        if options.has(.partition) {
            if partitionSide != nil, index >= partitionEnd {
                partitionSide = nil
            } else if partitionSide == nil, rng.chance(pPartition) {
                var side = (0..<count).map { _ in rng.chance(0.4) }
                // Replica 0 is the hub; over HTTP the server is, and every replica on the
                // `true` side loses it.
                if options.topology == .hub && hub == nil { side[0] = false }
                partitionSide = side
                partitionEnd = index + 1 + rng.below(max(10, options.ops / 10))
                self.count(.partition)
            }
        }
        if options.has(.jump) {
            if !jumpEnds.isEmpty {
                for end in jumpEnds where end.op <= index { jump[end.replica] = 0 }
                jumpEnds.removeAll { $0.op <= index }
            }
            if rng.chance(pJump) {
                let replica = rng.below(count)
                if jump[replica] == 0 {
                    let kind = rng.below(100)
                    let drift = Int64(options.maxDriftMilliseconds)
                    if Double(kind) < rates.farFutureJumpShare * 100 {
                        // Far future: beyond the drift allowance, so receivers quarantine.
                        jump[replica] = drift + 60_000 + Int64(rng.below(30 * 60_000))
                    } else if kind < 70 {
                        jump[replica] = -(1_000 + Int64(rng.below(120_000)))
                    } else {
                        jump[replica] = 1_000 + Int64(rng.below(120_000))
                    }
                    jumpEnds.append((index + 1 + rng.below(max(10, options.ops / 10)), replica))
                    self.count(.jump)
                }
            }
        }
        if options.has(.crash) {
            if !restarts.isEmpty {
                for restart in restarts where restart.op <= index {
                    try nodes[restart.replica].restart(now: physical(restart.replica))
                    down[restart.replica] = false
                    try observe(restart.replica, "after restarting from a crash")
                }
                restarts.removeAll { $0.op <= index }
            }
            if rng.chance(pCrash) {
                let replica = rng.below(count)
                if !down[replica] {
                    try nodes[replica].crash()
                    down[replica] = true
                    epoch[replica] += 1
                    restarts.append((index + 1 + rng.below(max(10, options.ops / 20)), replica))
                    self.count(.crash)
                }
            }
        }
    }

    private func pickLiveReplica() -> Int? {
        let first = rng.below(options.replicas)
        for offset in 0..<options.replicas {
            let replica = (first + offset) % options.replicas
            if !down[replica] && !isResetting(replica) { return replica }
        }
        return nil
    }

    private func localWrite() throws {
        guard let replica = pickLiveReplica() else { return }
        let node = nodes[replica]
        let (view, failure) = workloadView(node)
        let transaction = workload.next(replica: replica, rng: &rng, view: view)
        if let error = failure.error { throw error }
        let planned: [PlannedWrite]
        let delta: Changeset
        var reads = [RecordAddress]()
        switch transaction {
        case .operations(let operations, let read):
            reads = read
            planned = operations.compactMap { operation in
                let (table, key) = operation.simulatedAddress
                return PlannedWrite.plan(operation, before: node.recordState(RecordAddress(table: table, key: key)), tables: schema)
            }
            delta = try node.perform(operations, now: physical(replica))
        case .resolve(let table, let key, let column, let value):
            planned = PlannedWrite.planResolve(
                table: table, key: key, column: column, value: value,
                before: node.recordState(RecordAddress(table: table, key: key)), tables: schema).map { [$0] } ?? []
            delta = try node.resolve(table: table, key: key, column: column, to: value, now: physical(replica))
        }
        let id = node.replicaID
        let own = delta.records.reduce(HLC.zero) { max($0, $1.state.maxHLC(by: id)) }
        if planned.isEmpty {
            if own > .zero { throw SimulationFailure("replica \(replica) stamped a write that changes nothing: \(delta.records.map { "\($0.table) \($0.key)" })") }
            noOps += 1
            try observe(replica, extra: reads, "after a local transaction that changed nothing")
            return
        }
        guard own > .zero else {
            throw SimulationFailure("replica \(replica): \(planned.map { "\($0.kind) \($0.address.table) \($0.address.key)" }) produced no stamped delta")
        }
        let stamp = Stamp(hlc: own, replica: id)
        if let mismatch = captureMismatch(planned: planned, delta: delta, stamp: stamp) {
            throw SimulationFailure("replica \(replica) captured its write differently than issued: \(mismatch)")
        }
        for write in planned {
            oracle.record(write, stamp: stamp, replica: replica)
            session.recordWrite(write, stamp: stamp, replica: replica)
        }
        if collection != nil { try logWrites(planned, stamp: stamp, replica: replica) }
        writes += 1
        var written = Set(planned.filter { !$0.fields.isEmpty }.map(\.address))
        // A record a unique index holds after the write shows no row: an edit of a held
        // record that left it held, or a write of its own value again (a re-insert), which
        // is a new claim, later than a held record's claim of that value (DESIGN §4).
        for table in Set(written.map(\.table)) where schema.table(named: table)?.uniqueIndexes.isEmpty == false {
            let held = try node.heldKeys(table: table)
            written = written.filter { $0.table != table || !held.contains($0.key) }
        }
        try observe(replica, extra: reads, written: written, "after its local write at \(StateFormatter(names: names).stamp(stamp))")
    }

    /// What the workload reads of `node` while it draws a transaction: merge states, and
    /// under `--unique` the rows and held records of the tables with unique indexes. The
    /// first error reading them is kept in the box, to be thrown once the draw is done.
    private func workloadView(_ node: any SimNode) -> (WorkloadView, FailureBox) {
        var view = WorkloadView(state: node.recordState)
        let failure = FailureBox()
        guard schema.hasUniqueIndexes else { return (view, failure) }
        view.held = { table in failure.catching([]) { try node.heldKeys(table: table) } }
        view.shown = { table in failure.catching([:]) { try node.visibleRows(table: table) } }
        return (view, failure)
    }

    // MARK: - Network

    private func startRandomSync() throws {
        let count = options.replicas
        if let hub {
            let client = rng.below(count)
            guard !down[client] else { return }
            try syncThroughHub(client, hub: hub)
            return
        }
        let client: Int, peer: Int
        switch options.topology {
        case .hub:
            client = 1 + rng.below(count - 1)
            peer = 0
        case .mesh:
            client = rng.below(count)
            let other = rng.below(count - 1)
            peer = other >= client ? other + 1 : other
        }
        guard !down[client] else { return }
        try startSync(from: client, to: peer)
    }

    func startSync(from client: Int, to peer: Int) throws {
        let cursor = cursors[client][peer] ?? PeerCursor()
        let page = try nodes[client].changes(since: cursor.sent, after: cursor.sentPosition, limit: options.batchRecords, now: physical(client))
        let push = page.changeset.isEmpty ? nil : WireEncoder.encode(page.changeset)
        roundTrips += 1
        recordsSent += page.changeset.records.count
        send(from: client, to: peer, .request(
            push: push, pushNext: page.next, pushHasMore: page.hasMore, pullCursor: cursor.received, pullPosition: cursor.receivedPosition,
            collection: try collectionRequest(from: client, pushComplete: !page.hasMore)))
    }

    private func send(from: Int, to: Int, _ payload: Message.Payload) {
        let size = payload.byteCount
        messages += 1
        bytes += size
        let faulty = !healing
        if faulty && options.has(.drop) && rng.chance(rates.drop) {
            count(.drop)
            return
        }
        var latency = UInt64(1 + rng.below(20))
        if faulty && options.has(.reorder) && rng.chance(rates.reorder) {
            latency += UInt64(rng.below(500))
            count(.reorder)
        }
        if faulty && options.has(.delay) && rng.chance(rates.delay) {
            latency += UInt64(5_000 + rng.below(55_000))
            count(.delay)
        }
        order += 1
        let message = Message(deliverAt: now + latency, order: order, from: from, to: to,
                              fromEpoch: epoch[from], toEpoch: epoch[to], payload: payload)
        heap.push(message)
        if faulty && options.has(.dup) && rng.chance(rates.duplicate) {
            count(.dup)
            messages += 1
            bytes += size
            order += 1
            var copy = message
            copy.order = order
            copy.deliverAt = now + UInt64(1 + rng.below(800))
            heap.push(copy)
        }
    }

    private func deliverDue() throws {
        if let hub {
            try hub.advanceTime(to: now, collectionClock: collectionNow)
            try hub.deliverLate(dueBy: opsDone)
            try absorbHubEvents()
            absorbTraffic()
            return
        }
        while let first = heap.first, first.deliverAt <= now {
            _ = heap.pop()
            try deliver(first)
        }
    }

    func deliver(_ message: Message) throws {
        // A crash loses what was in flight to or from the replica.
        if down[message.to] || epoch[message.to] != message.toEpoch || epoch[message.from] != message.fromEpoch { return }
        if let side = partitionSide, side[message.from] != side[message.to] { return }
        switch message.payload {
        case .request(let push, let pushNext, let pushHasMore, let pullCursor, let pullPosition, let request):
            if let request {
                switch admit(request, from: message.from, pushes: push != nil) {
                case .admitted: break
                case .refused: return
                case .resetRequired:
                    send(from: message.to, to: message.from, .response(
                        ackPush: 0, pull: nil, pullNext: 0, pullHasMore: false, pushHasMore: false,
                        collection: CollectionAnswer(replica: request.replica, resetRequired: true)))
                    return
                }
            }
            if let push {
                // What a device still relays of a life the hub collected: every replica drops
                // it, so the hub does not take it back (a new life of the key it takes).
                try applyBytes(push, to: message.to, from: message.from, collected: request == nil ? [:] : loggedCollected())
                if let request { try noteReceipt(push, from: request.replica) }
            }
            // The hub collects before it cuts the page (the server does after): a late copy
            // of an old request pulls from an old cursor, and its page must not carry a
            // record this very round collects, which the device drops before applying it.
            let answer = try request.map { try collectAtHub(after: $0, from: message.from, pullCursor: pullCursor, pushed: push != nil) }
            let page = try nodes[message.to].changes(since: pullCursor, after: pullPosition, limit: options.batchRecords, now: physical(message.to))
            let pull = page.changeset.isEmpty ? nil : WireEncoder.encode(page.changeset)
            recordsSent += page.changeset.records.count
            send(from: message.to, to: message.from, .response(
                ackPush: pushNext, pull: pull, pullNext: page.next, pullHasMore: page.hasMore, pushHasMore: pushHasMore, collection: answer))
        case .response(let ackPush, let pull, let pullNext, let pullHasMore, let pushHasMore, let answer):
            if let answer {
                // An answer to the identity the device had before a reset is nobody's now.
                guard answer.replica == nodes[message.to].replicaID else { return }
                if answer.resetRequired {
                    try beginReset(message.to)
                    return
                }
                // An answer older than a collection the device has applied may carry states
                // of records it dropped since: applying one would bring a tombstone back
                // that the hub no longer has. It is left unread, as if lost.
                if answer.logHead < collection!.droppedUpTo[message.to] { return }
                // Dropped before the page is applied: the page may carry a new life of a
                // record collected here, which must not merge into the old one's tombstone.
                try dropCollected(answer, at: message.to, cursor: cursors[message.to][message.from] ?? PeerCursor())
            }
            var cursor = cursors[message.to][message.from] ?? PeerCursor()
            if let trace = Simulation.trace, trace.replica == message.to {
                print("TRACE response to r\(message.to) at op \(opsDone): cursor \(cursor) pullNext \(pullNext) ack \(ackPush) records \(pull.map { (try? WireDecoder.decode($0).records.count) ?? -1 } ?? 0)")
            }
            if pushHasMore {
                cursor.sentPosition = max(cursor.sentPosition ?? cursor.sent, ackPush)
            } else {
                cursor.sent = max(cursor.sent, ackPush)
                cursor.sentPosition = nil
            }
            if let pull {
                // When the peer has acknowledged everything in our feed, what its answer
                // changes here is known to it: no need to echo it back.
                let before = try nodes[message.to].feedSequence()
                try applyBytes(pull, to: message.to, from: message.from)
                if cursor.sentPosition == nil && cursor.sent >= before { cursor.sent = try nodes[message.to].feedSequence() }
            }
            if pullHasMore {
                cursor.receivedPosition = max(cursor.receivedPosition ?? cursor.received, pullNext)
            } else {
                cursor.received = max(cursor.received, pullNext)
                cursor.receivedPosition = nil
            }
            cursors[message.to][message.from] = cursor
            var again = pullHasMore || pushHasMore
            if answer != nil {
                // A device resetting has its fresh snapshot once a pull reaches the head.
                if !pullHasMore, isResetting(message.to) {
                    try finishReset(message.to)
                    again = true
                }
            }
            if again {
                continuations += 1
                try startSync(from: message.to, to: message.from)
            }
        }
    }

    @discardableResult
    private func applyBytes(_ encoded: [UInt8], to replica: Int, from sender: Int, collected: [RecordAddress: [CausalContext]] = [:]) throws -> Int {
        var changeset = try WireDecoder.decode(encoded)
        if !collected.isEmpty {
            changeset.records.removeAll { delta in
                collected[RecordAddress(table: delta.table, key: delta.key)]?.contains { CollectionPlanner.isCollectedLife(delta.state, collectedContext: $0) } ?? false
            }
        }
        if let mutation = options.mutation { changeset = mutation.corrupt(changeset) }
        if let trace = Simulation.trace, trace.replica == replica || replica == 0 {
            for record in changeset.records where record.table == trace.table && "\(record.key)" == trace.key {
                print("TRACE apply to r\(replica) seq \(try nodes[replica].feedSequence()) at op \(opsDone) now \(physical(replica)) healing \(healing): \(StateFormatter(names: names).record(record.state)) maxHLC \(record.state.maxHLC)")
            }
        }
        let report = try nodes[replica].apply(changeset, now: physical(replica))
        if let trace = Simulation.trace, trace.replica == replica || replica == 0, changeset.records.contains(where: { $0.table == trace.table && "\($0.key)" == trace.key }) {
            print("TRACE   -> seq \(try nodes[replica].feedSequence()) quarantined \(report.quarantined), state now \(StateFormatter(names: names).record(nodes[replica].recordState(RecordAddress(table: trace.table, key: .text(String(trace.key.dropFirst().dropLast()))))))")
        }
        quarantinedDuringRun += report.quarantined
        appliedChanges += report.changed
        try observe(replica, "after applying changes from replica \(sender)")
        return report.changed
    }

    // MARK: - Through the hub (`--transport http`)

    /// One round of `replica` with the server, its engine applying to its store directly.
    @discardableResult
    private func syncThroughHub(_ replica: Int, hub: any SimulationHub) throws -> HubRoundOutcome {
        guard let node = nodes[replica] as? SQLiteNode, let database = node.database else {
            throw SimulationFailure("replica \(replica) has no open store to sync")
        }
        node.setPhysicalTime(physical(replica))
        try hub.advanceTime(to: now, collectionClock: collectionNow)
        let offline = partitionSide?[replica] ?? false
        let outcome = try hub.sync(replica: replica, database: database, round: HubRound(op: opsDone, faulty: !healing, offline: offline))
        if collection != nil {
            try absorbHubEvents()
            if let reset = outcome.resetFrom {
                // The engine reset the store: what the old identity's writes showed is read
                // from the shadow, which still holds the state from before the reset.
                try withdrawUnreached(replica, replica: reset.replica, acknowledged: reset.acknowledged)
                try node.adoptResetIdentity()
            }
        }
        try node.followEngine()
        if collection != nil {
            // The engine writes the kept writes again once the fresh snapshot is in (it
            // reports it only when there were some): the reset is over when none is left.
            let done = try outcome.reapplied || (outcome.failure == nil && database.keptWriteCount() == 0)
            if isResetting(replica), done {
                try finishReset(replica, reapplied: node.recordsWritten(by: node.replicaID))
            }
            let dropped = try node.followCollection(outcome.listedCollected)
            collection!.droppedByDevices += dropped.count
            for address in dropped { session.forget(replica: replica, record: address) }
        }
        quarantinedDuringRun += outcome.quarantinedRecords
        absorbTraffic()
        let what = outcome.failure == nil ? "after a sync round with the server" : "after a sync round with the server that failed (\(outcome.failure!))"
        try observe(replica, what)
        if let cursor = outcome.pullCursor {
            session.observeCursor(replica: replica, server: cursor.server, position: cursor.position,
                                  step: SessionStep(op: opsDone, healing: healing, what: what))
        }
        return outcome
    }

    private func absorbTraffic() {
        guard let hub else { return }
        let traffic = hub.takeTraffic()
        messages += traffic.messages
        bytes += traffic.bytes
        roundTrips += traffic.roundTrips
        continuations += traffic.continuations
        recordsSent += traffic.recordsSent
        for (kind, count) in traffic.faults { hubFaultCounts[kind, default: 0] += count }
    }

    /// Every device syncs with the server, in turn, until a pass moves nothing: no record
    /// pushed, none pulled that changed a store.
    private func healThroughHub(_ hub: any SimulationHub) throws {
        for _ in 0..<50 {
            var moved = 0
            for replica in 0..<options.replicas {
                let before = collection?.movement ?? 0
                let outcome = try syncThroughHub(replica, hub: hub)
                if let failure = outcome.failure { throw SimulationFailure("replica \(replica) failed to sync while healing: \(failure)") }
                moved += outcome.pushedRecords + outcome.appliedRecords + (collection?.movement ?? 0) - before
            }
            healRounds += 1
            if moved == 0 && collection?.resets.contains(where: { $0 != nil }) != true { return }
        }
        throw SimulationFailure("the healing rounds through the server did not reach quiescence in 50 passes")
    }

    // MARK: - Healing

    private func heal() throws {
        healing = true
        // Healing takes no time for the retention window: its clock stops here (the jump
        // below only lets quarantines release; nobody is away that long).
        collection?.stopClock(at: now)
        partitionSide = nil
        for replica in 0..<options.replicas {
            jump[replica] = 0
            if down[replica] {
                try nodes[replica].restart(now: physical(replica))
                down[replica] = false
                try observe(replica, "after restarting from a crash")
            }
        }
        restarts.removeAll()
        jumpEnds.removeAll()
        // Deliver what is still in flight (continuations included).
        if let hub {
            try hub.deliverLate(dueBy: .max)
            try absorbHubEvents()
            absorbTraffic()
        }
        while let message = heap.pop() {
            now = max(now, message.deliverAt)
            try deliver(message)
        }
        // Move virtual time past every stamp issued, far-future ones included, so that
        // every quarantine releases by itself.
        let maxSkew = UInt64(skew.map { abs($0) }.max() ?? 0)
        now = max(now, oracle.maxStamp.hlc.milliseconds + maxSkew + 1_000)
        for node in nodes { quarantinedAtHeal += try node.quarantinedCount() }
        if let serverNode { quarantinedAtHeal += try serverNode.quarantinedCount() }
        try hub?.advanceTime(to: now, collectionClock: collectionNow)
        for (index, node) in nodes.enumerated() {
            _ = try node.releaseQuarantine(now: physical(index), force: false)
            try observe(index, "after releasing its quarantine")
        }
        let held = try nodes.reduce(0) { try $0 + $1.quarantinedCount() }
        if held > 0 {
            throw SimulationFailure("\(held) quarantined records still held after virtual time passed every stamp")
        }
        if let serverNode {
            let serverHeld = try serverNode.quarantinedCount()
            if serverHeld > 0 { throw SimulationFailure("the server still holds \(serverHeld) quarantined records after virtual time passed every stamp") }
        }
        if let hub {
            try healThroughHub(hub)
            return
        }
        if collection != nil {
            try healThroughProtocol()
            return
        }
        // Full exchange through replica 0 until a round moves nothing.
        var healCursors: [PeerCursor] = (0..<options.replicas).map { replica in
            options.topology == .hub ? (cursors[replica][0] ?? PeerCursor()) : PeerCursor()
        }
        let limit = max(options.batchRecords, 1_000)
        for _ in 0..<50 {
            var moved = 0
            for replica in 1..<options.replicas {
                healCursors[replica].sent = try transfer(from: replica, to: 0, since: healCursors[replica].sent, limit: limit, moved: &moved)
            }
            for replica in 1..<options.replicas {
                healCursors[replica].received = try transfer(from: 0, to: replica, since: healCursors[replica].received, limit: limit, moved: &moved)
            }
            healRounds += 1
            if moved == 0 { return }
        }
        throw SimulationFailure("the healing exchange did not reach quiescence in 50 rounds")
    }

    /// Sends `from`'s whole feed after `cursor` to `to`; returns the new cursor.
    private func transfer(from: Int, to: Int, since cursor: UInt64, limit: Int, moved: inout Int) throws -> UInt64 {
        var position: UInt64?
        while true {
            let page = try nodes[from].changes(since: cursor, after: position, limit: limit, now: physical(from))
            if !page.changeset.isEmpty {
                let encoded = WireEncoder.encode(page.changeset)
                messages += 1
                bytes += encoded.count + 20
                recordsSent += page.changeset.records.count
                moved += try applyBytes(encoded, to: to, from: from)
            }
            position = page.next
            if !page.hasMore { return max(cursor, page.next) }
        }
    }

    // MARK: - Checking

    struct CheckOutcome {
        var divergence: Divergence?
        var failure: String?
        var lostWrites = 0
        var visibleWrites = 0
        var visibleRows = 0
        var openConflicts = 0
        /// `--unique`: live records a unique index holds, and the clashes holding them.
        var heldRecords = 0
        var constraintConflicts = 0
        var digest = ""
    }

    /// The nodes checked: the replicas, then the server over HTTP.
    private var checkedNodes: [any SimNode] { nodes + (serverNode.map { [$0] } ?? []) }

    /// A checked node's name in a report: its index, or `server`.
    private func label(_ index: Int) -> String {
        serverNode != nil && index == options.replicas ? "server" : "\(index)"
    }

    /// `replica 3`, or `the server`.
    private func nodeName(_ index: Int) -> String {
        serverNode != nil && index == options.replicas ? "the server" : "replica \(index)"
    }

    private func check() throws -> CheckOutcome {
        var outcome = CheckOutcome()
        let nodes = checkedNodes
        let count = nodes.count
        let reference = try nodes[0].stateBytes()
        var digest = FNV1a()
        digest.combine(reference)
        outcome.digest = digest.hex
        var differing = [Int]()
        for replica in 1..<count where try nodes[replica].stateBytes() != reference { differing.append(replica) }
        // Replicas with byte-identical core state show identical rows; SQLite stores also
        // materialize rows, which are checked on every replica.
        let checked = options.store == .sqlite || count <= 64 ? Array(0..<count) : [0] + differing

        var rows = [Int: [String: [Value: [String: Value]]]]()
        var conflicts = [Int: [RecordAddress: [String: [MVRegister.Sibling]]]]()
        var constraints = [Int: [ConstraintConflict]]()
        var heldOn = [Int: [RecordAddress: [String]]]()
        for replica in checked {
            for table in schema.tables { rows[replica, default: [:]][table.name] = try nodes[replica].visibleRows(table: table.name) }
            var byRecord = [RecordAddress: [String: [MVRegister.Sibling]]]()
            let listed = try nodes[replica].conflicts()
            for conflict in listed.compactMap(\.field) {
                byRecord[RecordAddress(table: conflict.table, key: conflict.key), default: [:]][conflict.column] = conflict.siblings.sorted { $0.stamp < $1.stamp }
            }
            conflicts[replica] = byRecord
            constraints[replica] = listed.compactMap(\.constraint).sorted(by: Oracle.constraintOrder)
            heldOn[replica] = Oracle.heldRecords(constraints[replica]!)
        }
        let expectedConstraints = oracle.expectedConstraints()
        outcome.constraintConflicts = expectedConstraints.conflicts.count

        var addresses = Set(oracle.addresses)
        for replica in checked {
            for (table, tableRows) in rows[replica] ?? [:] {
                for key in tableRows.keys { addresses.insert(RecordAddress(table: table, key: key)) }
            }
        }
        var lost = Set<String>()
        for address in addresses.sorted() {
            let expected = oracle.expected(address)
            // Held by a unique index: kept, its writes not lost, but no row in the app table.
            let held = expected.row == nil ? nil : expectedConstraints.held[address]
            if expected.row != nil {
                if held == nil {
                    outcome.visibleRows += 1
                    outcome.visibleWrites += expected.winners.values.reduce(0) { $0 + $1.count }
                } else {
                    outcome.heldRecords += 1
                }
                outcome.openConflicts += expected.conflicts.count
            }
            guard let schema = schema.table(named: address.table) else { continue }
            let conflictFields = schema.columns.filter { schema.policy(of: $0) != .lww }.map { "(conflict \($0))" }
            var fields = ["(row)"] + schema.columns + conflictFields
            if expected.row == nil { fields = ["(row)"] } else if held != nil { fields = ["(row)"] + conflictFields }
            for field in fields {
                let expectedText: String
                var actual = [Int: String]()
                if field == "(row)" {
                    expectedText = expected.row == nil ? "absent" : held.map { "held (\($0.joined(separator: ", ")))" } ?? "present"
                    for replica in checked {
                        if rows[replica]?[address.table]?[address.key] != nil {
                            actual[replica] = "present"
                        } else {
                            actual[replica] = heldOn[replica]?[address].map { "held (\($0.joined(separator: ", ")))" } ?? "absent"
                        }
                    }
                } else if field.hasPrefix("(conflict ") {
                    let column = String(field.dropFirst(10).dropLast())
                    expectedText = describe(expected.conflicts[column])
                    for replica in checked { actual[replica] = describe(conflicts[replica]?[address]?[column]) }
                } else {
                    expectedText = expected.row?[field].map { "\($0)" } ?? "-"
                    for replica in checked { actual[replica] = rows[replica]?[address.table]?[address.key]?[field].map { "\($0)" } ?? "-" }
                }
                let wrong = actual.filter { $0.value != expectedText }
                guard !wrong.isEmpty else { continue }
                // Writes the oracle says must show and do not, on some replica.
                if field == "(row)" {
                    if expected.row != nil && held == nil {
                        for (column, winners) in expected.winners { for stamp in winners.keys { lost.insert("\(address)|\(column)|\(stamp)") } }
                    }
                } else if field.hasPrefix("(conflict ") {
                    let column = String(field.dropFirst(10).dropLast())
                    for replica in wrong.keys {
                        let shown = Set((conflicts[replica]?[address]?[column] ?? []).map(\.stamp))
                        for stamp in (expected.conflicts[column] ?? []).map(\.stamp) where !shown.contains(stamp) {
                            lost.insert("\(address)|\(column)|\(stamp)")
                        }
                    }
                } else if expected.row != nil, let winner = expected.winners[field]?.max(by: { $0.key < $1.key }) {
                    lost.insert("\(address)|\(field)|\(winner.key)")
                }
                if outcome.divergence == nil {
                    var groups = [String: [Int]]()
                    for (replica, text) in actual { groups[text, default: []].append(replica) }
                    let observed = observedGroups(actual)
                    var states = [String]()
                    let formatter = StateFormatter(names: names)
                    for replicas in groups.values.map({ $0.min()! }).sorted() {
                        let state = try WireDecoder.decode(try nodes[replicas].stateBytes()).records
                            .first { $0.table == address.table && $0.key == address.key }?.state
                        states.append("state on \(nodeName(replicas)): \(formatter.record(state))")
                    }
                    outcome.divergence = Divergence(
                        table: address.table, key: "\(address.key)", field: field, expected: expectedText,
                        observed: observed + states, history: historyLines(address))
                }
            }
        }
        outcome.lostWrites = lost.count
        if outcome.divergence == nil, schema.hasUniqueIndexes {
            outcome.divergence = constraintDivergence(expected: expectedConstraints.conflicts, listed: constraints)
        }
        if outcome.divergence == nil, let replica = differing.first {
            outcome.divergence = try stateDivergence(replica, reference: reference)
        }
        return outcome
    }

    /// What groups of checked nodes show: `replicas 0,2: 'x'`, `the server: 'y'`.
    private func observedGroups(_ actual: [Int: String]) -> [String] {
        var groups = [String: [Int]]()
        for (replica, text) in actual { groups[text, default: []].append(replica) }
        return groups.sorted { $0.value.min()! < $1.value.min()! }.map { text, replicas -> String in
            let sorted = replicas.sorted()
            let list = sorted.prefix(12).map(label).joined(separator: ",") + (sorted.count > 12 ? ",… (\(sorted.count))" : "")
            if sorted.count == 1, label(sorted[0]) == "server" { return "the server: \(text)" }
            return "replica\(sorted.count == 1 ? "" : "s") \(list): \(text)"
        }
    }

    /// The first clash on a unique index that some checked node lists otherwise than the
    /// oracle expects (holder, held records in order, their claims and values), or that it
    /// lists and the oracle does not.
    private func constraintDivergence(expected: [ConstraintConflict], listed: [Int: [ConstraintConflict]]) -> Divergence? {
        struct Group: Hashable, Comparable {
            var table: String, index: String, values: [Value]
            static func < (a: Group, b: Group) -> Bool { (a.table, a.index) != (b.table, b.index) ? (a.table, a.index) < (b.table, b.index) : a.values.lexicographicallyPrecedes(b.values) }
        }
        func group(_ conflict: ConstraintConflict) -> Group { Group(table: conflict.table, index: conflict.index, values: conflict.values) }
        func texts(_ conflicts: [ConstraintConflict]) -> [Group: String] {
            Dictionary(conflicts.map { (group($0), describe($0)) }, uniquingKeysWith: { "\($0) AND AGAIN \($1)" })
        }
        let expectedTexts = texts(expected)
        let listedTexts = listed.mapValues(texts)
        var all = Set(expectedTexts.keys)
        for texts in listedTexts.values { all.formUnion(texts.keys) }
        for clash in all.sorted() {
            let expectedText = expectedTexts[clash] ?? "no clash"
            let actual = listedTexts.mapValues { $0[clash] ?? "no clash" }
            guard actual.values.contains(where: { $0 != expectedText }) else { continue }
            let keys = Set((expected + listed.values.flatMap { $0 }).filter { group($0) == clash }.flatMap { [$0.holder.key] + $0.held.map(\.key) })
            return Divergence(
                table: clash.table, key: clash.values.map { "\($0)" }.joined(separator: ", "), field: "(constraint \(clash.index))",
                expected: expectedText, observed: observedGroups(actual),
                history: keys.sorted().flatMap { key in historyLines(RecordAddress(table: clash.table, key: key)).map { "\(key): \($0)" } })
        }
        return nil
    }

    private func describe(_ conflict: ConstraintConflict) -> String {
        let formatter = StateFormatter(names: names)
        func claimant(_ claimant: ConstraintConflict.Claimant) -> String {
            let values = claimant.values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            return "\(claimant.key) claim \(formatter.stamp(claimant.stamp)) {\(values)}"
        }
        return "holder \(claimant(conflict.holder)); held \(conflict.held.map(claimant).joined(separator: ", "))"
    }

    private func describe(_ siblings: [MVRegister.Sibling]?) -> String {
        guard let siblings, !siblings.isEmpty else { return "no conflict" }
        return siblings.map { "\($0.value)@\($0.stamp.hlc)" }.joined(separator: " | ")
    }

    var names: [ReplicaID: String] {
        var result = [ReplicaID: String]()
        for (index, node) in nodes.enumerated() { result[node.replicaID] = "r\(index)" }
        if let serverNode { result[serverNode.replicaID] = "server" }
        return result
    }

    func historyLines(_ address: RecordAddress) -> [String] {
        let ids = nodes.map(\.replicaID)
        return (oracle.history[address] ?? []).suffix(40).map { line in
            let index = ids.firstIndex(of: line.stamp.replica).map(String.init) ?? "?"
            return "r\(line.replica) \(line.stamp.hlc)@r\(index): \(line.text)"
        }
    }

    /// The first record whose merge state differs between replica 0 and `replica`.
    private func stateDivergence(_ replica: Int, reference: [UInt8]) throws -> Divergence {
        let mine = try WireDecoder.decode(reference).normalized.records
        let theirs = try WireDecoder.decode(try checkedNodes[replica].stateBytes()).normalized.records
        var byAddress = [RecordAddress: (RecordState?, RecordState?)]()
        for record in mine { byAddress[RecordAddress(table: record.table, key: record.key), default: (nil, nil)].0 = record.state }
        for record in theirs { byAddress[RecordAddress(table: record.table, key: record.key), default: (nil, nil)].1 = record.state }
        for (address, states) in byAddress.sorted(by: { $0.key < $1.key }) where states.0 != states.1 {
            return Divergence(
                table: address.table, key: "\(address.key)", field: "(state)", expected: "the same merge state everywhere",
                observed: ["replica 0: \(StateFormatter(names: names).record(states.0))", "\(nodeName(replica)): \(StateFormatter(names: names).record(states.1))"],
                history: historyLines(address))
        }
        return Divergence(table: "-", key: "-", field: "(state)", expected: "identical encoded states",
                          observed: ["replica 0 and \(nodeName(replica)) differ in encoding only"], history: [])
    }
}

extension Replica.Operation {
    var simulatedAddress: (String, Value) {
        switch self {
        case .insert(let table, let key, _), .update(let table, let key, _), .delete(let table, let key):
            return (table, key)
        }
    }
}

/// The first error of calls that cannot throw where they are made (the workload's reads).
final class FailureBox {
    private(set) var error: (any Error)?

    func catching<T>(_ fallback: T, _ body: () throws -> T) -> T {
        do {
            return try body()
        } catch {
            if self.error == nil { self.error = error }
            return fallback
        }
    }
}

/// A lock around a value (Synchronization's `Mutex` needs macOS 15).
final class Mutex<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
