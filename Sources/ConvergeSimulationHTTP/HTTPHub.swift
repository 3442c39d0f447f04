import ConvergeCore
import ConvergePostgres
import ConvergeServer
import ConvergeSimulation
import ConvergeSQLite
import ConvergeSync
import Foundation
import Logging
import PostgresNIO

/// Runs a simulation whose hub is the real sync server over loopback HTTP
/// (`options.transport == .http`): the run, the oracle and the report are the
/// simulator's, every replica is a device syncing through a `SyncEngine`.
///
/// Runs on a thread of its own (the simulation blocks its thread while each round goes
/// over HTTP), so it never holds a thread of Swift concurrency's pool.
public func simulateOverHTTP(
    _ options: SimulationOptions, rates: FaultRates = FaultRates(),
    progress: (@Sendable (SimulationProgress) -> Void)? = nil
) async -> SimulationReport {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: simulateOverHTTPBlocking(options, rates: rates, progress: progress))
        }
        thread.name = "converge-sim-http"
        thread.stackSize = 16 << 20
        thread.start()
    }
}

/// ``simulateOverHTTP(_:rates:progress:)`` on the calling thread, which it blocks while
/// each round goes over HTTP: call it from a thread of your own (a command line's main
/// thread), never from a task of Swift concurrency (it would hold a thread of the pool
/// that the server and the engines need).
public func simulateOverHTTPBlocking(
    _ options: SimulationOptions, rates: FaultRates = FaultRates(),
    progress: ((SimulationProgress) -> Void)? = nil
) -> SimulationReport {
    let simulation = Simulation(options: options, hub: HTTPHub())
    simulation.rates = rates
    return simulation.run(progress: progress)
}

/// The real server as the simulation's hub: a ``RunningServer`` on 127.0.0.1 (any free
/// port) with its data in a temporary folder, one namespace, and the simulator's tables.
///
/// Every replica is a device with its own token and a `SyncEngine` over
/// `HTTPSyncTransport`, wrapped in a transport that injects the seeded faults:
///
/// - `drop`: the request is lost before the server (a network error), or the connection
///   breaks after the server applied it (`lost-response`), or a proxy answers 502 after
///   the server applied it (`server-error`), one third each;
/// - `dup`: the request reaches the server twice;
/// - `reorder`: a copy of the request reaches the server later, after newer ones;
/// - `delay`: the request reaches the server later, the engine meanwhile times out;
/// - `partition`: the replicas cut off cannot reach the server at all;
/// - `skew`, `jump`, `crash`: the simulation's own (a crash closes the device's SQLite
///   file; its engine is made again when it reopens). With `crash` the hub also kills the
///   server (`server-kill`: before a request reaches it, or after it applied one and before
///   the answer leaves; what it held in memory is lost, and a new server starts on the same
///   files), and makes a device fail to commit a pulled page (`commit-failure`: the store
///   refuses the page as a whole, as when the app is killed mid-apply).
///
/// The engine retries failed requests (four tries, a few milliseconds apart); a round that
/// still fails is left for a later round, as an app would.
public final class HTTPHub: SimulationHub {
    /// The namespace every device belongs to.
    public static let namespace = "simulation"

    private var server: ServerHandle?
    private var directory: URL?
    /// `--storage postgres`: the run's schema, dropped when the hub stops.
    private var postgresPlace: ServerHandle.PostgresPlace?
    private var controller: FaultController?
    private var tokens: [String] = []
    private var options = SimulationOptions()
    private var engines: [Int: (database: ReplicatedDatabase, engine: SyncEngine)] = [:]
    public private(set) var serverReplica = ReplicaID.zero
    /// The server's physical time, set by the simulation before each round.
    private let serverClock = VirtualClockBox()
    /// `--collect`: the clock the server measures its retention window on (the run's
    /// virtual time, stopped while healing).
    private let collectionClock = VirtualClockBox()

    public init() {}

    deinit { stop() }

