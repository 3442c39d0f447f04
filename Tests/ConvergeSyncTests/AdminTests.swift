import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Logging
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The admin API (issue #21): its own credential, the devices of a namespace, revocation
/// that holds across a restart.
@Suite(.timeLimit(.minutes(3))) struct AdminTests {
    static let adminToken = "admin-token-for-tests-0123456789abcdef"

    static func start(directory: URL, secret: String, admin: String? = adminToken) async throws -> RunningServer {
        var configuration = ServerConfiguration(dataDirectory: directory, jwtSecret: secret, schema: Fixtures.schema)
        configuration.adminToken = admin
        var logger = Logger(label: "converge-admin-tests")
        logger.logLevel = .warning
        return try await RunningServer.start(service: try await SyncService(configuration: configuration), logger: logger)
    }

    static func request(_ server: RunningServer, _ method: String, _ path: String, token: String?) async throws -> (status: Int, json: [String: Any]) {
        var request = URLRequest(url: URL(string: server.baseURL.absoluteString + path)!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
    }

    func device(_ name: String, _ server: RunningServer, _ directory: URL) async throws -> Device {
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("\(name)-\(UUID().uuidString).sqlite").path)
        try await queue.write { db in
            try db.execute(sql: Fixtures.createNotes)
            try db.execute(sql: Fixtures.createItems)
        }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try database.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
        let service = server.service
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: server.baseURL),
            configuration: SyncEngine.Configuration(retry: Fixtures.quickRetry),
            token: try await service.authenticator.token(namespace: "team", device: name),
            refreshToken: { try await service.authenticator.token(namespace: "team", device: name) })
        return Device(name: name, database: database, engine: engine)
    }

    @Test func theAdminAPIHasItsOwnCredential() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let secret = Fixtures.makeSecret()
        let off = try await Self.start(directory: directory.appendingPathComponent("off"), secret: secret, admin: nil)
        #expect(try await Self.request(off, "GET", "/admin/v1/namespaces/team/devices", token: Self.adminToken).status == 404)
        await off.stop()

        let server = try await Self.start(directory: directory.appendingPathComponent("on"), secret: secret)
        let deviceToken = try await server.service.authenticator.token(namespace: "team", device: "phone")
        #expect(try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: nil).status == 401)
        #expect(try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: deviceToken).status == 401)
        #expect(try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: Self.adminToken + "x").status == 401)
        #expect(try await Self.request(server, "POST", "/admin/v1/namespaces/team/devices/phone/revoke", token: deviceToken).status == 401)
        let listed = try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: Self.adminToken)
        #expect(listed.status == 200)
        #expect((listed.json["devices"] as? [Any])?.isEmpty == true)
        await server.stop()
    }

    @Test func aRevokedDeviceIsRefusedAlsoAfterARestart() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let secret = Fixtures.makeSecret()
        let data = directory.appendingPathComponent("data")
        var server = try await Self.start(directory: data, secret: secret)
        let phone = try await device("phone", server, directory)
        let laptop = try await device("laptop", server, directory)
        try phone.execute("INSERT INTO notes(id, title) VALUES ('p', 'from the phone')")
        try await phone.sync()
        try await laptop.sync()

        let listed = try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: Self.adminToken)
        let devices = try #require(listed.json["devices"] as? [[String: Any]])
        #expect(devices.map { $0["device"] as? String } == ["laptop", "phone"])
        let phoneInfo = try #require(devices.first { $0["device"] as? String == "phone" })
        #expect(phoneInfo["replica"] as? String == phone.database.replicaID.uuidString())
        #expect(phoneInfo["lastPush"] != nil && phoneInfo["lastPull"] != nil && phoneInfo["revokedAt"] == nil)
        let laptopInfo = try #require(devices.first { $0["device"] as? String == "laptop" })
        #expect(laptopInfo["replica"] == nil && laptopInfo["lastPull"] != nil && laptopInfo["lastPush"] == nil)

        let revoke = try await Self.request(server, "POST", "/admin/v1/namespaces/team/devices/phone/revoke", token: Self.adminToken)
        #expect(revoke.status == 200 && revoke.json["revoked"] as? Bool == true)
        #expect(try await Self.request(server, "POST", "/admin/v1/namespaces/team/devices/phone/revoke", token: Self.adminToken).json["revoked"] as? Bool == false)
        let before = try await server.service.storage.store(for: "team").snapshot()
        try phone.execute("INSERT INTO notes(id, title) VALUES ('q', 'after revocation')")
        await #expect(throws: SyncError.self) { try await phone.sync() }
        if case .unauthorized = await phone.engine.status.lastError {} else { Issue.record("expected unauthorized") }
        let phoneToken = try await server.service.authenticator.token(namespace: "team", device: "phone")
        #expect(try await Self.request(server, "GET", "/v1/status", token: phoneToken).status == 401)
        #expect(try await server.service.storage.store(for: "team").snapshot() == before)
        // Another device goes on.
        try laptop.execute("INSERT INTO notes(id, title) VALUES ('l', 'from the laptop')")
        try await laptop.sync()

        // A restart keeps the revocation.
        await server.stop()
        server = try await Self.start(directory: data, secret: secret)
        #expect(try await Self.request(server, "GET", "/v1/status", token: phoneToken).status == 401)
        let after = try await Self.request(server, "GET", "/admin/v1/namespaces/team/devices", token: Self.adminToken)
        let revokedPhone = (after.json["devices"] as? [[String: Any]])?.first { $0["device"] as? String == "phone" }
        #expect(revokedPhone?["revokedAt"] != nil)
        await server.stop()
    }
}
