import ConvergeCore
import FuzzSupport

// FuzzMerge: bytes as an operation script (see `MergeScript`) over three core replicas.
//
// Steps: transactions (inserts, updates, deletes, re-inserts, critical writes), resolves,
// physical clocks that advance, go backwards or jump (far ahead: peers quarantine), partial
// feeds, snapshots, deliveries that are delayed, duplicated, reordered or dropped, some
// through the wire codec. Checked along the way: every state's invariants; every local
// write and every apply is an inflation; a transaction's changeset carries its whole effect;
// a lone write is visible at once; a resolve ends its conflict. At the end: the join laws on
// the record states of each address (from the replicas, the changesets and the quarantines),
// then a full exchange after which every replica holds the same snapshot, the same
// conflicts, and the join of every changeset ever produced (the oracle).

@main
enum FuzzMergeMain {
    static func main() {
        FuzzerMain.run(seeds: SeedCorpus.mergeSeeds) { data, count in
            fuzz(data.map(UnsafeRawPointer.init) ?? FuzzerMain.emptyInput, count)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start: start, count: count)
    var world = World()
    var steps = 0
    while steps < World.stepsMax, let step = MergeScript.nextStep(&input) {
        world.run(step)
        steps += 1
    }
    world.finish()
    return 0
}

struct World {
    static let stepsMax = 160
    static let historyMax = 24
    /// States per address in the law checks, whose cost is cubic in it.
    static let lawStatesMax = 4

    var replicas = FuzzFixtures.makeReplicas()
    var clocks = [UInt64](repeating: FuzzFixtures.startMilliseconds, count: FuzzFixtures.replicaCount)
    var inFlight = [(to: Int, changeset: Changeset)]()
    /// Every changeset a local write produced: their join is what all replicas must reach.
    var local = [Changeset]()
    /// The latest changesets sent or produced, for the law checks.
    var history = [Changeset]()
    /// What the input exercised, printed under `CONVERGE_FUZZ_TRACE`.
    var trace = (steps: 0, conflicts: 0, resolves: 0, quarantined: 0, wire: 0, applied: 0)

    mutating func run(_ step: MergeScript.Step) {
        trace.steps += 1
        switch step {
        case .perform(let who, let scripted):
            let operations = scripted.map(operation)
            let before = replicas[who].state.snapshot
            let changeset = replicas[who].perform(operations, physicalMilliseconds: clocks[who])
            checkLocalWrite(who, before: before, changeset: changeset)
            if operations.count == 1 { checkVisible(operations[0], at: who) }
        case .resolve(let who, let index, let value):
            let conflicts = replicas[who].conflicts().compactMap(\.field)
            guard !conflicts.isEmpty else { return }
            trace.resolves += 1
            let conflict = conflicts[index % conflicts.count]
            let chosen = FuzzFixtures.values[value]
            let before = replicas[who].state.snapshot
            let changeset = replicas[who].resolve(
                table: conflict.table, key: conflict.key, column: conflict.column, to: chosen, physicalMilliseconds: clocks[who])
            checkLocalWrite(who, before: before, changeset: changeset)
            require(!replicas[who].conflicts().compactMap(\.field).contains { $0.table == conflict.table && $0.key == conflict.key && $0.column == conflict.column },
                    "resolve left the conflict open: \(conflict)")
            require(replicas[who].row(table: conflict.table, key: conflict.key)?[conflict.column] == chosen,
                    "resolved value not visible")
        case .advanceClock(let who, let milliseconds):
            setClock(who, clocks[who] + UInt64(milliseconds))
        case .rewindClock(let who, let milliseconds):
            setClock(who, clocks[who] - min(clocks[who], UInt64(milliseconds) * 8))
        case .jumpClock(let who, let jump):
            switch jump {
            case .farAhead: setClock(who, clocks[who] + 10 * 60 * 1000)
            case .farBack: setClock(who, clocks[who] / 2)
            case .toLimit: setClock(who, FuzzFixtures.physicalMillisecondsLimit - 1)
            case .toZero: setClock(who, 0)
            }
        case .sendChanges(let from, let to, let cursor, let limit, let delivery):
            let sequence = replicas[from].state.sequence
            let start = sequence * UInt64(cursor) / 255
            let feed = replicas[from].state.changes(since: start, limit: limit == 255 ? .max : 1 + limit % 8)
            send(feed.changeset, to: target(from, to), delivery)
        case .sendSnapshot(let from, let to, let delivery):
            send(replicas[from].state.snapshot, to: target(from, to), delivery)
        case .deliver(let index, let keep, let viaWire):
            guard !inFlight.isEmpty else { return }
            let message = inFlight[index % inFlight.count]
            if !keep { inFlight.remove(at: index % inFlight.count) }
            apply(viaWire ? roundTrip(message.changeset) : message.changeset, to: message.to)
        case .releaseQuarantine(let who, let force):
            let before = replicas[who].state.snapshot
            replicas[who].releaseQuarantine(physicalMilliseconds: clocks[who], force: force)
            checkInflation(who, before: before, "release of the quarantine")
        }
    }