    /// The server's schema: the simulator's tables, with the same DDL as the devices
    /// (unique indexes included, under their names, with `--unique`).
    public static func schema(_ tables: SimulationSchema) -> ServerSchema {
        ServerSchema(tables: tables.tables.map { table in
            var policies = [String: ServerSchema.Policy]()
            for column in table.columns where table.policy(of: column) == .critical { policies[column] = .critical }
            return ServerSchema.Table(
                name: table.name, create: SimulationSchema.createSQL(table), policies: policies, deletePolicy: table.deletePolicy,
                uniqueIndexes: table.uniqueIndexes)
        })
    }

    // MARK: SimulationHub

    public func start(options: SimulationOptions, rates: FaultRates) throws {
        self.options = options
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("converge-sim-http-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        // The server lives in the run's virtual time, like the devices: it quarantines
        // far-future pushes and its own stamps stay comparable with theirs.
        let serverClock = serverClock
        var configuration = ServerConfiguration(
            dataDirectory: directory, jwtSecret: "converge-simulation-\(UUID().uuidString)",
            maxPullRecords: max(1_000, options.batchRecords), schema: Self.schema(SimulationSchema.of(options)),
            store: ReplicatedDatabase.Configuration(physicalTime: { serverClock.milliseconds }))
        // Tombstone collection is its own sweep (`--collect`): off, runs stay what they were.
        // On, the retention window is the run's (milliseconds of virtual time), measured on a
        // clock the simulation stops while healing.
        configuration.collection.enabled = options.collect
        if options.collect {
            configuration.collection.retentionMilliseconds = options.effectiveRetentionMilliseconds
            let collectionClock = collectionClock
            configuration.collection.clock = { collectionClock.milliseconds }
        }
        var place: ServerHandle.PostgresPlace?
        if options.serverStorage == .postgres {
            guard let url = options.postgresURL else { throw HubError("--storage postgres needs a database URL (--postgres, or CONVERGE_POSTGRES_URL)") }
            place = ServerHandle.PostgresPlace(url: url, schema: "converge_sim_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))")
        }
        postgresPlace = place
        let server = ServerHandle(configuration: configuration, postgres: place, instances: options.servers)
        let replicas = options.replicas
        tokens = try waitFor { () async throws -> [String] in
            let service = try await server.start()
            var tokens = [String]()
            for replica in 0..<replicas {
                tokens.append(try await service.authenticator.token(namespace: Self.namespace, device: Self.device(replica)))
            }
            return tokens
        }
        self.server = server
        serverReplica = try server.store().serverReplica
        controller = FaultController(options: options, rates: rates)
    }

    public func sync(replica: Int, database: ReplicatedDatabase, round: HubRound) throws -> HubRoundOutcome {
        guard let controller else { throw HubError("the hub is not started") }
        let engine = try engine(for: replica, database: database)
        // What a reset in this round starts from: the identity, and what the server acknowledged.
        let identity = database.replicaID
        let acknowledged = try database.cursor(for: engine.configuration.peer).sent
        controller.beginRound(round)
        let result = try waitFor { () async -> Result<SyncReport, SyncError> in
            do {
                return .success(try await engine.sync())
            } catch let error as SyncError {
                return .failure(error)
            } catch {
                return .failure(.local("\(error)"))
            }
        }
        let injected = controller.endRound()
        // Where the device stands in the server's feed, for the session checker.
        let cursor = try database.cursor(for: engine.configuration.peer).received
        let position = (server: serverReplica, position: cursor)
        // `--collect`: a reset the engine did, and what the server listed as collected.
        func collecting(_ outcome: HubRoundOutcome, _ report: SyncReport?) -> HubRoundOutcome {
            var outcome = outcome
            outcome.pullCursor = position
            if database.replicaID != identity { outcome.resetFrom = (identity, acknowledged) }
            outcome.reapplied = report?.reset != nil
            outcome.listedCollected = injected.listedCollected
            outcome.droppedRecords = report?.collectedRecords ?? 0
            return outcome
        }
        switch result {
        case .success(let report):
            let outcome = HubRoundOutcome(
                pushedRecords: report.pushedRecords, pulledRecords: report.pulledRecords,
                appliedRecords: report.appliedRecords, quarantinedRecords: report.quarantinedRecords)
            return collecting(outcome, report)
        case .failure(let error):
            // Only what a fault of this round explains is a round an app would retry later.
            switch error {
            case .offline, .serverError:
                if injected.count > 0 { return collecting(HubRoundOutcome(failure: error.description), nil) }
            case .local:
                // A page the device failed to commit (injected) is pulled again later.
                if injected.commitFailures > 0 { return collecting(HubRoundOutcome(failure: error.description), nil) }
            default:
                break
            }
            throw HubError("replica \(replica) (device \(Self.device(replica))): sync round failed at op \(round.op)\(injected.count > 0 ? " (\(injected.count) faults injected in the round)" : ""): \(error)")
        }
    }

    public func advanceTime(to now: UInt64, collectionClock: UInt64) throws {
        serverClock.milliseconds = now
        self.collectionClock.milliseconds = collectionClock
        guard let store = try server?.store() else { return }
        _ = try waitFor { try await store.releaseDueQuarantine() }
    }

    public func deliverLate(dueBy op: Int) throws {
        guard let controller, let server else { return }
        for late in controller.takeLate(dueBy: op) {
            let http = try server.transport(server.instance(for: late.replica))
            let token = tokens[late.replica]
            let outcome = try waitFor { () async -> Result<SyncResponse, any Error> in
                do { return .success(try await http.send(late.request, token: token)) } catch { return .failure(error) }
            }
            switch outcome {
            case .success(let response):
                // Nobody waits for this answer any more.
                controller.count(late.request, response)
            case .failure(SyncTransportError.status(409, _)):
                // The server refused a push older than one it applied since (a request that
                // outlived its own retry may carry states older than a collected delete).
                break
            case .failure(SyncTransportError.status(410, _)) where options.collect,
                 .failure(SyncTransportError.status(403, _)) where options.collect:
                // A request of an identity the server retired (410), or one the device left
                // by resetting (403: the device is bound to its new replica).
                break
            case .failure(let error):
                throw HubError("a late request of replica \(late.replica) (sent at op \(late.sentAt)) failed: \(error)")
            }
        }
    }

    public func takeTraffic() -> HubTraffic {
        controller?.takeTraffic() ?? HubTraffic()
    }

    public func takeEvents() -> [HubEvent] {
        controller?.takeEvents() ?? []
    }

    public func serverSnapshot() throws -> Changeset {
        let store = try liveStore()
        return try waitFor { try await store.snapshot() }
    }

    public func serverVisibleRows(table: String) throws -> [Value: [String: Value]] {
        let store = try liveStore()
        if let store = store as? PostgresNamespaceStore {
            // The materialized table, as backend services would query it.
            return try waitFor { try await store.materializedRows(of: table) }
        }
        guard let store = store as? SQLiteNamespaceStore else { throw HubError("the server's storage cannot show its rows") }
        return try SimulationSchema.of(options).visibleRows(of: store.database, table: table)
    }

    public func serverConflicts() throws -> [Conflict] {
        let store = try liveStore()
        return try waitFor { try await store.conflicts() }
    }

    public func serverQuarantinedCount() throws -> Int {
        let store = try liveStore()
        return try waitFor { try await store.quarantinedCount() }
    }

    public func stop() {
        engines.removeAll()
        if let server {
            self.server = nil
            _ = try? waitFor { await server.stop() }
        }
        if let directory {
            self.directory = nil
            try? FileManager.default.removeItem(at: directory)
        }
        if let place = postgresPlace {
            postgresPlace = nil
            try? waitFor { try await Self.dropSchema(place) }
        }
    }

    /// Drops the run's schema and every table in it.
    private static func dropSchema(_ place: ServerHandle.PostgresPlace) async throws {
        let location = try PostgresStorage.Location(url: place.url)
        var logger = Logger(label: "converge-sim-postgres")
        logger.logLevel = .error
        let client = PostgresClient(
            configuration: .init(
                host: location.host, port: location.port, username: location.username, password: location.password, database: location.database,
                tls: location.requireTLS ? .require(.makeClientConfiguration()) : .disable),
            backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(place.schema)\" CASCADE"), logger: logger)
        }
    }

    // MARK: Devices

    static func device(_ replica: Int) -> String { "replica-\(replica)" }

    private func liveStore() throws -> any NamespaceStore {
        guard let server else { throw HubError("the hub is not started") }
        return try server.store()
    }

    /// The replica's engine; made again when its store was reopened (after a crash).
    private func engine(for replica: Int, database: ReplicatedDatabase) throws -> SyncEngine {
        if let current = engines[replica], current.database === database { return current.engine }
        guard let server, let controller else { throw HubError("the hub is not started") }
        let batch = max(1, options.batchRecords)
        var configuration = SyncEngine.Configuration(
            pushBatchRecords: batch, pushBatchBytes: 4 << 20, pullPageRecords: batch, pullPageBytes: 4 << 20,
            retry: SyncEngine.RetryPolicy(maxAttempts: 4, initialDelay: .milliseconds(1), maxDelay: .milliseconds(4)),
            logLimit: 20)
        // Failed rounds are the faults the hub injects; the simulation reports what matters.
        configuration.logger.logLevel = .error
        switch options.mutation {
        case .pullOverUnpushed?: configuration.mutation = .pullOverUnpushed
        case .cursorBeforeCommit?: configuration.mutation = .cursorBeforeCommit
        case .dropMembershipContext?, .tieIgnoresReplica?, .stalePull?, .collectAboveFrontier?, .resetLosesWrites?, nil: break
        }
        let transport = FaultInjectingTransport(replica: replica, server: server, controller: controller)
        let engine = try SyncEngine(database: database, transport: transport, configuration: configuration, token: tokens[replica])
        engines[replica] = (database, engine)
        return engine
    }
}

