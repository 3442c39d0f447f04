import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import Testing

/// A device whose clock runs a day ahead must not drag the server's or other devices'
/// clocks forward: its changes wait in the server's quarantine until time catches up.
@Suite(.timeLimit(.minutes(3))) struct ClockSkewTests {
    @Test func aFarFutureDeviceIsQuarantinedWithoutDraggingOthersForward() async throws {
        try await TestServer.run { server, directory in
            let day: UInt64 = 86_400_000
            let ahead = ReplicatedDatabase.Configuration(physicalTime: { UInt64(Date().timeIntervalSince1970 * 1000) + day })
            let skewed = try await Device.make("skewed", server: server, in: directory, store: ahead)
            let honest = try await Device.make("honest", server: server, in: directory)
            try honest.execute("INSERT INTO notes(id, title) VALUES ('n1', 'today')")
            try await honest.sync()
            try await skewed.sync()
            let now = HLC(rawValue: UInt64(Date().timeIntervalSince1970 * 1000 + 60_000) << 16)  // a minute of slack
            try skewed.execute("UPDATE notes SET title = 'tomorrow' WHERE id = 'n1'")
            try skewed.execute("INSERT INTO notes(id, title) VALUES ('n2', 'from the future')")
            #expect(skewed.database.clock > now, "the skewed device stamps a day ahead")
            try await skewed.sync()

            let store = try await server.store()
            #expect(try await store.quarantinedCount() == 2)
            let serverClock = try #require(store as? SQLiteNamespaceStore).database.clock
            #expect(serverClock < now, "the server's clock did not follow the device")
            try await honest.sync()
            #expect(try honest.rows("notes") == [#"[id:"n1" title:"today" body:NULL amount:NULL]"#])
            #expect(honest.database.clock < now, "nor did the other device's")
            // Kept, not lost: released on the server (time caught up, or an operator forced
            // it), it flows on, and each replica holds it until its own time catches up.
            _ = try #require(store as? SQLiteNamespaceStore).database.releaseQuarantine(force: true)
            try await honest.sync()
            #expect(try honest.database.quarantinedCount() == 2)
            #expect(await honest.engine.status.quarantined == 2)
            #expect(honest.database.clock < now)
            try honest.database.releaseQuarantine(force: true)
            #expect(try honest.rows("notes").count == 2)
            #expect(try honest.rows("notes").first?.contains("tomorrow") == true)
        }
    }

    @Test(arguments: Backend.available) func aQuarantinedChangeWhoseTimeHasComeReachesAPullWithoutAnyPush(_ backend: Backend) async throws {
        let clock = ServerClock()
        try await TestServer.run(backend, configure: { configuration in
            configuration.store = ReplicatedDatabase.Configuration(physicalTime: { clock.now })
        }) { server, directory in
            let hour: UInt64 = 3_600_000
            let skewed = try await Device.make(
                "skewed", server: server, in: directory, store: ReplicatedDatabase.Configuration(physicalTime: { clock.now + hour }))
            let honest = try await Device.make("honest", server: server, in: directory, store: ReplicatedDatabase.Configuration(physicalTime: { clock.now }))
            try skewed.execute("INSERT INTO notes(id, title) VALUES ('n', 'from an hour ahead')")
            try await skewed.sync()
            let store = try await server.store()
            #expect(try await store.quarantinedCount() == 1)
            try await honest.sync()
            #expect(try honest.rows("notes") == [])
            // The hour passes; nobody pushes. A pull alone releases it on the server.
            clock.advance(seconds: 3_600)
            try await honest.sync()
            #expect(try await store.quarantinedCount() == 0)
            #expect(try honest.rows("notes") == [#"[id:"n" title:"from an hour ahead" body:NULL amount:NULL]"#])
        }
    }
}
