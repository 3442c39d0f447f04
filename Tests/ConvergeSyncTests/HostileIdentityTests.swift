import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Synchronization
import Testing

/// Hostile clients with valid tokens for their own namespace (issue #15, items 1–5 and 11):
/// no device writes as another replica, claims another's replica, or moves a clock with an
/// impossible stamp; every refusal answers its status and leaves the server's state as it was.
@Suite(.timeLimit(.minutes(3))) struct HostileIdentityTests {
    /// The namespace's merge states, feed position and the bindings of the named devices.
    func stored(_ server: TestServer, devices: [String] = ["alice", "mallory"]) async throws -> (Changeset, UInt64, [ReplicaID?]) {
        let store = try await server.store()
        var bindings = [ReplicaID?]()
        for device in devices { bindings.append(try await store.boundReplica(of: device)) }
        return (try await store.snapshot(), try await store.head(), bindings)
    }

    /// Posts `changeset` as `device`, declaring `replica`.
    func push(_ changeset: Changeset, as device: String, replica: ReplicaID, to server: TestServer) async throws -> (status: Int, body: String) {
        let request = SyncRequest(replica: replica, pushUpTo: 1, changeset: WireEncoder.encode(changeset), pull: false)
        return try await server.post(request.encoded(), token: try await server.token(device: device))
    }

    /// Alice writes a note and syncs; Mallory, an honest-looking device, syncs too (and is
    /// bound to her own replica).
    func setUp(_ server: TestServer, _ directory: URL) async throws -> (alice: Device, mallory: Device) {
        let alice = try await Device.make("alice", server: server, in: directory)
        try alice.execute("INSERT INTO notes(id, title, amount) VALUES ('a1', 'mine', 10)")
        try alice.execute("INSERT INTO notes(id, title) VALUES ('a2', 'second')")
        try await alice.sync()
        let mallory = try await Device.make("mallory", server: server, in: directory)
        try mallory.execute("INSERT INTO notes(id, title) VALUES ('m1', 'hers')")
        try await mallory.sync()
        return (alice, mallory)
    }

    func lww(_ value: Value, _ stamp: Stamp) -> FieldState { .plain(.lww(LWWRegister(value: value, stamp: stamp))) }

    /// The server's stored state of one note.
    func state(_ key: String, in snapshot: Changeset) -> RecordState? {
        snapshot.records.first { $0.table == "notes" && $0.key == .text(key) }?.state
    }

    @Test(arguments: Backend.available) func aWriteStampedByAnotherReplicaBelowItsNewestIsRefused(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let (alice, mallory) = try await setUp(server, directory)
            let before = try await stored(server)
            // Alice's replica, an HLC below the newest the server holds for her, on a new row.
            let stamp = Stamp(hlc: HLC(rawValue: alice.database.clock.rawValue - 1), replica: alice.database.replicaID)
            var forged = RecordState(membership: ORSet(dots: [stamp], context: CausalContext([.init(replica: stamp.replica, hlc: stamp.hlc)])), fields: [:])
            forged.fields["title"] = lww(.text("written as alice"), stamp)
            let answer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("forged"), state: forged)]), as: "mallory", replica: mallory.database.replicaID, to: server)
            #expect(answer.status == 403)
            #expect(answer.body.contains("does not hold"))
            #expect(try await stored(server) == before)
        }
    }

    @Test(arguments: Backend.available) func reusingAnotherReplicasExactStampWithAnotherValueIsRefused(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let (_, mallory) = try await setUp(server, directory)
            let before = try await stored(server)
            guard case .plain(.lww(let title))? = state("a1", in: before.0)?.fields["title"] else {
                Issue.record("alice's title is not a plain LWW register")
                return
            }
            // The same stamp, a value that sorts above "mine": the corruption tie-break
            // would let it win on every replica.
            let forged = RecordState(membership: ORSet(), fields: ["title": lww(.text("zzz"), title.stamp)])
            let answer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("a1"), state: forged)]), as: "mallory", replica: mallory.database.replicaID, to: server)
            #expect(answer.status == 403)
            #expect(try await stored(server) == before)

            // The very same write, value included, is what the server holds: joining it
            // changes nothing, and a relay may carry it.
            let relayed = RecordState(membership: ORSet(), fields: ["title": lww(title.value, title.stamp)])
            let relay = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("a1"), state: relayed)]), as: "mallory", replica: mallory.database.replicaID, to: server)
            #expect(relay.status == 200)
            #expect(try await stored(server).0 == before.0)
        }
    }

    @Test(arguments: Backend.available) func aContextClaimingAnotherReplicasFutureIsRefused(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let (alice, mallory) = try await setUp(server, directory)
            let before = try await stored(server)
            // Mallory "deletes" a2 with a context that claims to have seen Alice's events up
            // to far beyond what the server holds: Alice's next edit of a2 would be covered,
            // silently lost.
            let own = Stamp(hlc: HLC(rawValue: mallory.database.clock.rawValue + 1), replica: mallory.database.replicaID)
            let context = CausalContext([
                .init(replica: own.replica, hlc: own.hlc),
                .init(replica: alice.database.replicaID, hlc: HLC(rawValue: alice.database.clock.rawValue + 1_000_000)),
            ])
            let forged = RecordState(membership: ORSet(dots: [], context: context), fields: [:])
            let answer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("a2"), state: forged)]), as: "mallory", replica: mallory.database.replicaID, to: server)
            #expect(answer.status == 403)
            #expect(try await stored(server) == before)

            // An honest delete of Alice's record (observing only what the server holds) is fine.
            try await mallory.sync()
            try mallory.execute("DELETE FROM notes WHERE id = 'a2'")
            try await mallory.sync()
            try await alice.sync()
            #expect(try alice.rows("notes").count == 2)  // a1 and m1
        }
    }

    @Test(arguments: Backend.available) func aFirstPushCannotClaimABoundReplicaTheServersOrAReservedOne(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let (alice, _) = try await setUp(server, directory)
            let store = try await server.store()
            let serverReplica = store.serverReplica
            let before = try await stored(server, devices: ["alice", "mallory", "eve"])
            // Above any reading of the server's clock (which follows real time here).
            let clockBefore = HLC(milliseconds: UInt64(Date().timeIntervalSince1970 * 1_000) + 1_000)

            // Eve, a new device, declares Alice's replica and pushes a write of her own
            // stamped by it: the claim itself is refused.
            let aliceStamp = Stamp(hlc: HLC(rawValue: alice.database.clock.rawValue + 10), replica: alice.database.replicaID)
            var write = RecordState(membership: ORSet(dots: [aliceStamp], context: CausalContext([.init(replica: aliceStamp.replica, hlc: aliceStamp.hlc)])), fields: [:])
            write.fields["title"] = lww(.text("as alice"), aliceStamp)
            let asAlice = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("e1"), state: write)]), as: "eve", replica: alice.database.replicaID, to: server)
            #expect(asAlice.status == 403)
            #expect(asAlice.body.contains("bound to device alice"))

            // The server's own replica, with a stamp above the server's clock: before, the
            // server took a new identity. Now refused, and the server keeps its identity.
            let far = Stamp(hlc: HLC(rawValue: clockBefore.rawValue + 1_000), replica: serverReplica)
            var asServer = RecordState(membership: ORSet(dots: [far], context: CausalContext([.init(replica: far.replica, hlc: far.hlc)])), fields: [:])
            asServer.fields["title"] = lww(.text("as server"), far)
            let serverAnswer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("e2"), state: asServer)]), as: "eve", replica: serverReplica, to: server)
            #expect(serverAnswer.status == 403)
            #expect(serverAnswer.body.contains("reserved"))

            for reserved in [ReplicaID.zero, ReplicaID.max] {
                let stamp = Stamp(hlc: HLC(milliseconds: 1_700_000_000_000), replica: reserved)
                let state = RecordState(membership: ORSet(dots: [stamp], context: CausalContext([.init(replica: reserved, hlc: stamp.hlc)])), fields: [:])
                let answer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("e3"), state: state)]), as: "eve", replica: reserved, to: server)
                #expect(answer.status == 403)
            }
            #expect(try await stored(server, devices: ["alice", "mallory", "eve"]) == before)
            #expect(store.serverReplica == serverReplica)
            #expect(try await store.boundReplica(of: "eve") == nil)

            // Eve with a replica of her own is welcome, and is bound to it by that push.
            let eve = try await Device.make("eve", server: server, in: directory)
            try eve.execute("INSERT INTO notes(id, title) VALUES ('e4', 'honest')")
            try await eve.sync()
            #expect(try await store.boundReplica(of: "eve") == eve.database.replicaID)
        }
    }

    @Test(arguments: Backend.available) func theBindingCommitsWithThePushOrNotAtAll(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let eve = try await Device.make("eve", server: server, in: directory)
            // A refused push (a write as a replica the server never saw) binds nothing.
            let ghost = Stamp(hlc: HLC(milliseconds: 1_700_000_000_000), replica: .random())
            var forged = RecordState(membership: ORSet(dots: [ghost], context: CausalContext([.init(replica: ghost.replica, hlc: ghost.hlc)])), fields: [:])
            forged.fields["title"] = lww(.text("ghost"), ghost)
            let answer = try await push(Changeset(records: [RecordDelta(table: "notes", key: .text("g"), state: forged)]), as: "eve", replica: eve.database.replicaID, to: server)
            #expect(answer.status == 403)
            #expect(try await server.store().boundReplica(of: "eve") == nil)
            #expect(try await server.store().snapshot().records.isEmpty)

            // At the store: a failing `beforeCommit` (where the server writes the binding)
            // rolls the whole apply back.
            let target = try ReplicatedDatabase(DatabaseQueue())
            try await target.writer.write { db in try db.execute(sql: Fixtures.createNotes) }
            try target.replicate(table: "notes", policies: ["amount": .critical])
            try eve.execute("INSERT INTO notes(id, title) VALUES ('x', 'y')")
            struct Crash: Error {}
            #expect(throws: Crash.self) {
                try target.apply(try eve.database.changes(since: 0).changeset, options: .init(author: eve.database.replicaID, beforeCommit: { _ in throw Crash() }))
            }
            #expect(try target.snapshot().records.isEmpty)
            #expect(target.clock == .zero)
        }
    }

    @Test func aYear9999StampStaysQuarantinedAndMovesNoClock() throws {
        let clock = Mutex(UInt64(1_700_000_000_000))
        let store = try ReplicatedDatabase(DatabaseQueue(), configuration: .init(physicalTime: { clock.withLock { $0 } }))
        try store.writer.write { db in try db.execute(sql: Fixtures.createNotes) }
        try store.replicate(table: "notes", policies: ["amount": .critical])
        let before = store.clock
        let year9999 = Stamp(hlc: HLC(milliseconds: HLC.acceptedMillisecondsMax - 1_000), replica: .random())
        var state = RecordState(membership: ORSet(dots: [year9999], context: CausalContext([.init(replica: year9999.replica, hlc: year9999.hlc)])), fields: [:])
        state.fields["title"] = lww(.text("from the future"), year9999)
        #expect(try store.apply(Changeset(records: [RecordDelta(table: "notes", key: .text("f"), state: state)])).quarantinedRecords == 1)
        // The next applies (of honest changes) must not release it: its HLC is past 2^63.
        let honest = Stamp(hlc: HLC(milliseconds: 1_700_000_000_000), replica: .random())
        let write = RecordState(membership: ORSet(dots: [honest], context: CausalContext([.init(replica: honest.replica, hlc: honest.hlc)])), fields: [:])
        clock.withLock { $0 += 1_000 }
        let report = try store.apply(Changeset(records: [RecordDelta(table: "notes", key: .text("h"), state: write)]))
        #expect(report.releasedRecords == 0)
        #expect(try store.quarantinedCount() == 1)
        #expect(store.clock.milliseconds < 1_800_000_000_000)
        #expect(store.clock > before)
        #expect(try store.releaseQuarantine() == 0)
    }

    @Test(arguments: Backend.available) func aTableNameDifferingOnlyInCaseIsRefused(_ backend: Backend) async throws {
        try await TestServer.run(backend) { server, directory in
            let (_, mallory) = try await setUp(server, directory)
            let before = try await stored(server)
            try mallory.execute("INSERT INTO notes(id, title) VALUES ('m2', 'x')")
            let changeset = try mallory.database.changes(since: 0).changeset
            for name in ["NOTES", "Notes"] {
                let renamed = Changeset(records: changeset.records.map { RecordDelta(table: name, key: $0.key, state: $0.state) })
                let answer = try await push(renamed, as: "mallory", replica: mallory.database.replicaID, to: server)
                #expect(answer.status == 400)
                #expect(answer.body.contains("tableNameCase"))
            }
            #expect(try await stored(server) == before)
        }
    }
}

