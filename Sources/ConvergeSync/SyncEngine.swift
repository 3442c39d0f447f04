import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB
import Logging

/// Synchronizes a replicated database with a server, round after round.
///
/// The store's change feed and its per-peer cursors are the outbox: a write made offline
/// is in the feed, and the engine pushes everything after the cursor the server last
/// acknowledged, so nothing is queued elsewhere and nothing is lost on a restart.
///
/// ```swift
/// let engine = try SyncEngine(
///     database: converge,
///     transport: HTTPSyncTransport(baseURL: URL(string: "https://sync.example.com")!),
///     token: token, refreshToken: { try await auth.freshToken() })
/// try await engine.start()                  // sync after local writes (debounced)
/// try await engine.sync()                   // "Sync now"
/// for await status in await engine.statusUpdates() { ... }
/// ```
///
/// One round pushes the feed in bounded batches and pulls the server's feed page by page
/// until it has no more; the push cursor moves only once the server acknowledged a batch,
/// and the pull cursor only once a page was applied and committed. Rounds never overlap.
public actor SyncEngine {
    /// How an engine syncs: batch and page bounds, retries, automatic rounds and logging.
    public struct Configuration: Sendable {
        /// The name under which the server's cursors are kept in the store.
        public var peer: String
        /// Bounds of one pushed batch.
        public var pushBatchRecords: Int
        /// The most changeset bytes in one pushed batch.
        public var pushBatchBytes: Int
        /// The most field states in one pushed batch: a batch of a wide table with small
        /// values is cut to fewer records, well under what a server takes by default
        /// (`maxFieldsPerRequest`, 200,000), so that no batch is refused for its size.
        public var pushBatchFields: Int = 100_000
        /// Bounds asked for one pulled page (the server may lower them).
        public var pullPageRecords: Int
        /// The most changeset bytes asked for in one pulled page.
        public var pullPageBytes: Int
        /// How requests that failed transiently are retried.
        public var retry: RetryPolicy
        /// Quiet time after a local write before an automatic round (see ``SyncEngine/start()``).
        public var debounce: Duration
        /// An automatic round this often, if set (see ``SyncEngine/start()``).
        public var interval: Duration?
        /// Rows kept in the sync log table.
        public var logLimit: Int
        /// Testing only (the simulator's `--mutation`): a deliberately broken behaviour.
        package var mutation: Mutation?
        /// Where the engine logs: failed rounds at warning, rounds at debug. The app's
        /// logging backend decides where that goes (swift-log's `LoggingSystem`).
        public var logger = Logger(label: "converge.sync")
        /// The keys of encrypted columns (DESIGN §11; see ``FieldKeys``): required to push
        /// writes of a table with encrypted columns; without a key, values sealed with it
        /// are held (``SyncEngine/heldFields()``). Change them later with
        /// ``SyncEngine/setFieldKeys(_:)``.
        public var fieldKeys: FieldKeys?

        /// Defaults suit most apps: batches of 1,000 records and 1 MiB up, pages of 1,000 records and 1 MiB down. All bounds must be positive.
        ///
        /// Pushes are as large as pulled pages because each request has a cost of its own
        /// whatever it carries: a network round trip, and about a millisecond of CPU on the
        /// device and on the server (measured by `Benchmarks`' `sync`, whose small-batch
        /// run pushes in 100-record batches). The byte bound keeps a batch of wide rows small.
        public init(
            peer: String = "server",
            pushBatchRecords: Int = 1_000,
            pushBatchBytes: Int = 1 << 20,
            pullPageRecords: Int = 1_000,
            pullPageBytes: Int = 1 << 20,
            retry: RetryPolicy = RetryPolicy(),
            debounce: Duration = .seconds(1),
            interval: Duration? = nil,
            logLimit: Int = 500
        ) {
            precondition(pushBatchRecords > 0 && pushBatchBytes > 0 && pullPageRecords > 0 && pullPageBytes > 0)
            self.peer = peer
            self.pushBatchRecords = pushBatchRecords
            self.pushBatchBytes = pushBatchBytes
            self.pullPageRecords = pullPageRecords
            self.pullPageBytes = pullPageBytes
            self.retry = retry
            self.debounce = debounce
            self.interval = interval
            self.logLimit = logLimit
        }
    }

    /// Deliberately broken behaviours, so that the simulator's checkers can show they catch
    /// them (`converge-sim --mutation`). Package-only: an app cannot set one.
    package enum Mutation: Sendable, Hashable {
        /// Shows a pulled page's values in the app's rows over local writes not pushed
        /// yet (the metadata keeps the local write, so it comes back at the row's next
        /// materialization): the reverted local writes Jepsen found in PowerSync.
        case pullOverUnpushed
        /// Saves the pull cursor past a page before the page is committed.
        case cursorBeforeCommit
    }

    /// Exponential backoff with jitter and a cap, for network errors, timeouts and
    /// 5xx/408/429 answers.
    public struct RetryPolicy: Sendable {
        /// Tries per request, the first included.
        public var maxAttempts: Int
        /// The wait before the first retry, before jitter.
        public var initialDelay: Duration
        /// The cap on any one wait, before jitter.
        public var maxDelay: Duration
        /// How much each wait grows over the previous one (at least 1).
        public var multiplier: Double
        /// The fraction of each delay drawn at random (0: none, 1: "full jitter").
        public var jitter: Double

        /// Waits 0.5 s, then 1 s, 2 s, ... up to 30 s by default, over at most 6 tries. `maxAttempts` must be positive, `multiplier` at least 1 and `jitter` within 0...1.
        public init(maxAttempts: Int = 6, initialDelay: Duration = .milliseconds(500), maxDelay: Duration = .seconds(30), multiplier: Double = 2, jitter: Double = 0.5) {
            precondition(maxAttempts > 0 && multiplier >= 1 && (0...1).contains(jitter))
            self.maxAttempts = maxAttempts
            self.initialDelay = initialDelay
            self.maxDelay = maxDelay
            self.multiplier = multiplier
            self.jitter = jitter
        }

        /// The wait before retry number `retry` (1 for the first retry).
        public func delay(beforeRetry retry: Int) -> Duration {
            let base = initialDelay * pow(multiplier, Double(max(0, retry - 1)))
            let capped = min(base, maxDelay)
            return capped * (1 - jitter * Double.random(in: 0..<1))
        }
    }

    /// The replicated database this engine synchronizes.
    public nonisolated let database: ReplicatedDatabase
    /// The configuration the engine was created with.
    public nonisolated let configuration: Configuration
    private let transport: any SyncTransport
    private var token: String?
    private let refreshToken: (@Sendable () async throws -> String)?

    /// The current status (also delivered by ``statusUpdates()``).
    public private(set) var status = SyncStatus()
    private var observers: [UUID: AsyncStream<SyncStatus>.Continuation] = [:]
    private var isSyncing = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var debounceTask: Task<Void, Never>?
    private var intervalTask: Task<Void, Never>?
    private var listenTask: Task<Void, Never>?
    private var immediatePending = false
    private var observation: AnyDatabaseCancellable?
    /// Set once the server refused a version-2 request: it is an older release, which reads
    /// only version 1 (and does not collect tombstones). Kept for the engine's life.
    private var serverReadsVersion1Only = false
    /// The last request serial sent (``SyncRequest/serial``), and the highest reserved in the
    /// database (`nil`: not read yet). Serials are reserved in blocks, so that numbering
    /// costs a write per block, not per request, and still never repeats after a crash.
    private var lastSerial: UInt64 = 0
    private var reservedSerial: UInt64?
    private static let serialBlock: UInt64 = 256
    let applying = Flag()
    /// Seals and opens encrypted columns; `nil` until the app gives field keys.
    var fieldCipher: FieldCipher?

    /// - Parameters:
    ///   - database: The replicated database to synchronize; its replicated tables are the
    ///     ones the engine watches for local writes.
    ///   - transport: How requests reach the server, usually ``HTTPSyncTransport``.
    ///   - configuration: The server's peer name, batch sizes, retries and timing.
    ///   - token: The bearer token sent with each request.
    ///   - refreshToken: Called once when the server answers 401; the round then retries
    ///     with the new token.
    public init(
        database: ReplicatedDatabase,
        transport: any SyncTransport,
        configuration: Configuration = Configuration(),
        token: String? = nil,
        refreshToken: (@Sendable () async throws -> String)? = nil
    ) throws {
        self.database = database
        self.transport = transport
        self.configuration = configuration
        self.token = token
        self.refreshToken = refreshToken
        try SyncLog.install(in: database.writer)
        try FieldVault.install(in: database.writer)
        fieldCipher = configuration.fieldKeys.map(FieldCipher.init(keys:))
        var initial = SyncStatus()
        Self.refreshCounts(&initial, database: database, peer: configuration.peer)
        status = initial
    }

    // MARK: Status

    /// The status now, then every change of it.
    public func statusUpdates() -> AsyncStream<SyncStatus> {
        let (stream, continuation) = AsyncStream.makeStream(of: SyncStatus.self, bufferingPolicy: .bufferingNewest(32))
        let id = UUID()
        observers[id] = continuation
        continuation.yield(status)
        continuation.onTermination = { [weak self] _ in
            Task { await self?.removeObserver(id) }
        }
        return stream
    }

    private func removeObserver(_ id: UUID) { observers[id] = nil }

    private func publish(_ change: (inout SyncStatus) -> Void) {
        var updated = status
        change(&updated)
        guard updated != status else { return }
        status = updated
        for continuation in observers.values { continuation.yield(updated) }
    }

    /// Recomputes pending changes, conflicts and quarantined changes (after local writes).
    public func refreshStatus() {
        var updated = status
        Self.refreshCounts(&updated, database: database, peer: configuration.peer)
        publish { $0 = updated }
    }

    private static func refreshCounts(_ status: inout SyncStatus, database: ReplicatedDatabase, peer: String) {
        if let cursor = try? database.cursor(for: peer), let pending = try? database.changedRecordCount(since: cursor.sent) {
            status.pendingChanges = pending
            status.acknowledgedPosition = cursor.sent
        }
        if let conflicts = try? database.conflicts() { status.conflicts = conflicts.count }
        if let quarantined = try? database.quarantinedCount() { status.quarantined = quarantined }
        if let rejected = try? SyncLog.rejectionCount(in: database.writer) { status.rejected = rejected }
        if let held = try? database.writer.readKeepingStatements({ db in try FieldVault.heldCount(db) }) { status.heldFields = held }
        SyncMetrics.status(status)
    }

    /// The changes of this device the server refused, with its reasons, newest first.
    /// The server has already undone them (its compensating writes arrive like any
    /// change); show the reasons to the user, then ``dismissRejections()``.
    public nonisolated func rejections() throws -> [SyncRejection] {
        try SyncLog.rejections(in: database.writer)
    }

    /// Forgets the rejections shown to the user.
    public func dismissRejections() throws {
        try SyncLog.dismissRejections(in: database.writer)
        refreshStatus()
    }

    /// The latest rounds, newest first.
    public nonisolated func log(limit: Int = 100) throws -> [SyncLog.Entry] {
        try SyncLog.entries(in: database.writer, limit: limit)
    }

    // MARK: Triggers

    /// Starts automatic rounds: after local writes to replicated tables (debounced), when
    /// the server announces new changes (if the transport is a ``SyncNotificationSource``),
    /// and every ``Configuration/interval`` if set. ``sync()`` still works on demand.
    public func start() throws {
        guard observation == nil && listenTask == nil else { return }
        if let source = transport as? any SyncNotificationSource {
            listenTask = Task { [weak self] in await self?.listen(to: source) }
        }
        let tables = database.replicatedTables.keys.sorted().map { Table($0) }
        if !tables.isEmpty {
            let applying = self.applying
            observation = DatabaseRegionObservation(tracking: tables).start(
                in: database.writer,
                onError: { _ in },
                onChange: { [weak self] _ in
                    guard !applying.isSet else { return }
                    Task { await self?.localChange() }
                })
        }
        if let interval = configuration.interval {
            intervalTask = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    guard !Task.isCancelled else { return }
                    await self?.trigger(immediately: true)
                }
            }
        }
    }

    /// Listens to the server's notifications, reconnecting with backoff; each one starts
    /// a round at once.
    private func listen(to source: any SyncNotificationSource) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                for try await _ in source.notifications(token: token) {
                    failures = 0
                    trigger(immediately: true)
                }
            } catch {}
            guard !Task.isCancelled else { return }
            failures += 1
            let delay = configuration.retry.delay(beforeRetry: min(failures, 10))
            do { try await Task.sleep(for: delay) } catch { return }
            // Changes may have come while disconnected.
            trigger()
        }
    }

    /// Stops automatic rounds.
    public func stop() {
        listenTask?.cancel()
        listenTask = nil
        observation?.cancel()
        observation = nil
        intervalTask?.cancel()
        intervalTask = nil
        debounceTask?.cancel()
        debounceTask = nil
    }

    /// Tells the engine that something worth a round happened: connectivity is back, the
    /// app came to the foreground, the server announced new changes. The round starts
    /// after the debounce delay unless `immediately`. Triggers that come while a round
    /// waits to start share it; a running round is never interrupted.
    public func trigger(immediately: Bool = false) {
        guard immediately else {
            scheduleDebounced()
            return
        }
        guard !immediatePending else { return }
        immediatePending = true
        Task { [weak self] in await self?.runTriggeredRound() }
    }

    private func runTriggeredRound() async {
        while isSyncing { await withCheckedContinuation { waiters.append($0) } }
        immediatePending = false
        _ = try? await sync()
    }

    private func localChange() {
        refreshStatus()
        scheduleDebounced()
    }

    private func scheduleDebounced() {
        debounceTask?.cancel()
        let delay = configuration.debounce
        debounceTask = Task { [weak self] in
            do { try await Task.sleep(for: delay) } catch { return }
            await self?.debounceElapsed()
        }
    }

    private func debounceElapsed() {
        debounceTask = nil
        trigger(immediately: true)
    }

    // MARK: Rounds

    /// Runs one round: pushes every pending local change, pulls everything new.
    ///
    /// Waits for a round in progress to finish first, then runs its own (changes may
    /// have been made since that one started).
    ///
    /// - Throws: ``SyncError``.
    @discardableResult
    public func sync() async throws -> SyncReport {
        while isSyncing { await withCheckedContinuation { waiters.append($0) } }
        isSyncing = true
        defer {
            isSyncing = false
            let resumed = waiters
            waiters = []
            for waiter in resumed { waiter.resume() }
        }
        let clock = ContinuousClock()
        let started = clock.now
        let startDate = Date()
        var report = SyncReport()
        publish { $0.phase = .syncing(pushed: 0, pulled: 0) }
        do {
            var didReset = false
            do {
                try await runRound(&report)
            } catch SyncError.resetRequired(let message) {
                didReset = true
                // The server retired this device (DESIGN §9): start over as a new replica,
                // keeping what the user wrote and the server never received.
                configuration.logger.notice("the server retired this device: resetting and resyncing", metadata: ["reason": "\(message)"])
                try database.resetForResync(acknowledged: try database.cursor(for: configuration.peer).sent)
            }
            if try database.keptWriteCount() > 0 {
                // A reset (now, or one a crash interrupted): the fresh snapshot is in (a
                // round pulls it first when needed); write the kept changes again, push them.
                if didReset { try await runRound(&report) }
                let reapplied = try database.reapplyKeptWrites()
                let reset = SyncReset(date: Date(), reappliedRecords: reapplied)
                report.reset = reset
                publish { $0.lastReset = reset }
                try await runRound(&report)
                configuration.logger.notice("reset done: unsent changes written again", metadata: ["records": "\(reapplied)"])
            }
            report.duration = clock.now - started
            refreshStatus()
            publish {
                $0.phase = .idle
                $0.lastSuccess = Date()
                $0.lastError = nil
            }
            SyncLog.record(report, started: startDate, error: nil, peer: configuration.peer, in: database.writer, limit: configuration.logLimit)
            SyncMetrics.record(report, result: "ok")
            configuration.logger.debug("sync round", metadata: [
                "pushed": "\(report.pushedRecords)", "pulled": "\(report.pulledRecords)", "requests": "\(report.requests)",
                "retries": "\(report.retries)", "seconds": "\(report.duration)",
            ])
            return report
        } catch {
            let failure = Self.syncError(error)
            report.duration = clock.now - started
            refreshStatus()
            publish {
                if case .offline = failure { $0.phase = .offline } else { $0.phase = .error }
                $0.lastError = failure
            }
            SyncLog.record(report, started: startDate, error: failure, peer: configuration.peer, in: database.writer, limit: configuration.logLimit)
            SyncMetrics.record(report, result: failure.metricLabel)
            configuration.logger.warning("sync round failed", metadata: ["error": "\(failure)", "retries": "\(report.retries)"])
            throw failure
        }
    }

    private static func syncError(_ error: any Error) -> SyncError {
        if let error = error as? SyncError { return error }
        if error is CancellationError { return .cancelled }
        return .local("\(error)")
    }

    private func runRound(_ report: inout SyncReport) async throws {
        let peer = configuration.peer
        var cursor = try database.cursor(for: peer)
        var knownServer = try SyncLog.serverReplica(for: peer, in: database.writer)
        var rejectionsSeen = try SyncLog.rejectionsSeen(for: peer, in: database.writer)
        var collectedSeen = try SyncLog.collectedSeen(for: peer, in: database.writer)
        // MUTATION (testing only): pull first, push after, so pages land over local writes
        // not pushed yet.
        var pushing = configuration.mutation != .pullOverUnpushed
        var pulling = true
        // While paging, the cursors stay fixed and these positions advance: a record that
        // changed again beyond a page may have older parts inside it, sent with the record
        // when its turn comes. The cursors move to the end once the last page is through.
        var pushPosition: UInt64?
        var pullPosition: UInt64?
        // Fields held for a key given since (in the configuration, before a restart).
        report.releasedFields += try releaseHeldFields()
        while pushing || pulling {
            var batch: ReplicatedDatabase.ChangeBatch?
            // Whether this request's batch is cut from the feed now: only then may it say
            // the push is complete (every write made so far is in it or before it).
            let cutNow = pushing
            if pushing {
                var records = configuration.pushBatchRecords
                var page = try database.changes(since: cursor.sent, after: pushPosition, maxRecords: records, maxBytes: configuration.pushBatchBytes)
                while records > 1, page.changeset.fieldCount > max(1, configuration.pushBatchFields) {
                    records = max(1, records / 2)
                    page = try database.changes(since: cursor.sent, after: pushPosition, maxRecords: records, maxBytes: configuration.pushBatchBytes)
                }
                if page.changeset.isEmpty {
                    // Nothing after the cursor: nothing to push, the cursor may follow the feed.
                    if page.next != cursor.sent {
                        cursor.sent = page.next
                        try database.setCursor(cursor, for: peer)
                    }
                    pushing = false
                } else {
                    batch = page
                }
            }
            guard pushing || pulling else { break }
            let payload = try batch.map { WireEncoder.encode(try seal($0.changeset)) } ?? []
            // The push completes the feed, so the server may take the pull cursor as this
            // device's stable position (DESIGN §9), unless a change waits in quarantine: one
            // pulled but not applied (a delete stamped by a clock far ahead), so this device
            // may still write what that change would remove.
            let pushComplete = try cutNow && !(batch?.hasMore ?? false) && database.quarantinedCount() == 0
            let request = SyncRequest(
                replica: database.replicaID, pushUpTo: batch?.next ?? cursor.sent, changeset: payload, pull: pulling,
                pullCursor: cursor.received, pullAfter: pullPosition, pullMaxRecords: UInt64(configuration.pullPageRecords), pullMaxBytes: UInt64(configuration.pullPageBytes),
                rejectionsAfter: rejectionsSeen,
                pushComplete: pushComplete, collectedAfter: collectedSeen)
            let response = try await send(request, report: &report)
            report.requests += 1

            // A namespace the server has not created yet answers with the zero replica. On
            // first contact there is nothing to learn from it; from a server this device
            // knew, it means the namespace is gone there (an empty replacement): start over
            // as with another server, once: the real identity that follows is then learnt
            // without a second reset.
            let answered = response.serverReplica
            if answered != knownServer, !(answered == .zero && knownServer == nil) {
                try SyncLog.setServerReplica(answered, for: peer, in: database.writer)
                let previous = knownServer
                knownServer = answered
                rejectionsSeen = 0
                collectedSeen = 0
                if let previous, previous != .zero {
                    // Another server (or a restored one): its feed positions mean nothing
                    // here, and it may lack what it had acknowledged. Start over with it.
                    cursor = ReplicatedDatabase.PeerCursor()
                    try database.setCursor(cursor, for: peer)
                    pushing = true
                    pulling = true
                    pushPosition = nil
                    pullPosition = nil
                    continue
                }
            }
            // The server owns `.authority` columns: its concurrent writes show.
            if response.serverReplica != .zero, database.authority != response.serverReplica { try database.setAuthority(response.serverReplica) }
            if !response.rejections.isEmpty {
                try SyncLog.record(response.rejections, from: peer, in: database.writer)
                rejectionsSeen = max(rejectionsSeen, response.rejections.map(\.id).max() ?? 0)
                report.rejections += response.rejections
            }

            if let batch {
                guard response.acknowledged == batch.next else {
                    throw SyncError.invalidResponse("server acknowledged \(response.acknowledged), expected \(batch.next)")
                }
                if batch.hasMore {
                    pushPosition = batch.next
                } else {
                    cursor.sent = batch.next
                    try database.setCursor(cursor, for: peer)
                }
                report.pushedRecords += batch.changeset.records.count
                report.pushedBytes += payload.count
                pushing = batch.hasMore
            }
            // Records the server collected: their deletes are causally stable, and this
            // device has applied them (its stable position holds the frontier). Dropping one
            // it holds deleted changes nothing it shows; one it revived since is kept. They
            // go before the page is applied: the page may carry a new life of such a key
            // (inserted again by a replica that never saw the old one), which must start
            // fresh here as it does on the server, not merge into the old life's tombstone.
            // A change of one waiting in quarantine belongs to such a later life (this device
            // claims no stability while its quarantine holds anything): it stays there.
            if !response.collected.isEmpty {
                let collected = response.collected.map { RecordAddress(table: $0.table, key: $0.key) }
                let dropped = try database.collect(collected, keepingQuarantined: false)
                try dropHeldFields(of: collected)
                report.collectedRecords += dropped.collected.count
                collectedSeen = max(collectedSeen, response.collected.map(\.id).max() ?? 0)
                try SyncLog.setCollectedSeen(collectedSeen, for: peer, in: database.writer)
            }
            var receivedMoved = false
            if pulling {
                if configuration.mutation == .cursorBeforeCommit {
                    // MUTATION (testing only): the cursor is saved before the page is
                    // committed, so a page whose commit fails is never pulled again.
                    var early = cursor
                    early.received = max(early.received, response.next)
                    try database.setCursor(early, for: peer)
                }
                if !response.changeset.isEmpty {
                    let pulled: Changeset
                    do {
                        pulled = try WireDecoder.decode(response.changeset)
                    } catch {
                        throw SyncError.invalidResponse("pulled changeset: \(error)")
                    }
                    // Encrypted columns open here; what does not open is held, not applied.
                    let changeset = try open(pulled, report: &report)
                    applying.set(true)
                    defer { applying.set(false) }
                    // MUTATION (testing only): what is not pushed yet, read before the page.
                    let unpushed = configuration.mutation == .pullOverUnpushed
                        ? try database.changes(since: cursor.sent, maxRecords: 1_000_000, maxBytes: 1 << 30).changeset : Changeset()
                    let applied = try database.apply(changeset)
                    if !unpushed.isEmpty { try Self.showOverUnpushed(changeset, unpushed: unpushed, in: database) }
                    // Everything local was acknowledged before this page: what it added to
                    // the feed came from the server, so it need not be pushed back.
                    if pushPosition == nil && cursor.sent >= applied.feedBefore && applied.feedAfter > cursor.sent {
                        cursor.sent = applied.feedAfter
                    }
                    report.pulledRecords += pulled.records.count
                    report.pulledBytes += response.changeset.count
                    report.appliedRecords += applied.changedRecords
                    report.quarantinedRecords += applied.quarantinedRecords
                }
                if response.hasMore {
                    pullPosition = response.next
                } else {
                    cursor.received = response.next
                    receivedMoved = true
                }
                pulling = response.hasMore
            }
            // The server's feed holds nothing new for us but our own batch, merged into
            // states we hold: move the pull cursor past it instead of pulling it back.
            if let range = response.pushedRange, pullPosition == nil, cursor.received == range.lowerBound, range.upperBound > range.lowerBound {
                cursor.received = range.upperBound
                receivedMoved = true
            }
            // One write for both moves (each push of a first sync makes both).
            if receivedMoved { try database.setCursor(cursor, for: peer) }
            if configuration.mutation == .pullOverUnpushed && !pulling && report.pushedRecords == 0 && batch == nil {
                // MUTATION (testing only): the push, once the pull is through.
                pushing = true
            }
            let progress = report
            publish { $0.phase = .syncing(pushed: progress.pushedRecords, pulled: progress.pulledRecords) }
        }
    }

    /// MUTATION (testing only, ``Mutation/pullOverUnpushed``): writes the page's visible
    /// values into the app's rows of records that have local changes not pushed yet,
    /// bypassing the merge and the capture (the triggers are set aside in the same
    /// transaction, so the store's metadata still holds the local write).
    private static func showOverUnpushed(_ page: Changeset, unpushed: Changeset, in database: ReplicatedDatabase) throws {
        let pending = Set(unpushed.records.map { RecordAddress(table: $0.table, key: $0.key) })
        let tables = database.replicatedTables
        try database.writer.write { db in
            for delta in page.records where pending.contains(RecordAddress(table: delta.table, key: delta.key)) {
                guard let schema = tables[delta.table] else { continue }
                let values = schema.columns.compactMap { column in
                    delta.state.value(of: column, policy: schema.policy(of: column)).map { (column, $0) }
                }
                guard !values.isEmpty else { continue }
                let triggers = try Row.fetchAll(db, sql: "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", arguments: [delta.table])
                for trigger in triggers { try db.execute(sql: "DROP TRIGGER \"\(trigger["name"] as String)\"") }
                try db.execute(
                    sql: "UPDATE \"\(delta.table)\" SET \(values.map { "\"\($0.0)\" = ?" }.joined(separator: ", ")) WHERE \"\(schema.primaryKey)\" = ?",
                    arguments: StatementArguments(values.map(\.1.databaseValue) + [delta.key.databaseValue]))
                for trigger in triggers { try db.execute(sql: trigger["sql"] as String) }
            }
        }
    }

    /// The serial a 409 `stale_push` answer says the server served (its message ends
    /// "overtaken by request N, …"), if it says.
    static func servedSerial(in message: String) -> UInt64? {
        guard let range = message.range(of: "overtaken by request ") else { return nil }
        return UInt64(message[range.upperBound...].prefix { $0.isNumber })
    }

    /// The next request serial, reserving a block first when the reserved ones are used up.
    private func nextSerial() throws -> UInt64 {
        let peer = configuration.peer
        var reserved = try reservedSerial ?? SyncLog.reservedSerial(for: peer, in: database.writer)
        if reservedSerial == nil { lastSerial = reserved }
        if lastSerial >= reserved {
            reserved = lastSerial + Self.serialBlock
            try SyncLog.reserveSerials(upTo: reserved, for: peer, in: database.writer)
        }
        reservedSerial = reserved
        lastSerial += 1
        return lastSerial
    }

    /// Sends one request, retrying transient failures with backoff; on 401 refreshes the
    /// token once.
    private func send(_ request: SyncRequest, report: inout SyncReport) async throws -> SyncResponse {
        var attempt = 0
        var refreshed = false
        var staleRefusals = 0
        while true {
            attempt += 1
            let failure: SyncError
            // Each attempt is a new request: a retry of one the server applied is not stale.
            var request = request
            request.serial = try nextSerial()
            if serverReadsVersion1Only { request = request.asVersion1 }
            do {
                try Task.checkCancellation()
                let response = try await transport.send(request, token: token)
                if status.phase == .offline { publish { $0.phase = .syncing(pushed: report.pushedRecords, pulled: report.pulledRecords) } }
                return response
            } catch let error as SyncTransportError {
                switch error {
                case .status(401, let message):
                    guard !refreshed, let refreshToken else { throw SyncError.unauthorized(message) }
                    refreshed = true
                    attempt -= 1
                    do {
                        token = try await refreshToken()
                    } catch {
                        throw SyncError.unauthorized("\(message); token refresh failed: \(error)")
                    }
                    continue
                case .status(403, let message):
                    throw SyncError.forbidden(message)
                case .status(410, let message):
                    throw SyncError.resetRequired(message)
                case .status(409, let message):
                    // Stale: an earlier copy of this request (a duplicate on the way) was
                    // served first. Sent again it is a new request, with a new serial: a
                    // join is idempotent. The copies stop once one is served.
                    // A database restored from a backup numbers from an older block: the
                    // answer names the serial served, and numbering goes on above it.
                    guard staleRefusals < 3 else { throw SyncError.rejected(status: 409, message: message) }
                    staleRefusals += 1
                    if let served = Self.servedSerial(in: message) { lastSerial = max(lastSerial, served) }
                    attempt -= 1
                    continue
                case .status(400, let message) where request.version > 1 && message.contains("unsupported sync request version"):
                    // An older server: speak version 1 to it from now on (no collection).
                    serverReadsVersion1Only = true
                    attempt -= 1
                    continue
                case .status(let code, let message) where (400..<500).contains(code) && code != 408 && code != 429:
                    throw SyncError.rejected(status: code, message: message)
                case .status(let code, let message):
                    failure = .serverError(status: code, message: message)
                case .invalidResponse(let message):
                    throw SyncError.invalidResponse(message)
                case .network(let message):
                    failure = .offline(message)
                case .timeout:
                    failure = .offline("timed out")
                }
            } catch is CancellationError {
                throw SyncError.cancelled
            } catch {
                failure = .offline("\(error)")
            }
            guard attempt < configuration.retry.maxAttempts else { throw failure }
            if case .offline = failure { publish { $0.phase = .offline } }
            report.retries += 1
            do {
                try await Task.sleep(for: configuration.retry.delay(beforeRetry: attempt))
            } catch {
                throw SyncError.cancelled
            }
        }
    }
}

/// A flag read from GRDB's callbacks while the actor applies a pulled page.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set(_ newValue: Bool) { lock.withLock { value = newValue } }
}
