import ConvergeCore

/// `--collect`: tombstone collection in a run (DESIGN §9).
///
/// Over the memory transport the simulator's hub (replica 0) runs the protocol the sync
/// server runs: devices tell it their pull cursor and whether their push completed; it
/// keeps their stable positions, retires those not seen for the retention window, computes
/// the frontier (``CollectionPlanner``), drops the records deleted at or below it, and lists
/// them in its answers; devices drop them in turn; a retired device is answered
/// reset-required and resets. Over HTTP the real server and engines do all of it, and the
/// hub reports what they did (``HubEvent``, ``HubRoundOutcome``).
///
/// The oracle learns two things from it, and nothing else changes what it expects:
/// - *a collection* (``Oracle/collect(_:held:)``): the writes the hub had received of the
///   record leave the fold (their record's history is gone); a write made after its writer
///   had seen the delete starts a new life; a write concurrent with the delete may only be
///   held by a retired device, and must be withdrawn by its reset;
/// - *a reset*: the resetting device's writes the hub never received are withdrawn, and
///   what its user typed must come back as its new identity's writes: each field value it
///   showed from its own withdrawn writes, each record its own withdrawn add kept alive,
///   each delete it last made (``ResetRequirement``), checked once the kept writes are
///   written again. That is the documented price of bounded storage: such edits come back
///   as new writes, and nothing else may be lost.
struct CollectionRun {
    /// The memory hub's standing of each device.
    var standings: [Int: CollectionPlanner.Standing] = [:]
    /// Replicas each device synced as when the hub retired it: refused from then on.
    var retiredReplicas: [Int: Set<ReplicaID>] = [:]
    /// The memory hub's collected log, pruned of what every active device has dropped.
    var log: [CollectedEntry] = []
    var lastLogID: UInt64 = 0
    /// Each device's last entry of the memory hub's collected log that it dropped.
    var droppedUpTo: [UInt64]
    /// Each device's last request serial (``CollectionRequest/serial``), under its current identity.
    var serials: [UInt64]
    /// Resets in progress, by replica.
    var resets: [PendingReset?]
    /// The largest clock reading of each replica whose pushes the hub applied, per record:
    /// which of its writes reached the hub.
    var receipts: [ReplicaID: [RecordAddress: HLC]] = [:]
    /// Each replica's writes under its current identity, with the feed position they took:
    /// a reset withdraws those the hub neither acknowledged nor received.
    var unacknowledged: [[LoggedLocalWrite]]
    /// Identities a reset left: the hub must never apply a push of theirs again.
    var withdrawnReplicas: Set<ReplicaID> = []
    /// The retention clock stops when healing begins.
    var stoppedAt: UInt64?
    /// Over HTTP: the last entry of the server's collected log seen.
    var lastServerLogID: UInt64 = 0

    var collectedByHub = 0
    var collectedWhileWriting = 0
    var droppedByDevices = 0
    var resetCount = 0
    var retirements = 0
    var reappliedRecords = 0
    var withdrawnWrites = 0

    init(replicas: Int) {
        droppedUpTo = Array(repeating: 0, count: replicas)
        serials = Array(repeating: 0, count: replicas)
        resets = Array(repeating: nil, count: replicas)
        unacknowledged = Array(repeating: [], count: replicas)
    }

    mutating func stopClock(at now: UInt64) {
        if stoppedAt == nil { stoppedAt = now }
    }

    /// Everything that moves while healing, to tell when it is over.
    var movement: Int { collectedByHub + droppedByDevices + resetCount + reappliedRecords }
}

/// A local write with the feed position its replica was at right after it.
struct LoggedLocalWrite {
    var write: PlannedWrite
    var stamp: Stamp
    var feedPosition: UInt64
}

/// A reset between the reset-required answer and the kept writes written again.
struct PendingReset {
    var oldReplica: ReplicaID
    var requirements: [ResetRequirement]
}

/// What a reset must bring back of the resetting replica's writes the hub never received.
enum ResetRequirement {
    /// The replica showed `value` in `column`, from its own withdrawn `write`.
    case value(RecordAddress, column: String, value: Value, write: Stamp)
    /// Its own withdrawn add (`write`) kept the record alive.
    case alive(RecordAddress, write: Stamp)
    /// Its own withdrawn delete (`write`, its last membership write of the record)
    /// removed `dots`: none may be live again.
    case removed(RecordAddress, dots: [Stamp], write: Stamp)

