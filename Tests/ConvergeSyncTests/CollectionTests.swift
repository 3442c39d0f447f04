import ConvergeCore
import ConvergeProtocol
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Synchronization
import Testing

/// The server's time, settable: retention is tested without waiting 30 days. It starts at
/// the wall clock, so that devices' stamps are never far ahead of it.
final class ServerClock: Sendable {
    private let milliseconds = Mutex<UInt64>(UInt64(Date().timeIntervalSince1970 * 1000))
    var now: UInt64 { milliseconds.withLock { $0 } }
    func advance(seconds: UInt64) { milliseconds.withLock { $0 += seconds * 1000 } }
}

/// Tombstone collection and bounded storage (DESIGN §9), through the real server over HTTP.
@Suite(.serialized) struct CollectionTests {
    static let retentionSeconds: UInt64 = 3_600

    static let adminToken = String(repeating: "k", count: 40)

    func withServer(_ backend: Backend = .sqlite, _ body: (TestServer, URL, ServerClock) async throws -> Void) async throws {
        let clock = ServerClock()
        let server = try await TestServer.start(backend, configure: { configuration in
            configuration.store = ReplicatedDatabase.Configuration(physicalTime: { clock.now })
            configuration.collection = .init(retentionSeconds: Self.retentionSeconds)
            configuration.adminToken = Self.adminToken
        })
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            try await body(server, directory, clock)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func serverDatabase(_ server: TestServer) async throws -> ReplicatedDatabase {
        try #require(try await server.store() as? SQLiteNamespaceStore).database
    }

    /// The server's merge states, on either backend.
    func serverSnapshot(_ server: TestServer) async throws -> Changeset {
        try await server.store().snapshot()
    }

    /// The deleted records the server still holds metadata for, on either backend.
    func serverTombstones(_ server: TestServer) async throws -> Int {
        try await serverSnapshot(server).records.count { !$0.state.isAlive }
    }

    @Test func protocolVersionTwoRoundTripsAndVersionOneStaysReadable() throws {
        let replica = ReplicaID(high: 1, low: 2)
        let old = SyncRequest(replica: replica, pushUpTo: 3, pullCursor: 4, rejectionsAfter: 5)
        #expect(old.version == 1 && old.encoded()[4] == 1)
        #expect(try SyncRequest(decoding: old.encoded()) == old)
        let new = SyncRequest(replica: replica, pushUpTo: 3, pullCursor: 4, rejectionsAfter: 5, pushComplete: true, collectedAfter: 9)
        #expect(new.version == 2)
        #expect(try SyncRequest(decoding: new.encoded()) == new)
        #expect(new.asVersion1 == old)
        // A version-1 message may not use version 2's flags.
        var forged = new.encoded()
        forged[4] = 1
        #expect(throws: SyncProtocolError.self) { try SyncRequest(decoding: forged) }

        let response = SyncResponse(
            serverReplica: replica, acknowledged: 1, changeset: [], next: 7, hasMore: false, frontier: 6,
            collected: [SyncCollected(id: 1, table: "notes", key: .text("a")), SyncCollected(id: 2, table: "items", key: .integer(-3))])
        #expect(response.version == 2)
        #expect(try SyncResponse(decoding: response.encoded()) == response)
        let plain = SyncResponse(serverReplica: replica, acknowledged: 1, changeset: [], next: 7, hasMore: false)
        #expect(plain.encoded()[4] == 1)
        // A hostile count cannot make the reader allocate.
        var truncated = SyncResponse(serverReplica: replica, acknowledged: 1, changeset: [], next: 7, hasMore: false, frontier: 6).encoded()
        truncated.removeLast()
        truncated.append(contentsOf: [0xFF, 0xFF, 0xFF, 0x0F])
        #expect(throws: SyncProtocolError.self) { try SyncResponse(decoding: truncated) }
    }

    @Test(arguments: Backend.available) func churnLeavesOnlyLiveRecordsEverywhere(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            var devices = [Device]()
            for name in ["a", "b", "c"] { devices.append(try await Device.make(name, server: server, in: directory)) }
            for round in 0..<2 {
                for (index, device) in devices.enumerated() {
                    for record in 0..<25 {
                        try device.execute("INSERT INTO notes(id, title) VALUES (?, ?)", ["\(device.name)-\(round)-\(record)", "t\(index)"])
                    }
                    try await device.sync()
                }
                for device in devices { try await device.sync() }
                for device in devices {
                    try device.execute("DELETE FROM notes WHERE id LIKE ? AND id NOT LIKE ?", ["\(device.name)-\(round)-%", "%-0"])
                    try await device.sync()
                }
                // Two more rounds: every device reports a stable position past the deletes,
                // the server collects, and every device hears of it.
                for _ in 0..<2 { for device in devices { try await device.sync() } }
            }
            // A device hears of what the server collected on its next sync.
            for device in devices { try await device.sync() }
            let snapshot = try await serverSnapshot(server)
            #expect(try await serverTombstones(server) == 0)
            let live = 2 * 3  // each round keeps record 0 of each device
            #expect(snapshot.records.count == live)
            for device in devices {
                #expect(try device.database.tombstoneCount() == 0, "device \(device.name)")
                #expect(try device.rows("notes").count == live)
                #expect(try device.rows("notes") == devices[0].rows("notes"))
                #expect(try device.database.snapshot() == snapshot)
            }
            #expect(try devices[0].engine.log(limit: 100).reduce(0) { $0 + $1.collectedRecords } > 0)
        }
    }

