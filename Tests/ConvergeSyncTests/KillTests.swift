import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// The `converge-server` executable, built next to the test bundle.
let serverExecutable: URL? = {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidate = directory.appendingPathComponent("converge-server")
    return FileManager.default.isExecutableFile(atPath: candidate.path) ? candidate : nil
}()

/// A `converge-server` process.
final class KillableServer: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var output = ""

    init(executable: URL, data: URL, secret: String, port: Int, arguments: [String] = []) throws {
        process.executableURL = executable
        process.arguments = ["--port", "\(port)", "--data", data.path, "--jwt-secret", secret] + arguments
        // The embedded SQLite storage, even where CI exports a PostgreSQL URL.
        process.environment = ProcessInfo.processInfo.environment.filter { $0.key != "CONVERGE_POSTGRES_URL" }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            self?.lock.withLock { self?.output += text }
        }
        try process.run()
    }

    /// The port from the "listening on" line.
    func port() async throws -> Int {
        for _ in 0..<1_000 {
            let text = lock.withLock { output }
            if let range = text.range(of: "listening on http://127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits) { return port }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw CancellationError()
    }

    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

@Suite(.timeLimit(.minutes(3))) struct KillTests {
    @Test(.enabled(if: serverExecutable != nil, "converge-server is not built"))
    func sigkillDuringAPushThenRestart() async throws {
        let data = try Fixtures.temporaryDirectory()
        let directory = try Fixtures.temporaryDirectory()
        let secret = Fixtures.makeSecret()
        let authenticator = try await Authenticator(secret: secret)
        var server = try KillableServer(executable: serverExecutable!, data: data, secret: secret, port: 0)
        let port = try await server.port()

        let queue = try DatabaseQueue(path: directory.appendingPathComponent("device.sqlite").path)
        try await queue.write { db in try db.execute(sql: Fixtures.createNotes) }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "notes", policies: ["amount": .critical])
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: URL(string: "http://127.0.0.1:\(port)")!),
            configuration: .init(pushBatchRecords: 10, retry: .init(maxAttempts: 2, initialDelay: .milliseconds(10))),
            token: try await authenticator.token(namespace: "team", device: "device"))
        try await queue.write { db in
            for index in 0..<2_000 {
                try db.execute(sql: "INSERT INTO notes(id, title, amount) VALUES (?, ?, ?)", arguments: ["n\(index)", "note \(index)", index])
            }
        }
        // Kill the server while the device pushes its 200 batches: once the first is acknowledged.
        let round = Task { try await engine.sync() }
        for _ in 0..<5_000 where try database.cursor(for: "server").sent == 0 { try await Task.sleep(for: .milliseconds(1)) }
        server.kill()
        let interrupted = await round.result
        let sentBeforeKill = try database.cursor(for: "server").sent

        server = try KillableServer(executable: serverExecutable!, data: data, secret: secret, port: port)
        _ = try await server.port()
        try await engine.sync()
        try await engine.sync()

        // A second device sees exactly the device's data: nothing lost, nothing doubled.
        let other = try DatabaseQueue()
        try await other.write { db in try db.execute(sql: Fixtures.createNotes) }
        let otherDatabase = try ReplicatedDatabase(other)
        try otherDatabase.replicate(table: "notes", policies: ["amount": .critical])
        let otherEngine = try SyncEngine(
            database: otherDatabase, transport: HTTPSyncTransport(baseURL: URL(string: "http://127.0.0.1:\(port)")!),
            token: try await authenticator.token(namespace: "team", device: "other"))
        try await otherEngine.sync()
        #expect(try otherDatabase.snapshot() == database.snapshot())
        let count = try await other.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM notes") }
        #expect(count == 2_000)
        server.kill()
        if case .failure = interrupted {
            #expect(sentBeforeKill > 0 && sentBeforeKill < 2_000)  // it was killed mid-push
        }
        try? FileManager.default.removeItem(at: data)
        try? FileManager.default.removeItem(at: directory)
    }
}
