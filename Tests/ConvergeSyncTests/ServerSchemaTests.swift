import ConvergeServer
import Foundation
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
}