    var address: RecordAddress {
        switch self {
        case .value(let address, _, _, _), .alive(let address, _), .removed(let address, _, _): return address
        }
    }
}

extension Simulation {
    enum Admission { case admitted, refused, resetRequired }

    /// The clock the retention window is measured on: virtual time, stopped while healing.
    var collectionNow: UInt64 { collection?.stoppedAt ?? now }

    func isResetting(_ replica: Int) -> Bool { collection?.resets[replica] != nil }

    /// Notes a local write's feed position, for a reset to tell what the hub never had.
    func logWrites(_ planned: [PlannedWrite], stamp: Stamp, replica: Int) throws {
        let position = try nodes[replica].feedSequence()
        for write in planned {
            collection?.unacknowledged[replica].append(LoggedLocalWrite(write: write, stamp: stamp, feedPosition: position))
        }
    }

    /// What a device's request tells the hub (`nil` without `--collect`, or to a peer that is not the hub).
    ///
    /// Its push completes only if nothing is left in its feed after it, and it claims the
    /// stability that gives (``CollectionPlanner/stablePosition(previous:pullCursor:pushComplete:head:)``)
    /// only while nothing waits in its quarantine: a change held there (a delete stamped by
    /// a clock far ahead) is one it has pulled but not applied, so it may still write what
    /// that change would have removed.
    func collectionRequest(from client: Int, pushComplete: Bool) throws -> CollectionRequest? {
        guard collection != nil, client != 0 else { return nil }
        collection!.serials[client] += 1
        let claims = try pushComplete && nodes[client].quarantinedCount() == 0
        return CollectionRequest(
            replica: nodes[client].replicaID, pushComplete: claims, serial: collection!.serials[client], collectedAfter: collection!.droppedUpTo[client])
    }

    // MARK: The memory hub

    /// The memory hub's door: a retired device is told to reset; a device back under a new
    /// identity starts over; an identity it left is refused, and so is a stale push (a
    /// request applied already, or older than one applied: its states may predate a
    /// collected delete, ``CollectionPlanner/isStale(requestSerial:appliedSerial:)``).
    func admit(_ request: CollectionRequest, from device: Int, pushes: Bool) -> Admission {
        guard var run = collection else { return .admitted }
        defer { collection = run }
        if let standing = run.standings[device] {
            if standing.retired {
                if standing.replica == request.replica { return .resetRequired }
                if run.retiredReplicas[device]?.contains(request.replica) == true { return .refused }
                run.standings[device] = nil  // back as a new replica
                return .admitted
            }
            if standing.replica == request.replica, pushes,
               CollectionPlanner.isStale(requestSerial: request.serial, appliedSerial: standing.appliedSerial) {
                return .refused
            }
        }
        if run.retiredReplicas[device]?.contains(request.replica) == true { return .refused }
        return .admitted
    }

    /// The hub applied `push` of `replica`: which of that replica's writes it now holds.
    func noteReceipt(_ push: [UInt8], from replica: ReplicaID) throws {
        let changeset = try WireDecoder.decode(push)
        var records = [(address: RecordAddress, hlc: HLC)]()
        for delta in changeset.records {
            records.append((RecordAddress(table: delta.table, key: delta.key), delta.state.maxHLC(by: replica)))
        }
        try noteReceipt(records, from: replica)
    }

    func noteReceipt(_ records: [(address: RecordAddress, hlc: HLC)], from replica: ReplicaID) throws {
        guard collection != nil else { return }
        for (address, hlc) in records where hlc > .zero {
            if collection!.withdrawnReplicas.contains(replica) {
                throw SimulationFailure(
                    "the hub applied a write of replica \(replica) (\(address.table) \(address.key) at \(hlc)) after its reset withdrew the writes the hub had not received")
            }
            collection!.receipts[replica, default: [:]][address] = max(collection!.receipts[replica]?[address] ?? .zero, hlc)
        }
    }

    /// Whether the hub has received the write at `stamp` of the record at `address`.
    func hubHolds(_ address: RecordAddress, _ stamp: Stamp) -> Bool {
        if hub == nil && stamp.replica == nodes[0].replicaID { return true }
        return (collection?.receipts[stamp.replica]?[address] ?? .zero) >= stamp.hlc
    }