    @Test(arguments: Backend.available) func aDeviceOfflineDuringADeleteRevivesTheRecordWhole(backend: Backend) async throws {
        try await withServer(backend) { server, directory, clock in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            try a.execute("INSERT INTO notes(id, title, body) VALUES ('n', 'title', 'body')")
            try await a.sync()
            try await b.sync()
            // b goes offline and edits; a deletes and syncs, several times, within the window.
            try b.execute("UPDATE notes SET title = 'edited offline' WHERE id = 'n'")
            try a.execute("DELETE FROM notes WHERE id = 'n'")
            for _ in 0..<3 {
                try await a.sync()
                clock.advance(seconds: Self.retentionSeconds / 4)
            }
            #expect(try await serverTombstones(server) == 1, "b holds the frontier: nothing collected")
            try await b.sync()
            try await a.sync()
            for device in [a, b] {
                #expect(try device.rows("notes") == ["[id:\"n\" title:\"edited offline\" body:\"body\" amount:NULL]"], "device \(device.name)")
            }
        }
    }

    @Test(arguments: Backend.available) func aDeviceOfflinePastTheRetentionWindowResetsAndKeepsWhatItTyped(backend: Backend) async throws {
        try await withServer(backend) { server, directory, clock in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            for id in ["kept", "edited", "deleted", "deletedEditedByB"] {
                try a.execute("INSERT INTO notes(id, title, body) VALUES (?, 'v1', 'b1')", [id])
            }
            try await a.sync()
            try await b.sync()
            let oldReplica = b.database.replicaID

            // Offline on b: an edit, a new record, an edit of a record a deletes meanwhile.
            try b.execute("UPDATE notes SET title = 'b edit' WHERE id = 'edited'")
            try b.execute("INSERT INTO notes(id, title) VALUES ('new on b', 'typed offline')")
            try b.execute("UPDATE notes SET body = 'b body' WHERE id = 'deletedEditedByB'")
            try a.execute("DELETE FROM notes WHERE id IN ('deleted', 'deletedEditedByB')")
            try await a.sync()
            clock.advance(seconds: Self.retentionSeconds + 60)
            try await a.sync()  // b is retired now; the deletes are collected
            try await a.sync()
            #expect(try await serverTombstones(server) == 0)

            let report = try await b.sync()
            #expect(report.reset?.reappliedRecords == 3)
            #expect(await b.engine.status.lastReset?.reappliedRecords == 3)
            #expect(b.database.replicaID != oldReplica)
            #expect(try b.engine.log(limit: 1).first?.resetReappliedRecords == 3)
            try await a.sync()
            let expected = [
                "[id:\"deletedEditedByB\" title:\"v1\" body:\"b body\" amount:NULL]",
                "[id:\"edited\" title:\"b edit\" body:\"b1\" amount:NULL]",
                "[id:\"kept\" title:\"v1\" body:\"b1\" amount:NULL]",
                "[id:\"new on b\" title:\"typed offline\" body:NULL amount:NULL]",
            ]
            for device in [a, b] { #expect(try device.rows("notes") == expected, "device \(device.name)") }
            // b is an ordinary device again: its writes flow.
            try b.execute("UPDATE notes SET title = 'after reset' WHERE id = 'kept'")
            try await b.sync()
            try await a.sync()
            #expect(try a.rows("notes").contains("[id:\"kept\" title:\"after reset\" body:\"b1\" amount:NULL]"))
        }
    }

    @Test(arguments: Backend.available) func anAdminCanRetireADevice(backend: Backend) async throws {
        let adminToken = String(repeating: "k", count: 40)
        let clock = ServerClock()
        let server = try await TestServer.start(backend, configure: { configuration in
            configuration.store = ReplicatedDatabase.Configuration(physicalTime: { clock.now })
            configuration.adminToken = adminToken
        })
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = try await Device.make("a", server: server, in: directory)
        try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
        try await a.sync()
        let retire = await server.service.adminRetire(authorization: "Bearer \(adminToken)", namespace: "team", device: "a")
        #expect(retire.status == 200 && String(decoding: retire.body, as: UTF8.self) == "{\"retired\":true}")
        let again = await server.service.adminRetire(authorization: "Bearer \(adminToken)", namespace: "team", device: "a")
        #expect(String(decoding: again.body, as: UTF8.self) == "{\"retired\":false}")
        #expect(await server.service.adminRetire(authorization: "Bearer wrong", namespace: "team", device: "a").status == 401)
        try a.execute("UPDATE notes SET title = 'y' WHERE id = 'n'")
        let report = try await a.sync()
        #expect(report.reset?.reappliedRecords == 1)
        #expect(try a.rows("notes") == ["[id:\"n\" title:\"y\" body:NULL amount:NULL]"])
        await server.stop()
    }

    @Test(arguments: Backend.available) func aVersionOneClientKeepsSyncingAndHoldsCollectionBack(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            let a = try await Device.make("a", server: server, in: directory)
            try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
            try await a.sync()
            // An older client: version-1 requests, no stable position, no collection.
            let old = ReplicaID(high: 7, low: 7)
            let token = try await server.token(device: "old")
            let request = SyncRequest(replica: old, pullCursor: 0)
            let answer = await server.service.sync(body: request.encoded(), authorization: "Bearer \(token)")
            #expect(answer.status == 200)
            let response = try SyncResponse(decoding: answer.body)
            #expect(response.frontier == nil && response.encoded()[4] == 1)
            try a.execute("DELETE FROM notes WHERE id = 'n'")
            for _ in 0..<3 { try await a.sync() }
            #expect(try await serverTombstones(server) == 1, "the old client holds the frontier")
        }
    }

