import ConvergeCore
import ConvergeInspector
import ConvergeSQLite
import Foundation
import GRDB
import Synchronization

/// Virtual time for the stores that build the files: every store reads the same clock.
final class TestClock: Sendable {
    private let milliseconds = Mutex<UInt64>(1_700_000_000_000)  // 2023-11-14T22:13:20.000Z
    var now: UInt64 { milliseconds.withLock { $0 } }
    func advance(by delta: UInt64) { milliseconds.withLock { $0 += delta } }
}

/// Real database files in a temporary folder, made by real stores.
struct Fixture {
    let folder: URL
    let clock = TestClock()

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("converge-inspector-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// `notes` keeps any value as given (no declared types) and has a critical `amount`;
    /// `items` has declared types and defaults, so affinities and defaults are exercised.
    static let tables = [
        "CREATE TABLE IF NOT EXISTS notes(id TEXT PRIMARY KEY NOT NULL, title, body, amount)",
        "CREATE TABLE IF NOT EXISTS items(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', qty INTEGER NOT NULL DEFAULT 0, price REAL)",
    ]

    /// - Parameter realTime: the system's clock instead of the test clock, for a store that
    ///   takes changes the inspector stamped (it runs on real time; the test clock is years
    ///   behind, and would quarantine them as stamped too far ahead).
    func store(_ name: String, pool: Bool = false, realTime: Bool = false) throws -> ReplicatedDatabase {
        let writer: any DatabaseWriter = pool ? try DatabasePool(path: path(name)) : try DatabaseQueue(path: path(name))
        try writer.write { db in for sql in Self.tables { try db.execute(sql: sql) } }
        let store = try ReplicatedDatabase(writer, configuration: realTime ? .init() : .init(physicalTime: { [clock] in clock.now }))
        try store.replicate(table: "notes", policies: ["amount": .critical])
        try store.replicate(table: "items", deletePolicy: .deleteWins)
        return store
    }

    /// Two files, `a.sqlite` and `b.sqlite`, that synced a conflict on `notes 'n' amount`
    /// (11 on a, 12 on b), with rows in both tables and a peer cursor on a. The stores are
    /// closed when this returns; their replica ids are returned.
    func conflictedPair() throws -> (a: ReplicaID, b: ReplicaID) {
        let a = try store("a.sqlite"), b = try store("b.sqlite")
        try a.writer.write { db in
            try db.execute(sql: "INSERT INTO notes(id, title, amount) VALUES ('n', 'Pen', 10), ('m', 'Ink', 1)")
            try db.execute(sql: "INSERT INTO items(id, name, qty, price) VALUES ('i1', 'Box', 3, 2.5)")
        }
        try b.apply(try a.changes(since: 0).changeset)
        let cursorA = try a.changes(since: 0).next, cursorB = try b.changes(since: 0).next
        clock.advance(by: 1_000)
        try a.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 11 WHERE id = 'n'") }
        try b.writer.write { db in try db.execute(sql: "UPDATE notes SET amount = 12 WHERE id = 'n'") }
        try a.apply(try b.changes(since: cursorB).changeset)
        try b.apply(try a.changes(since: cursorA).changeset)
        try a.setCursor(.init(sent: cursorA, received: 0), for: "laptop")
        return (a.replicaID, b.replicaID)
    }

    /// A plain connection that writes app tables without capture, behind Converge's back.
    ///
    /// The capture triggers fire only `WHEN converge_capturing()`, and call
    /// `converge_stamp()`: functions Converge installs on its own connections (SQLite
    /// resolves both when it compiles a trigger, so a connection without them cannot write
    /// replicated tables at all). Here `converge_capturing()` is false, as on Converge's own
    /// connection while it applies remote changes, so the triggers skip: the row changes,
    /// the metadata does not. `converge_stamp()` only has to exist; should a trigger call
    /// it anyway, it fails the write.
    func tamper(_ name: String, _ sql: String) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            db.add(function: DatabaseFunction("converge_capturing", argumentCount: 0, pure: false) { _ in false })
            db.add(function: DatabaseFunction("converge_stamp", argumentCount: 0, pure: false) { _ in
                throw DatabaseError(message: "a tampering write was captured")
            })
        }
        let queue = try DatabaseQueue(path: path(name), configuration: configuration)
        try queue.write { db in try db.execute(sql: sql) }
    }

    /// Runs a command and decodes its JSON output.
    func json(_ command: InspectorCommand, _ name: String) throws -> (result: InspectorResult, object: [String: Any]) {
        let result = Inspector.run(command, database: path(name), json: true)
        let text = result.output.isEmpty ? result.errorOutput : result.output
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
        return (result, object)
    }

    func snapshot(_ name: String) throws -> Changeset {
        try store(name).snapshot()
    }
}

extension Dictionary where Key == String, Value == Any {
    subscript(path keys: String...) -> Any? {
        var current: Any? = self
        for key in keys { current = (current as? [String: Any])?[key] }
        return current
    }
}
