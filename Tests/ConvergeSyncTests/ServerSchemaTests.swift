import ConvergeCore
import ConvergeServer
import Foundation
import GRDB
import Testing

/// The server's schema file (issue #22): the shipped example loads, and a malformed file is
/// explained (which table, which key, what was expected).
@Suite struct ServerSchemaTests {
    @Test func theShippedExampleLoads() throws {
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Examples/schema.json").standardizedFileURL
        let schema = try ServerSchema.load(from: example)
        #expect(schema.tables.map(\.name) == ["item", "note"])
        #expect(schema.tables[0].policies["quantity"] == .critical)
        #expect(schema.tables[0].policies["status"] == .authority)
        #expect(schema.tables[0].deletePolicy == .deleteWins)
        #expect(schema.tables[1].deletePolicy == .updateWins)
        #expect(schema.tables[0].uniqueIndexes == [UniqueIndex(name: "item_sku", columns: ["sku"])])
        #expect(schema.tables[1].uniqueIndexes.isEmpty)
    }

    func refusal(_ json: String) -> ServerSchemaError? {
        do {
            _ = try ServerSchema.parse(Data(json.utf8))
            return nil
        } catch {
            return error
        }
    }

    @Test func malformedSchemasSayWhereAndWhat() {
        let create = "CREATE TABLE item(id TEXT PRIMARY KEY NOT NULL, qty)"
        let cases: [(String, String, String)] = [
            ("{}", "", "missing key \"tables\""),
            (#"{"tables": {}}"#, "tables", "expected an array of tables"),
            (#"{"tables": [{"create": "\#(create)"}]}"#, "tables[0]", "missing key \"name\""),
            (#"{"tables": [{"name": "item"}]}"#, "tables[0]", "missing key \"create\""),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "policies": {"qty": "crit"}}]}"#, "tables[0].policies.qty", "expected lww, critical or authority"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "deletePolicy": "never"}]}"#, "tables[0].deletePolicy", "expected updateWins or deleteWins"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "policies": ["qty"]}]}"#, "tables[0].policies", "expected an object"),
            (#"{"tables": [{"name": "item", "create": "CREATE TABLE other(id TEXT PRIMARY KEY NOT NULL)"}]}"#, "tables[0].create", "expected a CREATE TABLE statement for table item"),
            (#"{"tables": [{"name": "converge_records", "create": "CREATE TABLE converge_records(id)"}]}"#, "tables[0].name", "reserved"),
            (#"{"tables": [{"name": "my item", "create": "CREATE TABLE x(id)"}]}"#, "tables[0].name", "not a plain identifier"),
            (#"{"tables": [{"name": "item", "create": "\#(create)"}, {"name": "ITEM", "create": "\#(create)"}]}"#, "tables[1].name", "declared twice"),
            ("{not json", "", "not valid JSON"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": {}}]}"#, "tables[0].uniqueIndexes", "expected an array of indexes"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"columns": ["qty"]}]}]}"#, "tables[0].uniqueIndexes[0]", "missing key \"name\" (the index's name)"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "item_qty"}]}]}"#, "tables[0].uniqueIndexes[0]", "missing key \"columns\""),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "sqlite_autoindex_item_1", "columns": ["qty"]}]}]}"#, "tables[0].uniqueIndexes[0].name", "reserved"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "item qty", "columns": ["qty"]}]}]}"#, "tables[0].uniqueIndexes[0].name", "not a plain identifier"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "item_qty", "columns": []}]}]}"#, "tables[0].uniqueIndexes[0].columns", "expected one column or more"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "item_qty", "columns": ["q-ty"]}]}]}"#, "tables[0].uniqueIndexes[0].columns", "not a column name"),
            (#"{"tables": [{"name": "item", "create": "\#(create)", "uniqueIndexes": [{"name": "by_qty", "columns": ["qty"]}, {"name": "BY_QTY", "columns": ["id", "qty"]}]}]}"#, "tables[0].uniqueIndexes[1].name", "declared twice"),
        ]
        for (json, path, message) in cases {
            guard let error = refusal(json) else {
                Issue.record("accepted: \(json)")
                continue
            }
            #expect(error.path == path, "\(json): \(error)")
            #expect(error.message.contains(message), "\(json): \(error)")
        }
    }

    @Test func aMissingFileIsNamed() {
        let missing = URL(fileURLWithPath: "/nonexistent/schema.json")
        #expect(throws: ServerSchemaError.self) { try ServerSchema.load(from: missing) }
        do {
            _ = try ServerSchema.load(from: missing)
        } catch {
            #expect(error.description.contains("/nonexistent/schema.json"))
        }
    }

    /// `uniqueIndexes` opts a table in to constraint conflicts on the server: it creates the
    /// index, and two devices claiming one value through it each push without failing; the
    /// first claim shows everywhere, the server lists the clash as the devices do.
    @Test func uniqueIndexesAreConstraintConflictsOnTheServer() async throws {
        let createPeople = "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email TEXT, name TEXT)"
        let index = UniqueIndex(name: "people_email", columns: ["email"])
        var schema = Fixtures.schema
        schema.tables.append(.init(name: "people", create: createPeople, uniqueIndexes: [index]))
        #expect(schema.tables.last?.uniqueIndexStatements == [#"CREATE UNIQUE INDEX IF NOT EXISTS "people_email" ON "people"("email")"#])
        try await TestServer.run(schema: schema) { server, directory in
            var devices = [Device]()
            for name in ["a", "b"] {
                let device = try await Device.make(name, server: server, in: directory)
                try device.execute(createPeople)
                try device.execute("CREATE UNIQUE INDEX people_email ON people(email)")
                try device.database.replicate(table: "people", allowUniqueIndexes: true)
                devices.append(device)
            }
            let (a, b) = (devices[0], devices[1])
            try a.execute("INSERT INTO people VALUES ('pa', 'ann@example.com', 'Ann on a')")
            try await Task.sleep(for: .milliseconds(5))
            try b.execute("INSERT INTO people VALUES ('pb', 'ann@example.com', 'Ann on b')")
            for _ in 0..<2 { for device in devices { try await device.sync() } }

            let shown = [#"[id:"pa" email:"ann@example.com" name:"Ann on a"]"#]
            for device in devices { #expect(try device.rows("people") == shown, "\(device.name)") }
            let serverRows = try await server.service.write(in: "team") { db in
                try Row.fetchAll(db, sql: "SELECT * FROM people ORDER BY id").map { "\($0)" }
            }
            #expect(serverRows == shown)
            let serverConflicts = try await server.store().conflicts().compactMap(\.constraint)
            #expect(serverConflicts.count == 1)
            #expect(serverConflicts.first?.index == "people_email")
            #expect(serverConflicts.first?.holder.key == .text("pa") && serverConflicts.first?.held.map(\.key) == [.text("pb")])
            for device in devices { #expect(try device.database.conflicts().compactMap(\.constraint) == serverConflicts, "\(device.name)") }

            // Resolved on b through Converge: the held record shows everywhere.
            try b.database.update(table: "people", key: .text("pb"), values: ["email": .text("ann@b.example.com")])
            for _ in 0..<2 { for device in devices { try await device.sync() } }
            for device in devices { #expect(try device.rows("people").count == 2, "\(device.name)") }
            #expect(try await server.store().conflicts().isEmpty)
        }
    }
}
