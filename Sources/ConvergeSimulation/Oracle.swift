import ConvergeCore

/// Which incarnations a field write went into.
enum IncarnationTarget: Hashable {
    /// An `.updateWins` field: one register for the record's whole life.
    case plain
    /// A `.deleteWins` insert: the incarnation it starts (the write's own stamp).
    case own
    /// A `.deleteWins` edit: every incarnation live at the writer.
    case live([Stamp])
}

/// One field written by a local transaction, and what the writer saw of that field.
struct FieldWrite {
    var column: String
    var value: Value
    var critical: Bool
    var target: IncarnationTarget
    /// For critical fields: the sibling stamps the writer held (the write supersedes them).
    var observed: [Stamp]
}

/// What a local write did to a record's membership, and what the writer saw.
enum MembershipEffect: Equatable {
    case none
    /// An insert, or an edit under `.updateWins`: supersedes the live tags it saw.
    case add(observed: [Stamp])
    /// A delete: removes the live tags it saw.
    case remove(observed: [Stamp])
}

/// A local write to one record, as issued, before its stamp is known.
struct PlannedWrite {
    var address: RecordAddress
    var deletePolicy: DeletePolicy
    var membership: MembershipEffect
    var fields: [FieldWrite]
    var kind: String
    /// The writer's membership context before the write: what it had seen of the record
    /// (`--collect` tells by it a write made after seeing a delete from one concurrent with it).
    var seen = CausalContext()

    /// The write an operation makes on a replica whose record is `before`, following the
    /// semantics of DESIGN.md §3 (written here from the specification, not by calling the
    /// merge code): `nil` when it changes nothing.
    static func plan(_ operation: Replica.Operation, before: RecordState?, tables: SimulationSchema) -> PlannedWrite? {
        switch operation {
        case .insert(let table, let key, let values):
            guard let schema = tables.table(named: table) else { return nil }
            let dots = before?.membership.dots ?? []
            let fields = schema.columns.compactMap { column -> FieldWrite? in
                guard let value = values[column] else { return nil }
                return write(schema, column, value, before: before, target: schema.deletePolicy == .updateWins ? .plain : .own)
            }
            return PlannedWrite(address: RecordAddress(table: table, key: key), deletePolicy: schema.deletePolicy,
                                membership: .add(observed: dots), fields: fields, kind: "insert", seen: before?.membership.context ?? CausalContext())
        case .update(let table, let key, let values):
            guard let schema = tables.table(named: table), let before, before.isAlive else { return nil }
            // As SQL: only fields whose shown value changes are written.
            let changed = schema.columns.filter { column in
                guard let value = values[column] else { return false }
                return before.value(of: column, policy: schema.policy(of: column)) != value
            }
            guard !changed.isEmpty else { return nil }
            return edit(schema, key: key, values: changed.map { ($0, values[$0]!) }, before: before, kind: "update")
        case .delete(let table, let key):
            guard let schema = tables.table(named: table), let before, before.isAlive else { return nil }
            return PlannedWrite(address: RecordAddress(table: table, key: key), deletePolicy: schema.deletePolicy,
                                membership: .remove(observed: before.membership.dots), fields: [], kind: "delete", seen: before.membership.context)
        }
    }

    /// A resolve: an edit of one critical field, made even when the value is the one shown.
    static func planResolve(table: String, key: Value, column: String, value: Value, before: RecordState?, tables: SimulationSchema) -> PlannedWrite? {
        guard let schema = tables.table(named: table), let before, before.isAlive else { return nil }
        return edit(schema, key: key, values: [(column, value)], before: before, kind: "resolve")
    }

    private static func edit(_ schema: TableSchema, key: Value, values: [(String, Value)], before: RecordState, kind: String) -> PlannedWrite {
        let dots = before.membership.dots
        switch schema.deletePolicy {
        case .updateWins:
            return PlannedWrite(
                address: RecordAddress(table: schema.name, key: key), deletePolicy: .updateWins,
                membership: .add(observed: dots),
                fields: values.map { write(schema, $0.0, $0.1, before: before, target: .plain) }, kind: kind, seen: before.membership.context)
        case .deleteWins:
            return PlannedWrite(
                address: RecordAddress(table: schema.name, key: key), deletePolicy: .deleteWins, membership: .none,
                fields: values.map { write(schema, $0.0, $0.1, before: before, target: .live(dots)) }, kind: kind, seen: before.membership.context)
        }
    }

