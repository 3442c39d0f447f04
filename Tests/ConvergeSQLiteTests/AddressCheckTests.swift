import ConvergeCore
@testable import ConvergeSQLite
import ConvergeTestSupport
import Testing

/// The batched address check of an apply (`checkAddresses(of:tables:)`) refuses exactly what
/// checking each delta in turn refuses, with the same first error, and a key column takes the
/// storage classes SQLite's affinity rules give its declared type.
@Suite(.computeBound) struct AddressCheckTests {
    static let tables: [String: ReplicatedTable] = [
        "notes": ReplicatedTable(schema: TableSchema(name: "notes", primaryKey: "id", columns: ["title"]), keyType: "TEXT"),
        "counts": ReplicatedTable(schema: TableSchema(name: "counts", primaryKey: "n", columns: ["v"]), keyType: "INTEGER"),
        "loose": ReplicatedTable(schema: TableSchema(name: "loose", primaryKey: "k", columns: ["v"]), keyType: ""),
        "amounts": ReplicatedTable(schema: TableSchema(name: "amounts", primaryKey: "a", columns: ["v"]), keyType: "NUMERIC"),
        "files": ReplicatedTable(schema: TableSchema(name: "files", primaryKey: "h", columns: ["v"]), keyType: "BLOB"),
    ]

    @Test(arguments: [
        ("TEXT", [true, false, false, false]), ("VARCHAR(20)", [true, false, false, false]), ("CLOB", [true, false, false, false]),
        ("BLOB", [false, true, false, false]), ("", [true, true, true, true]),
        ("INTEGER", [false, false, true, false]), ("BIGINT", [false, false, true, false]),
        ("NUMERIC", [false, false, true, true]), ("REAL", [false, false, true, true]), ("DOUBLE", [false, false, true, true]),
    ])
    func keyClassesFollowAffinity(keyType: String, accepted: [Bool]) {
        let table = ReplicatedTable(schema: TableSchema(name: "t", primaryKey: "k", columns: []), keyType: keyType)
        let keys: [Value] = [.text("a"), .blob([1]), .integer(1), .real(1.5)]
        #expect(keys.map(table.accepts) == accepted)
        #expect(!table.accepts(.null))
    }

    /// What checking each delta in turn refuses first (or nil).
    func oneByOne(_ changeset: Changeset) -> ApplyError? {
        do throws(ApplyError) {
            for delta in changeset.records { try ReplicatedTable.checkAddress(delta, tables: Self.tables) }
            return nil
        } catch { return error }
    }

    func batched(_ changeset: Changeset) -> ApplyError? {
        do throws(ApplyError) {
            try ReplicatedTable.checkAddresses(of: changeset, tables: Self.tables)
            return nil
        } catch { return error }
    }

    @Test func theBatchedCheckRefusesWhatTheOneByOneCheckRefuses() {
        let tables = ["notes", "counts", "loose", "amounts", "files", "Notes", "parked", "converge_records", "bad name"]
        let keys: [Value] = [.text("a"), .integer(7), .real(2.5), .blob([9]), .null]
        var generator = SeededGenerator(seed: 16)
        var refused = 0
        for _ in 0..<2_000 {
            // Runs of one table, as changesets group them, broken by others.
            var records = [RecordDelta]()
            var table = tables.randomElement(using: &generator)!
            for _ in 0..<Int.random(in: 1...12, using: &generator) {
                if Int.random(in: 0..<4, using: &generator) == 0 { table = tables.randomElement(using: &generator)! }
                records.append(RecordDelta(table: table, key: keys.randomElement(using: &generator)!, state: RecordState()))
            }
            let changeset = Changeset(records: records)
            let expected = oneByOne(changeset)
            #expect(batched(changeset) == expected)
            if expected != nil { refused += 1 }
        }
        #expect(refused > 100 && refused < 2_000)  // both outcomes were exercised
    }
}
