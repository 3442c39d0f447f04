import ConvergeCore
@testable import ConvergeSQLite
import ConvergeTestSupport
import Foundation
import GRDB
import Testing

@Suite(.computeBound) struct StoreDurabilityTests {
    let clock = TestClock()

    /// The rows the metadata says are visible, as the app table should hold them.
    static func visibleRows(_ store: ReplicatedDatabase, _ table: String, columns: [String]) throws -> [[Value]] {
        try store.snapshot().records.filter { $0.table == table && $0.state.isAlive }.map { delta in
            [delta.key] + columns.map { delta.state.value(of: $0, policy: store.replicatedTables[table]!.policy(of: $0)) ?? .null }
        }
    }

    @Test func copiedFileTakesANewIdentity() throws {
        let folder = try StoreFixtures.temporaryDirectory()
        let original = folder.appendingPathComponent("a.sqlite").path, copy = folder.appendingPathComponent("b.sqlite").path
        var store: ReplicatedDatabase? = try StoreFixtures.makeStore(clock: clock, path: original)
        let id = store!.replicaID
        try store!.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n', 'unsent')") }
        store = nil
        try FileManager.default.copyItem(atPath: original, toPath: copy)
        let reopened = try StoreFixtures.makeStore(clock: clock, path: original)
        #expect(reopened.replicaID == id)   // the same file keeps its identity
        let copied = try StoreFixtures.makeStore(clock: clock, path: copy)
        #expect(copied.replicaID != id)     // the copy does not
        // Its unacknowledged write was re-stamped under the new identity.
        let record = try copied.snapshot().records.first { $0.key == .text("n") }!
        #expect(record.state.membership.dots.allSatisfy { $0.replica == copied.replicaID })
        #expect(try StoreFixtures.rows(copied, "notes") == [[.text("n"), .text("unsent"), .null, .null]])
    }

    @Test func rewoundReplicaDetectsItAtSync() throws {
        let folder = try StoreFixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("a.sqlite").path, backup = folder.appendingPathComponent("backup.sqlite").path
        let peer = try StoreFixtures.makeStore(clock: clock)
        var store: ReplicatedDatabase? = try StoreFixtures.makeStore(clock: clock, path: path)
        let id = store!.replicaID
        try store!.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n1', 'one')") }
        _ = try store!.changes(since: 0)
        try FileManager.default.copyItem(atPath: path, toPath: backup)
        clock.advance(by: 10)
        try store!.writer.write { db in try db.execute(sql: "INSERT INTO notes(id, title) VALUES ('n2', 'two')") }
        try peer.apply(try store!.changes(since: 0).changeset)
        store = nil
        // Restore the backup in place (same file, same inode): only sync can tell.
        let data = try Data(contentsOf: URL(fileURLWithPath: backup))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: data)
        try handle.close()
        clock.set(clock.now - 5)  // and the device clock went back a little too
        let restored = try StoreFixtures.makeStore(clock: clock, path: path)
        #expect(restored.replicaID == id)
        let report = try restored.apply(try peer.changes(since: 0).changeset)
        #expect(report.identityReset)
        #expect(restored.replicaID != id)
        #expect(try StoreFixtures.rows(restored, "notes").count == 2)
    }

    /// A child process applying a large changeset is killed with SIGKILL mid-way: the
    /// reopened database is consistent, and re-sending the changeset completes it.
    @Test func killedApplyLeavesAConsistentDatabase() throws {
        let folder = try StoreFixtures.temporaryDirectory()
        let path = folder.appendingPathComponent("target.sqlite").path
        let changesetPath = folder.appendingPathComponent("changeset.bin").path
        let marker = folder.appendingPathComponent("started").path
        let source = try StoreFixtures.makeStore(clock: clock)
        try source.writer.write { db in
            for index in 0..<30_000 {
                try db.execute(sql: "INSERT INTO notes(id, title, body, amount) VALUES (?, 'title', 'body', ?)", arguments: ["n\(index)", index])
            }
        }
        let changeset = try source.changes(since: 0, maxRecords: 100_000, maxBytes: .max).changeset
        try Data(WireEncoder.encode(changeset)).write(to: URL(fileURLWithPath: changesetPath))
        _ = try StoreFixtures.makeStore(clock: clock, path: path)  // create the file and its tables

        let child = Process()
        child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        child.arguments = ["--testing-library", "swift-testing", "--filter", "applyAsChildProcess"]
        var environment = ProcessInfo.processInfo.environment
        environment["CONVERGE_CHILD_DATABASE"] = path
        environment["CONVERGE_CHILD_CHANGESET"] = changesetPath
        environment["CONVERGE_CHILD_MARKER"] = marker
        child.environment = environment
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: marker) && Date() < deadline && child.isRunning { usleep(2_000) }
        usleep(150_000)  // well into the apply
        let killedMidway = !FileManager.default.fileExists(atPath: marker + ".done")
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: marker))
        #expect(killedMidway, "the child finished applying before it was killed")

        let reopened = try StoreFixtures.makeStore(clock: clock, path: path)
        #expect(try reopened.writer.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") } == "ok")
        let partial = try StoreFixtures.rows(reopened, "notes")
        #expect(partial == (try Self.visibleRows(reopened, "notes", columns: ["title", "body", "amount"])))
        #expect(partial.isEmpty || partial.count == 30_000, "all or nothing, not \(partial.count)")
        if killedMidway { #expect(partial.isEmpty) }
        try reopened.apply(changeset)
        #expect(try StoreFixtures.rows(reopened, "notes").count == 30_000)
        #expect(try reopened.snapshot() == source.snapshot())
    }

    /// The child side of `killedApplyLeavesAConsistentDatabase`; runs only when launched by it.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CONVERGE_CHILD_DATABASE"] != nil))
    func applyAsChildProcess() throws {
        let environment = ProcessInfo.processInfo.environment
        let store = try StoreFixtures.makeStore(clock: clock, path: environment["CONVERGE_CHILD_DATABASE"]!)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: environment["CONVERGE_CHILD_CHANGESET"]!)))
        let changeset = try WireDecoder.decode(bytes)
        _ = FileManager.default.createFile(atPath: environment["CONVERGE_CHILD_MARKER"]!, contents: nil)
        try store.apply(changeset)
        _ = FileManager.default.createFile(atPath: environment["CONVERGE_CHILD_MARKER"]! + ".done", contents: nil)
        sleep(60)  // the parent kills us before this matters
    }
}