    private static func write(_ schema: TableSchema, _ column: String, _ value: Value, before: RecordState?, target: IncarnationTarget) -> FieldWrite {
        let critical = schema.policy(of: column) != .lww
        var observed = [Stamp]()
        if critical, let field = before?.fields[column] {
            switch (target, field) {
            case (.plain, .plain(.multi(let register))):
                observed = register.siblings.map(\.stamp)
            case (.live(let incarnations), .incarnated(let entries)):
                for entry in entries where incarnations.contains(entry.incarnation) {
                    if case .multi(let register) = entry.register { observed += register.siblings.map(\.stamp) }
                }
            default:
                break
            }
        }
        return FieldWrite(column: column, value: value, critical: critical, target: target, observed: observed)
    }
}

/// The expected final state, folded from the global history of local writes by set
/// semantics, independently of the merge code:
///
/// - membership: the live add-tags are the adds no other write observed;
/// - last-writer-wins fields: the write with the largest stamp among the eligible ones
///   (under `.deleteWins`, those written under a live incarnation);
/// - critical fields: the writes no other eligible write observed; equal values among
///   them are one value, not a conflict.
struct Oracle {
    struct CriticalWrite {
        var stamp: Stamp
        var value: Value
        var incarnations: [Stamp]
        var observed: [Stamp]
    }

    struct Record {
        var deletePolicy: DeletePolicy
        var live: Set<Stamp> = []
        /// `.updateWins` last-writer-wins fields: the largest write.
        var lww: [String: (stamp: Stamp, value: Value)] = [:]
        /// `.updateWins` critical fields: the writes not observed yet.
        var siblings: [String: [Stamp: Value]] = [:]
        /// `.deleteWins` last-writer-wins fields: the largest write per live incarnation.
        var incarnationLWW: [String: [Stamp: (stamp: Stamp, value: Value)]] = [:]
        /// `.deleteWins` critical fields: the writes into an incarnation still live.
        var incarnationCritical: [String: [CriticalWrite]] = [:]

        init(deletePolicy: DeletePolicy) { self.deletePolicy = deletePolicy }
    }

    /// One line of a record's history, kept for small runs to explain a divergence.
    struct HistoryLine {
        var replica: Int
        var stamp: Stamp
        var text: String
    }

    /// One write as issued, kept with `--collect` (see ``log``).
    struct LoggedWrite {
        var write: PlannedWrite
        var stamp: Stamp
        /// The replica (simulation index) that made it.
        var replica: Int
    }

    private(set) var records: [RecordAddress: Record] = [:]
    private(set) var writes = 0
    private(set) var maxStamp = Stamp.zero
    var keepHistory: Bool
    private(set) var history: [RecordAddress: [HistoryLine]] = [:]
    let tables: SimulationSchema
    /// `--collect`: every write still in play, per record, in the order made. Collection and
    /// resets take writes out of play (see ``collect(_:held:)`` and ``withdraw(_:at:)``), and
    /// the record is folded again from what is left.
    let keepsWrites: Bool
    private(set) var log: [RecordAddress: [LoggedWrite]] = [:]
    /// `--collect`: writes concurrent with a delete the hub collected (they had not seen
    /// it, and had not reached the hub). Only a device the hub retired may hold such a
    /// write, and its reset withdraws it (it comes back as a new write); one still here at
    /// the end shows the hub collected a delete that was not stable.
    private(set) var orphans: [Stamp: LoggedWrite] = [:]

    init(keepHistory: Bool, tables: SimulationSchema = .standard, keepsWrites: Bool = false) {
        self.keepHistory = keepHistory
        self.tables = tables
        self.keepsWrites = keepsWrites
    }

