import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// A real `ConvergeSQLite` store, in memory or on a file.
///
/// Local writes are plain SQL on the app tables, except for records a unique index holds
/// out of them (`--unique`), which SQL cannot reach: those are edited and deleted through
/// Converge (`update(table:key:values:)`, `delete(table:key:)`), as an app would. A
/// *shadow* core replica follows the store's own change feed after every call, so the
/// workload can read a record's merge state (what a write observes) without asking SQLite
/// for it; the shadow takes no part in the convergence check, but with unique indexes it
/// is the model the app tables are checked against after every call (which records show).
final class SQLiteNode: SimNode {
    let path: String?
    let schema: SimulationSchema
    let clock = VirtualClockBox()
    /// The identity the store must have: the seeded one, then the one a reset for resync
    /// took (any other change is the store resetting its identity on its own).
    private(set) var wantedID: ReplicaID
    let maxDriftMilliseconds: UInt64
    private var queue: DatabaseQueue?
    private var store: ReplicatedDatabase?
    private var shadow: Replica
    private var shadowCursor: UInt64 = 0
    /// Set when the store took a new identity on its own (it must not, in a simulation).
    private(set) var identityResets = 0
    /// Records the store's feed showed changed since the session checker last asked.
    private var changed: [RecordAddress] = []
    private let identitySource: SeededIdentities

    init(id: ReplicaID, path: String?, maxDriftMilliseconds: UInt64, now: UInt64, schema: SimulationSchema) throws {
        self.path = path
        self.schema = schema
        self.wantedID = id
        self.maxDriftMilliseconds = maxDriftMilliseconds
        identitySource = SeededIdentities(first: id)
        shadow = Replica(id: id, maxDriftMilliseconds: .max)
        for table in schema.tables { shadow.replicate(table) }
        clock.milliseconds = now
        try open(initial: true)
    }

    var replicaID: ReplicaID { store?.replicaID ?? wantedID }