    /// After a device's admitted request: the memory hub notes its round, retires the
    /// devices away too long, collects what the frontier allows, and answers with the
    /// frontier and the records collected since the device last dropped some.
    func collectAtHub(after request: CollectionRequest, from device: Int, pullCursor: UInt64, pushed: Bool) throws -> CollectionAnswer {
        let head = try nodes[0].feedSequence()
        let clock = collectionNow
        var run = collection!
        var standing = run.standings[device].flatMap { $0.replica == request.replica ? $0 : nil }
            ?? CollectionPlanner.Standing(replica: request.replica, lastSeenMilliseconds: clock)
        standing.stablePosition = CollectionPlanner.stablePosition(
            previous: standing.stablePosition, pullCursor: pullCursor, pushComplete: request.pushComplete, head: head)
        if pushed { standing.appliedSerial = max(standing.appliedSerial, request.serial) }
        standing.lastSeenMilliseconds = max(standing.lastSeenMilliseconds, clock)
        standing.collectedAfter = max(standing.collectedAfter, request.collectedAfter)
        run.standings[device] = standing
        let retention = options.effectiveRetentionMilliseconds
        for (other, standing) in run.standings.sorted(by: { $0.key < $1.key }) where !standing.retired
            && CollectionPlanner.isRetired(lastSeenMilliseconds: standing.lastSeenMilliseconds, nowMilliseconds: clock, retentionMilliseconds: retention) {
            run.standings[other]!.retired = true
            run.retiredReplicas[other, default: []].insert(standing.replica)
            run.retirements += 1
        }
        let frontier = CollectionPlanner.frontier(run.standings.values)
        collection = run
        // MUTATION (testing only): collect up to the head, deletes that are not stable yet.
        let through = options.mutation == .collectAboveFrontier ? head : frontier
        if through > 0 {
            let candidates = try nodes[0].collectableRecords(through: through, limit: 10_000)
            if !candidates.isEmpty {
                var contexts = [RecordAddress: CausalContext]()
                for address in candidates { contexts[address] = nodes[0].recordState(address)?.membership.context }
                for address in try nodes[0].collect(candidates, unchangedAfter: nil, keepingQuarantined: true) {
                    hubCollected(address, hubReplica: 0)
                    collection!.lastLogID += 1
                    collection!.log.append(CollectedEntry(id: collection!.lastLogID, address: address, context: contexts[address] ?? CausalContext()))
                }
            }
        }
        if let floor = CollectionPlanner.droppedEverywhere(collection!.standings.values) {
            collection!.log.removeAll { $0.id <= floor }
        }
        let listed = collection!.log.lazy.filter { $0.id > request.collectedAfter }.prefix(1_000)
        return CollectionAnswer(replica: request.replica, frontier: frontier, collected: Array(listed), logHead: collection!.lastLogID)
    }

    /// The memory hub's collected log (what not every active device has dropped yet), by record.
    func loggedCollected() -> [RecordAddress: [CausalContext]] {
        guard let collection, !collection.log.isEmpty else { return [:] }
        var result = [RecordAddress: [CausalContext]]()
        for entry in collection.log { result[entry.address, default: []].append(entry.context) }
        return result
    }

    /// The hub dropped `address`: the oracle and the session checker learn it.
    func hubCollected(_ address: RecordAddress, hubReplica: Int?) {
        if let trace = Simulation.trace, trace.table == address.table, "\(address.key)" == trace.key { print("TRACE the hub collects \(address.key) at op \(opsDone)") }
        oracle.collect(address) { self.hubHolds(address, $0) }
        if let hubReplica { session.forget(replica: hubReplica, record: address) }
        collection!.collectedByHub += 1
        if !healing { collection!.collectedWhileWriting += 1 }
    }