    @Test func aNamespaceFromBeforeCollectionWaitsARetentionWindow() async throws {
        let clock = ServerClock()
        let data = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        // A namespace as an older server left it: records, a tombstone, no device standings.
        do {
            let pool = try DatabasePool(path: data.appendingPathComponent("team.sqlite").path)
            try await pool.write { db in try db.execute(sql: Fixtures.createNotes) }
            let old = try ReplicatedDatabase(pool)
            try old.replicate(table: "notes", policies: ["amount": .critical])
            try await pool.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('gone', 'x'), ('kept', 'y')") }
            try await pool.write { db in try db.execute(sql: "DELETE FROM notes WHERE id = 'gone'") }
            _ = try old.changes(since: 0)
        }
        let server = try await TestServer.start(directory: data, configure: { configuration in
            configuration.store = ReplicatedDatabase.Configuration(physicalTime: { clock.now })
            configuration.collection = .init(retentionSeconds: Self.retentionSeconds)
        })
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = try await Device.make("a", server: server, in: directory)
        for _ in 0..<3 { try await a.sync() }
        #expect(try await serverDatabase(server).tombstoneCount() == 1, "a device that synced with the old server may still hold an edit")
        clock.advance(seconds: Self.retentionSeconds + 1)
        for _ in 0..<2 { try await a.sync() }
        #expect(try await serverDatabase(server).tombstoneCount() == 0)
        #expect(try a.rows("notes") == ["[id:\"kept\" title:\"y\" body:NULL amount:NULL]"])
        await server.stop(keepData: true)
    }