    func operation(_ scripted: MergeScript.Operation) -> Replica.Operation {
        let schema = FuzzFixtures.schemas[scripted.table]
        let key = FuzzFixtures.keys[scripted.key]
        var values = [String: Value]()
        for (index, value) in scripted.values.enumerated() {
            if let value { values[schema.columns[index]] = FuzzFixtures.values[value] }
        }
        switch scripted.kind {
        case .insert:
            if !scripted.partialInsert { for column in schema.columns where values[column] == nil { values[column] = .null } }
            return .insert(table: schema.name, key: key, values: values)
        case .update:
            if values.isEmpty { values[schema.columns[0]] = .integer(0) }
            return .update(table: schema.name, key: key, values: values)
        case .delete:
            return .delete(table: schema.name, key: key)
        }
    }

    func target(_ from: Int, _ to: Int) -> Int { from == to ? (to + 1) % replicas.count : to }

    mutating func setClock(_ who: Int, _ milliseconds: UInt64) {
        clocks[who] = min(milliseconds, FuzzFixtures.physicalMillisecondsLimit - 1)
    }

    mutating func remember(_ changeset: Changeset) {
        history.append(changeset)
        if history.count > Self.historyMax { history.removeFirst() }
    }

    mutating func send(_ changeset: Changeset, to: Int, _ delivery: MergeScript.Delivery) {
        switch delivery {
        case .now: apply(changeset, to: to)
        case .later: inFlight.append((to, changeset))
        case .viaWire: apply(roundTrip(changeset), to: to)
        }
    }

    mutating func apply(_ changeset: Changeset, to who: Int) {
        remember(changeset)
        requireInvariants("changeset to apply") { try changeset.checkInvariants() }
        let before = replicas[who].state.snapshot
        let report = replicas[who].apply(changeset, physicalMilliseconds: clocks[who])
        trace.quarantined += report.quarantinedRecords
        trace.applied += report.changedRecords
        checkInflation(who, before: before, "apply")
    }

    /// A local transaction or resolve: an inflation whose changeset carries all of it.
    mutating func checkLocalWrite(_ who: Int, before: Changeset, changeset: Changeset) {
        checkInflation(who, before: before, "local write")
        requireInvariants("local changeset") { try changeset.checkInvariants() }
        require(before.merging(changeset) == replicas[who].state.snapshot.normalized,
                "a local changeset does not carry the write's whole effect: \(changeset)")
        guard !changeset.isEmpty else { return }
        local.append(changeset)
        remember(changeset)
        inFlight.append((target(who, (who + 1 + local.count) % replicas.count), changeset))
    }

    func checkInflation(_ who: Int, before: Changeset, _ what: String) {
        requireInvariants("replica \(who) after \(what)") { try replicas[who].state.checkInvariants() }
        let after = replicas[who].state.snapshot
        require(before.merging(after) == after.normalized, "\(what) is not an inflation on replica \(who)")
    }

    /// Read-your-writes for a transaction of one operation.
    func checkVisible(_ operation: Replica.Operation, at who: Int) {
        let replica = replicas[who]
        switch operation {
        case .insert(let table, let key, let values):
            let row = replica.row(table: table, key: key)
            require(row != nil, "inserted row not visible")
            for (column, value) in values { require(row?[column] == value, "inserted \(column) = \(value) not visible: \(row!)") }
        case .update(let table, let key, let values):
            guard let row = replica.row(table: table, key: key) else { return } // the row was absent: nothing to update
            for (column, value) in values { require(row[column] == value, "updated \(column) = \(value) not visible: \(row)") }
        case .delete(let table, let key):
            require(replica.row(table: table, key: key) == nil, "deleted row still visible")
        }
    }

