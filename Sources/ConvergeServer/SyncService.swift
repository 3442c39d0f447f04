import ConvergeCore
import ConvergeSQLite
import ConvergeProtocol
import Foundation
import GRDB

/// An answer, independent of HTTP: the status, the content type and the body.
public struct ServiceResponse: Sendable, Hashable {
    /// The HTTP status code.
    public var status: Int
    /// The body's media type (the `Content-Type` header).
    public var contentType: String
    /// The encoded answer.
    public var body: [UInt8]

    /// An answer with the given status, content type and body.
    public init(status: Int, contentType: String, body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// `value` as a 200 JSON answer; 500 when it cannot be encoded (an answer that is not
    /// the value must never pass for it).
    static func json(_ value: some Encodable) -> ServiceResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return ServiceResponse(status: 200, contentType: "application/json", body: [UInt8](try encoder.encode(value)))
        } catch {
            return ServiceError(status: 500, code: "internal", message: "the answer could not be encoded as JSON: \(error)").response
        }
    }
}

/// The sync server's logic, shared by the HTTP endpoints and in-process transports.
///
/// Every refusal leaves storage as it was: the body is decoded and checked, and the push
/// authorized, before anything is applied, and an apply is one transaction.
public final class SyncService: Sendable {
    /// The configuration the service was started with.
    public let configuration: ServerConfiguration
    /// Where namespaces are kept: the given storage, or SQLite files under the configuration's data directory.
    public let storage: any NamespaceStorage
    /// Verifies the bearer tokens of requests.
    public let authenticator: Authenticator
    /// The service's Prometheus metrics.
    public let metrics: ServerMetrics
    /// Realtime notifications of new changes, per namespace.
    public let notifier = ChangeNotifier()

    /// A service on `storage`, or, when nil, on SQLite files under the configuration's data directory. Throws when the configuration's keys are unusable (such as a secret under 32 bytes).
    public init(configuration: ServerConfiguration, storage: (any NamespaceStorage)? = nil) async throws {
        self.configuration = configuration
        self.storage = try storage ?? SQLiteStorage(
            directory: configuration.dataDirectory, schema: configuration.schema, store: configuration.store,
            maxOpenNamespaces: configuration.maxOpenNamespaces, idleTimeout: .seconds(configuration.namespaceIdleSeconds),
            maxNamespaces: configuration.maxNamespaces)
        authenticator = try await Authenticator(
            secret: configuration.jwtSecret, es256PublicKeyPEM: configuration.jwtES256PublicKeyPEM, policy: configuration.tokens)
        metrics = ServerMetrics()
        await self.storage.relayChanges(to: notifier)
    }

    // MARK: Sync

    /// One sync round trip: `body` is a `SyncRequest`; a 200 answer is a `SyncResponse`.
    public func sync(body: [UInt8], authorization: String?) async -> ServiceResponse {
        let principal: Principal
        do {
            principal = try await authenticate(authorization)
        } catch {
            metrics.round(result: "unauthorized", duration: .zero, recordsIn: 0, fieldsIn: 0, recordsOut: 0, fieldsOut: 0)
            return error.response
        }
        return await sync(body: body, principal: principal)
    }