    mutating func record(_ write: PlannedWrite, stamp: Stamp, replica: Int) {
        writes += 1
        maxStamp = max(maxStamp, stamp)
        var record = records[write.address] ?? Record(deletePolicy: write.deletePolicy)
        Self.fold(write, stamp: stamp, into: &record)
        records[write.address] = record
        if keepsWrites { log[write.address, default: []].append(LoggedWrite(write: write, stamp: stamp, replica: replica)) }
        if keepHistory {
            var text = write.kind
            switch write.membership {
            case .none: break
            case .add(let observed): text += " add(supersedes \(observed.count) tag\(observed.count == 1 ? "" : "s"))"
            case .remove(let observed): text += " remove(\(observed.count) tag\(observed.count == 1 ? "" : "s"))"
            }
            for field in write.fields {
                text += " \(field.column)=\(field.value)"
                if case .live(let incarnations) = field.target { text += " into \(incarnations.count) incarnation(s)" }
                if field.critical && !field.observed.isEmpty { text += " (observes \(field.observed.count) sibling(s))" }
            }
            history[write.address, default: []].append(HistoryLine(replica: replica, stamp: stamp, text: text))
        }
    }

    /// Folds one write into a record's expected state, by set semantics.
    private static func fold(_ write: PlannedWrite, stamp: Stamp, into record: inout Record) {
        switch write.membership {
        case .none: break
        case .add(let observed):
            record.live.subtract(observed)
            record.live.insert(stamp)
        case .remove(let observed):
            record.live.subtract(observed)
        }
        if record.deletePolicy == .deleteWins {
            // A dead tag never comes back: what was written under it can go.
            for (column, entries) in record.incarnationLWW {
                record.incarnationLWW[column] = entries.filter { record.live.contains($0.key) }
            }
            for (column, entries) in record.incarnationCritical {
                record.incarnationCritical[column] = entries.filter { $0.incarnations.contains(where: record.live.contains) }
            }
        }
        for field in write.fields {
            switch field.target {
            case .plain:
                if field.critical {
                    var siblings = record.siblings[field.column] ?? [:]
                    for stamp in field.observed { siblings[stamp] = nil }
                    siblings[stamp] = field.value
                    record.siblings[field.column] = siblings
                } else if let current = record.lww[field.column], !(current.stamp < stamp) {
                    continue
                } else {
                    record.lww[field.column] = (stamp, field.value)
                }
            case .own, .live:
                let incarnations: [Stamp]
                if case .live(let live) = field.target { incarnations = live } else { incarnations = [stamp] }
                let alive = incarnations.filter(record.live.contains)
                if alive.isEmpty { continue }
                if field.critical {
                    record.incarnationCritical[field.column, default: []].append(
                        CriticalWrite(stamp: stamp, value: field.value, incarnations: alive, observed: field.observed))
                } else {
                    var entries = record.incarnationLWW[field.column] ?? [:]
                    for incarnation in alive where !(entries[incarnation].map { stamp < $0.stamp } ?? false) {
                        entries[incarnation] = (stamp, field.value)
                    }
                    record.incarnationLWW[field.column] = entries
                }
            }
        }
    }

    // MARK: Tombstone collection (`--collect`)

    /// The hub dropped the record at `address` (it was deleted, and unchanged since, at or
    /// below its frontier). `held` tells the writes the hub had received: their history is
    /// gone, on the hub now and on each replica once it drops the record too, so the record
    /// lives on (if ever) from the other writes only. Of those, a write made after its
    /// writer had seen every membership event the hub dropped (a re-insert after the
    /// delete) is the start of a new life; any other one is concurrent with the delete and
    /// becomes an orphan (``orphans``). Returns the writes dropped and the orphans.
    @discardableResult
    mutating func collect(_ address: RecordAddress, held: (Stamp) -> Bool) -> (dropped: Int, orphaned: Int) {
        guard let writes = log[address] else { return (0, 0) }
        let dropped = writes.filter { held($0.stamp) }
        let droppedEvents = dropped.filter { $0.write.membership != .none }.map(\.stamp)
        var kept = [LoggedWrite]()
        var orphaned = 0
        for write in writes where !held(write.stamp) {
            if droppedEvents.allSatisfy(write.write.seen.covers) {
                kept.append(write)
            } else if write.write.membership == .none {
                // An edit under `.deleteWins` that did not see the delete wrote into
                // incarnations the delete removed: it can show nowhere, whatever becomes of
                // it. (The hub may even hold it without a trace, when a larger write in each
                // of those incarnations superseded it before it was pushed.)
                continue
            } else {
                orphans[write.stamp] = write
                orphaned += 1
            }
        }
        log[address] = kept.isEmpty ? nil : kept
        refold(address)
        note(address, "collected by the hub: \(dropped.count) write(s) dropped\(orphaned > 0 ? ", \(orphaned) concurrent one(s) orphaned" : "")")
        return (dropped.count, orphaned)
    }

