import ConvergeCore
import ConvergeSQLite
import GRDB

/// The hub of a `--transport http` run: a real sync server that every replica reaches
/// through its own sync engine (ConvergeSimulationHTTP implements it over loopback HTTP).
///
/// The simulation stays the single thread that decides everything: it calls the hub one
/// round at a time and waits, so the run writes the same things for the same seed. The
/// hub injects the network faults itself (from its own seeded generator, in the order of
/// the requests), and keeps requests it delays until ``deliverLate(dueBy:)``.
public protocol SimulationHub: AnyObject {
    /// Starts the server for a run of `options` (faults at `rates`).
    func start(options: SimulationOptions, rates: FaultRates) throws
    /// One sync round of `replica`, whose store is `database` (its physical time is set).
    /// Faults a round may meet end it with ``HubRoundOutcome/failure``; anything else that
    /// goes wrong (a refusal, a failure nothing injected) throws.
    func sync(replica: Int, database: ReplicatedDatabase, round: HubRound) throws -> HubRoundOutcome
    /// Sets the server's physical time (the run's virtual time, without any replica's
    /// skew) and applies the server's quarantined records whose time has come; with
    /// `--collect`, also the clock its retention window is measured on (which stops while
    /// the run heals).
    func advanceTime(to now: UInt64, collectionClock: UInt64) throws
    /// Delivers the delayed requests due at operation `op` or before (`Int.max`: all).
    func deliverLate(dueBy op: Int) throws
    /// The traffic and faults since the last call.
    func takeTraffic() -> HubTraffic
    /// `--collect`: what the server did since the last call that the oracle must know, in
    /// the order it did it: the pushes it applied, the records it collected.
    func takeEvents() -> [HubEvent]
    /// The server's identity in the simulated namespace.
    var serverReplica: ReplicaID { get }
    /// The server's full merge state in the namespace.
    func serverSnapshot() throws -> Changeset
    /// The server's visible rows of `table`, by key.
    func serverVisibleRows(table: String) throws -> [Value: [String: Value]]
    /// The server's open conflicts in the namespace.
    func serverConflicts() throws -> [Conflict]
    /// The records the server holds in quarantine in the namespace.
    func serverQuarantinedCount() throws -> Int
    /// Stops the server and removes its files (idempotent).
    func stop()
}

/// What the simulation tells the hub about one round.
public struct HubRound: Sendable, Hashable {
    /// The operation the run is at.
    public var op: Int
    /// Whether faults may be injected (not while healing).
    public var faulty: Bool
    /// The replica is cut off from the server by a partition.
    public var offline: Bool

    /// Describes a round at operation `op`.
    public init(op: Int, faulty: Bool, offline: Bool) {
        self.op = op
        self.faulty = faulty
        self.offline = offline
    }
}

/// What one round did.
public struct HubRoundOutcome: Sendable {
    /// Records the replica pushed.
    public var pushedRecords = 0
    /// Records the replica pulled.
    public var pulledRecords = 0
    /// Pulled records that changed the replica's store.
    public var appliedRecords = 0
    /// Pulled records the replica quarantined (stamped beyond its drift allowance).
    public var quarantinedRecords = 0
    /// Why the round failed, when an injected fault made it give up (`nil`: it completed).
    public var failure: String?
    /// The device's pull cursor in the server's feed after the round, and the server it
    /// belongs to (for the session checker: answers never go back in the feed).
    public var pullCursor: (server: ReplicaID, position: UInt64)?
    /// `--collect`: the server retired the device, and its engine reset it in this round:
    /// the identity it had, and the feed position the server had acknowledged.
    public var resetFrom: (replica: ReplicaID, acknowledged: UInt64)?
    /// `--collect`: the engine wrote its kept writes again after a reset (this round's or
    /// an earlier one's, when that round failed before it could).
    public var reapplied = false
    /// `--collect`: records the server listed as collected in answers of this round (the
    /// engine dropped those the device held deleted).
    public var listedCollected: [RecordAddress] = []
    /// `--collect`: records the engine dropped.
    public var droppedRecords = 0

    /// Describes a round with the given counts (all zero by default) and failure.
    public init(pushedRecords: Int = 0, pulledRecords: Int = 0, appliedRecords: Int = 0, quarantinedRecords: Int = 0, failure: String? = nil) {
        self.pushedRecords = pushedRecords
        self.pulledRecords = pulledRecords
        self.appliedRecords = appliedRecords
        self.quarantinedRecords = quarantinedRecords
        self.failure = failure
    }
}

