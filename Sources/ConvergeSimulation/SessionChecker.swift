import ConvergeCore

/// What a replica shows of one record, read after a step.
struct ShownRecord {
    /// The record's membership as the replica holds it: which incarnations a delete (or a
    /// re-insert) it has seen removed.
    var membership: ORSet
    /// The app's row, `nil` when the row is not visible.
    var row: [String: Value]?
    /// Critical columns: the provisional sibling (the largest stamp) of the replica's state,
    /// to tell which write a small integer the row shows comes from.
    var provisional: [String: MVRegister.Sibling] = [:]
    /// Last-writer-wins columns: the register's stamp, when the replica exposes it (core
    /// replicas); used only for a value no write wrote (a broken merge).
    var stamps: [String: Stamp] = [:]
}

/// Where in a run a step happened, for a verdict.
struct SessionStep {
    var op: Int
    var healing: Bool
    var what: String

    var description: String { "\(healing ? "while healing, after op \(op)" : "at op \(op)"), \(what)" }
}

/// The session guarantees of DESIGN.md §7, checked on every replica after every local
/// write and every applied sync, from what the replica shows.
///
/// The guarantees are about *visible* writes per field, keyed by stamps (the simulator
/// knows every write's stamp). For each replica and field the checker keeps the write it
/// last showed and its own latest write. In an honest run the stamp a field shows never
/// goes down: a last-writer-wins register only grows, and a critical field shows its
/// largest sibling, which a newer write replaces only by observing it (so with a larger
/// stamp). The one way down is a removed incarnation: under `.deleteWins`, a delete or a
/// re-insert that saw the incarnation a write went into removes the write, whatever its
/// stamp (DESIGN §3). So after each step, for each field of each record the step touched:
///
/// - *monotonic reads*: the write shown is not older than the one shown before, unless
///   every incarnation that one went into is removed on this replica;
/// - *read-your-writes*: it is not older than the replica's own latest write to the field,
///   with the same exception;
/// - *no reverted local write*: a field that showed the replica's own write does not go
///   back to an older one (reported as such, the worst case of the two above).
///
/// A row that is not visible shows nothing: a delete this replica holds removed it (its
/// registers stay, so the checks resume when the row comes back). Over HTTP the checker
/// also watches each device's pull cursor: the server's answers to one device never go
/// back in its feed (monotonic reads at the protocol level: a stale snapshot shows there
/// first, since joins hide it from the rows).
///
/// - Complexity: O(fields touched) per step; nothing scans the whole state.
struct SessionChecker {
    struct WriteInfo {
        var value: Value
        var replica: Int
        /// `.deleteWins` fields: the incarnations the write went into.
        var incarnations: [Stamp]?
    }

    enum Guarantee: String {
        case readYourWrites = "read-your-writes"
        case monotonicReads = "monotonic reads"
        case revertedLocalWrite = "no reverted local write"
    }

    /// What the run wrote to one record, one slot per column of its table (in
    /// `TableSchema.columns` order): the checker looks a record up once per step, not once
    /// per field, and hashes no column name.
    struct RecordWrites {
        /// Each column's writes, by stamp.
        var byStamp: [[Stamp: WriteInfo]]
        /// Last-writer-wins values are unique per write (the workload makes them so), except
        /// in the columns of unique indexes (`--unique`), whose few values repeat: there
        /// ``repeated`` columns, written twice with one value, take the stamp the replica's
        /// state shows (``ShownRecord/stamps``) when it has one for the value shown.
        var stampOfValue: [[Value: Stamp]]
        /// Bit `i`: column `i` was written twice with one value.
        var repeated: UInt64 = 0

        init(columns: Int) {
            precondition(columns <= UInt64.bitWidth, "a simulated table has at most 64 columns (the repeated-value mask)")
            byStamp = Array(repeating: [:], count: columns)
            stampOfValue = Array(repeating: [:], count: columns)
        }
    }

    private var writes: [RecordAddress: RecordWrites] = [:]
    private let tables: SimulationSchema
    /// Per replica and record, one slot per column: the write the replica last showed.
    private var shown: [[RecordAddress: [Stamp?]]]
    /// Per replica and record, one slot per column: the replica's own latest write.
    private var own: [[RecordAddress: [Stamp?]]]
    private var cursors: [(server: ReplicaID, position: UInt64)?]
    /// Fields observed (one per field per step), and pull cursors observed.
    private(set) var checks = 0
    private(set) var violations = 0
    private(set) var first: SessionViolation?
    /// The record of the first violation, for its history.
    private(set) var firstAddress: RecordAddress?

