import ConvergeCore
import Foundation

/// What an apply did, whatever the replica kind.
struct NodeApplyReport {
    var changed = 0
    var quarantined = 0
    var released = 0
}

/// One simulated replica, of either kind. Every call passes the replica's physical time
/// (virtual time plus its skew and jumps): nothing reads a real clock.
protocol SimNode: AnyObject {
    var replicaID: ReplicaID { get }
    /// The record's merge state as this replica holds it (for the workload's choices and
    /// for recording what a write observed).
    func recordState(_ address: RecordAddress) -> RecordState?
    /// Runs a local transaction; returns the delta it produced (empty when nothing changed).
    func perform(_ operations: [Replica.Operation], now: UInt64) throws -> Changeset
    /// Resolves a critical field; returns the delta it produced.
    func resolve(table: String, key: Value, column: String, to value: Value, now: UInt64) throws -> Changeset
    /// A page of the change feed after `cursor`.
    /// A feed page: parts changed after `cursor`, records after `position` (paging keeps the cursor fixed).
    func changes(since cursor: UInt64, after position: UInt64?, limit: Int, now: UInt64) throws -> (changeset: Changeset, next: UInt64, hasMore: Bool)
    func apply(_ changeset: Changeset, now: UInt64) throws -> NodeApplyReport
    func releaseQuarantine(now: UInt64, force: Bool) throws -> Int
    func quarantinedCount() throws -> Int
    /// The last local sequence number of the change feed.
    func feedSequence() throws -> UInt64
    /// Loses everything volatile; the durable state stays.
    func crash() throws
    func restart(now: UInt64) throws
    /// The full merge state, encoded: byte-identical on replicas holding the same state.
    func stateBytes() throws -> [UInt8]
    /// The app's visible rows of `table`, by key.
    func visibleRows(table: String) throws -> [Value: [String: Value]]
    /// The keys of `table`'s live records that a unique index holds out of the app table.
    func heldKeys(table: String) throws -> Set<Value>
    func conflicts() throws -> [Conflict]
    /// The records whose state may have changed since the last call (local writes, applies,
    /// releases), for the session checker: it looks only at what a step touched.
    func takeChanged() -> [RecordAddress]
    /// What the app shows of `addresses` (absent records included, with no row).
    func shown(_ addresses: [RecordAddress]) throws -> [RecordAddress: ShownRecord]
    /// Releases files.
    func close()

    // MARK: Tombstone collection (`--collect`, DESIGN §9)

    /// On the hub: the deleted records its frontier allows it to drop.
    func collectableRecords(through position: UInt64, limit: Int) throws -> [RecordAddress]
    /// Drops what it may of `addresses`; returns what it dropped (`keepingQuarantined`: the
    /// hub's rule, records with a change in quarantine stay).
    func collect(_ addresses: [RecordAddress], unchangedAfter: UInt64?, keepingQuarantined: Bool) throws -> [RecordAddress]
    /// Deleted records whose metadata it still holds.
    func tombstoneCount() throws -> Int
    /// The hub retired it: keeps its local writes after feed position `acknowledged`, drops
    /// everything else and takes a new (seeded) identity. Returns the records kept.
    func resetForResync(acknowledged: UInt64) throws -> Int
    /// Once a fresh snapshot is in: writes the kept writes again as new local writes;
    /// returns the records they changed.
    func reapplyKeptWrites(now: UInt64) throws -> [RecordAddress]
}

extension RecordState {
    /// What the app shows of this record, read from the merge state (core replicas).
    func shown(schema: TableSchema) -> ShownRecord {
        var record = ShownRecord(membership: membership, row: nil)
        guard isAlive else { return record }
        var row = [String: Value]()
        for column in schema.columns {
            switch fields[column]?.visibleRegister(membership: membership) {
            case .lww(let register)?:
                row[column] = register.value
                record.stamps[column] = register.stamp
            case .multi(let register)?:
                row[column] = register.provisionalValue ?? .null
                if let sibling = register.siblings.last { record.provisional[column] = sibling }
            case nil:
                row[column] = .null
            }
        }
        record.row = row
        return record
    }
}

/// A pure-model replica: `ConvergeCore.Replica`, which is durable by construction (a crash
/// loses the messages in flight, not the state).
final class CoreNode: SimNode {
    private(set) var replica: Replica
    let schema: SimulationSchema
    private var changed: [RecordAddress] = []
    /// `--unique`: what the replica shows and holds, per table, until its state changes
    /// (the workload and the session checker ask after every step).
    private var heldCache: [String: Set<Value>] = [:]
    private var rowsCache: [String: [Value: [String: Value]]] = [:]

    private func stateChanged() {
        heldCache.removeAll(keepingCapacity: true)
        rowsCache.removeAll(keepingCapacity: true)
    }

    /// The identities a reset takes, seeded as a SQLite replica's are.
    private let identities: SeededIdentities

    init(id: ReplicaID, maxDriftMilliseconds: UInt64, schema: SimulationSchema) {
        self.schema = schema
        replica = Replica(id: id, maxDriftMilliseconds: maxDriftMilliseconds)
        for table in schema.tables { replica.replicate(table) }
        identities = SeededIdentities(first: id)
        _ = identities.next()  // the first one is `id`
    }