    /// A device drops the records an answer lists, once it has applied the hub's feed up to
    /// the frontier (it has: its own stable position holds the frontier at most there).
    func dropCollected(_ answer: CollectionAnswer, at device: Int, cursor: PeerCursor) throws {
        guard !answer.collected.isEmpty else { return }
        if cursor.received < answer.frontier {
            throw SimulationFailure("replica \(device) was told to drop collected records at frontier \(answer.frontier), but has applied the hub's feed only up to \(cursor.received)")
        }
        // Only the collected life goes: a key inserted again since (a new life) stays.
        let node = nodes[device]
        let lives = answer.collected.filter { entry in
            node.recordState(entry.address).map { CollectionPlanner.isCollectedLife($0, collectedContext: entry.context) } ?? false
        }
        // What it holds in quarantine of such a key is a later life (it claimed no stable
        // position while its quarantine held anything): that stays where it is.
        let dropped = Set(try node.collect(lives.map(\.address), unchangedAfter: nil, keepingQuarantined: false))
        if let trace = Simulation.trace, trace.replica == device {
            print("TRACE r\(device) drops at op \(opsDone): listed \(answer.collected.map { "\($0.id):\($0.address.key)" }) dropped \(dropped.map(\.key)) logHead \(answer.logHead)")
        }
        // A collected life it could not drop yet (a change of it waits in quarantine) is
        // listed again: the device stops short of its entry.
        let kept = lives.filter { !dropped.contains($0.address) }.map(\.id).min()
        let through = kept.map { $0 - 1 } ?? (answer.collected.map(\.id).max() ?? 0)
        collection!.droppedUpTo[device] = max(collection!.droppedUpTo[device], through)
        collection!.droppedByDevices += dropped.count
        for address in dropped.sorted() { session.forget(replica: device, record: address) }
    }

    // MARK: Resets

    /// The memory hub told `device` to reset: it keeps its unacknowledged writes, takes a
    /// new identity and pulls a fresh snapshot (``finishReset(_:reapplied:)`` follows).
    func beginReset(_ device: Int) throws {
        let node = nodes[device]
        let acknowledged = cursors[device][0]?.sent ?? 0
        try withdrawUnreached(device, replica: node.replicaID, acknowledged: acknowledged)
        // MUTATION (testing only): keep nothing, as if the hub had acknowledged everything.
        _ = try node.resetForResync(acknowledged: options.mutation == .resetLosesWrites ? .max : acknowledged)
        cursors[device] = [:]
        collection!.droppedUpTo[device] = 0
        collection!.serials[device] = 0
        try startSync(from: device, to: 0)
    }

    /// A device is resetting (its engine did, over HTTP; the simulation does, in memory):
    /// the writes of `replica` the hub never received are withdrawn, and what they showed
    /// becomes what the reset must bring back.
    func withdrawUnreached(_ device: Int, replica: ReplicaID, acknowledged: UInt64) throws {
        var run = collection!
        let logged = run.unacknowledged[device].filter { $0.stamp.replica == replica }
        run.unacknowledged[device] = []
        var unreached = [RecordAddress: [LoggedLocalWrite]]()
        if Simulation.trace != nil { print("TRACE replica \(device) resets at op \(opsDone): identity \(replica), acknowledged \(acknowledged)") }
        for entry in logged where entry.feedPosition > acknowledged && !hubHolds(entry.write.address, entry.stamp) {
            unreached[entry.write.address, default: []].append(entry)
        }
        var requirements = run.resets[device]?.requirements ?? []
        for (address, writes) in unreached.sorted(by: { $0.key < $1.key }) {
            requirements += Self.requirements(of: writes, at: address, shown: nodes[device].recordState(address))
            oracle.withdraw(Set(writes.map(\.stamp)), at: address)
            run.withdrawnWrites += writes.count
        }
        run.resets[device] = PendingReset(oldReplica: run.resets[device]?.oldReplica ?? replica, requirements: requirements)
        run.withdrawnReplicas.insert(replica)
        run.resetCount += 1
        collection = run
        session.reset(replica: device)
    }

    /// What a reset must bring back of `writes` (one record's, in the order made, none of
    /// which reached the hub), given what the replica showed of the record (`shown`).
    static func requirements(of writes: [LoggedLocalWrite], at address: RecordAddress, shown: RecordState?) -> [ResetRequirement] {
        guard let shown else { return [] }
        var result = [ResetRequirement]()
        if shown.isAlive {
            var latest = [String: (stamp: Stamp, value: Value)]()
            for entry in writes {
                for field in entry.write.fields { latest[field.column] = (entry.stamp, field.value) }
            }
            for (column, write) in latest.sorted(by: { $0.key < $1.key }) where shown.visibleStamp(of: column) == write.stamp {
                result.append(.value(address, column: column, value: write.value, write: write.stamp))
            }
            if let add = writes.last(where: { if case .add = $0.write.membership { true } else { false } }), shown.membership.dots.contains(add.stamp) {
                result.append(.alive(address, write: add.stamp))
            }
        } else if let last = writes.last(where: { $0.write.membership != .none }), case .remove(let observed) = last.write.membership, !observed.isEmpty {
            result.append(.removed(address, dots: observed, write: last.stamp))
        }
        return result
    }