/// A failure of the HTTP hub: a refusal, or a round failing that no fault explains.
struct HubError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - The server, killed and restarted

/// The running server of a hub: started, killed (what it holds in memory is lost) and
/// started again on the same storage, with a new port each time.
///
/// On SQLite that is one server on the run's folder. On PostgreSQL (`--storage postgres`)
/// it is `--servers` instances on one schema of the database, each with its own pool and
/// storage, as stateless instances behind a load balancer: a device's requests go to them
/// in turn, and a kill takes down the one instance a request went to.
final class ServerHandle: @unchecked Sendable {
    /// One running server.
    private struct Instance {
        var running: RunningServer
        var http: HTTPSyncTransport
        var store: any NamespaceStore
        var postgres: PostgresStorage?
    }

    /// Where the PostgreSQL instances keep their tables: a schema of the run's own.
    struct PostgresPlace {
        var url: String
        var schema: String
    }

    private let configuration: ServerConfiguration
    private let postgres: PostgresPlace?
    private let count: Int
    private let lock = NSLock()
    private var instances: [Instance?]
    /// Requests sent by each replica, for spreading them over the instances.
    private var sent: [Int: Int] = [:]
    private(set) var restarts = 0

    init(configuration: ServerConfiguration, postgres: PostgresPlace? = nil, instances: Int = 1) {
        self.configuration = configuration
        self.postgres = postgres
        count = postgres == nil ? 1 : max(1, instances)
        self.instances = Array(repeating: nil, count: count)
    }