    var replicaID: ReplicaID { replica.id }

    func recordState(_ address: RecordAddress) -> RecordState? { replica.state.state(of: address) }

    func perform(_ operations: [Replica.Operation], now: UInt64) throws -> Changeset {
        let delta = replica.perform(operations, physicalMilliseconds: now)
        stateChanged()
        changed += delta.records.map { RecordAddress(table: $0.table, key: $0.key) }
        return delta
    }

    func resolve(table: String, key: Value, column: String, to value: Value, now: UInt64) throws -> Changeset {
        let delta = replica.resolve(table: table, key: key, column: column, to: value, physicalMilliseconds: now)
        stateChanged()
        changed += delta.records.map { RecordAddress(table: $0.table, key: $0.key) }
        return delta
    }

    func changes(since cursor: UInt64, after position: UInt64?, limit: Int, now: UInt64) throws -> (changeset: Changeset, next: UInt64, hasMore: Bool) {
        let page = replica.state.changes(since: cursor, after: position, limit: limit)
        return (page.changeset, page.next, page.hasMore)
    }

    func apply(_ changeset: Changeset, now: UInt64) throws -> NodeApplyReport {
        // An apply releases quarantined records whose time has come, before the new ones.
        let held = replica.quarantine.isEmpty ? [] : Array(replica.quarantine.keys)
        let report = replica.apply(changeset, physicalMilliseconds: now)
        stateChanged()
        if report.releasedRecords > 0 { changed += held }
        changed += changeset.records.map { RecordAddress(table: $0.table, key: $0.key) }
        return NodeApplyReport(changed: report.changedRecords, quarantined: report.quarantinedRecords, released: report.releasedRecords)
    }

    func releaseQuarantine(now: UInt64, force: Bool) throws -> Int {
        let held = Array(replica.quarantine.keys)
        let released = replica.releaseQuarantine(physicalMilliseconds: now, force: force)
        stateChanged()
        if released > 0 { changed += held }
        return released
    }

    func quarantinedCount() throws -> Int { replica.quarantine.count }

    func feedSequence() throws -> UInt64 { replica.state.sequence }

    func crash() throws {}
    func restart(now: UInt64) throws {}

    func stateBytes() throws -> [UInt8] { WireEncoder.encode(replica.state.snapshot) }

    func visibleRows(table: String) throws -> [Value: [String: Value]] {
        if let cached = rowsCache[table] { return cached }
        var result = [Value: [String: Value]]()
        for row in replica.rows(table: table) { result[row.key] = row.values }
        if schema.table(named: table)?.uniqueIndexes.isEmpty == false { rowsCache[table] = result }
        return result
    }

    func heldKeys(table: String) throws -> Set<Value> {
        if let cached = heldCache[table] { return cached }
        let held = replica.heldKeys(table: table)
        heldCache[table] = held
        return held
    }

    func conflicts() throws -> [Conflict] { replica.conflicts() }

    func takeChanged() -> [RecordAddress] {
        defer { changed.removeAll(keepingCapacity: true) }
        return changed
    }

    func shown(_ addresses: [RecordAddress]) throws -> [RecordAddress: ShownRecord] {
        var result = [RecordAddress: ShownRecord]()
        var held = [String: Set<Value>]()
        for address in addresses {
            guard let table = schema.table(named: address.table) else { continue }
            var record = (replica.state.state(of: address) ?? RecordState()).shown(schema: table)
            if !table.uniqueIndexes.isEmpty {
                // A record a unique index holds has no row in an app table.
                if held[table.name] == nil { held[table.name] = try heldKeys(table: table.name) }
                if held[table.name]!.contains(address.key) { record.row = nil }
            }
            result[address] = record
        }
        return result
    }

    func close() {}

    func collectableRecords(through position: UInt64, limit: Int) throws -> [RecordAddress] {
        replica.collectableRecords(through: position, limit: limit)
    }

    func collect(_ addresses: [RecordAddress], unchangedAfter: UInt64?, keepingQuarantined: Bool) throws -> [RecordAddress] {
        let dropped = replica.collect(addresses, unchangedAfter: unchangedAfter, keepingQuarantined: keepingQuarantined)
        if !dropped.isEmpty { stateChanged() }
        return dropped
    }

    func tombstoneCount() throws -> Int { replica.tombstoneCount }

    func resetForResync(acknowledged: UInt64) throws -> Int {
        let kept = replica.resetForResync(acknowledged: acknowledged, newID: identities.next())
        stateChanged()
        changed.removeAll()
        return kept
    }

    func reapplyKeptWrites(now: UInt64) throws -> [RecordAddress] {
        let delta = replica.reapplyKeptWrites(physicalMilliseconds: now)
        stateChanged()
        let addresses = delta.records.map { RecordAddress(table: $0.table, key: $0.key) }
        changed += addresses
        return addresses
    }
}

/// A physical clock the simulator sets before each call into a store (or, over HTTP, into
/// the server). Stores read it from their own threads, hence the lock.
public final class VirtualClockBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 0

    /// A clock at 0 until the simulator sets it.
    public init() {}

    /// Virtual physical time, in milliseconds since 1970.
    public var milliseconds: UInt64 {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}