    /// One sync round trip for an authenticated principal.
    public func sync(body: [UInt8], principal: Principal) async -> ServiceResponse {
        let clock = ContinuousClock()
        let started = clock.now
        var counts = RoundCounts()
        let result: ServiceResponse
        do {
            guard body.count <= configuration.maxBodyBytes else {
                throw ServiceError(status: 413, code: "too_large", message: "request body of \(body.count) bytes exceeds the limit of \(configuration.maxBodyBytes)")
            }
            let request: SyncRequest
            do {
                request = try SyncRequest(decoding: body)
            } catch {
                throw ServiceError(status: 400, code: "bad_request", message: error.description)
            }
            let pushed = try decodePush(request.changeset)
            // Only a push creates a namespace: a read of one that does not exist gets an
            // empty answer, so that requests without data cost the server no files.
            let store: (any NamespaceStore)?
            do {
                store = pushed.isEmpty ? try await storage.existingStore(for: principal.namespace) : try await storage.store(for: principal.namespace)
            } catch let error as NamespaceLimitExceeded {
                throw ServiceError(status: 403, code: "too_many_namespaces", message: error.description)
            }
            let response: SyncResponse
            if let store {
                // In-process callers come here with a principal: a revoked device stops here too.
                if try await store.isRevoked(device: principal.device) {
                    throw ServiceError(status: 401, code: "revoked", message: "device \(principal.device) of namespace \(principal.namespace) is revoked")
                }
                let standing = try await admit(request, store: store, device: principal.device)
                if let standing, let serial = request.serial, !pushed.isEmpty, CollectionPlanner.isStale(requestSerial: serial, appliedSerial: standing.serial) {
                    // A request delayed past a later one of the same replica (a retry is a new
                    // request, with a new serial). Its states may be older than a delete
                    // collected since: applying them could bring the record back, so it is
                    // refused (DESIGN §9).
                    throw ServiceError(
                        status: 409, code: "stale_push",
                        message: "request \(serial) of replica \(request.replica) was overtaken by request \(standing.serial), which this server already served")
                }
                let answer = try await round(request, pushed: pushed, store: store, principal: principal, counts: &counts)
                response = try await collecting(answer, for: request, pushed: !pushed.isEmpty, store: store, device: principal.device)
                await store.noteActivity(of: principal.device, pushed: !pushed.isEmpty, pulled: request.pull)
            } else {
                // No server replica exists yet: the zero id tells the client nothing it
                // could keep (a later real one makes it start over with that server).
                response = SyncResponse(serverReplica: .zero, acknowledged: request.pushUpTo, changeset: [], next: request.pullCursor, hasMore: false)
            }
            result = ServiceResponse(status: 200, contentType: SyncProtocol.contentType, body: response.encoded())
        } catch let error as ServiceError {
            result = error.response
        } catch let error as StorageUnavailable {
            result = ServiceError(status: 503, code: "storage_unavailable", message: error.message).response
        } catch {
            result = ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
        metrics.round(
            result: Self.resultLabel(result.status), duration: clock.now - started,
            recordsIn: counts.recordsIn, fieldsIn: counts.fieldsIn, recordsOut: counts.recordsOut, fieldsOut: counts.fieldsOut)
        return result
    }

    /// What a round carried, for the metrics.
    private struct RoundCounts {
        var recordsIn = 0, fieldsIn = 0, recordsOut = 0, fieldsOut = 0
    }

    /// The pushed changeset, decoded within the request limits and checked, before any
    /// storage is touched.
    private func decodePush(_ bytes: [UInt8]) throws(ServiceError) -> Changeset {
        guard !bytes.isEmpty else { return Changeset() }
        let pushed: Changeset
        do {
            // The limits are checked as counts and lengths are read: a hostile changeset
            // costs no more than its bytes up to the limit it exceeds.
            pushed = try WireDecoder.decode(bytes, limits: configuration.wireLimits)
        } catch {
            if case .limitExceeded(let limit, let bound, let actual) = error.reason {
                throw ServiceError.limitExceeded(limit, bound: bound, actual: actual)
            }
            throw ServiceError(status: 400, code: "bad_changeset", message: "changeset: \(error)")
        }
        do {
            try pushed.checkInvariants()
        } catch {
            throw ServiceError(status: 400, code: "bad_changeset", message: "changeset: \(error)")
        }
        try configuration.checkPlausibleClocks(pushed)
        return pushed
    }

    /// The push applied, then the pull, the rejections and the answer, in `store`.
    private func round(
        _ request: SyncRequest, pushed: Changeset, store: any NamespaceStore, principal: Principal, counts: inout RoundCounts
    ) async throws -> SyncResponse {
        var pushedRange: ClosedRange<UInt64>?
        if !pushed.isEmpty {
            do {
                let validate = configuration.validator.map { rule in { @Sendable (change: ProposedChange) in rule(change, principal) } }
                let report = try await store.push(pushed, replica: request.replica, device: principal.device, validate: validate)
                if report.changedRecords > 0 { notifier.publish(.init(device: principal.device), in: principal.namespace) }
                if !report.rejections.isEmpty { metrics.rejected(report.rejections.count) }
                // Records released from quarantine are others' changes: then the range
                // is not the push's alone.
                if report.releasedRecords == 0 { pushedRange = report.feedBefore...report.feedAfter }
            } catch let refusal as PushRefusal {
                throw ServiceError(status: 403, code: "forbidden", message: refusal.message)
            } catch let error as ApplyError {
                if case .quotaExceeded = error.reason {
                    // The namespace's quarantine or parked records are full: nothing was
                    // applied, and the same push will be refused until they drain.
                    throw ServiceError(status: 413, code: "quota_exceeded", message: error.description)
                }
                throw ServiceError(status: 400, code: "invalid_changeset", message: error.description)
            }
            counts.recordsIn = pushed.records.count
            counts.fieldsIn = pushed.fieldCount
        }
        var page = Changeset()
        var next = request.pullCursor
        var hasMore = false
        if request.pull {
            // Changes held in quarantine whose time has come go into the feed now, even
            // when nobody pushes to the namespace (a push releases them too).
            if pushed.isEmpty, try await store.releaseDueQuarantine() > 0 {
                notifier.publish(.init(device: "server"), in: principal.namespace)
            }
            let batch = try await store.changes(
                since: request.pullCursor, after: request.pullAfter,
                maxRecords: Int(min(UInt64(configuration.maxPullRecords), max(1, request.pullMaxRecords))),
                maxBytes: Int(min(UInt64(configuration.maxPullBytes), max(1, request.pullMaxBytes))))
            page = Self.withoutEcho(batch.changeset, of: pushed)
            next = batch.next
            hasMore = batch.hasMore
            counts.recordsOut = page.records.count
            counts.fieldsOut = page.fieldCount
        }
        var rejections = [SyncRejection]()
        if let after = request.rejectionsAfter {
            rejections = try await store.rejections(for: principal.device, after: after, limit: 100).map {
                SyncRejection(id: UInt64($0.id), table: $0.table, key: $0.key, reason: $0.reason)
            }
        }
        return SyncResponse(
            serverReplica: store.serverReplica, acknowledged: request.pushUpTo,
            changeset: page.isEmpty ? [] : WireEncoder.encode(page), next: next, hasMore: hasMore, rejections: rejections,
            pushedRange: pushedRange)
    }

    // MARK: Tombstone collection (DESIGN §9)

    /// Refuses a retired device's request with 410 `reset_required`, unless it comes back
    /// under a new replica (it reset): then it starts over as a new device of the namespace.
    ///
    /// Returns the device's standing (`nil`: new here, or readmitted, or collection is off).
    ///
    /// A request of a replica the device has left (a late one, sent before it reset) is
    /// refused whole, pull included: its word on what it has pushed speaks for writes the
    /// device's current replica may not have sent yet.
    private func admit(_ request: SyncRequest, store: any NamespaceStore, device: String) async throws -> DeviceStanding? {
        guard configuration.collection.enabled, let standing = try await store.standing(of: device) else { return nil }
        guard standing.retiredMilliseconds != nil else {
            if let current = standing.replica, current != request.replica {
                throw ServiceError(
                    status: 403, code: "forbidden",
                    message: "device \(device) syncs as replica \(current), not \(request.replica): a request of a replica it left is refused")
            }
            return standing
        }
        let known = try await store.boundReplica(of: device) ?? standing.replica
        // Readmitted only as a replica new here (it reset): not the retired one, nor any
        // replica the device or another one synced as before.
        let readmitted = if known == nil || known == request.replica { false } else { try await store.readmit(device: device, as: request.replica) }
        if !readmitted {
            metrics.resetRequired()
            throw ServiceError(
                status: 410, code: "reset_required",
                message: "device \(device) was retired (not seen for the retention window, or by an admin): reset and sync again as a new replica")
        }
        return nil
    }

    /// Records the round for the frontier, collects what it allows, and adds the frontier
    /// and the records collected since the device last dropped some (protocol version 2).
    private func collecting(
        _ response: SyncResponse, for request: SyncRequest, pushed: Bool, store: any NamespaceStore, device: String
    ) async throws -> SyncResponse {
        let policy = configuration.collection
        guard policy.enabled else { return response }
        let now = policy.clock?() ?? configuration.store.physicalTime()
        try await store.noteRound(
            of: device, replica: request.replica, pullCursor: request.pullCursor, pushComplete: request.pushComplete,
            collectedAfter: request.collectedAfter, serial: request.serial, nowMilliseconds: now)
        let frontier = try await store.collect(retentionMilliseconds: policy.retentionMilliseconds, nowMilliseconds: now, limit: policy.maxRecordsPerRound)
        guard let after = request.collectedAfter else { return response }
        var answer = response
        answer.frontier = frontier
        let listed = try await store.collected(after: after, limit: policy.maxCollectedPerAnswer + 1)
        answer.collected = Array(listed.prefix(policy.maxCollectedPerAnswer))
        if listed.count > policy.maxCollectedPerAnswer, request.pull {
            // The device must drop every collected life before it pulls what follows: a
            // page may carry a key inserted again, whose new life would merge into the old
            // tombstone the device still holds (and show the old life's fields). So while
            // the list does not fit, the answer carries it alone, and the page is asked
            // for again from where it was.
            answer.changeset = []
            answer.next = request.pullAfter ?? request.pullCursor
            answer.hasMore = true
        }
        return answer
    }

    /// Drops from a pulled page the records the client has just pushed at least as far
    /// (it holds them already: its state is above what it pushed).
    static func withoutEcho(_ page: Changeset, of pushed: Changeset) -> Changeset {
        guard !pushed.isEmpty, !page.isEmpty else { return page }
        var pushedStates = [RecordAddress: RecordState]()
        for delta in pushed.records {
            let address = RecordAddress(table: delta.table, key: delta.key)
            pushedStates[address] = pushedStates[address].map { $0.merging(delta.state) } ?? delta.state
        }
        return Changeset(records: page.records.filter { delta in
            guard let state = pushedStates[RecordAddress(table: delta.table, key: delta.key)] else { return true }
            return state.merging(delta.state) != state
        })
    }

    private static func resultLabel(_ status: Int) -> String {
        switch status {
        case 200: return "ok"
        case 400: return "bad_request"
        case 401: return "unauthorized"
        case 403: return "forbidden"
        case 409: return "stale_push"
        case 410: return "reset_required"
        case 413: return "too_large"
        default: return "error"
        }
    }

    // MARK: The server's own writes

    /// Writes to a namespace as the server (for example values of `.authority` columns,
    /// or the result of server-side work), then tells connected devices to pull.
    ///
    /// - Throws: ``ServiceError`` (404) when the storage is not the embedded SQLite one
    ///   (``write(_:in:)`` works on every storage).
    public func write<T: Sendable>(in namespace: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        guard Namespace.isValid(namespace) else {
            throw ServiceError(status: 400, code: "bad_namespace", message: "invalid namespace name \(namespace)")
        }
        let result = try await storage.store(for: namespace).write(body)
        notifier.publish(.init(device: "server"), in: namespace)
        return result
    }

    /// Writes one record as the server, on any storage (SQLite or PostgreSQL), then tells
    /// connected devices to pull. The write is stamped by the namespace's server replica, so
    /// it merges like any device's (and owns `.authority` columns).
    public func write(_ write: ServerWrite, in namespace: String) async throws {
        guard Namespace.isValid(namespace) else {
            throw ServiceError(status: 400, code: "bad_namespace", message: "invalid namespace name \(namespace)")
        }
        try await storage.store(for: namespace).write(write)
        notifier.publish(.init(device: "server"), in: namespace)
    }

    // MARK: Status and conflicts

    struct StatusBody: Encodable {
        let namespace: String
        let serverReplica: String
        let cursor: UInt64
        let needsSync: Bool?
        let changedSinceCursor: Int?
        /// Open conflicts of both kinds: critical fields and unique-index clashes.
        let conflicts: Int
        let quarantined: Int
        let boundReplica: String?
    }

    /// The namespace's status; with the client's pull cursor, whether it needs to sync.
    public func status(authorization: String?, cursor: UInt64?) async -> ServiceResponse {
        do {
            let principal = try await authenticate(authorization)
            // A namespace nobody pushed to is empty: answered without creating it.
            guard let store = try await storage.existingStore(for: principal.namespace) else {
                return .json(StatusBody(
                    namespace: principal.namespace, serverReplica: ReplicaID.zero.uuidString(), cursor: 0,
                    needsSync: cursor.map { _ in false }, changedSinceCursor: cursor.map { _ in 0 }, conflicts: 0, quarantined: 0, boundReplica: nil))
            }
            var changed: Int?
            if let cursor { changed = try await store.changedRecordCount(since: cursor) }
            return .json(StatusBody(
                namespace: principal.namespace, serverReplica: store.serverReplica.uuidString(), cursor: try await store.head(),
                needsSync: changed.map { $0 > 0 }, changedSinceCursor: changed, conflicts: try await store.conflicts().count,
                quarantined: try await store.quarantinedCount(), boundReplica: try await store.boundReplica(of: principal.device)?.uuidString()))
        } catch let error as ServiceError {
            return error.response
        } catch {
            return ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
    }

    struct ConflictBody: Encodable {
        struct Sibling: Encodable {
            let value: JSONValue
            let replica: String
            let hlc: UInt64
        }
        let table: String
        let key: JSONValue
        let column: String
        let siblings: [Sibling]
    }

    /// A unique-index clash (DESIGN §4): the record shown and the records held.
    struct ConstraintBody: Encodable {
        struct Claimant: Encodable {
            struct Stamp: Encodable {
                let replica: String
                let hlc: UInt64
            }
            let key: JSONValue
            /// Every column of the record as it would show.
            let values: [String: JSONValue]
            /// Its claim: when it last wrote one of the index's columns.
            let stamp: Stamp

            init(_ claimant: ConstraintConflict.Claimant) {
                key = JSONValue(claimant.key)
                values = claimant.values.mapValues(JSONValue.init)
                stamp = Stamp(replica: claimant.stamp.replica.uuidString(), hlc: claimant.stamp.hlc.rawValue)
            }
        }
        let table: String
        let index: String
        let columns: [String]
        let values: [JSONValue]
        let holder: Claimant
        let held: [Claimant]

        init(_ conflict: ConstraintConflict) {
            table = conflict.table
            index = conflict.index
            columns = conflict.columns
            values = conflict.values.map(JSONValue.init)
            holder = Claimant(conflict.holder)
            held = conflict.held.map(Claimant.init)
        }
    }

    /// What `GET /v1/conflicts` answers: `conflicts` (critical fields, the shape older
    /// clients read) and `constraints` (unique-index clashes).
    struct ConflictsBody: Encodable {
        var conflicts: [ConflictBody] = []
        var constraints: [ConstraintBody] = []
    }

    /// The namespace's open conflicts as JSON: critical fields under `conflicts`, unique-index
    /// clashes under `constraints`.
    public func conflicts(authorization: String?) async -> ServiceResponse {
        do {
            let principal = try await authenticate(authorization)
            guard let store = try await storage.existingStore(for: principal.namespace) else {
                return .json(ConflictsBody())
            }
            var body = ConflictsBody()
            for conflict in try await store.conflicts() {
                switch conflict {
                case .field(let conflict):
                    body.conflicts.append(ConflictBody(
                        table: conflict.table, key: JSONValue(conflict.key), column: conflict.column,
                        siblings: conflict.siblings.map { .init(value: JSONValue($0.value), replica: $0.stamp.replica.uuidString(), hlc: $0.stamp.hlc.rawValue) }))
                case .constraint(let conflict):
                    body.constraints.append(ConstraintBody(conflict))
                }
            }
            return .json(body)
        } catch let error as ServiceError {
            return error.response
        } catch {
            return ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
    }
}

/// A value as JSON: null, integers, finite reals and text as themselves, blobs as
/// `{"blob": "<base64>"}`, and the reals JSON has no number for as `{"real": "inf"}`,
/// `{"real": "-inf"}` and `{"real": "nan"}` (a string alone would pass for text).
struct JSONValue: Encodable {
    let value: Value

    init(_ value: Value) { self.value = value }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch value {
        case .null: try container.encodeNil()
        case .integer(let v): try container.encode(v)
        case .real(let v) where v.isFinite: try container.encode(v)
        case .real(let v): try container.encode(["real": v.isNaN ? "nan" : v < 0 ? "-inf" : "inf"])
        case .text(let v): try container.encode(v)
        case .blob(let bytes): try container.encode(["blob": Data(bytes).base64EncodedString()])
        }
    }
}
