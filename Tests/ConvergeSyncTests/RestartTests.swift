import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import Testing

/// The server goes away and comes back, with its data or without.
@Suite(.timeLimit(.minutes(3))) struct RestartTests {
    @Test func serverRestartLosesNothingAndDoublesNothing() async throws {
        let dataDirectory = try Fixtures.temporaryDirectory()
        let directory = try Fixtures.temporaryDirectory()
        let secret = Fixtures.makeSecret()
        let first = try await TestServer.start(directory: dataDirectory, secret: secret)
        let a = try await Device.make("a", server: first, in: directory)
        let b = try await Device.make("b", server: first, in: directory)
        try a.execute("INSERT INTO notes(id, title) VALUES ('n1', 'before')")
        try await a.sync()
        await first.stop(keepData: true)

        try a.execute("INSERT INTO notes(id, title) VALUES ('n2', 'while down')")
        try a.execute("UPDATE notes SET title = 'edited while down' WHERE id = 'n1'")
        await #expect(throws: SyncError.self) { try await a.sync() }
        #expect(await a.engine.status.phase == .offline)

        let second = try await TestServer.start(directory: dataDirectory, port: first.port, secret: secret)
        let report = try await a.sync()
        #expect(report.pushedRecords == 2)
        try await b.sync()
        try await a.sync()
        let snapshot = try await second.store().snapshot()
        #expect(snapshot.records.count == 2)
        #expect(try a.database.snapshot() == snapshot)
        #expect(try b.database.snapshot() == snapshot)
        #expect(try b.rows("notes") == a.rows("notes"))
        await second.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    @Test func anEmptyReplacementServerGetsEverythingAgain() async throws {
        let directory = try Fixtures.temporaryDirectory()
        let secret = Fixtures.makeSecret()
        let first = try await TestServer.start(secret: secret)
        let a = try await Device.make("a", server: first, in: directory)
        try await a.database.writer.write { db in
            for index in 0..<5 { try db.execute(sql: "INSERT INTO notes(id, title) VALUES (?, ?)", arguments: ["n\(index)", "\(index)"]) }
        }
        try await a.sync()
        await first.stop()

        // Same address, new server replica, no data: the device notices and pushes all again.
        let second = try await TestServer.start(port: first.port, secret: secret)
        try await a.sync()
        #expect(try await second.store().snapshot() == a.database.snapshot())
        let b = try await Device.make("b", server: second, in: directory)
        try await b.sync()
        #expect(try b.rows("notes").count == 5)
        await second.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