    private func open(initial: Bool) throws {
        var configuration = GRDB.Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = OFF")
        }
        let queue = try path.map { try DatabaseQueue(path: $0, configuration: configuration) } ?? DatabaseQueue(configuration: configuration)
        try queue.write { db in
            for table in schema.tables {
                try db.execute(sql: SimulationSchema.createSQL(table))
                for index in SimulationSchema.indexSQL(table) { try db.execute(sql: index) }
            }
        }
        let box = clock
        // Seeded identities, so that stamp ties break the same way on every replay: the
        // wanted one for the new database, then seeded others should the store ever need
        // a new one (which fails the run: a simulated store must not reset its identity).
        let identities = identitySource
        let storeConfiguration = ReplicatedDatabase.Configuration(
            maxDriftMilliseconds: maxDriftMilliseconds, physicalTime: { box.milliseconds },
            makeReplicaID: { identities.next() })
        let store = try ReplicatedDatabase(queue, configuration: storeConfiguration)
        if initial && store.replicaID != wantedID {
            throw SimulationFailure("replica store opened with identity \(store.replicaID), not the seeded \(wantedID)")
        }
        for table in schema.tables {
            try store.replicate(
                table: table.name, policies: table.policies, deletePolicy: table.deletePolicy, allowUniqueIndexes: !table.uniqueIndexes.isEmpty)
        }
        self.queue = queue
        self.store = store
    }

    private func live() throws -> (DatabaseQueue, ReplicatedDatabase) {
        guard let queue, let store else { throw SimulationFailure("replica used while crashed") }
        return (queue, store)
    }

    /// Brings the shadow up to the store's feed; returns what it read.
    @discardableResult
    private func followFeed() throws -> Changeset {
        let (_, store) = try live()
        var read = [RecordDelta]()
        var position: UInt64?
        while true {
            let batch = try store.changes(since: shadowCursor, after: position, maxRecords: 10_000, maxBytes: 1 << 26)
            shadow.apply(batch.changeset, physicalMilliseconds: 0)
            read += batch.changeset.records
            changed += batch.changeset.records.map { RecordAddress(table: $0.table, key: $0.key) }
            position = batch.next
            if !batch.hasMore { break }
        }
        shadowCursor = position ?? shadowCursor
        return Changeset(records: read)
    }

    func recordState(_ address: RecordAddress) -> RecordState? { shadow.state.state(of: address) }

    func perform(_ operations: [Replica.Operation], now: UInt64) throws -> Changeset {
        let (queue, store) = try live()
        clock.milliseconds = now
        try followFeed()
        if let held = try heldOperation(operations) {
            switch held {
            case .update(let table, let key, let values): try store.update(table: table, key: key, values: values)
            case .delete(let table, let key): try store.delete(table: table, key: key)
            case .insert: break  // never chosen: an insert writes the app table with SQL
            }
            let delta = try followFeed()
            try checkShownRows("a local write through Converge")
            return delta
        }
        try queue.write { db in
            for operation in operations {
                switch operation {
                case .insert(let table, let key, let values):
                    guard let schema = self.schema.table(named: table) else { continue }
                    let columns = schema.columns.filter { values[$0] != nil }
                    let names = ([schema.primaryKey] + columns).joined(separator: ", ")
                    let marks = Array(repeating: "?", count: columns.count + 1).joined(separator: ", ")
                    // Cached, as an app's record types do: each statement compiles the
                    // capture triggers with it.
                    try db.cachedStatement(sql: "INSERT OR REPLACE INTO \(table)(\(names)) VALUES (\(marks))")
                        .execute(arguments: StatementArguments([key.databaseValue] + columns.map { values[$0]!.databaseValue }))
                case .update(let table, let key, let values):
                    guard let schema = self.schema.table(named: table) else { continue }
                    let columns = schema.columns.filter { values[$0] != nil }
                    guard !columns.isEmpty else { continue }
                    try db.cachedStatement(sql: "UPDATE \(table) SET \(columns.map { "\($0) = ?" }.joined(separator: ", ")) WHERE \(schema.primaryKey) = ?")
                        .execute(arguments: StatementArguments(columns.map { values[$0]!.databaseValue } + [key.databaseValue]))
                case .delete(let table, let key):
                    guard let schema = self.schema.table(named: table) else { continue }
                    try db.cachedStatement(sql: "DELETE FROM \(table) WHERE \(schema.primaryKey) = ?").execute(arguments: [key.databaseValue])
                }
            }
        }
        let delta = try followFeed()
        try checkShownRows("a local SQL write")
        return delta
    }

    /// The operation of `operations` that edits or deletes a record a unique index holds
    /// (alive, but not in the app table): SQL cannot reach it, Converge's API can. The
    /// workload makes such a write a transaction of its own.
    private func heldOperation(_ operations: [Replica.Operation]) throws -> Replica.Operation? {
        guard schema.hasUniqueIndexes else { return nil }
        var held: Replica.Operation?
        for operation in operations {
            let (table, key) = operation.simulatedAddress
            if case .insert = operation { continue }
            if try heldKeys(table: table).contains(key) { held = operation }
        }
        if held != nil && operations.count > 1 {
            throw SimulationFailure("a transaction of \(operations.count) writes includes a record a unique index holds: \(operations)")
        }
        return held
    }

    /// `--unique`: the app tables with unique indexes show exactly the rows the shadow
    /// shows (the core model of the store's own merge state, `Replica.rows(table:)`), after
    /// every call: the store's settlement step by step against the model's, not only at the
    /// end of the run.
    private func checkShownRows(_ what: @autoclosure () -> String) throws {
        guard schema.hasUniqueIndexes else { return }
        for table in schema.tables where !table.uniqueIndexes.isEmpty {
            let rows = try visibleRows(table: table.name)
            var model = [Value: [String: Value]]()
            for row in shadow.rows(table: table.name) { model[row.key] = row.values }
            guard rows != model else { continue }
            let onlyStore = rows.keys.filter { model[$0] == nil }.sorted()
            let onlyModel = model.keys.filter { rows[$0] == nil }.sorted()
            let differ = rows.keys.filter { model[$0] != nil && model[$0] != rows[$0] }.sorted()
            throw SimulationFailure(
                "the store of replica \(replicaID) shows other rows of \(table.name) than the model of its own state after \(what()): "
                    + "shown only by the store \(onlyStore), only by the model \(onlyModel), with other values \(differ.map { "\($0): \(rows[$0]!) vs \(model[$0]!)" }); "
                    + "held by the model \(shadow.heldKeys(table: table.name).sorted())")
        }
    }

    func resolve(table: String, key: Value, column: String, to value: Value, now: UInt64) throws -> Changeset {
        let (_, store) = try live()
        clock.milliseconds = now
        try followFeed()
        do {
            try store.resolve(table: table, key: key, column: column, to: value)
        } catch is RecordNotFound {
            return Changeset()
        }
        let delta = try followFeed()
        try checkShownRows("a resolve")
        return delta
    }

    func changes(since cursor: UInt64, after position: UInt64?, limit: Int, now: UInt64) throws -> (changeset: Changeset, next: UInt64, hasMore: Bool) {
        let (_, store) = try live()
        clock.milliseconds = now
        let batch = try store.changes(since: cursor, after: position, maxRecords: limit, maxBytes: 1 << 24)
        return (batch.changeset, batch.next, batch.hasMore)
    }

    func apply(_ changeset: Changeset, now: UInt64) throws -> NodeApplyReport {
        let (_, store) = try live()
        clock.milliseconds = now
        let report = try store.apply(changeset)
        if report.identityReset { identityResets += 1 }
        try followFeed()
        try checkShownRows("an apply")
        return NodeApplyReport(changed: report.changedRecords, quarantined: report.quarantinedRecords, released: report.releasedRecords)
    }

    func releaseQuarantine(now: UInt64, force: Bool) throws -> Int {
        let (_, store) = try live()
        clock.milliseconds = now
        let released = try store.releaseQuarantine(force: force)
        try followFeed()
        try checkShownRows("releasing its quarantine")
        return released
    }

    func quarantinedCount() throws -> Int { try live().1.quarantinedCount() }

    // MARK: Synced by an engine (`--transport http`)

    /// The open store, for a sync engine that reads and applies it directly.
    var database: ReplicatedDatabase? { store }

    /// Sets the physical time the store reads while an engine applies to it.
    func setPhysicalTime(_ now: UInt64) { clock.milliseconds = now }

    /// After an engine applied pulled changes to the store: the shadow catches up (the
    /// workload reads it), and an identity the store took on its own is noted.
    func followEngine() throws {
        try followFeed()
        try checkShownRows("a sync round of its engine")
        if let store, store.replicaID != wantedID, identityResets == 0 { identityResets = 1 }
    }

    /// The shadow follows the feed to its end after every call, so its cursor is the
    /// store's last sequence number.
    func feedSequence() throws -> UInt64 { shadowCursor }

    func crash() throws {
        // Close the database: whatever was in flight is lost, the file stays.
        store = nil
        try queue?.close()
        queue = nil
    }

    func restart(now: UInt64) throws {
        guard queue == nil else { return }
        clock.milliseconds = now
        try open(initial: false)
        try followFeed()
        try checkShownRows("reopening after a crash")
    }

    func stateBytes() throws -> [UInt8] { WireEncoder.encode(try live().1.snapshot()) }

    func visibleRows(table: String) throws -> [Value: [String: Value]] {
        try schema.visibleRows(in: try live().0, table: table)
    }

    /// Live records (in the store's state, which the shadow follows) absent from the app table.
    func heldKeys(table: String) throws -> Set<Value> {
        guard schema.table(named: table)?.uniqueIndexes.isEmpty == false else { return [] }
        let shown = try visibleRows(table: table)
        return Set(shadow.state.allRecords.lazy.filter { $0.address.table == table && $0.state.isAlive && shown[$0.address.key] == nil }.map(\.address.key))
    }

    func conflicts() throws -> [Conflict] { try live().1.conflicts() }

    func takeChanged() -> [RecordAddress] {
        defer { changed.removeAll(keepingCapacity: true) }
        return changed
    }

    /// The app's rows of `addresses`, read from the app tables (what the user sees), with
    /// the membership and critical siblings of the store's state (through the shadow, which
    /// follows the store's feed) to tell which write a row shows.
    func shown(_ addresses: [RecordAddress]) throws -> [RecordAddress: ShownRecord] {
        let (queue, _) = try live()
        var byTable = [String: [Value]]()
        for address in addresses { byTable[address.table, default: []].append(address.key) }
        var rows = [RecordAddress: [String: Value]]()
        try queue.readKeepingStatements { db in
            for (table, keys) in byTable {
                guard let schema = self.schema.table(named: table) else { continue }
                // Bounded statements: SQLite limits the number of parameters.
                var start = 0
                while start < keys.count {
                    let chunk = keys[start..<min(keys.count, start + 500)]
                    start += 500
                    let (marks, arguments) = paddedInList(chunk.map(\.databaseValue))
                    let sql = "SELECT * FROM \(table) WHERE \(schema.primaryKey) IN (\(marks))"
                    for row in try Row.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(arguments)) {
                        var values = [String: Value]()
                        for column in schema.columns { values[column] = Value(row[column] as DatabaseValue) }
                        rows[RecordAddress(table: table, key: Value(row[schema.primaryKey] as DatabaseValue))] = values
                    }
                }
            }
        }
        var result = [RecordAddress: ShownRecord]()
        for address in addresses {
            guard let schema = self.schema.table(named: address.table) else { continue }
            let state = shadow.state.state(of: address) ?? RecordState()
            var record = ShownRecord(membership: state.membership, row: rows[address])
            for column in schema.columns where schema.policy(of: column) != .lww {
                if let sibling = state.multiValue(of: column)?.siblings.last { record.provisional[column] = sibling }
            }
            // Values may repeat from write to write (a unique column's few values, a reset's
            // kept row written again): which write the row shows is the state's register,
            // when it shows that register's value.
            for column in schema.columns where schema.policy(of: column) == .lww {
                if case .lww(let register)? = state.fields[column]?.visibleRegister(membership: state.membership), register.value == rows[address]?[column] {
                    record.stamps[column] = register.stamp
                }
            }
            result[address] = record
        }
        return result
    }

    // MARK: Tombstone collection (`--collect`)

    func collectableRecords(through position: UInt64, limit: Int) throws -> [RecordAddress] {
        try live().1.collectableRecords(through: position, limit: limit)
    }

    func collect(_ addresses: [RecordAddress], unchangedAfter: UInt64?, keepingQuarantined: Bool) throws -> [RecordAddress] {
        let dropped = try live().1.collect(addresses, unchangedAfter: unchangedAfter, keepingQuarantined: keepingQuarantined).collected
        // The shadow follows the feed, which a drop does not change: it drops them too (it
        // holds no quarantine of its own).
        let shadowDropped = shadow.collect(dropped)
        if shadowDropped.count != dropped.count {
            throw SimulationFailure("replica \(replicaID): the store dropped \(dropped) but its shadow holds them otherwise (dropped \(shadowDropped))")
        }
        try checkShownRows("a collection")
        return dropped
    }

    /// After its engine dropped records the server listed as collected (`--transport
    /// http`): the shadow drops those of `addresses` the store no longer holds. Returns them.
    ///
    /// The engine may apply a record's tombstone and drop the record in one round, so the
    /// feed never shows the shadow that last change: the shadow then starts over from the
    /// store's feed, which holds exactly the records the store does.
    func followCollection(_ addresses: [RecordAddress]) throws -> [RecordAddress] {
        guard !addresses.isEmpty else { return [] }
        let (queue, store) = try live()
        let gone = try queue.readKeepingStatements { db in
            try Set(addresses).sorted().filter { try ReplicatedDatabase.storedRecord(db, table: $0.table, key: $0.key) == nil && shadow.state.state(of: $0) != nil }
        }
        guard !gone.isEmpty else { return [] }
        if shadow.collect(gone).count != gone.count {
            shadow = Replica(id: store.replicaID, maxDriftMilliseconds: .max)
            for table in schema.tables { shadow.replicate(table) }
            shadowCursor = 0
            try followFeed()
        }
        if let kept = gone.first(where: { shadow.state.state(of: $0) != nil }) {
            throw SimulationFailure("replica \(replicaID): its store no longer holds \(kept.table) \(kept.key), which its own feed still shows")
        }
        return gone
    }

    func tombstoneCount() throws -> Int { try live().1.tombstoneCount() }

    /// The records holding a write of `replica` (after a reset its engine did: the kept
    /// writes it wrote again, the new identity's only ones).
    func recordsWritten(by replica: ReplicaID) -> [RecordAddress] {
        shadow.state.allRecords.filter { $0.state.maxHLC(by: replica) > .zero }.map(\.address)
    }

    func resetForResync(acknowledged: UInt64) throws -> Int {
        let kept = try live().1.resetForResync(acknowledged: acknowledged)
        try adoptResetIdentity()
        return kept
    }

    /// After the store reset for resync (here, or in its sync engine): its new identity is
    /// the one it must keep, and the shadow starts over from the store's feed.
    func adoptResetIdentity() throws {
        let (_, store) = try live()
        wantedID = store.replicaID
        shadow = Replica(id: store.replicaID, maxDriftMilliseconds: .max)
        for table in schema.tables { shadow.replicate(table) }
        shadowCursor = 0
        changed.removeAll()
        try followFeed()
        try checkShownRows("a reset for resync")
    }

    func reapplyKeptWrites(now: UInt64) throws -> [RecordAddress] {
        let (_, store) = try live()
        clock.milliseconds = now
        try store.reapplyKeptWrites()
        let delta = try followFeed()
        try checkShownRows("writing the kept writes again")
        return delta.records.map { RecordAddress(table: $0.table, key: $0.key) }
    }

    func close() {
        store = nil
        try? queue?.close()
        queue = nil
        if let path {
            for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
    }
}

/// The identities a simulated store is given: the seeded one first, then others drawn from
/// a generator seeded by it. The store asks from its own thread, hence the lock.
final class SeededIdentities: @unchecked Sendable {
    private let lock = NSLock()
    private var first: ReplicaID?
    private var rng: SeededGenerator

    init(first: ReplicaID) {
        self.first = first
        rng = SeededGenerator(seed: first.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    func next() -> ReplicaID {
        lock.withLock {
            if let first {
                self.first = nil
                return first
            }
            return ReplicaID(using: &rng)
        }
    }
}