    /// The reset device has its fresh snapshot and has written its kept writes again (the
    /// records `reapplied`): they are its new identity's local writes; what the reset had
    /// to bring back must be there.
    func finishReset(_ device: Int, reapplied: [RecordAddress]? = nil) throws {
        guard let pending = collection?.resets[device] else { return }
        let node = nodes[device]
        let changed = try reapplied ?? node.reapplyKeptWrites(now: physical(device))
        let id = node.replicaID
        var written = Set<RecordAddress>()
        let position = try node.feedSequence()
        for address in Set(changed).sorted() {
            guard let state = node.recordState(address), let table = schema.table(named: address.table) else { continue }
            let hlc = state.maxHLC(by: id)
            guard hlc > .zero else { continue }
            let stamp = Stamp(hlc: hlc, replica: id)
            let write = PlannedWrite.written(at: stamp, address: address, state: state, schema: table, known: oracle.loggedWrites(of: address))
            oracle.record(write, stamp: stamp, replica: device)
            session.recordWrite(write, stamp: stamp, replica: device)
            collection!.unacknowledged[device].append(LoggedLocalWrite(write: write, stamp: stamp, feedPosition: position))
            if !write.fields.isEmpty { written.insert(address) }
            collection!.reappliedRecords += 1
        }
        for requirement in pending.requirements {
            let address = requirement.address
            let state = node.recordState(address)
            let kept: Bool
            switch requirement {
            case .value(_, let column, let value, _):
                let policy = schema.table(named: address.table)?.policy(of: column) ?? .lww
                kept = state?.isAlive == true && state?.value(of: column, policy: policy) == value
            case .alive:
                kept = state?.isAlive == true
            case .removed(_, let dots, _):
                kept = !(state?.membership.dots.contains(where: dots.contains) ?? false)
            }
            guard kept else {
                let formatter = StateFormatter(names: names)
                throw SimulationFailure(
                    "replica \(device) reset (the hub had retired its identity \(pending.oldReplica)) and lost what its user typed: \(describe(requirement, formatter)); "
                        + "its record now: \(formatter.record(state))\n" + historyLines(address).map { "    \($0)" }.joined(separator: "\n"))
            }
        }
        collection!.resets[device] = nil
        // A record a unique index holds shows no row, written again or not (DESIGN §4).
        for table in Set(written.map(\.table)) where schema.table(named: table)?.uniqueIndexes.isEmpty == false {
            let held = try node.heldKeys(table: table)
            written = written.filter { $0.table != table || !held.contains($0.key) }
        }
        try observe(device, written: written, "after writing its kept writes again, as a new replica")
    }

    private func describe(_ requirement: ResetRequirement, _ formatter: StateFormatter) -> String {
        switch requirement {
        case .value(let address, let column, let value, let write):
            return "\(address.table) \(address.key) \(column) = \(value) (its write at \(formatter.stamp(write))) is not shown"
        case .alive(let address, let write):
            return "\(address.table) \(address.key), which its insert or edit at \(formatter.stamp(write)) kept alive, is gone"
        case .removed(let address, _, let write):
            return "\(address.table) \(address.key), which its delete at \(formatter.stamp(write)) removed, is back"
        }
    }

    // MARK: Healing

    /// Memory hub, `--collect`: every device syncs through the protocol in turn, faults
    /// off, until a pass moves nothing (no record changed anywhere, nothing collected or
    /// dropped, no reset): by then the frontier has reached the head and every device has
    /// dropped what the hub collected.
    func healThroughProtocol() throws {
        for _ in 0..<50 {
            let before = appliedChanges + collection!.movement
            for device in 1..<options.replicas {
                try startSync(from: device, to: 0)
                while let message = heap.pop() {
                    now = max(now, message.deliverAt)
                    try deliver(message)
                }
            }
            healRounds += 1
            if appliedChanges + collection!.movement == before && !collection!.resets.contains(where: { $0 != nil }) { return }
        }
        throw SimulationFailure("the healing rounds through the collecting hub did not reach quiescence in 50 passes")
    }