    init(replicas: Int, tables: SimulationSchema = .standard) {
        self.tables = tables
        shown = Array(repeating: [:], count: replicas)
        own = Array(repeating: [:], count: replicas)
        cursors = Array(repeating: nil, count: replicas)
    }

    /// Notes a local write of `replica` at `stamp` (before its step is observed).
    mutating func recordWrite(_ write: PlannedWrite, stamp: Stamp, replica: Int) {
        guard let columns = tables.table(named: write.address.table)?.columns else { return }
        var record = writes[write.address] ?? RecordWrites(columns: columns.count)
        var mine = own[replica][write.address] ?? Array(repeating: nil, count: columns.count)
        for field in write.fields {
            guard let column = columns.firstIndex(of: field.column) else { continue }
            var incarnations: [Stamp]?
            switch field.target {
            case .plain: incarnations = nil
            case .own: incarnations = [stamp]
            case .live(let live): incarnations = live
            }
            record.byStamp[column][stamp] = WriteInfo(value: field.value, replica: replica, incarnations: incarnations)
            if !field.critical {
                if let earlier = record.stampOfValue[column][field.value], earlier != stamp { record.repeated |= 1 << UInt64(column) }
                record.stampOfValue[column][field.value] = stamp
            }
            mine[column] = stamp
        }
        writes[write.address] = record
        own[replica][write.address] = mine
    }

    /// Checks what `replica` shows of `records` after `step`. `written` lists the records
    /// the step's own local write wrote fields of (they must be visible).
    mutating func observe(
        replica: Int, records: [RecordAddress: ShownRecord], step: @autoclosure () -> SessionStep,
        written: Set<RecordAddress> = [], describe: (Stamp) -> String
    ) {
        // In key order, so that the first violation reported is the same on every replay.
        for address in records.keys.sorted() {
            let record = records[address]!
            guard let schema = tables.table(named: address.table) else { continue }
            guard let row = record.row else {
                checks += 1
                if written.contains(address) {
                    report(.readYourWrites, replica: replica, address: address, column: "(row)", shown: nil, before: nil,
                           note: "its own write of the record left no visible row", step: step(), describe: describe)
                }
                continue
            }
            let known = writes[address]
            let ownSlots = own[replica][address]
            let previous = shown[replica][address]
            var slots = previous ?? Array(repeating: nil, count: schema.columns.count)
            for (index, column) in schema.columns.enumerated() {
                checks += 1
                let now = stampShown(known, index, column: column, value: row[column], record: record, critical: schema.policy(of: column) != .lww)
                let before = slots[index]
                let mine = ownSlots?[index]
                if let before, before != now, now.map({ $0 < before }) ?? true, !removed(before, known, index, record.membership) {
                    report(before == mine ? .revertedLocalWrite : .monotonicReads, replica: replica, address: address, column: column,
                           shown: now, before: before, note: nil, step: step(), describe: describe)
                } else if let mine, mine != now, now.map({ $0 < mine }) ?? true, !removed(mine, known, index, record.membership) {
                    report(.readYourWrites, replica: replica, address: address, column: column,
                           shown: now, before: mine, note: nil, step: step(), describe: describe)
                }
                slots[index] = now
            }
            // A record that never showed a write keeps no slots.
            if previous != nil || slots.contains(where: { $0 != nil }) { shown[replica][address] = slots }
        }
    }

    /// `--collect`: `replica` dropped `record` once its delete was stable everywhere. Its
    /// history on that replica ends there: a later write of the same key starts a new life,
    /// whose stamps owe nothing to the old one's (a replica that never saw the old life may
    /// write it with a smaller clock).
    mutating func forget(replica: Int, record: RecordAddress) {
        shown[replica][record] = nil
        own[replica][record] = nil
    }

    /// `--collect`: `replica` reset for resync (the hub retired it): it starts over as a new
    /// replica with a fresh snapshot, which the app is told of. What it showed before is no
    /// floor for what it shows after (records collected meanwhile are gone); what its user
    /// typed is checked to come back by the simulation itself.
    mutating func reset(replica: Int) {
        shown[replica] = [:]
        own[replica] = [:]
        cursors[replica] = nil
    }