    /// A replica reset: its writes `stamps` on `address` never reached the hub and never
    /// will (its requests as the old replica are refused); what its user typed comes back
    /// as new writes, which the simulation checks and records.
    mutating func withdraw(_ stamps: Set<Stamp>, at address: RecordAddress) {
        guard !stamps.isEmpty else { return }
        for stamp in stamps { orphans[stamp] = nil }
        if let writes = log[address] {
            let kept = writes.filter { !stamps.contains($0.stamp) }
            log[address] = kept.isEmpty ? nil : kept
        }
        refold(address)
        note(address, "\(stamps.count) write(s) withdrawn by a reset (they never reached the hub)")
    }

    /// The writes in play at `address`, in the order made.
    func loggedWrites(of address: RecordAddress) -> [LoggedWrite] { log[address] ?? [] }

    private mutating func refold(_ address: RecordAddress) {
        guard let writes = log[address], let first = writes.first else {
            records[address] = nil
            return
        }
        var record = Record(deletePolicy: first.write.deletePolicy)
        for write in writes { Self.fold(write.write, stamp: write.stamp, into: &record) }
        records[address] = record
    }

    private mutating func note(_ address: RecordAddress, _ text: String) {
        guard keepHistory else { return }
        history[address, default: []].append(HistoryLine(replica: 0, stamp: .zero, text: text))
    }

    /// The expected visible state of one record.
    struct Expected {
        /// `nil` when the record must not be visible.
        var row: [String: Value]?
        /// The writes that should be visible: the winner of each field, every sibling.
        var winners: [String: [Stamp: Value]]
        /// Critical columns with two or more distinct sibling values.
        var conflicts: [String: [MVRegister.Sibling]]
    }

    func expected(_ address: RecordAddress) -> Expected {
        guard let record = records[address], !record.live.isEmpty, let schema = tables.table(named: address.table) else {
            return Expected(row: nil, winners: [:], conflicts: [:])
        }
        var row = [String: Value]()
        var winners = [String: [Stamp: Value]]()
        var conflicts = [String: [MVRegister.Sibling]]()
        for column in schema.columns {
            let critical = schema.policy(of: column) != .lww
            var siblings = [Stamp: Value]()
            switch (record.deletePolicy, critical) {
            case (.updateWins, false):
                if let write = record.lww[column] { siblings[write.stamp] = write.value }
            case (.updateWins, true):
                siblings = record.siblings[column] ?? [:]
            case (.deleteWins, false):
                var best: (stamp: Stamp, value: Value)?
                for (incarnation, write) in record.incarnationLWW[column] ?? [:] where record.live.contains(incarnation) {
                    if best == nil || best!.stamp < write.stamp { best = write }
                }
                if let best { siblings[best.stamp] = best.value }
            case (.deleteWins, true):
                let eligible = (record.incarnationCritical[column] ?? []).filter { $0.incarnations.contains(where: record.live.contains) }
                let observed = Set(eligible.flatMap(\.observed))
                for write in eligible where !observed.contains(write.stamp) { siblings[write.stamp] = write.value }
            }
            let sorted = siblings.sorted { $0.key < $1.key }
            row[column] = sorted.last?.value ?? .null
            winners[column] = siblings
            if critical, Set(sorted.map(\.value)).count >= 2 {
                conflicts[column] = sorted.map { MVRegister.Sibling(stamp: $0.key, value: $0.value) }
            }
        }
        return Expected(row: row, winners: winners, conflicts: conflicts)
    }

    /// Every record some write touched, sorted.
    var addresses: [RecordAddress] { records.keys.sorted() }
}

// MARK: - Reading stamps out of deltas

extension RecordState {
    /// The largest clock reading of `replica` anywhere in this state.
    func maxHLC(by replica: ReplicaID) -> HLC {
        var result = membership.context[replica]
        for field in fields.values {
            switch field {
            case .plain(let register): result = max(result, register.maxHLC(by: replica))
            case .incarnated(let entries):
                for entry in entries {
                    result = max(result, entry.register.maxHLC(by: replica))
                    if entry.incarnation.replica == replica { result = max(result, entry.incarnation.hlc) }
                }
            }
        }
        return result
    }
}

