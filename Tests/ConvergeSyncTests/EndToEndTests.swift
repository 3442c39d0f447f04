import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// One server on loopback, three devices with their own SQLite files, HTTP in between.
@Suite(.timeLimit(.minutes(3))) struct EndToEndTests {
    func withDevices(
        _ count: Int = 3, backend: Backend = .sqlite, configuration: SyncEngine.Configuration = SyncEngine.Configuration(retry: Fixtures.quickRetry),
        body: (TestServer, [Device]) async throws -> Void
    ) async throws {
        try await TestServer.run(backend) { server, directory in
            var devices = [Device]()
            for index in 0..<count { devices.append(try await Device.make("device\(index)", server: server, in: directory, configuration: configuration)) }
            try await body(server, devices)
        }
    }

    /// Syncs every device (twice, so each sees what the others pushed) and checks they
    /// and the server hold the same merge state and the same rows.
    func converge(_ server: TestServer, _ devices: [Device]) async throws {
        // Three rounds: the last tells every device what the server collected in the second.
        for _ in 0..<3 { for device in devices { try await device.sync() } }
        let serverSnapshot = try await server.store().snapshot()
        for device in devices {
            #expect(try device.database.snapshot() == serverSnapshot, "\(device.name) differs from the server")
            #expect(try device.rows("notes") == devices[0].rows("notes"))
            #expect(try device.rows("items") == devices[0].rows("items"))
        }
    }

    @Test(arguments: Backend.available) func offlineEditsReachEveryDevice(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b, c) = (devices[0], devices[1], devices[2])
            try a.execute("INSERT INTO notes(id, title, amount) VALUES ('n1', 'groceries', 3)")
            try a.execute("INSERT INTO notes(id, title) VALUES ('n2', 'call mom')")
            try a.execute("UPDATE notes SET title = 'groceries!' WHERE id = 'n1'")
            try a.execute("INSERT INTO items(id, name, qty) VALUES ('i1', 'pen', 2)")
            await a.engine.refreshStatus()
            #expect(await a.engine.status.pendingChanges == 3)
            let report = try await a.sync()
            #expect(report.pushedRecords == 3)
            #expect(await a.engine.status.pendingChanges == 0)
            #expect(await a.engine.status.lastSuccess != nil)
            try await b.sync()
            try await c.sync()
            #expect(try c.rows("notes") == a.rows("notes"))
            #expect(try c.rows("notes").count == 2)
            #expect(try b.rows("items") == a.rows("items"))
            try await converge(server, devices)
            let log = try a.engine.log()
            #expect(log.count >= 1 && log.allSatisfy { $0.result == "ok" })
        }
    }

    @Test(arguments: Backend.available) func lastWriterWinsOnTheSameField(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b) = (devices[0], devices[1])
            try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'first')")
            try await converge(server, devices)
            try a.execute("UPDATE notes SET title = 'from a' WHERE id = 'n'")
            try await Task.sleep(for: .milliseconds(5))
            try b.execute("UPDATE notes SET title = 'from b', body = 'b body' WHERE id = 'n'")
            try await converge(server, devices)
            for device in devices {
                let title = try await device.database.writer.read { db in try String.fetchOne(db, sql: "SELECT title FROM notes WHERE id = 'n'") }
                #expect(title == "from b")
            }
        }
    }

    @Test(arguments: Backend.available) func criticalFieldConflictIsSharedThenResolved(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b, c) = (devices[0], devices[1], devices[2])
            try a.execute("INSERT INTO notes(id, title, amount) VALUES ('n', 'rent', 100)")
            try await converge(server, devices)
            try a.execute("UPDATE notes SET amount = 110 WHERE id = 'n'")
            try b.execute("UPDATE notes SET amount = 120 WHERE id = 'n'")
            try await converge(server, devices)
            for device in devices {
                let conflicts = try device.database.conflicts()
                #expect(conflicts.count == 1)
                let siblings: [MVRegister.Sibling] = conflicts.first?.field?.siblings ?? []
                #expect(Set(siblings.map(\.value)) == [Value.integer(110), .integer(120)])
                #expect(await device.engine.status.conflicts == 1)
            }
            let listed = try await server.get("/v1/conflicts", token: try await server.token(device: "device0"))
            #expect(listed.status == 200)
            let json = try JSONSerialization.jsonObject(with: listed.body) as? [String: Any]
            #expect((json?["conflicts"] as? [Any])?.count == 1)

            try c.database.resolve(table: "notes", key: .text("n"), column: "amount", to: .integer(115))
            try await converge(server, devices)
            for device in devices {
                #expect(try device.database.conflicts().isEmpty)
                #expect(await device.engine.status.conflicts == 0)
                let amount = try await device.database.writer.read { db in try Int.fetchOne(db, sql: "SELECT amount FROM notes WHERE id = 'n'") }
                #expect(amount == 115)
            }
            #expect(try await server.store().conflicts().isEmpty)
        }
    }

    @Test(arguments: Backend.available) func updateRacingDeleteUnderBothPolicies(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b) = (devices[0], devices[1])
            try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'kept')")
            try a.execute("INSERT INTO items(id, name) VALUES ('i', 'gone')")
            try await converge(server, devices)
            // Concurrently: a deletes both, b edits both.
            try a.execute("DELETE FROM notes WHERE id = 'n'")
            try a.execute("DELETE FROM items WHERE id = 'i'")
            try b.execute("UPDATE notes SET body = 'edited' WHERE id = 'n'")
            try b.execute("UPDATE items SET name = 'edited' WHERE id = 'i'")
            try await converge(server, devices)
            for device in devices {
                // notes: update wins, the whole record comes back with the edit.
                #expect(try device.rows("notes").count == 1)
                let body = try await device.database.writer.read { db in try String.fetchOne(db, sql: "SELECT body FROM notes WHERE id = 'n'") }
                #expect(body == "edited")
                // items: delete wins.
                #expect(try device.rows("items").isEmpty)
            }
            // And the other way round: delete after seeing the edit removes under both policies.
            try b.execute("DELETE FROM notes WHERE id = 'n'")
            try await converge(server, devices)
            for device in devices { #expect(try device.rows("notes").isEmpty) }
        }
    }

    @Test(arguments: Backend.available) func createCreateAndDifferentFieldsMerge(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b) = (devices[0], devices[1])
            try a.execute("INSERT INTO notes(id, title) VALUES ('same', 'a title')")
            try b.execute("INSERT INTO notes(id, body) VALUES ('same', 'b body')")
            try await converge(server, devices)
            try a.execute("UPDATE notes SET title = 'a2' WHERE id = 'same'")
            try b.execute("UPDATE notes SET body = 'b2' WHERE id = 'same'")
            try await converge(server, devices)
            for device in devices {
                let row = try device.database.writer.read { db in try Row.fetchOne(db, sql: "SELECT title, body FROM notes WHERE id = 'same'") }
                #expect(row?["title"] == "a2")
                #expect(row?["body"] == "b2")
            }
        }
    }

    /// A batch is cut by its field states too, not only by records and bytes: a wide table
    /// with small values would otherwise make a batch the server refuses for its size.
    @Test func pushedBatchesAreCutByFieldCount() async throws {
        var configuration = SyncEngine.Configuration(retry: Fixtures.quickRetry)
        configuration.pushBatchFields = 6
        try await withDevices(1, configuration: configuration) { server, devices in
            let a = devices[0]
            try await a.database.writer.write { db in
                for index in 0..<20 {
                    try db.execute(sql: "INSERT INTO notes(id, title, amount) VALUES (?, ?, ?)", arguments: ["n\(index)", "note \(index)", index])
                }
            }
            let fieldsPerRecord = try a.database.changes(since: 0, maxRecords: 1).changeset.fieldCount
            #expect(fieldsPerRecord >= 2)
            let report = try await a.sync()
            #expect(report.pushedRecords == 20)
            // At most 6 fields per request: 20 records in no fewer than 20 / (6 / fields) requests.
            #expect(report.requests >= 20 / max(1, 6 / fieldsPerRecord))
            #expect(try await server.store().snapshot().records.count == 20)
        }
    }

    @Test(arguments: Backend.available) func thousandOfflineChangesPushedInBatchesOfAHundred(_ backend: Backend) async throws {
        try await withDevices(2, backend: backend, configuration: .init(pushBatchRecords: 100, retry: Fixtures.quickRetry)) { server, devices in
            let (a, b) = (devices[0], devices[1])
            try await a.database.writer.write { db in
                for index in 0..<1_000 {
                    try db.execute(sql: "INSERT INTO notes(id, title, amount) VALUES (?, ?, ?)", arguments: ["n\(index)", "note \(index)", index])
                }
            }
            await a.engine.refreshStatus()
            #expect(await a.engine.status.pendingChanges == 1_000)
            let report = try await a.sync()
            #expect(report.pushedRecords == 1_000)
            #expect(report.requests >= 10)
            #expect(report.pulledRecords == 0)  // its own changes are not echoed back
            #expect(try await server.store().snapshot().records.count == 1_000)
            // Nor pulled back by the next round: the server said which part of its feed
            // was the push itself.
            let next = try await a.sync()
            #expect(next.pulledRecords == 0)
            let pulled = try await b.sync()
            #expect(pulled.pulledRecords == 1_000)
            #expect(try b.rows("notes").count == 1_000)
            #expect(try b.rows("notes") == a.rows("notes"))
            #expect(try a.database.snapshot() == b.database.snapshot())
            // What b pulled is not pushed back: its next round pushes nothing.
            await b.engine.refreshStatus()
            #expect(await b.engine.status.pendingChanges == 0)
            let again = try await b.sync()
            #expect(again.pushedRecords == 0)
            // Then b writes: a pulls exactly that.
            try b.execute("UPDATE notes SET title = 'edited' WHERE id = 'n7'")
            try await b.sync()
            #expect(try await a.sync().pulledRecords == 1)
            #expect(try a.rows("notes") == b.rows("notes"))
        }
    }

    @Test(arguments: Backend.available) func statusStreamReportsARound(_ backend: Backend) async throws {
        try await withDevices(1, backend: backend) { _, devices in
            let device = devices[0]
            try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
            await device.engine.refreshStatus()
            let updates = await device.engine.statusUpdates()
            let collector = Task {
                var seen = [SyncStatus]()
                for await status in updates {
                    seen.append(status)
                    if status.phase == .idle && status.lastSuccess != nil { break }
                }
                return seen
            }
            try await device.sync()
            let seen = await collector.value
            #expect(seen.first?.pendingChanges == 1)
            #expect(seen.contains { if case .syncing = $0.phase { true } else { false } })
            #expect(seen.last?.pendingChanges == 0)
            #expect(seen.last?.lastError == nil)
        }
    }

    @Test(arguments: Backend.available) func debouncedRoundAfterLocalWrites(_ backend: Backend) async throws {
        let server = try await TestServer.start(backend)
        let directory = try Fixtures.temporaryDirectory()
        let a = try await Device.make("a", server: server, in: directory, configuration: .init(retry: Fixtures.quickRetry, debounce: .milliseconds(50)))
        let b = try await Device.make("b", server: server, in: directory)
        try await a.engine.start()
        try a.execute("INSERT INTO notes(id, title) VALUES ('n', 'auto')")
        var pushed = false
        for _ in 0..<100 where !pushed {
            try await Task.sleep(for: .milliseconds(20))
            pushed = try await server.store().snapshot().records.count == 1
        }
        await a.engine.stop()
        #expect(pushed)
        try await b.sync()
        #expect(try b.rows("notes") == a.rows("notes"))
        await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite(.timeLimit(.minutes(3))) struct RealtimeTests {
    @Test(arguments: Backend.available) func aListeningDevicePullsWhenAnotherPushes(_ backend: Backend) async throws {
        let server = try await TestServer.start(backend)
        let directory = try Fixtures.temporaryDirectory()
        // A long debounce: only the server's notification can bring the change in time.
        let listener = try await Device.make("listener", server: server, in: directory, configuration: .init(retry: Fixtures.quickRetry, debounce: .seconds(30)))
        let writer = try await Device.make("writer", server: server, in: directory)
        try await listener.engine.start()
        var listening = false
        for _ in 0..<200 where !listening {
            try await Task.sleep(for: .milliseconds(10))
            listening = server.service.notifier.listenerCount("team") == 1
        }
        #expect(listening)
        try writer.execute("INSERT INTO notes(id, title) VALUES ('live', 'hello')")
        try await writer.sync()
        var arrived = false
        for _ in 0..<200 where !arrived {
            try await Task.sleep(for: .milliseconds(10))
            arrived = try listener.rows("notes").count == 1
        }
        #expect(arrived)
        await listener.engine.stop()  // the server drops the stream at its next heartbeat
        await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
