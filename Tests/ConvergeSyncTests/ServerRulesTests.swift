import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// Server-side rules end to end: a column the server owns (authority) and a validation
/// hook whose rejections are undone everywhere and reported to the device that pushed.
@Suite(.timeLimit(.minutes(3))) struct ServerRulesTests {
    static let createInvoices = "CREATE TABLE invoices(id TEXT PRIMARY KEY NOT NULL, customer, total, status)"
    static let schema = ServerSchema(tables: Fixtures.schema.tables + [
        .init(name: "invoices", create: createInvoices, policies: ["status": .authority])
    ])

    /// Refuses negative totals, and invoices of customer "blocked".
    static let rule: ServerConfiguration.Validator = { change, pusher in
        if case .integer(let total)? = change.after?["total"], total < 0 {
            return "the total of invoice \(change.key) cannot be negative (pushed by \(pusher.device))"
        }
        if change.before == nil, change.after?["customer"] == .text("blocked") { return "customer blocked is not accepted" }
        return nil
    }

    func withDevices(_ count: Int = 3, backend: Backend = .sqlite, body: (TestServer, [Device]) async throws -> Void) async throws {
        try await TestServer.run(backend, schema: Self.schema, validator: Self.rule) { server, directory in
            var devices = [Device]()
            for index in 0..<count {
                let device = try await Device.make("device\(index)", server: server, in: directory)
                try device.execute(Self.createInvoices)
                try device.database.replicate(table: "invoices", policies: ["status": .authority])
                devices.append(device)
            }
            try await body(server, devices)
        }
    }

    func invoices(_ device: Device) throws -> [String] { try device.rows("invoices") }

    /// The invoices the server's merge states show (on either backend): its snapshot
    /// applied to a fresh store that takes the server as its authority.
    func serverInvoices(_ server: TestServer) async throws -> [String] {
        let store = try await server.store()
        let copy = try ReplicatedDatabase(DatabaseQueue())
        try await copy.writer.write { db in try db.execute(sql: Self.createInvoices) }
        try copy.replicate(table: "invoices", policies: ["status": .authority])
        try copy.setAuthority(store.serverReplica)
        try copy.apply(try await store.snapshot())
        return try await copy.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM invoices ORDER BY id").map { "\($0)" } }
    }

    @Test(arguments: Backend.available) func theServersConcurrentValueWinsEverywhere(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b, c) = (devices[0], devices[1], devices[2])
            try a.execute("INSERT INTO invoices VALUES ('inv1', 'acme', 100, 'open')")
            try await a.sync()
            for device in [b, c] { try await device.sync() }
            let serverID = try await server.store().serverReplica
            #expect(a.database.authority == serverID, "the device learned the server's identity")
            // The server marks the invoice paid; device a, not having seen it, voids it later.
            try await server.service.write(.upsert(table: "invoices", key: .text("inv1"), values: ["status": .text("paid")]), in: "team")
            try await Task.sleep(for: .milliseconds(5))
            try a.execute("UPDATE invoices SET status = 'void', total = 90 WHERE id = 'inv1'")
            for _ in 0..<2 { for device in devices { try await device.sync() } }
            let expected = #"[id:"inv1" customer:"acme" total:90 status:"paid"]"#
            for device in devices { #expect(try invoices(device) == [expected], "\(device.name)") }
            #expect(try await serverInvoices(server) == [expected])
            #expect(try a.database.conflicts().isEmpty)
            // A write that had seen the server's value replaces it, as usual.
            try b.execute("UPDATE invoices SET status = 'refunded' WHERE id = 'inv1'")
            for _ in 0..<2 { for device in devices { try await device.sync() } }
            for device in devices {
                #expect(try invoices(device) == [#"[id:"inv1" customer:"acme" total:90 status:"refunded"]"#], "\(device.name)")
            }
            let snapshot = try await server.store().snapshot()
            for device in devices { #expect(try device.database.snapshot() == snapshot) }
        }
    }

    @Test(arguments: Backend.available) func aRejectedChangeIsRolledBackOnTheDeviceWithItsReason(_ backend: Backend) async throws {
        try await withDevices(backend: backend) { server, devices in
            let (a, b) = (devices[0], devices[1])
            try a.execute("INSERT INTO invoices VALUES ('inv1', 'acme', 100, 'open')")
            try await a.sync()
            try await b.sync()
            try a.execute("UPDATE invoices SET total = -5, customer = 'acme inc' WHERE id = 'inv1'")
            try a.execute("INSERT INTO invoices VALUES ('inv2', 'blocked', 1, 'open')")
            try a.execute("INSERT INTO invoices VALUES ('inv3', 'globex', 7, 'open')")
            let report = try await a.sync()
            #expect(Set(report.rejections.map(\.reason)) == [
                "the total of invoice 'inv1' cannot be negative (pushed by device0)", "customer blocked is not accepted",
            ])
            // Rolled back on the device in the same round, by the server's compensating writes.
            let expected = [
                #"[id:"inv1" customer:"acme" total:100 status:"open"]"#, #"[id:"inv3" customer:"globex" total:7 status:"open"]"#,
            ]
            #expect(try invoices(a) == expected)
            #expect(await a.engine.status.rejected == 2)
            #expect(try a.engine.rejections().map(\.key).sorted { $0 < $1 } == [.text("inv1"), .text("inv2")])
            // Other devices never show the refused values; everyone converges.
            try await b.sync()
            #expect(try invoices(b) == expected)
            #expect(try await serverInvoices(server) == expected)
            // Delivered once: later rounds bring no duplicate.
            try await a.sync()
            #expect(try a.engine.rejections().count == 2)
            #expect(await b.engine.status.rejected == 0, "rejections go to the device that pushed")
            try await a.engine.dismissRejections()
            #expect(await a.engine.status.rejected == 0)
            #expect(try a.engine.rejections().isEmpty)
            let metrics = try await server.get("/metrics", token: nil)
            #expect(String(decoding: metrics.body, as: UTF8.self).contains("converge_sync_rejections_total 2"))
        }
    }

    @Test(arguments: Backend.available) func aRejectionWhoseAnswerWasLostIsStillDelivered(_ backend: Backend) async throws {
        try await withDevices(1, backend: backend) { server, devices in
            let a = devices[0]
            try a.execute("INSERT INTO invoices VALUES ('inv1', 'acme', -1, 'open')")
            // The push reaches the server, the answer does not (a raw request, discarded).
            let push = SyncRequest(
                replica: a.database.replicaID, pushUpTo: 1,
                changeset: WireEncoder.encode(try a.database.changes(since: 0).changeset), pull: false)
            let token = try await server.token(device: a.name)
            #expect(try await server.post(push.encoded(), token: token).status == 200)
            // The device's next round (a retry of the same batch) still gets the reason.
            let report = try await a.sync()
            #expect(report.rejections.map(\.reason) == ["the total of invoice 'inv1' cannot be negative (pushed by device0)"])
            #expect(try invoices(a).isEmpty, "the refused insert is undone")
        }
    }
}