    @Test(arguments: Backend.available) func aPushOlderThanOneAppliedIsRefusedAndARetryIsAcknowledged(backend: Backend) async throws {
        try await withServer(backend) { server, _, clock in
            var phone = Replica(id: ReplicaID(high: 0x1234, low: 0x5678))
            phone.replicate(TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body", "amount"], policies: ["amount": .critical]))
            let first = phone.perform([.insert(table: "notes", key: .text("n"), values: ["title": .text("one")])], physicalMilliseconds: clock.now)
            let second = phone.perform([.update(table: "notes", key: .text("n"), values: ["title": .text("two")])], physicalMilliseconds: clock.now + 1)
            let token = "Bearer \(try await server.token(device: "phone"))"
            func push(_ changeset: Changeset, upTo position: UInt64, serial: UInt64) async -> Int {
                let request = SyncRequest(replica: phone.id, pushUpTo: position, changeset: WireEncoder.encode(changeset), collectedAfter: 0, serial: serial)
                return await server.service.sync(body: request.encoded(), authorization: token).status
            }
            #expect(await push(first, upTo: 1, serial: 1) == 200)
            #expect(await push(second, upTo: 2, serial: 2) == 200)
            #expect(await push(second, upTo: 2, serial: 3) == 200, "a retry of the last batch is applied again: a join is idempotent")
            // A paged push cut short starts again from the device's acknowledged cursor, below
            // the pages the server applied: a new request, so it is applied.
            #expect(await push(first, upTo: 1, serial: 4) == 200, "a restart from an older cursor is a new request")
            // The first request again, delayed past everything: refused, nothing applied.
            let before = try await serverSnapshot(server)
            #expect(await push(first, upTo: 1, serial: 1) == 409)
            #expect(await push(second, upTo: 2, serial: 4) == 409, "a duplicate of the last request is refused too")
            #expect(try await serverSnapshot(server) == before)
        }
    }

    @Test(arguments: Backend.available) func aDeviceStillHoldingACollectedTombstoneCanInsertTheKeyAgain(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            let c = try await Device.make("c", server: server, in: directory)
            // b creates and deletes the record: its stamps, not a's.
            try b.execute("INSERT INTO notes(id, title) VALUES ('sku-1', 'first')")
            for device in [b, a, c] { try await device.sync() }
            try b.execute("DELETE FROM notes WHERE id = 'sku-1'")
            for device in [b, a, c] { try await device.sync() }
            // Every stable position passes the delete in this round; c's round collects.
            for device in [b, a, c] { try await device.sync() }
            #expect(try await serverTombstones(server) == 0)
            #expect(try c.database.tombstoneCount() == 0)
            #expect(try a.database.tombstoneCount() == 1, "a has not heard yet")
            // a inserts the same key again: its context covers b's delete, which the server
            // dropped and cannot check entry by entry any more.
            try a.execute("INSERT INTO notes(id, title) VALUES ('sku-1', 'second')")
            try await a.sync()
            for device in [b, c, a] { try await device.sync() }
            for device in [a, b, c] {
                #expect(try device.rows("notes") == ["[id:\"sku-1\" title:\"second\" body:NULL amount:NULL]"], "device \(device.name)")
            }
        }
    }

    /// Syncs every device in turn, `rounds` times: stable positions pass what was deleted
    /// before, the server collects, and devices hear of it.
    func settle(_ devices: [Device], rounds: Int = 3) async throws {
        for _ in 0..<rounds { for device in devices { try await device.sync() } }
    }