    /// Starts every instance; returns the first one's service.
    @discardableResult
    func start() async throws -> SyncService {
        var first: SyncService?
        for index in 0..<count {
            let service = try await start(index)
            if first == nil { first = service }
        }
        return first!
    }

    /// Starts instance `index` on the storage; returns its service.
    @discardableResult
    private func start(_ index: Int) async throws -> SyncService {
        var logger = Logger(label: "converge-sim-server")
        logger.logLevel = .error
        var storage: PostgresStorage?
        if let postgres {
            storage = try await PostgresStorage(
                url: postgres.url, schema: configuration.schema, store: configuration.store, maximumConnections: 4,
                databaseSchema: postgres.schema, logger: logger)
        }
        let service: SyncService
        let server: RunningServer
        do {
            service = try await SyncService(configuration: configuration, storage: storage)
            server = try await RunningServer.start(service: service, host: "127.0.0.1", port: 0, logger: logger)
        } catch {
            await storage?.shutdown()
            throw error
        }
        do {
            let store = try await service.storage.store(for: HTTPHub.namespace)
            let http = HTTPSyncTransport(baseURL: server.baseURL, configuration: .init(requestTimeout: 60, resourceTimeout: 120))
            lock.withLock { instances[index] = Instance(running: server, http: http, store: store, postgres: storage) }
        } catch {
            await server.stop()
            await storage?.shutdown()
            throw error
        }
        return service
    }

