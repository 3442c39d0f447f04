import ConvergeCore
import ConvergePostgres
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// Several server instances on one PostgreSQL database (DESIGN §10): devices spread over
/// them converge with each other and with the database, hear of each other's pushes, and
/// instances starting together migrate once.
@Suite(.timeLimit(.minutes(4)), .enabled(if: PostgresFixture.url != nil, "CONVERGE_POSTGRES_URL is not set"))
struct PostgresInstancesTests {
    /// Three instances sharing one fresh database and one token secret.
    func withInstances(_ count: Int = 3, body: ([TestServer], URL, PostgresPlace) async throws -> Void) async throws {
        let place = try await PostgresFixture.create()
        let secret = Fixtures.makeSecret()
        var servers = [TestServer]()
        let directory = try Fixtures.temporaryDirectory()
        do {
            for _ in 0..<count { servers.append(try await TestServer.start(.postgres, shared: place, secret: secret)) }
            try await body(servers, directory, place)
        } catch {
            for server in servers { await server.stop() }
            await PostgresFixture.drop(place)
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        for server in servers { await server.stop() }
        await PostgresFixture.drop(place)
        try? FileManager.default.removeItem(at: directory)
    }

    @Test func devicesOnThreeInstancesPushConcurrentlyAndConverge() async throws {
        try await withInstances { servers, directory, _ in
            var devices = [Device]()
            for index in 0..<6 { devices.append(try await Device.make("device\(index)", server: servers[index % 3], in: directory)) }
            // Every device writes its own notes and the same shared note, then all sync at once.
            for (index, device) in devices.enumerated() {
                for note in 0..<20 { try device.execute("INSERT INTO notes(id, title, amount) VALUES ('d\(index)-\(note)', 'note \(note)', \(note))") }
                try device.execute("INSERT OR REPLACE INTO notes(id, title, body) VALUES ('shared', 'from \(index)', 'b\(index)')")
                try device.execute("INSERT INTO items(id, name, qty) VALUES ('i\(index)', 'thing', \(index))")
            }
            for _ in 0..<3 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for device in devices { group.addTask { _ = try await device.sync() } }
                    try await group.waitForAll()
                }
            }
            for device in devices { _ = try await device.sync() }
            let snapshot = try await servers[0].store().snapshot()
            let expected = 6 * 20 + 1 + 6
            #expect(snapshot.records.count == expected)
            for server in servers { #expect(try await server.store().snapshot() == snapshot, "every instance reads the same database") }
            for device in devices {
                #expect(try device.database.snapshot() == snapshot, "\(device.name) differs from the database")
                #expect(try device.rows("notes") == devices[0].rows("notes"))
            }
            // The materialized table holds what every device shows.
            let store = try #require(try await servers[1].store() as? PostgresNamespaceStore)
            let rows = try await store.materializedRows(of: "notes")
            let expectedRows = 6 * 20 + 1
            #expect(rows.count == expectedRows)
            let shown = try await devices[0].database.writer.read { db in
                try Row.fetchAll(db, sql: "SELECT id, title FROM notes").reduce(into: [String: String]()) { $0[$1["id"]] = $1["title"] }
            }
            for (key, title) in shown {
                let stored: Value? = rows[.text(key)]?["title"]
                #expect(stored == .text(title), "row \(key)")
            }
        }
    }

    @Test func aDeviceListeningOnOneInstanceHearsOfAPushThroughAnother() async throws {
        try await withInstances { servers, directory, _ in
            let listener = try await Device.make(
                "listener", server: servers[2], in: directory, configuration: .init(retry: Fixtures.quickRetry, debounce: .seconds(30)))
            let writer = try await Device.make("writer", server: servers[0], in: directory)
            try await listener.engine.start()
            var listening = false
            for _ in 0..<300 where !listening {
                try await Task.sleep(for: .milliseconds(10))
                listening = servers[2].service.notifier.listenerCount("team") == 1
            }
            #expect(listening)
            try writer.execute("INSERT INTO notes(id, title) VALUES ('live', 'through instance 1')")
            try await writer.sync()
            var arrived = false
            for _ in 0..<300 where !arrived {
                try await Task.sleep(for: .milliseconds(10))
                arrived = try listener.rows("notes").count == 1
            }
            #expect(arrived, "the push through instance 1 reached the device listening on instance 3")
            await listener.engine.stop()
        }
    }

    @Test func instancesStartingTogetherMigrateOnce() async throws {
        let place = try await PostgresFixture.create()
        let storages = try await withThrowingTaskGroup(of: PostgresStorage.self) { group in
            for _ in 0..<3 { group.addTask { try await PostgresStorage(url: place.url, schema: Fixtures.schema, maximumConnections: 2, databaseSchema: place.schema) } }
            var result = [PostgresStorage]()
            for try await storage in group { result.append(storage) }
            return result
        }
        #expect(storages.count == 3)
        // Each writes through its own pool; all see one namespace.
        for storage in storages { _ = try await storage.store(for: "team") }
        #expect(try await storages[0].namespaces() == ["team"])
        for storage in storages { await storage.shutdown() }
        await PostgresFixture.drop(place)
    }