    @Test(arguments: Backend.available) func aKeyInsertedAgainWhileItsOldLifeIsListedCanBeDeletedAndEdited(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            let c = try await Device.make("c", server: server, in: directory)
            try a.execute("INSERT INTO notes(id, title) VALUES ('k', 'first life')")
            try await settle([a, b, c], rounds: 1)
            try a.execute("DELETE FROM notes WHERE id = 'k'")
            for device in [a, b, c] { try await device.sync() }
            for device in [b, a, c] { try await device.sync() }
            // Collected in that last pass (c's round); b has not heard yet, so the old life
            // stays listed.
            #expect(try await serverTombstones(server) == 0)
            #expect(try await server.store().collected(after: 0, limit: 10).map(\.key) == [.text("k")])
            // a, which dropped the old life, starts a new one and deletes it, then starts a
            // third and edits it: none of these is a part of the collected life.
            try await a.sync()
            try a.execute("INSERT INTO notes(id, title) VALUES ('k', 'second life')")
            try await a.sync()
            try a.execute("DELETE FROM notes WHERE id = 'k'")
            try await a.sync()
            try await b.sync()
            #expect(try b.rows("notes") == [], "the new life's delete reached the server")
            try a.execute("INSERT INTO notes(id, title) VALUES ('k', 'third life')")
            try await a.sync()
            try a.execute("UPDATE notes SET body = 'edited' WHERE id = 'k'")
            try await a.sync()
            try await settle([b, c, a], rounds: 1)
            for device in [a, b, c] {
                #expect(try device.rows("notes") == ["[id:\"k\" title:\"third life\" body:\"edited\" amount:NULL]"], "device \(device.name)")
            }
        }
    }

    @Test(arguments: Backend.available) func aLateRequestOfAReplicaADeviceLeftDoesNotTakeItBack(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            let a = try await Device.make("a", server: server, in: directory)
            try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
            try await a.sync()
            let left = a.database.replicaID
            let token = "Bearer \(try await server.token(device: "a"))"
            // A request of a's first identity, delayed on the way: sent now, delivered later.
            var old = Replica(id: left)
            old.replicate(TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body", "amount"], policies: ["amount": .critical]))
            let late = SyncRequest(
                replica: left, pushUpTo: 1, changeset: WireEncoder.encode(old.perform([.insert(table: "notes", key: .text("late"), values: ["title": .text("late")])], physicalMilliseconds: 1)),
                collectedAfter: 0, serial: 1)

            func retire() async {
                let answer = await server.service.adminRetire(authorization: "Bearer \(Self.adminToken)", namespace: "team", device: "a")
                #expect(answer.status == 200)
            }
            await retire()
            try a.execute("UPDATE notes SET title = 'y' WHERE id = 'n'")
            #expect(try await a.sync().reset != nil)
            let second = a.database.replicaID
            #expect(second != left)
            // Retired again: the late request of the first identity arrives now.
            await retire()
            let before = try await serverSnapshot(server)
            #expect(await server.service.sync(body: late.encoded(), authorization: token).status == 410)
            #expect(try await serverSnapshot(server) == before)
            #expect(try await server.store().boundReplica(of: "a") == second, "the device is still bound to its second identity")
            // The device resets again and goes on: it is not locked out.
            try a.execute("UPDATE notes SET title = 'z' WHERE id = 'n'")
            #expect(try await a.sync().reset != nil)
            try a.execute("UPDATE notes SET body = 'after' WHERE id = 'n'")
            try await a.sync()
            #expect(try await a.sync().requests > 0)
            // And while active, a request of an identity it left is refused whole, pull too.
            let pull = SyncRequest(replica: second, pullCursor: 0, collectedAfter: 0, serial: 1)
            #expect(await server.service.sync(body: pull.encoded(), authorization: token).status == 403)
            let b = try await Device.make("b", server: server, in: directory)
            try await b.sync()
            #expect(try b.rows("notes") == ["[id:\"n\" title:\"z\" body:\"after\" amount:NULL]"])
        }
    }

    @Test(arguments: Backend.available) func aContextCoveringACollectedDeleteIsAcceptedAfterTheLogIsPruned(backend: Backend) async throws {
        try await withServer(backend) { server, directory, clock in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            try a.execute("INSERT INTO notes(id, title) VALUES ('k', 'old')")
            try await settle([a, b], rounds: 1)
            try a.execute("DELETE FROM notes WHERE id = 'k'")
            try await a.sync()
            try await b.sync()
            // b's tombstone as it holds it before the server collects.
            let tombstone = try #require(try b.database.snapshot().records.first { $0.key == .text("k") }?.state)
            #expect(!tombstone.isAlive)
            try await settle([a, b], rounds: 4)
            #expect(try await serverTombstones(server) == 0)
            #expect(try await server.store().collected(after: 0, limit: 10).isEmpty, "every device dropped it: the log is pruned")
            // A device that kept that tombstone (restored from a copy taken then) inserts the
            // key again: its context covers a's add and delete, which the server dropped.
            let tablet = ReplicaID(high: 0xABCD, low: 0xEF)
            var state = tombstone
            let schema = TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body", "amount"], policies: ["amount": .critical])
            let delta = state.insert(["title": .text("again")], at: Stamp(hlc: HLC(milliseconds: clock.now, counter: 0), replica: tablet), schema: schema)
            let push = SyncRequest(
                replica: tablet, pushUpTo: 1, changeset: WireEncoder.encode(Changeset(records: [RecordDelta(table: "notes", key: .text("k"), state: delta)])),
                collectedAfter: 0, serial: 1)
            let answer = await server.service.sync(body: push.encoded(), authorization: "Bearer \(try await server.token(device: "tablet"))")
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            try await a.sync()
            #expect(try a.rows("notes") == ["[id:\"k\" title:\"again\" body:NULL amount:NULL]"])
            // A context entry beyond what any collected record had seen is still refused.
            var forged = RecordState()
            let ahead = Stamp(hlc: HLC(milliseconds: clock.now + 60_000, counter: 0), replica: a.database.replicaID)
            forged.membership = ORSet(dots: [], context: CausalContext().recording([ahead]))
            _ = forged.insert(["title": .text("forged")], at: Stamp(hlc: HLC(milliseconds: clock.now + 1, counter: 0), replica: tablet), schema: schema)
            let forgery = SyncRequest(
                replica: tablet, pushUpTo: 2, changeset: WireEncoder.encode(Changeset(records: [RecordDelta(table: "notes", key: .text("f"), state: forged)])),
                collectedAfter: 0, serial: 2)
            #expect(await server.service.sync(body: forgery.encoded(), authorization: "Bearer \(try await server.token(device: "tablet"))").status == 403)
        }
    }

    @Test(arguments: Backend.available) func aDatabaseRestoredWithOlderRequestSerialsCatchesUp(backend: Backend) async throws {
        try await withServer(backend) { server, directory, _ in
            let a = try await Device.make("a", server: server, in: directory)
            for index in 0..<3 {
                try a.execute("INSERT INTO notes(id, title) VALUES (?, 'x')", ["n\(index)"])
                try await a.sync()
            }
            #expect(try await server.store().standing(of: "a")?.serial ?? 0 >= 3)
            // As in a copy of the file taken before those rounds: the reservation goes back,
            // and a new engine numbers from there, below what the server served.
            try a.execute("DELETE FROM converge_sync_serials")
            let engine = try SyncEngine(
                database: a.database, transport: HTTPSyncTransport(baseURL: server.baseURL),
                configuration: SyncEngine.Configuration(retry: Fixtures.quickRetry), token: try await server.token(device: "a"))
            try a.execute("INSERT INTO notes(id, title) VALUES ('after', 'restored')")
            let report = try await engine.sync()
            #expect(report.pushedRecords == 1, "the stale answer named the serial served, and the push went on above it")
            let b = try await Device.make("b", server: server, in: directory)
            try await b.sync()
            #expect(try b.rows("notes").count == 4)
        }
    }

    @Test(arguments: Backend.available) func aDeviceDropsEveryCollectedLifeBeforeItPullsAKeyInsertedAgain(backend: Backend) async throws {
        let clock = ServerClock()
        let server = try await TestServer.start(backend, configure: { configuration in
            configuration.store = ReplicatedDatabase.Configuration(physicalTime: { clock.now })
            configuration.collection = .init(retentionSeconds: Self.retentionSeconds, maxCollectedPerAnswer: 2)
        })
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            for index in 1...5 { try a.execute("INSERT INTO notes(id, title, body) VALUES (?, 'old', 'old body')", ["k\(index)"]) }
            try await settle([a, b], rounds: 1)
            try a.execute("DELETE FROM notes")
            try await a.sync()
            // b pulls the deletes, then claims a stable position past them; a's next rounds
            // pass them too and collect. b stays away while a inserts k5 again, without a body.
            try await b.sync()
            try await b.sync()
            for _ in 0..<3 { try await a.sync() }
            #expect(try await serverTombstones(server) == 0)
            #expect(try b.database.tombstoneCount() > 2, "b has not heard of the collection yet")
            try a.execute("INSERT INTO notes(id, title) VALUES ('k5', 'new life')")
            try await a.sync()
            // b hears of five collected records, two per answer, and pulls k5 only after.
            try await b.sync()
            #expect(try b.database.tombstoneCount() == 0)
            #expect(try b.rows("notes") == ["[id:\"k5\" title:\"new life\" body:NULL amount:NULL]"])
            #expect(try b.rows("notes") == a.rows("notes"))
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }
}