    /// Over HTTP: what the server did in the hub's last calls.
    func absorbHubEvents() throws {
        guard let hub, collection != nil else { return }
        for event in hub.takeEvents() {
            switch event {
            case .received(let replica, let records):
                try noteReceipt(records, from: replica)
            case .collected(let id, let address):
                guard id > collection!.lastServerLogID else { continue }
                collection!.lastServerLogID = id
                hubCollected(address, hubReplica: nil)
            }
        }
    }

    /// The failures only a run with `--collect` can have, at its end.
    func collectionFailure() -> String? {
        guard let collection else { return nil }
        if let resetting = collection.resets.firstIndex(where: { $0 != nil }) {
            return "replica \(resetting) was still resetting after healing"
        }
        if let orphan = oracle.orphans.values.sorted(by: { $0.stamp < $1.stamp }).first {
            let formatter = StateFormatter(names: names)
            return "the hub collected \(orphan.write.address.table) \(orphan.write.address.key) while a write concurrent with its delete had still to come "
                + "(replica \(orphan.replica)'s \(orphan.write.kind) at \(formatter.stamp(orphan.stamp))), which no reset withdrew: the delete was not stable"
                + (oracle.orphans.count > 1 ? " (\(oracle.orphans.count) such writes)" : "") + "\n"
                + historyLines(orphan.write.address).map { "    \($0)" }.joined(separator: "\n")
        }
        return nil
    }
}

extension RecordState {
    /// The stamp of the write the app shows in `column` (the largest sibling of a critical
    /// one), `nil` when none.
    func visibleStamp(of column: String) -> Stamp? {
        switch fields[column]?.visibleRegister(membership: membership) {
        case .lww(let register)?: return register.stamp
        case .multi(let register)?: return register.siblings.map(\.stamp).max()
        case nil: return nil
        }
    }
}

extension PlannedWrite {
    /// The write a replica made at `stamp` that left the record at `address` in `state` (a
    /// reset's kept write written again, read back from the replica), with what it
    /// observed read from the contexts it wrote: every write in `known` that the
    /// membership's context (for the membership) or the field register's context (for a
    /// critical field) covers.
    static func written(at stamp: Stamp, address: RecordAddress, state: RecordState, schema: TableSchema, known: [Oracle.LoggedWrite]) -> PlannedWrite {
        let context = state.membership.context
        let others = known.map(\.stamp).filter { $0 != stamp }
        let membership: MembershipEffect
        var kind: String
        if state.membership.dots.contains(stamp) {
            membership = .add(observed: others.filter(context.covers))
            kind = "insert or edit"
        } else if context[stamp.replica] == stamp.hlc {
            membership = .remove(observed: others.filter(context.covers))
            kind = "delete"
        } else {
            membership = .none
            kind = "edit"
        }
        var fields = [FieldWrite]()
        for column in schema.columns {
            guard let field = state.fields[column] else { continue }
            let writes = field.writes(at: stamp)
            guard let value = writes.first?.value else { continue }
            let critical = schema.policy(of: column) != .lww
            var observed = [Stamp]()
            if critical {
                var contexts = [CausalContext]()
                switch field {
                case .plain(.multi(let register)): contexts = [register.context]
                case .plain(.lww): break
                case .incarnated(let entries):
                    for entry in entries {
                        if case .multi(let register) = entry.register { contexts.append(register.context) }
                    }
                }
                let columnWrites = known.filter { $0.stamp != stamp && $0.write.fields.contains { $0.column == column } }.map(\.stamp)
                observed = columnWrites.filter { written in contexts.contains { $0.covers(written) } }
            }
            let target: IncarnationTarget
            switch schema.deletePolicy {
            case .updateWins: target = .plain
            case .deleteWins:
                let incarnations = writes.compactMap(\.incarnation).sorted()
                target = incarnations == [stamp] ? .own : .live(incarnations)
            }
            fields.append(FieldWrite(column: column, value: value, critical: critical, target: target, observed: observed))
        }
        kind = "reset: \(kind) written again"
        return PlannedWrite(address: address, deletePolicy: schema.deletePolicy, membership: membership, fields: fields, kind: kind, seen: context)
    }
}
