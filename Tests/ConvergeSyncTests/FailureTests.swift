import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Synchronization
import Testing

/// Bad input is answered as specified and changes nothing stored; transient failures retry.
@Suite(.timeLimit(.minutes(3))) struct FailureTests {
    /// What the server stores for a namespace: merge states, feed position, a device binding.
    func stored(_ server: TestServer, device: String = "device") async throws -> (Changeset, UInt64, ReplicaID?) {
        let store = try await server.store()
        return (try await store.snapshot(), try await store.head(), try await store.boundReplica(of: device))
    }

    func withServer(maxBodyBytes: Int = 8 << 20, _ body: (TestServer, URL) async throws -> Void) async throws {
        try await TestServer.run(maxBodyBytes: maxBodyBytes, body)
    }

    @Test func sameBatchRetriedThreeTimesEqualsOnce() async throws {
        try await withServer { server, directory in
            let device = try await Device.make("device", server: server, in: directory)
            try await device.database.writer.write { db in
                for index in 0..<20 { try db.execute(sql: "INSERT INTO notes(id, title) VALUES (?, ?)", arguments: ["n\(index)", "\(index)"]) }
            }
            let batch = try device.database.changes(since: 0)
            let request = SyncRequest(replica: device.database.replicaID, pushUpTo: batch.next, changeset: WireEncoder.encode(batch.changeset), pull: false)
            let transport = HTTPSyncTransport(baseURL: server.baseURL)
            let token = try await server.token(device: "device")
            let first = try await transport.send(request, token: token)
            #expect(first.acknowledged == batch.next)
            let once = try await stored(server)
            #expect(once.0.records.count == 20)
            for _ in 0..<2 {
                let again = try await transport.send(request, token: token)
                #expect(again.acknowledged == batch.next)
            }
            let thrice = try await stored(server)
            #expect(thrice.0 == once.0)
            #expect(thrice.1 == once.1)  // not even the feed moved
            // And the engine's round then finds nothing new to push.
            let report = try await device.sync()
            #expect(report.pushedRecords == 20)  // its cursor had not moved: pushed again, harmlessly
            #expect(try await stored(server).0 == once.0)
        }
    }

    @Test func badOrMissingTokenIs401AndRefreshIsTriedOnce() async throws {
        try await withServer { server, directory in
            #expect(try await server.post(SyncRequest(replica: .random()).encoded(), token: nil).status == 401)
            #expect(try await server.post(SyncRequest(replica: .random()).encoded(), token: "not.a.jwt").status == 401)
            #expect(try await server.get("/v1/status", token: nil).status == 401)
            #expect(try await server.get("/v1/conflicts", token: "garbage").status == 401)

            let refreshes = Mutex(0)
            let stale = try await Authenticator(secret: "another secret, long enough for HS256 keys").token(namespace: "team", device: "device")
            let denied = try await Device.make("device", server: server, in: directory, token: stale, refreshToken: {
                refreshes.withLock { $0 += 1 }
                return stale
            })
            try denied.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
            await #expect(throws: SyncError.self) { try await denied.sync() }
            #expect(refreshes.withLock { $0 } == 1)
            if case .unauthorized = await denied.engine.status.lastError {} else { Issue.record("expected unauthorized") }
            #expect(await denied.engine.status.phase == .error)
            #expect(try await stored(server).0.records.isEmpty)

            let good = try await server.token(device: "device")
            let refreshed = try await Device.make("device", server: server, in: directory, token: stale, refreshToken: {
                refreshes.withLock { $0 += 1 }
                return good
            })
            try refreshed.execute("INSERT INTO notes(id, title) VALUES ('m', 'y')")
            try await refreshed.sync()
            #expect(refreshes.withLock { $0 } == 2)
            #expect(try await stored(server).0.records.count == 1)
        }
    }

    @Test func writingAsAnotherReplicaIs403() async throws {
        try await withServer { server, directory in
            let honest = try await Device.make("device", server: server, in: directory)
            try honest.execute("INSERT INTO notes(id, title) VALUES ('mine', 'ok')")
            try await honest.sync()
            let before = try await stored(server)
            #expect(before.2 == honest.database.replicaID)

            // A changeset stamped by a replica the server has never heard of.
            let ghost = try ReplicatedDatabase(DatabaseQueue())
            try await ghost.writer.write { db in try db.execute(sql: Fixtures.createNotes) }
            try ghost.replicate(table: "notes", policies: ["amount": .critical])
            try await ghost.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('forged', 'evil')") }
            let forged = try ghost.changes(since: 0).changeset
            let token = try await server.token(device: "device")
            let request = SyncRequest(replica: honest.database.replicaID, pushUpTo: 1, changeset: WireEncoder.encode(forged))
            let answer = try await server.post(request.encoded(), token: token)
            #expect(answer.status == 403)
            #expect(answer.body.contains("does not hold"))

            // The same device from another database (another replica) is refused too.
            let impostor = try await Device.make("device", server: server, in: directory)
            try impostor.execute("INSERT INTO notes(id, title) VALUES ('other', 'x')")
            await #expect(throws: SyncError.self) { try await impostor.sync() }
            if case .forbidden = await impostor.engine.status.lastError {} else { Issue.record("expected forbidden") }

            // Relaying what the server already holds is fine.
            let relay = try await Device.make("relay", server: server, in: directory)
            try await relay.sync()
            try relay.execute("UPDATE notes SET body = 'relayed' WHERE id = 'mine'")
            try await relay.sync()

            let after = try await stored(server)
            #expect(after.0.records.count == 1)
            #expect(after.2 == before.2)
        }
    }

    @Test func oversizeBodyIs413() async throws {
        try await withServer(maxBodyBytes: 16 << 10) { server, directory in
            let device = try await Device.make("device", server: server, in: directory)
            try device.execute("INSERT INTO notes(id, body) VALUES ('big', ?)", [String(repeating: "x", count: 40_000)])
            await #expect(throws: SyncError.self) { try await device.sync() }
            if case .rejected(413, _) = await device.engine.status.lastError {} else {
                Issue.record("expected 413, got \(String(describing: await device.engine.status.lastError))")
            }
            #expect(try await stored(server).0.records.isEmpty)
            #expect(try await stored(server).2 == nil)
        }
    }

    @Test func corruptBodyIs400WithTheDecodersReason() async throws {
        try await withServer { server, directory in
            let token = try await server.token(device: "device")
            let garbage = try await server.post(Array("hello".utf8), token: token)
            #expect(garbage.status == 400)
            #expect(garbage.body.contains("too short") || garbage.body.contains("bad magic"))

            let device = try await Device.make("device", server: server, in: directory)
            try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'fine')")
            var bytes = WireEncoder.encode(try device.database.changes(since: 0).changeset)
            bytes[bytes.count / 2] ^= 0xFF
            let corrupt = SyncRequest(replica: device.database.replicaID, pushUpTo: 1, changeset: bytes)
            let answer = try await server.post(corrupt.encoded(), token: token)
            #expect(answer.status == 400)
            #expect(answer.body.contains("changeset: wire error"))

            var truncated = SyncRequest(replica: device.database.replicaID, changeset: [1, 2, 3]).encoded()
            truncated.removeLast(2)
            let cut = try await server.post(truncated, token: token)
            #expect(cut.status == 400)
            #expect(cut.body.contains("exceeds"))

            let after = try await stored(server)
            #expect(after.0.records.isEmpty)
            #expect(after.2 == nil)
        }
    }

    @Test func serverErrorsAreRetriedWithBackoff() async throws {
        try await withServer { server, directory in
            let failures = Mutex(2)
            let service = server.service
            let flaky = InMemorySyncTransport { body, authorization in
                if failures.withLock({ count in defer { count -= 1 }; return count > 0 }) {
                    return (503, Array(#"{"error":{"code":"unavailable","message":"try later"}}"#.utf8))
                }
                let answer = await service.sync(body: body, authorization: authorization)
                return (answer.status, answer.body)
            }
            let queue = try DatabaseQueue(path: directory.appendingPathComponent("flaky.sqlite").path)
            try await queue.write { db in try db.execute(sql: Fixtures.createNotes) }
            let database = try ReplicatedDatabase(queue)
            try database.replicate(table: "notes", policies: ["amount": .critical])
            let engine = try SyncEngine(
                database: database, transport: flaky, configuration: .init(retry: Fixtures.quickRetry),
                token: try await server.token(device: "flaky"))
            try await database.writer.write { db in try db.execute(sql: "INSERT INTO notes(id) VALUES ('n')") }
            let report = try await engine.sync()
            #expect(report.retries == 2)
            #expect(report.pushedRecords == 1)
            #expect(try await stored(server).0.records.count == 1)
        }
    }

    @Test func unreachableServerIsOfflineAfterRetries() async throws {
        let directory = try Fixtures.temporaryDirectory()
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("offline.sqlite").path)
        try await queue.write { db in try db.execute(sql: Fixtures.createNotes) }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "notes", policies: ["amount": .critical])
        // Nothing listens on port 1.
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: URL(string: "http://127.0.0.1:1")!),
            configuration: .init(retry: Fixtures.quickRetry), token: "unused")
        try await queue.write { db in try db.execute(sql: "INSERT INTO notes(id) VALUES ('n')") }
        await #expect(throws: SyncError.self) { try await engine.sync() }
        let status = await engine.status
        #expect(status.phase == .offline)
        if case .offline = status.lastError {} else { Issue.record("expected offline, got \(String(describing: status.lastError))") }
        #expect(status.pendingChanges == 1)
        #expect(try engine.log().first?.result == "error")
        #expect(try database.cursor(for: "server") == ReplicatedDatabase.PeerCursor())
        try? FileManager.default.removeItem(at: directory)
    }
}