/// Migration: a quarantine written by the previous release (plain bit patterns) still
/// releases in time order after the store is reopened.
@Suite struct QuarantineMigrationTests {
    @Test func aVersion1QuarantineIsMigratedOnOpen() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("converge-migration-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("store.sqlite").path
        let clock = Mutex(UInt64(1_700_000_000_000))
        let configuration = ReplicatedDatabase.Configuration(physicalTime: { clock.withLock { $0 } })
        let ahead = Stamp(hlc: HLC(milliseconds: 1_700_000_000_000 + 3_600_000), replica: .random())
        do {
            let queue = try DatabaseQueue(path: path)
            let store = try ReplicatedDatabase(queue, configuration: configuration)
            try queue.write { db in try db.execute(sql: Fixtures.createNotes) }
            try store.replicate(table: "notes", policies: ["amount": .critical])
            let state = RecordState(membership: ORSet(dots: [ahead], context: CausalContext([.init(replica: ahead.replica, hlc: ahead.hlc)])), fields: [:])
            #expect(try store.apply(Changeset(records: [RecordDelta(table: "notes", key: .text("q"), state: state)])).quarantinedRecords == 1)
            // Rewrite it as release 1 stored it.
            try queue.write { db in
                try db.execute(sql: "UPDATE converge_quarantine SET max_hlc = ?", arguments: [Int64(bitPattern: ahead.hlc.rawValue)])
                try db.execute(sql: "UPDATE converge_identity SET schema_version = 1")
                // Release 1 had no trigger for a critical column written to its shown value.
                try db.execute(sql: "DROP TRIGGER converge_notes_resolve_2")
            }
        }
        let store = try ReplicatedDatabase(try DatabaseQueue(path: path), configuration: configuration)
        #expect(try store.releaseQuarantine() == 0)  // not due yet
        clock.withLock { $0 += 3_600_000 }
        #expect(try store.releaseQuarantine() == 1)
        #expect(try store.writer.read { db in try Int.fetchOne(db, sql: "SELECT schema_version FROM converge_identity") } == 6, "migrated to the current version (6: records keyed by sequence number)")
        let triggers = try store.writer.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'notes' ORDER BY name")
        }
        #expect(triggers == ["converge_notes_delete", "converge_notes_insert", "converge_notes_rekey", "converge_notes_resolve_2", "converge_notes_update"])
    }
}