    @Test func aMalformedURLAndAnUnsupportedSchemaAreExplained() async throws {
        await #expect(throws: PostgresConfigurationError.self) { try await PostgresStorage(url: "mysql://x@127.0.0.1/db") }
        await #expect(throws: PostgresConfigurationError.self) { try await PostgresStorage(url: "postgres://127.0.0.1/db") }
        // A schema the SQLite server refuses is refused the same way (it is read by the same code).
        let composite = ServerSchema(tables: [.init(name: "pairs", create: "CREATE TABLE pairs(a TEXT, b TEXT, PRIMARY KEY (a, b))")])
        await #expect(throws: SchemaError.self) { try await PostgresStorage(url: PostgresFixture.url!, schema: composite) }
        await #expect(throws: PostgresConfigurationError.self) { try await PostgresStorage(url: PostgresFixture.url!, databaseSchema: "Robert'); DROP") }
    }

    @Test func serverWritesGoThroughThePlannerAndReachDevices() async throws {
        try await withInstances(2) { servers, directory, _ in
            let device = try await Device.make("device", server: servers[1], in: directory)
            try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'device')")
            try await device.sync()
            try await servers[0].service.write(.upsert(table: "notes", key: .text("n"), values: ["body": .text("from the server")]), in: "team")
            try await servers[0].service.write(.upsert(table: "notes", key: .text("s"), values: ["title": .text("server's own")]), in: "team")
            await #expect(throws: SchemaError.self) { try await servers[0].service.write(.upsert(table: "nope", key: .text("x"), values: [:]), in: "team") }
            await #expect(throws: RecordNotFound.self) { try await servers[0].service.write(.delete(table: "notes", key: .text("missing")), in: "team") }
            // SQL runs only on a namespace that is one SQLite database: refused, nothing written.
            let refused = await #expect(throws: ServiceError.self) { try await servers[0].service.write(in: "team") { db in try db.execute(sql: "DELETE FROM notes") } }
            #expect(refused?.status == 404)
            try await device.sync()
            let rows = try await device.database.writer.read { db in
                try Row.fetchAll(db, sql: "SELECT id, title, body FROM notes ORDER BY id").map { "\($0["id"] as String):\($0["title"] as String? ?? "-"):\($0["body"] as String? ?? "-")" }
            }
            #expect(rows == ["n:device:from the server", "s:server's own:-"])
            #expect(try device.database.snapshot() == (try await servers[1].store().snapshot()))
        }
    }

    @Test func unwrittenColumnsShowTheirConstantDefaultsAndKeepTheirValuesOnUpdate() async throws {
        let schema = ServerSchema(tables: [
            ServerSchema.Table(
                name: "tasks",
                create: "CREATE TABLE tasks(id TEXT PRIMARY KEY NOT NULL, title TEXT, status TEXT DEFAULT 'open', priority INTEGER DEFAULT (3), created TEXT DEFAULT CURRENT_TIMESTAMP)")
        ])
        let server = try await TestServer.start(.postgres, schema: schema)
        do {
            let store = try #require(try await server.store() as? PostgresNamespaceStore)
            try await server.service.write(.upsert(table: "tasks", key: .text("t"), values: ["title": .text("first")]), in: "team")
            #expect(try await store.materializedRows(of: "tasks") == [
                .text("t"): ["title": .text("first"), "status": .text("open"), "priority": .integer(3), "created": .null],
            ], "constant defaults as in SQLite; a default computed per row stays NULL")
            try await server.service.write(.upsert(table: "tasks", key: .text("t"), values: ["status": .text("done")]), in: "team")
            try await server.service.write(.upsert(table: "tasks", key: .text("t"), values: ["title": .text("second")]), in: "team")
            #expect(try await store.materializedRows(of: "tasks")[.text("t")] == ["title": .text("second"), "status": .text("done"), "priority": .integer(3), "created": .null])
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test func theOperatorPageListsNamespacesAndTheirSizeFromTheDatabase() async throws {
        try await withInstances(2) { servers, directory, _ in
            let storage = try #require(servers[0].service.storage as? PostgresStorage)
            #expect(try await storage.namespaces(limit: 10).total == 0)
            for namespace in ["team", "other"] {
                let device = try await Device.make("d", server: servers[1], namespace: namespace, in: directory)
                try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
                try await device.sync()
            }
            let listed = try await storage.namespaces(limit: 1)
            #expect(listed.names == ["other"] && listed.total == 2)
            #expect(try await storage.storedBytes(of: "team") ?? 0 > 0)
            #expect(try await storage.storedBytes(of: "missing") == nil)
        }
    }
}