    /// The instance the next request of `replica` goes to: each in turn, from one that
    /// differs per replica (the same sequence on every replay of the same requests).
    func instance(for replica: Int) -> Int {
        lock.withLock {
            let sent = self.sent[replica, default: 0]
            self.sent[replica] = sent + 1
            return (replica + sent) % count
        }
    }

    /// Kills instance `index` and starts a new one on the same storage: a new service,
    /// storage reopened, nothing kept from the old one's memory. The store's transactions
    /// are what make a push all-or-nothing across this.
    func restart(_ index: Int = 0) async throws {
        let old = lock.withLock { () -> Instance? in
            defer {
                instances[index] = nil
                restarts += 1
            }
            return instances[index]
        }
        await old?.running.stop()
        await old?.postgres?.shutdown()
        try await start(index)
    }

    func stop() async {
        let old = lock.withLock { () -> [Instance] in
            defer { instances = Array(repeating: nil, count: count) }
            return instances.compactMap { $0 }
        }
        for instance in old {
            await instance.running.stop()
            await instance.postgres?.shutdown()
        }
    }

    func transport(_ index: Int = 0) throws -> HTTPSyncTransport {
        guard let http = lock.withLock({ instances[index]?.http }) else { throw HubError("server instance \(index) is not running") }
        return http
    }

    /// The namespace's store, as instance 0 sees it (on PostgreSQL every instance sees the same).
    func store() throws -> any NamespaceStore {
        guard let store = lock.withLock({ instances[0]?.store }) else { throw HubError("the server is not running") }
        return store
    }
}

// MARK: - Faults

/// A device's transport: the real `HTTPSyncTransport` of the server running now, behind
/// the seeded faults.
struct FaultInjectingTransport: SyncTransport {
    let replica: Int
    let server: ServerHandle
    let controller: FaultController

    func send(_ request: SyncRequest, token: String?) async throws -> SyncResponse {
        let instance = server.instance(for: replica)
        switch controller.decide(request, replica: replica, token: token) {
        case .offline:
            throw SyncTransportError.network("injected partition: the server cannot be reached")
        case .dropRequest:
            throw SyncTransportError.network("injected: the request was lost")
        case .delay:
            throw SyncTransportError.timeout
        case .loseResponse:
            _ = try await exchange(request, token: token, instance: instance)
            throw SyncTransportError.network("injected: the connection broke after the server applied the request")
        case .badGateway:
            _ = try await exchange(request, token: token, instance: instance)
            throw SyncTransportError.status(502, "injected: bad gateway after the server applied the request")
        case .duplicate:
            _ = try await exchange(request, token: token, instance: instance)
            return try await exchange(request, token: token, instance: instance)
        case .killBefore:
            try await server.restart(instance)
            throw SyncTransportError.network("injected: the server was killed before the request reached it")
        case .killAfter:
            _ = try await exchange(request, token: token, instance: instance)
            try await server.restart(instance)
            throw SyncTransportError.network("injected: the server was killed after it applied the request, before it answered")
        case .pass:
            return try await exchange(request, token: token, instance: instance)
        }
    }

    private func exchange(_ request: SyncRequest, token: String?, instance: Int) async throws -> SyncResponse {
        let response = try await server.transport(instance).send(request, token: token)
        controller.count(request, response)
        return controller.tamper(controller.corrupt(response), replica: replica)
    }
}

