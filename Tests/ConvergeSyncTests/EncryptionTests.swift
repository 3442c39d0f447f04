import ConvergeCore
import ConvergeServer
import ConvergeSQLite
@testable import ConvergeSync
import Crypto
import Foundation
import GRDB
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Field-level encryption end to end (DESIGN §11): devices with the key converge in
/// plaintext, the server holds and sends only ciphertext, a device without the key holds
/// and reports, rotation, and conflicts on an encrypted critical column.
@Suite(.timeLimit(.minutes(3))) struct EncryptionTests {
    static let createSecrets = "CREATE TABLE secrets(id TEXT PRIMARY KEY NOT NULL, title, body, amount)"
    static let createCards = "CREATE TABLE cards(id TEXT PRIMARY KEY NOT NULL, name, pin)"
    static let schema = ServerSchema(tables: [
        .init(name: "secrets", create: createSecrets, policies: ["amount": .critical], encrypted: ["body", "amount"]),
        .init(name: "cards", create: createCards, deletePolicy: .deleteWins, encrypted: ["pin"]),
    ])

    let key1 = SymmetricKey(size: .bits256)
    let key2 = SymmetricKey(size: .bits256)

    func device(_ name: String, server: TestServer, in directory: URL, keys: FieldKeys?) async throws -> Device {
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("\(name)-\(UUID().uuidString).sqlite").path)
        try await queue.write { db in
            try db.execute(sql: Self.createSecrets)
            try db.execute(sql: Self.createCards)
        }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "secrets", policies: ["amount": .critical], encrypted: ["body", "amount"])
        try database.replicate(table: "cards", deletePolicy: .deleteWins, encrypted: ["pin"])
        var configuration = SyncEngine.Configuration(retry: Fixtures.quickRetry)
        configuration.fieldKeys = keys
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: server.baseURL), configuration: configuration,
            token: try await server.token(device: name))
        return Device(name: name, database: database, engine: engine)
    }

    func value(_ device: Device, _ sql: String) throws -> DatabaseValue {
        try device.database.writer.read { db in try DatabaseValue.fetchOne(db, sql: sql) ?? .null }
    }

    /// Every byte of the server's files (database, WAL, anything else it wrote).
    func serverFiles(_ server: TestServer) throws -> [UInt8] {
        var bytes = [UInt8]()
        let files = FileManager.default.enumerator(at: server.directory, includingPropertiesForKeys: nil)
        while let url = files?.nextObject() as? URL {
            if let data = FileManager.default.contents(atPath: url.path) { bytes += data }
        }
        return bytes
    }

    /// The raw bytes of a full pull, as any client of the namespace would receive them.
    func rawPull(_ server: TestServer) async throws -> [UInt8] {
        let token = try await server.token(device: "snoop")
        let body = SyncRequest(replica: .random(), pull: true, pullCursor: 0).encoded()
        var request = URLRequest(url: server.baseURL.appendingPathComponent("v1/sync"))
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        let (data, response) = try await URLSession.shared.data(for: request)
        #expect((response as! HTTPURLResponse).statusCode == 200)
        return Array(data)
    }

    @Test(arguments: Backend.available) func devicesWithTheKeyConvergeAndTheServerSeesNoPlaintext(_ backend: Backend) async throws {
        try await TestServer.run(backend, schema: Self.schema) { server, directory in
            let keys = try FieldKeys(id: "k1", key: key1)
            let a = try await device("a", server: server, in: directory, keys: keys)
            let b = try await device("b", server: server, in: directory, keys: keys)
            try a.execute("INSERT INTO secrets(id, title, body, amount) VALUES ('s1', 'open title', 'PLAINTEXT-BODY-7f3a', 'PLAINTEXT-AMOUNT-91c2')")
            try a.execute("INSERT INTO cards(id, name, pin) VALUES ('c1', 'visa', 'PLAINTEXT-PIN-55e1')")
            try await a.sync()
            try await b.sync()
            #expect(try b.rows("secrets") == a.rows("secrets"))
            #expect(try b.rows("cards") == a.rows("cards"))
            #expect(try value(b, "SELECT body FROM secrets WHERE id = 's1'") == "PLAINTEXT-BODY-7f3a".databaseValue)
            // Edits both ways, then a delete and a re-insert under deleteWins.
            try b.execute("UPDATE secrets SET body = 'PLAINTEXT-BODY-second' WHERE id = 's1'")
            try b.execute("DELETE FROM cards WHERE id = 'c1'")
            try b.execute("INSERT INTO cards(id, name, pin) VALUES ('c1', 'amex', 'PLAINTEXT-PIN-again')")
            for _ in 0..<2 { try await b.sync(); try await a.sync() }
            #expect(try a.rows("secrets") == b.rows("secrets"))
            #expect(try a.rows("cards") == b.rows("cards"))
            #expect(try value(a, "SELECT pin FROM cards WHERE id = 'c1'") == "PLAINTEXT-PIN-again".databaseValue)
            #expect(await a.engine.status.heldFields == 0)

            // The server holds sealed blobs in the encrypted columns, plaintext elsewhere.
            let snapshot = try await server.store().snapshot()
            let secret = try #require(snapshot.records.first { $0.table == "secrets" })
            guard case .blob = secret.state.value(of: "body") else { Issue.record("body is not sealed on the server"); return }
            #expect(secret.state.value(of: "title") == .text("open title"))
            // Not one byte of plaintext in its files (SQLite: the namespace's database and
            // WAL) or in what it sends.
            let files = backend == .sqlite ? try serverFiles(server) : []
            let pulled = try await rawPull(server)
            if backend == .sqlite { #expect(files.containsBytes(Array("open title".utf8)), "the search itself finds plaintext of open columns") }
            for plaintext in ["PLAINTEXT-BODY-7f3a", "PLAINTEXT-BODY-second", "PLAINTEXT-AMOUNT-91c2", "PLAINTEXT-PIN-55e1", "PLAINTEXT-PIN-again", "PLAINTEXT"] {
                #expect(!files.containsBytes(Array(plaintext.utf8)), "\(plaintext) in the server's files")
                #expect(!pulled.containsBytes(Array(plaintext.utf8)), "\(plaintext) in a pull's bytes")
            }
            #expect(pulled.containsBytes(Array("open title".utf8)))
        }
    }

    @Test(arguments: Backend.available) func aDeviceWithoutTheKeyHoldsReportsThenApplies(_ backend: Backend) async throws {
        try await TestServer.run(backend, schema: Self.schema) { server, directory in
            let a = try await device("a", server: server, in: directory, keys: try FieldKeys(id: "k1", key: key1))
            let c = try await device("c", server: server, in: directory, keys: nil)
            try a.execute("INSERT INTO secrets(id, title, body, amount) VALUES ('s1', 'title', 'hidden body', 7)")
            try await a.sync()
            let report = try await c.sync()
            #expect(report.heldFields == 2)
            #expect(await c.engine.status.heldFields == 2)
            let held = try c.engine.heldFields()
            #expect(held.map(\.column) == ["amount", "body"])
            #expect(held.allSatisfy { $0.reason == .unknownKeyID("k1") })
            // What it can read shows; the held fields do not.
            #expect(try value(c, "SELECT title FROM secrets WHERE id = 's1'") == "title".databaseValue)
            #expect(try value(c, "SELECT body FROM secrets WHERE id = 's1'") == .null)
            // A second round holds the same, once.
            try await c.sync()
            #expect(await c.engine.status.heldFields == 2)
            // A wrong key under the right id does not open them either.
            #expect(try await c.engine.setFieldKeys(FieldKeys(id: "k1", key: SymmetricKey(size: .bits256))) == 0)
            #expect(try c.engine.heldFields().allSatisfy { $0.reason == .authenticationFailed(keyID: "k1") })

            // The key arrives with a newer current key (a rotation happened meanwhile).
            #expect(try await c.engine.setFieldKeys(FieldKeys(current: "k2", keys: ["k1": key1, "k2": key2])) == 2)
            #expect(await c.engine.status.heldFields == 0)
            #expect(try c.rows("secrets") == a.rows("secrets"))
            // The applied fields are relayed sealed with k1 again, so with the same bytes:
            // the server takes them (another value under A's stamp would be a forgery).
            try c.execute("UPDATE secrets SET title = 'from c' WHERE id = 's1'")
            try await c.sync()
            try await a.sync()
            #expect(try c.rows("secrets") == a.rows("secrets"))
            #expect(await c.engine.status.lastError == nil)
        }
    }

    @Test(arguments: Backend.available) func rotationSealsNewWritesWithTheNewKeyAndOldOnesStillOpen(_ backend: Backend) async throws {
        try await TestServer.run(backend, schema: Self.schema) { server, directory in
            let a = try await device("a", server: server, in: directory, keys: try FieldKeys(id: "k1", key: key1))
            let b = try await device("b", server: server, in: directory, keys: try FieldKeys(id: "k1", key: key1))
            try a.execute("INSERT INTO secrets(id, body) VALUES ('old', 'sealed with k1')")
            try await a.sync()
            try await b.sync()
            let rotated = try FieldKeys(current: "k2", keys: ["k1": key1, "k2": key2])
            try await a.engine.setFieldKeys(rotated)
            try a.execute("INSERT INTO secrets(id, body) VALUES ('new', 'sealed with k2')")
            // B writes to the old record before it learns of the rotation.
            try b.execute("UPDATE secrets SET title = 'b' WHERE id = 'old'")
            try await a.sync()
            let snapshot = try await server.store().snapshot()
            func keyID(_ id: String) throws -> String? {
                try snapshot.records.first { $0.key == .text(id) }?.state.value(of: "body").map { try FieldCipher.keyID(of: $0) }
            }
            #expect(try keyID("old") == "k1")
            #expect(try keyID("new") == "k2")
            // B, with k1 only, holds the new record's values (body, and amount's NULL),
            // reads the old one.
            try await b.sync()
            #expect(await b.engine.status.heldFields == 2)
            #expect(try value(b, "SELECT body FROM secrets WHERE id = 'old'") == "sealed with k1".databaseValue)
            try await b.engine.setFieldKeys(rotated)
            #expect(try value(b, "SELECT body FROM secrets WHERE id = 'new'") == "sealed with k2".databaseValue)
            // A fresh device with both keys reads everything; an edit of the old record by B
            // is now sealed with k2.
            try b.execute("UPDATE secrets SET body = 'rewritten' WHERE id = 'old'")
            for _ in 0..<2 { try await b.sync(); try await a.sync() }
            let d = try await device("d", server: server, in: directory, keys: rotated)
            try await d.sync()
            #expect(try d.rows("secrets") == a.rows("secrets"))
            #expect(try d.rows("secrets") == b.rows("secrets"))
            let after = try await server.store().snapshot()
            #expect(try after.records.first { $0.key == .text("old") }?.state.value(of: "body").map { try FieldCipher.keyID(of: $0) } == "k2")
        }
    }

    @Test(arguments: Backend.available) func concurrentWritesOfAnEncryptedCriticalColumnAreAConflictEverywhere(_ backend: Backend) async throws {
        try await TestServer.run(backend, schema: Self.schema) { server, directory in
            let keys = try FieldKeys(id: "k1", key: key1)
            let a = try await device("a", server: server, in: directory, keys: keys)
            let b = try await device("b", server: server, in: directory, keys: keys)
            try a.execute("INSERT INTO secrets(id, amount) VALUES ('s', 100)")
            try await a.sync()
            try await b.sync()
            try a.execute("UPDATE secrets SET amount = 110 WHERE id = 's'")
            try b.execute("UPDATE secrets SET amount = 120 WHERE id = 's'")
            for _ in 0..<2 { try await a.sync(); try await b.sync() }
            for device in [a, b] {
                let conflicts = try device.database.conflicts().compactMap(\.field)
                #expect(conflicts.count == 1)
                #expect(Set(conflicts.first?.siblings.map(\.value) ?? []) == [.integer(110), .integer(120)])
            }
            #expect(try a.rows("secrets") == b.rows("secrets"))
            // The server keeps both siblings, sealed.
            let snapshot = try await server.store().snapshot()
            let register = try #require(snapshot.records.first?.state.multiValue(of: "amount"))
            #expect(register.siblings.count == 2)
            #expect(register.siblings.allSatisfy { if case .blob = $0.value { true } else { false } })
            // Resolving on one device closes it on both.
            try a.execute("UPDATE secrets SET amount = 115 WHERE id = 's'")
            for _ in 0..<2 { try await a.sync(); try await b.sync() }
            #expect(try b.database.conflicts().isEmpty)
            #expect(try value(b, "SELECT amount FROM secrets WHERE id = 's'") == 115.databaseValue)
        }
    }

    /// A plain value where a sealed one belongs (here from a device whose schema does not
    /// encrypt the column; a hostile server could send the same) is held, not applied: the
    /// rest of the record applies, and nothing is half-applied.
    @Test func aPlainValueInAnEncryptedColumnIsHeldNotApplied() async throws {
        try await TestServer.run(schema: Self.schema) { server, directory in
            let queue = try DatabaseQueue(path: directory.appendingPathComponent("legacy.sqlite").path)
            try await queue.write { db in try db.execute(sql: Self.createSecrets) }
            let legacyDatabase = try ReplicatedDatabase(queue)
            try legacyDatabase.replicate(table: "secrets", policies: ["amount": .critical])
            let legacy = Device(
                name: "legacy", database: legacyDatabase,
                engine: try SyncEngine(
                    database: legacyDatabase, transport: HTTPSyncTransport(baseURL: server.baseURL),
                    configuration: SyncEngine.Configuration(retry: Fixtures.quickRetry), token: try await server.token(device: "legacy")))
            try legacy.execute("INSERT INTO secrets(id, title, body) VALUES ('s', 'shown', 'not sealed')")
            try await legacy.sync()
            let a = try await device("a", server: server, in: directory, keys: try FieldKeys(id: "k1", key: key1))
            try await a.sync()
            #expect(try a.engine.heldFields().map(\.reason) == [.notEncrypted, .notEncrypted])
            #expect(try value(a, "SELECT title FROM secrets WHERE id = 's'") == "shown".databaseValue)
            #expect(try value(a, "SELECT body FROM secrets WHERE id = 's'") == .null)
            // Keys do not make a plain value sealed: it stays held.
            try await a.engine.setFieldKeys(FieldKeys(id: "k1", key: key1))
            #expect(await a.engine.status.heldFields == 2)
        }
    }

    @Test func aDeviceWithoutKeysCannotPushEncryptedColumns() async throws {
        try await TestServer.run(schema: Self.schema) { server, directory in
            let c = try await device("c", server: server, in: directory, keys: nil)
            try c.execute("INSERT INTO secrets(id, body) VALUES ('s', 'never in the clear')")
            await #expect(throws: SyncError.self) { try await c.sync() }
            #expect(!(try serverFiles(server)).containsBytes(Array("never in the clear".utf8)))
        }
    }

    @Test func whatTheServerWouldHaveToReadIsRefusedAtSchemaTime() throws {
        let authority = #"{"tables": [{"name": "t", "create": "CREATE TABLE t(id TEXT PRIMARY KEY, v)", "policies": {"v": "authority"}, "encrypted": ["v"]}]}"#
        #expect(throws: ServerSchemaError.self) { try ServerSchema.parse(Data(authority.utf8)) }
        let unique = #"{"tables": [{"name": "t", "create": "CREATE TABLE t(id TEXT PRIMARY KEY, v)", "uniqueIndexes": [{"name": "t_v", "columns": ["v"]}], "encrypted": ["v"]}]}"#
        #expect(throws: ServerSchemaError.self) { try ServerSchema.parse(Data(unique.utf8)) }
        let fine = #"{"tables": [{"name": "t", "create": "CREATE TABLE t(id TEXT PRIMARY KEY, v)", "policies": {"v": "critical"}, "encrypted": ["v"]}]}"#
        #expect(try ServerSchema.parse(Data(fine.utf8)).tables[0].encrypted == ["v"])

        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t(id TEXT PRIMARY KEY NOT NULL, v, w)")
            try db.execute(sql: "CREATE UNIQUE INDEX t_w ON t(w)")
        }
        let database = try ReplicatedDatabase(queue)
        #expect(throws: SchemaError(table: "t", reason: .encryptedAuthority("v"))) {
            try database.replicate(table: "t", policies: ["v": .authority], allowUniqueIndexes: true, encrypted: ["v"])
        }
        #expect(throws: SchemaError(table: "t", reason: .encryptedUniqueIndex(column: "w", index: "t_w"))) {
            try database.replicate(table: "t", allowUniqueIndexes: true, encrypted: ["w"])
        }
        #expect(throws: SchemaError(table: "t", reason: .encryptedPrimaryKey("id"))) {
            try database.replicate(table: "t", allowUniqueIndexes: true, encrypted: ["id"])
        }
        #expect(throws: SchemaError(table: "t", reason: .unknownColumn("x"))) {
            try database.replicate(table: "t", allowUniqueIndexes: true, encrypted: ["x"])
        }
        try database.replicate(table: "t", policies: ["v": .critical], allowUniqueIndexes: true, encrypted: ["v"])
        #expect(database.replicatedTables["t"]?.encryptedColumns == ["v"])
        // Declared beside a record type.
        try queue.write { db in try db.execute(sql: Self.createSecrets) }
        try database.replicate(Secret.self)
        #expect(database.replicatedTables["secrets"]?.encryptedColumns == ["body", "amount"])
        #expect(database.replicatedTables["secrets"]?.policy(of: "amount") == .critical)
    }

    struct Secret: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
        static let databaseTableName = "secrets"
        var id: String
        var title: String?
        var body: String?
        var amount: Int?
        static let replication = Replication(columns: [.critical(Column("amount"))], encrypted: [Column("body"), Column("amount")])
    }
}