    /// Checks a device's pull cursor in the server's feed after a round (`--transport http`).
    mutating func observeCursor(replica: Int, server: ReplicaID, position: UInt64, step: SessionStep) {
        checks += 1
        defer { cursors[replica] = (server, position) }
        guard let previous = cursors[replica], previous.server == server, position < previous.position else { return }
        violations += 1
        guard first == nil else { return }
        first = SessionViolation(
            guarantee: Guarantee.monotonicReads.rawValue, replica: replica, table: "-", key: "-", field: "(pull cursor)",
            step: step.description,
            shown: "feed position \(position) of the server",
            before: "feed position \(previous.position), which the server had already served this device",
            note: "the server answered from an older snapshot of its feed than one it had served this device")
    }

    /// The stamp of the write the row shows in column `index` (named `column`), `nil` when
    /// none; `known` is what the run wrote to the record.
    private func stampShown(_ known: RecordWrites?, _ index: Int, column: String, value: Value?, record: ShownRecord, critical: Bool) -> Stamp? {
        // NULL is what a column shows before any write, unless a write wrote it.
        guard let value, value != .null || known?.stampOfValue[index][.null] != nil else { return nil }
        if !critical {
            if let known, known.repeated & (1 << UInt64(index)) != 0, let stamp = record.stamps[column], known.byStamp[index][stamp]?.value == value { return stamp }
            return known?.stampOfValue[index][value] ?? record.stamps[column]
        }
        if let sibling = record.provisional[column], sibling.value == value { return sibling.stamp }
        // The row disagrees with the replica's own state: the most recent write of that
        // value is the kindest reading of it.
        return known?.byStamp[index].filter { $0.value.value == value }.keys.max()
    }

    /// Whether every incarnation `stamp`'s write (to column `index`) went into is removed on the replica.
    private func removed(_ stamp: Stamp, _ known: RecordWrites?, _ index: Int, _ membership: ORSet) -> Bool {
        guard let incarnations = known?.byStamp[index][stamp]?.incarnations, !incarnations.isEmpty else { return false }
        return incarnations.allSatisfy(membership.isDead)
    }

    private mutating func report(
        _ guarantee: Guarantee, replica: Int, address: RecordAddress, column: String, shown: Stamp?, before: Stamp?,
        note: String?, step: SessionStep, describe: (Stamp) -> String
    ) {
        violations += 1
        guard first == nil else { return }
        firstAddress = address
        let index = tables.table(named: address.table)?.columns.firstIndex(of: column)
        let byStamp = index.flatMap { index in writes[address]?.byStamp[index] } ?? [:]
        func text(_ stamp: Stamp?, _ role: String) -> String {
            guard let stamp else { return "nothing" }
            let value = byStamp[stamp].map { "\($0.value)" } ?? "?"
            let writer = byStamp[stamp].map { $0.replica == replica ? "its own write" : "written by replica \($0.replica)" } ?? "a write the oracle does not know"
            return "\(value) (\(describe(stamp)), \(writer)\(role.isEmpty ? "" : ", \(role)"))"
        }
        let role: String
        switch guarantee {
        case .monotonicReads: role = "shown before"
        case .readYourWrites, .revertedLocalWrite: role = "its latest write to the field"
        }
        first = SessionViolation(
            guarantee: guarantee.rawValue, replica: replica, table: address.table, key: "\(address.key)", field: column,
            step: step.description, shown: text(shown, ""), before: before.map { text($0, role) } ?? "-", note: note)
    }
}

/// The first session guarantee broken in a run.
public struct SessionViolation: Sendable, Hashable, Codable, CustomStringConvertible {
    /// `read-your-writes`, `monotonic reads` or `no reverted local write`.
    public var guarantee: String
    /// The replica that broke it.
    public var replica: Int
    /// The table of the record.
    public var table: String
    /// The record's primary key, as text.
    public var key: String
    /// The column, `(row)` for the row's presence, `(pull cursor)` for the device's place
    /// in the server's feed.
    public var field: String
    /// When: the operation and what the replica had just done.
    public var step: String
    /// The write the replica shows after the step.
    public var shown: String
    /// The write it must not go below.
    public var before: String
    /// More about the step, when there is something to say.
    public var note: String?
    /// The record's write history (small runs only).
    public var history: [String] = []

    public var description: String {
        var lines = ["session violation: \(guarantee) on replica \(replica), table \(table), key \(key), field \(field), \(step)",
                     "  shows now: \(shown)",
                     "  older than: \(before)"]
        if let note { lines.append("  \(note)") }
        if !history.isEmpty {
            lines.append("  history of the record (replica, stamp, write):")
            lines += history.map { "    \($0)" }
        }
        return lines.joined(separator: "\n")
    }
}