/// The seeded fault decisions of every request, and the traffic counts.
///
/// Requests come one at a time (the simulation waits for each round), so the decisions
/// are drawn in the same order on every replay; the lock only makes the hand-over between
/// the simulation's thread and the engines' tasks explicit.
final class FaultController: @unchecked Sendable {
    enum Decision {
        case pass, offline, dropRequest, loseResponse, badGateway, delay, duplicate, killBefore, killAfter
    }

    /// A request that reaches the server later than it was sent.
    struct Late {
        var due: Int
        var order: Int
        var replica: Int
        var sentAt: Int
        var request: SyncRequest
    }

    /// The faults of one round, and (`--collect`) what its answers listed as collected.
    struct Injected {
        var count = 0
        var commitFailures = 0
        var listedCollected: [RecordAddress] = []
    }

    /// The pull part of an answer the server gave a device.
    private struct ServedPage {
        var changeset: [UInt8]
        var next: UInt64
    }

    private let lock = NSLock()
    private var rng: SeededGenerator
    private let rates: FaultRates
    private let faults: Set<FaultKind>
    private let mutation: Mutation?
    /// How many operations later a delayed request, or a reordered copy, arrives at most.
    private let delayWindow: Int
    private let reorderWindow: Int
    private var round = HubRound(op: 0, faulty: false, offline: false)
    private var injected = Injected()
    private var previous: SyncRequest?
    private var traffic = HubTraffic()
    private var late: [Late] = []
    private var lateOrder = 0
    /// `stale-pull`: the pages served to each device lately, oldest first.
    private var served: [Int: [ServedPage]] = [:]
    /// `--collect`: what the server did, in order (``HubEvent``).
    private let collecting: Bool
    private var events: [HubEvent] = []

    init(options: SimulationOptions, rates: FaultRates) {
        rng = SeededGenerator(seed: options.seed ^ 0x4854_5450_4855_4221)
        self.rates = rates
        faults = options.faults
        mutation = options.mutation
        collecting = options.collect
        delayWindow = max(10, options.ops / 10)
        reorderWindow = max(2, min(500, options.ops / 50))
    }

    func beginRound(_ round: HubRound) {
        lock.withLock {
            self.round = round
            injected = Injected()
            previous = nil
        }
    }

    /// Ends a round; returns the faults injected in it.
    func endRound() -> Injected {
        lock.withLock { injected }
    }

    func decide(_ request: SyncRequest, replica: Int, token: String?) -> Decision {
        lock.withLock {
            traffic.roundTrips += 1
            if let previous, previous != request { traffic.continuations += 1 }
            previous = request
            guard round.faulty else { return .pass }
            if round.offline {
                injected.count += 1
                return .offline
            }
            if faults.contains(.crash) && rng.chance(rates.serverKill) {
                return rng.chance(0.5) ? inject("server-kill", .killBefore) : inject("server-kill", .killAfter)
            }
            if faults.contains(.drop) && rng.chance(rates.drop) {
                switch rng.below(3) {
                case 0: return inject("drop", .dropRequest)
                case 1: return inject("lost-response", .loseResponse)
                default: return inject("server-error", .badGateway)
                }
            }
            if faults.contains(.delay) && rng.chance(rates.delay) {
                park(request, replica: replica, within: delayWindow)
                return inject("delay", .delay)
            }
            if faults.contains(.reorder) && rng.chance(rates.reorder) {
                // A copy arrives later, after newer requests; this one goes through now.
                park(request, replica: replica, within: reorderWindow)
                injected.count += 1
                traffic.faults["reorder", default: 0] += 1
                return .pass
            }
            if faults.contains(.dup) && rng.chance(rates.duplicate) {
                return inject("dup", .duplicate)
            }
            return .pass
        }
    }

    /// Called with the lock held.
    private func inject(_ kind: String, _ decision: Decision) -> Decision {
        injected.count += 1
        traffic.faults[kind, default: 0] += 1
        return decision
    }

    /// Called with the lock held.
    private func park(_ request: SyncRequest, replica: Int, within window: Int) {
        lateOrder += 1
        late.append(Late(due: round.op + 1 + rng.below(window), order: lateOrder, replica: replica, sentAt: round.op, request: request))
    }