    mutating func roundTrip(_ changeset: Changeset) -> Changeset {
        trace.wire += 1
        let bytes = WireEncoder.encode(changeset)
        let decoded: Changeset
        do {
            decoded = try WireDecoder.decode(bytes)
        } catch {
            fatalError("an encoded changeset does not decode: \(error)\n  \(changeset)")
        }
        require(decoded.normalized == changeset.normalized, "wire round trip changed the changeset:\n  \(changeset)\n  \(decoded)")
        require(WireEncoder.encode(decoded) == bytes, "wire encoding is not stable")
        return decoded
    }

    mutating func finish() {
        for index in replicas.indices {
            requireInvariants("replica \(index)") { try replicas[index].state.checkInvariants() }
        }
        checkLaws()

        // Full exchange: every replica's whole feed to every other, quarantines forced.
        for _ in 0..<2 {
            for source in replicas.indices {
                let feed = replicas[source].state.changes(since: 0).changeset
                for target in replicas.indices where target != source {
                    replicas[target].apply(feed, physicalMilliseconds: clocks[target])
                }
            }
            for index in replicas.indices { replicas[index].releaseQuarantine(physicalMilliseconds: clocks[index], force: true) }
        }
        let snapshot = replicas[0].state.snapshot
        let conflicts = replicas[0].conflicts()
        for index in replicas.indices {
            requireInvariants("replica \(index) after the exchange") { try replicas[index].state.checkInvariants() }
            require(replicas[index].quarantine.isEmpty, "quarantine not empty after a forced release")
            require(replicas[index].state.snapshot == snapshot, "replicas 0 and \(index) diverged after a full exchange")
            require(replicas[index].conflicts() == conflicts, "replicas 0 and \(index) list different conflicts")
        }
        trace.conflicts = conflicts.count
        if fuzzTraceEnabled { print("FuzzMerge trace: \(trace), records \(snapshot.records.count), local changesets \(local.count)") }
        let oracle = local.reduce(Changeset()) { $0.merging($1) }
        require(snapshot == droppingBottomRecords(oracle), "converged state != join of every local changeset")

        // Every changeset seen is already included: delivering any again changes nothing.
        for changeset in history {
            let report = replicas[0].apply(changeset, physicalMilliseconds: FuzzFixtures.physicalMillisecondsLimit)
            require(report.changedRecords == 0 && report.quarantinedRecords == 0, "a redelivered changeset changed a converged replica")
        }
        require(replicas[0].state.snapshot == snapshot, "redelivery changed a converged replica")
    }

    /// Join laws on record states of one address, from everywhere they live.
    func checkLaws() {
        for schema in FuzzFixtures.schemas {
            for key in FuzzFixtures.keys {
                let address = RecordAddress(table: schema.name, key: key)
                var states = [RecordState]()
                for replica in replicas {
                    if let state = replica.state.state(of: address) { states.append(state) }
                    if let held = replica.quarantine[address] { states.append(held) }
                }
                for changeset in history.reversed() {
                    states += changeset.records.filter { $0.table == schema.name && $0.key == key }.map(\.state)
                }
                states.append(RecordState())
                var seen = Set<RecordState>()
                states = states.filter { seen.insert($0).inserted }
                let sample = Array(states.prefix(World.lawStatesMax))
                for state in sample {
                    requireInvariants("record state at \(address)") { try state.checkInvariants() }
                    require(state.merging(RecordState()) == state && RecordState().merging(state) == state, "bottom is not the identity")
                }
                requireJoinLaws("record state at \(address.table)/\(address.key)", sample) { $0.merging($1) }
                for a in sample {
                    for b in sample { requireInvariants("join of two record states") { try a.merging(b).checkInvariants() } }
                }
            }
        }
        let changesets = history.suffix(3).map(\.normalized)
        requireJoinLaws("changeset", changesets) { $0.merging($1) }
    }
}
