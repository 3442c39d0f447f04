import ConvergeCore
import ConvergePostgres
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// Unique constraints as conflicts (DESIGN §4) end to end: devices and the server over
/// HTTP, the server's schema declaring the unique index.
@Suite(.timeLimit(.minutes(3))) struct ConstraintSyncTests {
    static let createPeople = "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email, name)"
    static let schema = ServerSchema(tables: Fixtures.schema.tables + [
        .init(name: "people", create: createPeople, uniqueIndexes: [UniqueIndex(name: "people_email", columns: ["email"])]),
    ])

    /// A device with `people(id, email UNIQUE, name)` beside the usual tables.
    func device(_ name: String, server: TestServer, in directory: URL) async throws -> Device {
        let device = try await Device.make(name, server: server, in: directory)
        try device.execute(Self.createPeople)
        try device.execute("CREATE UNIQUE INDEX people_email ON people(email)")
        try device.database.replicate(table: "people", allowUniqueIndexes: true)
        return device
    }

    /// The server's `people` rows, formatted as GRDB rows: its SQLite app table, or the
    /// PostgreSQL table that backend services read.
    func serverPeople(_ server: TestServer) async throws -> [String] {
        if let store = try await server.store() as? PostgresNamespaceStore {
            func cell(_ value: Value?) -> String {
                guard case .text(let text)? = value else { return "NULL" }
                return "\"\(text)\""
            }
            return try await store.materializedRows(of: "people").sorted { $0.key < $1.key }.map { key, values in
                "[id:\(cell(key)) email:\(cell(values["email"])) name:\(cell(values["name"]))]"
            }
        }
        let store = try #require(try await server.store() as? SQLiteNamespaceStore)
        return try await store.database.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM people ORDER BY id").map { "\($0)" } }
    }

    func listed(_ server: TestServer) async throws -> [String: Any] {
        let answer = try await server.get("/v1/conflicts", token: try await server.token(device: "device0"))
        #expect(answer.status == 200)
        return try #require(try JSONSerialization.jsonObject(with: answer.body) as? [String: Any])
    }

    @Test(arguments: Backend.available) func twoDevicesCreateTheSameEmailOfflineThenOneIsEdited(_ backend: Backend) async throws {
        try await TestServer.run(backend, schema: Self.schema) { server, directory in
            let a = try await device("device0", server: server, in: directory)
            let b = try await device("device1", server: server, in: directory)
            let c = try await device("device2", server: server, in: directory)
            let devices = [a, b, c]

            // Offline, both create ann@example.com; a first. b makes other changes too.
            try a.execute("INSERT INTO people(id, email, name) VALUES ('pa', 'ann@example.com', 'Ann on A')")
            try await Task.sleep(for: .milliseconds(5))
            try b.execute("INSERT INTO people(id, email, name) VALUES ('pb', 'ann@example.com', 'Ann on B')")
            try b.execute("INSERT INTO people(id, email, name) VALUES ('bob', 'bob@example.com', 'Bob')")
            try b.execute("INSERT INTO notes(id, title) VALUES ('n', 'same sync')")
            // b syncs first: its push meets a's on the server, and never fails for it.
            for _ in 0..<2 { for device in [b, a, c] { try await device.sync() } }

            let shown = [
                #"[id:"bob" email:"bob@example.com" name:"Bob"]"#,
                #"[id:"pa" email:"ann@example.com" name:"Ann on A"]"#,
            ]
            let serverConflicts = try await server.store().conflicts()
            let serverSnapshot = try await server.store().snapshot()
            #expect(try await serverPeople(server) == shown)
            #expect(serverConflicts.count == 1)
            let clash = try #require(serverConflicts.first?.constraint)
            #expect(clash.table == "people" && clash.index == "people_email" && clash.columns == ["email"])
            #expect(clash.values == [.text("ann@example.com")])
            #expect(clash.holder.key == .text("pa"))
            #expect(clash.held.map(\.key) == [.text("pb")])
            #expect(clash.held.first?.values["name"] == .text("Ann on B"))
            for device in devices {
                #expect(try device.rows("people") == shown, "\(device.name)")
                #expect(try device.rows("notes").count == 1, "\(device.name): the other changes of the sync flowed")
                #expect(try device.database.conflicts() == serverConflicts, "\(device.name)")
                #expect(try device.database.snapshot() == serverSnapshot, "\(device.name)")
                await device.engine.refreshStatus()
                #expect(await device.engine.status.conflicts == 1)
            }

            // The server lists it beside the field conflicts, and counts it.
            let json = try await listed(server)
            #expect((json["conflicts"] as? [Any])?.isEmpty == true)
            let constraints = try #require(json["constraints"] as? [[String: Any]])
            #expect(constraints.count == 1)
            let listedClash = try #require(constraints.first)
            #expect(listedClash["table"] as? String == "people")
            #expect(listedClash["index"] as? String == "people_email")
            #expect(listedClash["columns"] as? [String] == ["email"])
            #expect(listedClash["values"] as? [String] == ["ann@example.com"])
            let holder = try #require(listedClash["holder"] as? [String: Any])
            #expect(holder["key"] as? String == "pa")
            #expect((holder["values"] as? [String: Any])?["name"] as? String == "Ann on A")
            let holderStamp = try #require(holder["stamp"] as? [String: Any])
            #expect(holderStamp["replica"] as? String == clash.holder.stamp.replica.uuidString())
            #expect((holderStamp["hlc"] as? NSNumber)?.uint64Value == clash.holder.stamp.hlc.rawValue)
            let held = try #require(listedClash["held"] as? [[String: Any]])
            #expect(held.map { $0["key"] as? String } == ["pb"])
            #expect((held.first?["values"] as? [String: Any])?["email"] as? String == "ann@example.com")
            let status = try await server.get("/v1/status", token: try await server.token(device: "device0"))
            #expect((try JSONSerialization.jsonObject(with: status.body) as? [String: Any])?["conflicts"] as? Int == 1)

            // b edits its held record's e-mail through Converge: it shows everywhere.
            try b.database.update(table: "people", key: .text("pb"), values: ["email": .text("ann@b.example.com")])
            for _ in 0..<2 { for device in devices { try await device.sync() } }
            let resolved = [
                #"[id:"bob" email:"bob@example.com" name:"Bob"]"#,
                #"[id:"pa" email:"ann@example.com" name:"Ann on A"]"#,
                #"[id:"pb" email:"ann@b.example.com" name:"Ann on B"]"#,
            ]
            #expect(try await serverPeople(server) == resolved)
            #expect(try await server.store().conflicts().isEmpty)
            for device in devices {
                #expect(try device.rows("people") == resolved, "\(device.name)")
                #expect(try device.database.conflicts().isEmpty, "\(device.name)")
                #expect(try device.database.snapshot() == (try await server.store().snapshot()), "\(device.name)")
            }
            let after = try await listed(server)
            #expect((after["constraints"] as? [Any])?.isEmpty == true)
        }
    }
}
