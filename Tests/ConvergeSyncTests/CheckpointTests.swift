import ConvergeCore
import ConvergeServer
import ConvergeSync
import Foundation
import Testing

/// Upload checkpoints (issue #22): `waitUntilUploaded` returns once every local change made
/// before the call is acknowledged, `waitUntilSynced` once a full pull followed; both time
/// out and cancel cleanly.
@Suite(.timeLimit(.minutes(3))) struct CheckpointTests {
    @Test func waitUntilUploadedReturnsOnceTheServerHoldsEveryEarlierChange() async throws {
        try await TestServer.run { server, directory in
            let device = try await Device.make("device", server: server, in: directory)
            for index in 0..<250 { try device.execute("INSERT INTO notes(id, title) VALUES (?, ?)", ["n\(index)", "\(index)"]) }
            #expect(await device.engine.status.acknowledgedPosition == 0)
            try await device.engine.waitUntilUploaded(timeout: .seconds(20))
            #expect(try await server.store().snapshot().records.count == 250)
            await device.engine.refreshStatus()
            let status = await device.engine.status
            #expect(status.pendingChanges == 0)
            #expect(status.acknowledgedPosition >= 250)
            // Already there: returns without a round.
            let rounds = try device.engine.log().count
            try await device.engine.waitUntilUploaded(timeout: .seconds(5))
            #expect(try device.engine.log().count == rounds)
        }
    }

    @Test func waitUntilSyncedAlsoPullsWhatTheServerHad() async throws {
        try await TestServer.run { server, directory in
            let writer = try await Device.make("writer", server: server, in: directory)
            let reader = try await Device.make("reader", server: server, in: directory)
            try writer.execute("INSERT INTO notes(id, title) VALUES ('w', 'from the writer')")
            try await writer.engine.waitUntilUploaded()
            try reader.execute("INSERT INTO notes(id, title) VALUES ('r', 'from the reader')")
            try await reader.engine.waitUntilSynced()
            #expect(try reader.rows("notes").count == 2)
            #expect(try await server.store().snapshot().records.count == 2)
        }
    }

    @Test func waitingForAnUnreachableServerTimesOutAndCancels() async throws {
        let server = try await TestServer.start()
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let device = try await Device.make("device", server: server, in: directory)
        await server.stop()
        try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'offline')")

        let clock = ContinuousClock()
        let started = clock.now
        do {
            try await device.engine.waitUntilUploaded(timeout: .milliseconds(800))
            Issue.record("the wait returned without a server")
        } catch SyncError.timedOut(let message) {
            #expect(message.contains("of"))
        }
        #expect(clock.now - started < .seconds(10))

        let waiting = Task { try await device.engine.waitUntilUploaded(timeout: .seconds(50)) }
        try await Task.sleep(for: .milliseconds(300))
        let cancelled = clock.now
        waiting.cancel()
        do {
            try await waiting.value
            Issue.record("the cancelled wait returned")
        } catch let error as SyncError {
            #expect(error == .cancelled)
        }
        #expect(clock.now - cancelled < .seconds(10))
    }
}