/// `--collect`: one thing the server did, as the hub saw it in a request and its answer.
public enum HubEvent: Sendable {
    /// The server applied a push of `replica`: for each record, the largest clock reading of
    /// `replica` it carried (which writes of `replica` the server holds).
    case received(replica: ReplicaID, records: [(address: RecordAddress, hlc: HLC)])
    /// The server collected the record, as entry `id` of its collected log.
    case collected(id: UInt64, address: RecordAddress)
}

extension HubEvent {
    /// The server applied `changeset`, pushed by `replica`.
    public static func received(_ changeset: Changeset, by replica: ReplicaID) -> HubEvent {
        .received(replica: replica, records: changeset.records.map { (RecordAddress(table: $0.table, key: $0.key), $0.state.maxHLC(by: replica)) })
    }
}

/// Traffic through the hub, counted the way the simulated network counts it.
public struct HubTraffic: Sendable, Hashable {
    /// Requests and answers (two per request that reached the server).
    public var messages = 0
    /// Protocol bytes: changesets plus 20 bytes of header per message.
    public var bytes = 0
    /// Requests the engines sent, retries included.
    public var roundTrips = 0
    /// Requests that continued a round (paging), not its first and not a retry.
    public var continuations = 0
    /// Record deltas pushed and pulled.
    public var recordsSent = 0
    /// Faults injected, by kind.
    public var faults: [String: Int] = [:]

    /// No traffic yet.
    public init() {}
}

extension SimulationSchema {
    /// The app's visible rows of `table` in a replicated store (a replica's, or the
    /// server's store of a namespace), by key.
    public func visibleRows(of database: ReplicatedDatabase, table: String) throws -> [Value: [String: Value]] {
        try visibleRows(in: database.writer, table: table)
    }

    func visibleRows(in reader: any DatabaseReader, table: String) throws -> [Value: [String: Value]] {
        guard let schema = self.table(named: table) else { return [:] }
        return try reader.read { db in
            var result = [Value: [String: Value]]()
            for row in try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY \(schema.primaryKey)") {
                var values = [String: Value]()
                for column in schema.columns { values[column] = Value(row[column] as DatabaseValue) }
                result[Value(row[schema.primaryKey] as DatabaseValue)] = values
            }
            return result
        }
    }
}

/// The hub's server as a node of the final check: its merge state, rows and conflicts are
/// compared with the devices' and the oracle's. It takes no part in the run itself.
final class HubServerNode: SimNode {
    let hub: any SimulationHub

    init(hub: any SimulationHub) { self.hub = hub }

    var replicaID: ReplicaID { hub.serverReplica }
    func recordState(_ address: RecordAddress) -> RecordState? { nil }
    func perform(_ operations: [Replica.Operation], now: UInt64) throws -> Changeset { throw Self.notAReplica }
    func resolve(table: String, key: Value, column: String, to value: Value, now: UInt64) throws -> Changeset { throw Self.notAReplica }
    func changes(since cursor: UInt64, after position: UInt64?, limit: Int, now: UInt64) throws -> (changeset: Changeset, next: UInt64, hasMore: Bool) {
        throw Self.notAReplica
    }
    func apply(_ changeset: Changeset, now: UInt64) throws -> NodeApplyReport { throw Self.notAReplica }
    func releaseQuarantine(now: UInt64, force: Bool) throws -> Int { 0 }
    func quarantinedCount() throws -> Int { try hub.serverQuarantinedCount() }
    func feedSequence() throws -> UInt64 { throw Self.notAReplica }
    func crash() throws {}
    func restart(now: UInt64) throws {}
    func stateBytes() throws -> [UInt8] { WireEncoder.encode(try hub.serverSnapshot()) }
    func visibleRows(table: String) throws -> [Value: [String: Value]] { try hub.serverVisibleRows(table: table) }
    func heldKeys(table: String) throws -> Set<Value> { throw Self.notAReplica }
    func conflicts() throws -> [Conflict] { try hub.serverConflicts() }
    func takeChanged() -> [RecordAddress] { [] }
    func shown(_ addresses: [RecordAddress]) throws -> [RecordAddress: ShownRecord] { [:] }
    func close() {}
    func collectableRecords(through position: UInt64, limit: Int) throws -> [RecordAddress] { throw Self.notAReplica }
    func collect(_ addresses: [RecordAddress], unchangedAfter: UInt64?, keepingQuarantined: Bool) throws -> [RecordAddress] { throw Self.notAReplica }
    func tombstoneCount() throws -> Int { throw Self.notAReplica }
    func resetForResync(acknowledged: UInt64) throws -> Int { throw Self.notAReplica }
    func reapplyKeptWrites(now: UInt64) throws -> [RecordAddress] { throw Self.notAReplica }

    private static let notAReplica = SimulationFailure("the server is checked, not driven, by the simulation")
}