    /// The late requests due at `op`, in the order they are due.
    func takeLate(dueBy op: Int) -> [Late] {
        lock.withLock {
            guard !late.isEmpty else { return [] }
            let due = late.filter { $0.due <= op }.sorted { ($0.due, $0.order) < ($1.due, $1.order) }
            late.removeAll { $0.due <= op }
            return due
        }
    }

    /// Counts a request that the server answered (so applied), and its answer; with
    /// `--collect`, notes the push it applied and the records it listed as collected.
    func count(_ request: SyncRequest, _ response: SyncResponse) {
        let records = Self.records(request.changeset) + Self.records(response.changeset)
        let pushed = collecting && !request.changeset.isEmpty ? try? WireDecoder.decode(request.changeset) : nil
        lock.withLock {
            traffic.messages += 2
            traffic.bytes += 40 + request.changeset.count + response.changeset.count
            traffic.recordsSent += records
            guard collecting else { return }
            if let pushed { events.append(.received(pushed, by: request.replica)) }
            for entry in response.collected {
                let address = RecordAddress(table: entry.table, key: entry.key)
                events.append(.collected(id: entry.id, address: address))
                injected.listedCollected.append(address)
            }
        }
    }

    func takeEvents() -> [HubEvent] {
        lock.withLock {
            defer { events.removeAll() }
            return events
        }
    }

    /// The answer as a broken merge on the device would see it (test-only mutations).
    func corrupt(_ response: SyncResponse) -> SyncResponse {
        guard let mutation, !mutation.needsHTTP, !response.changeset.isEmpty, let changeset = try? WireDecoder.decode(response.changeset) else { return response }
        var corrupted = response
        corrupted.changeset = WireEncoder.encode(mutation.corrupt(changeset))
        return corrupted
    }

    /// What reaches the device of an answer: a page it fails to commit (`commit-failure`,
    /// with crash faults), or, with the `stale-pull` mutation, the pull of an older answer.
    func tamper(_ response: SyncResponse, replica: Int) -> SyncResponse {
        lock.withLock {
            var result = response
            if mutation == .stalePull && !response.changeset.isEmpty {
                var pages = served[replica, default: []]
                // MUTATION: a page older than the newest one served, as from a stale snapshot.
                if round.faulty, let older = pages.first, let newest = pages.last, older.next < newest.next, rng.chance(0.2) {
                    result.changeset = older.changeset
                    result.next = older.next
                    result.hasMore = false
                    result.pushedRange = nil
                    return result
                }
                pages.append(ServedPage(changeset: response.changeset, next: response.next))
                if pages.count > 8 { pages.removeFirst() }
                served[replica] = pages
            }
            if round.faulty && faults.contains(.crash) && !response.changeset.isEmpty && rng.chance(rates.commitFailure),
               var page = try? WireDecoder.decode(response.changeset) {
                // A record the store refuses as a whole (an invalid table name): the apply
                // throws and leaves the store as it was, as if the app died mid-commit.
                page.records.append(RecordDelta(table: "injected commit failure", key: .text("-"), state: RecordState()))
                result.changeset = WireEncoder.encode(page)
                injected.count += 1
                injected.commitFailures += 1
                traffic.faults["commit-failure", default: 0] += 1
            }
            return result
        }
    }

    func takeTraffic() -> HubTraffic {
        lock.withLock {
            let taken = traffic
            traffic = HubTraffic()
            return taken
        }
    }

    private static func records(_ changeset: [UInt8]) -> Int {
        guard !changeset.isEmpty else { return 0 }
        return (try? WireDecoder.decode(changeset).records.count) ?? 0
    }
}

// MARK: - Waiting on the simulation's thread

/// Runs `body` as a task and blocks the calling thread until it is done. Only for the
/// simulation's own thread (never a thread of the concurrency pool).
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let semaphore = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task {
        do {
            box.result = .success(try await body())
        } catch {
            box.result = .failure(error)
        }
        semaphore.signal()
    }
    semaphore.wait()
    return try box.result!.get()
}

/// Carries a task's result to the thread waiting on the semaphore (which orders the
/// write before the read).
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