extension Register {
    func maxHLC(by replica: ReplicaID) -> HLC {
        switch self {
        case .lww(let register): return register.stamp.replica == replica ? register.stamp.hlc : .zero
        case .multi(let register): return register.context[replica]
        }
    }

    /// The value this register holds for the write stamped `stamp`, if it holds it.
    func value(at stamp: Stamp) -> Value? {
        switch self {
        case .lww(let register): return register.stamp == stamp ? register.value : nil
        case .multi(let register): return register.siblings.first { $0.stamp == stamp }?.value
        }
    }
}

extension FieldState {
    /// The writes stamped `stamp` in this field: `(incarnation or nil, value)`.
    func writes(at stamp: Stamp) -> [(incarnation: Stamp?, value: Value)] {
        switch self {
        case .plain(let register): return register.value(at: stamp).map { [(nil, $0)] } ?? []
        case .incarnated(let entries):
            return entries.compactMap { entry in entry.register.value(at: stamp).map { (entry.incarnation, $0) } }
        }
    }
}

/// Checks that a local transaction's delta is the write the workload issued: the right
/// records, membership effect and fields at the transaction's stamp. Returns a description
/// of the first difference, or `nil`.
func captureMismatch(planned: [PlannedWrite], delta: Changeset, stamp: Stamp) -> String? {
    var byAddress = [RecordAddress: RecordState]()
    for record in delta.records {
        let address = RecordAddress(table: record.table, key: record.key)
        byAddress[address] = byAddress[address].map { $0.merging(record.state) } ?? record.state
    }
    let plannedAddresses = Set(planned.map(\.address))
    for address in byAddress.keys.sorted() where !plannedAddresses.contains(address) {
        if byAddress[address]!.maxHLC(by: stamp.replica) >= stamp.hlc {
            return "\(address.table) \(address.key): the delta carries a write at \(stamp) the workload did not issue"
        }
    }
    for write in planned {
        let where_ = "\(write.address.table) \(write.address.key) (\(write.kind))"
        guard let state = byAddress[write.address] else { return "\(where_): missing from the delta at \(stamp)" }
        switch write.membership {
        case .none:
            if state.membership.context[stamp.replica] >= stamp.hlc { return "\(where_): membership changed by an edit under deleteWins" }
        case .add:
            if state.membership.dots != [stamp] { return "\(where_): add expected live tags [\(stamp)], got \(state.membership.dots)" }
        case .remove:
            if !state.membership.dots.isEmpty || state.membership.context[stamp.replica] != stamp.hlc {
                return "\(where_): delete expected no live tag and context \(stamp.hlc), got \(state.membership.dots) / \(state.membership.context[stamp.replica])"
            }
        }
        let plannedColumns = Set(write.fields.map(\.column))
        for (column, field) in state.fields.sorted(by: { $0.key < $1.key }) where !plannedColumns.contains(column) {
            if !field.writes(at: stamp).isEmpty { return "\(where_): field \(column) written at \(stamp) but not by the workload" }
        }
        for field in write.fields {
            guard let state = state.fields[field.column] else { return "\(where_): field \(field.column) missing from the delta" }
            let writes = state.writes(at: stamp)
            guard !writes.isEmpty else { return "\(where_): field \(field.column) has no write at \(stamp)" }
            if let wrong = writes.first(where: { $0.value != field.value }) {
                return "\(where_): field \(field.column) holds \(wrong.value) at \(stamp), the workload wrote \(field.value)"
            }
            let incarnations = Set(writes.compactMap(\.incarnation))
            switch field.target {
            case .plain: if !incarnations.isEmpty { return "\(where_): field \(field.column) should be plain" }
            case .own: if incarnations != [stamp] { return "\(where_): field \(field.column) should start incarnation \(stamp)" }
            case .live(let live):
                if incarnations != Set(live) { return "\(where_): field \(field.column) written into \(incarnations.count) incarnations, expected the \(live.count) live ones" }
            }
        }
    }
    return nil
}
