import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// Failures of a PostgreSQL deployment: an instance killed during a push, and the database
/// itself restarted during a run. Nothing a device wrote is lost or doubled.
@Suite(.timeLimit(.minutes(4)), .enabled(if: PostgresFixture.url != nil, "CONVERGE_POSTGRES_URL is not set"), .serialized)
struct PostgresFailureTests {
    /// A device whose 2,000 notes are pushed in batches of ten to `url`.
    func device(_ directory: URL, url: URL, token: String) async throws -> (DatabaseQueue, ReplicatedDatabase, SyncEngine) {
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("device-\(UUID().uuidString).sqlite").path)
        try await queue.write { db in try db.execute(sql: Fixtures.createNotes) }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "notes", policies: ["amount": .critical])
        let engine = try SyncEngine(
            database: database, transport: HTTPSyncTransport(baseURL: url),
            configuration: .init(pushBatchRecords: 10, retry: .init(maxAttempts: 8, initialDelay: .milliseconds(50), maxDelay: .milliseconds(500))),
            token: token)
        return (queue, database, engine)
    }

    /// What a fresh device pulls from `url`.
    func pulled(from url: URL, token: String) async throws -> ReplicatedDatabase {
        let other = try DatabaseQueue()
        try await other.write { db in try db.execute(sql: Fixtures.createNotes) }
        let database = try ReplicatedDatabase(other)
        try database.replicate(table: "notes", policies: ["amount": .critical])
        try await SyncEngine(database: database, transport: HTTPSyncTransport(baseURL: url), token: token).sync()
        return database
    }

    @Test(.enabled(if: serverExecutable != nil, "converge-server is not built"))
    func sigkillOfAnInstanceDuringAPushThenTheRetryThroughAnotherCompletes() async throws {
        let url = try await PostgresFixture.createDatabase()
        let data = try Fixtures.temporaryDirectory()
        let directory = try Fixtures.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: data)
            try? FileManager.default.removeItem(at: directory)
        }
        let secret = Fixtures.makeSecret()
        let authenticator = try await Authenticator(secret: secret)
        let first = try KillableServer(executable: serverExecutable!, data: data, secret: secret, port: 0, arguments: ["--postgres", url])
        let port = try await first.port()
        let firstURL = URL(string: "http://127.0.0.1:\(port)")!
        let token = try await authenticator.token(namespace: "team", device: "device")

        let (queue, database, engine) = try await device(directory, url: firstURL, token: token)
        try await queue.write { db in
            for index in 0..<2_000 {
                try db.execute(sql: "INSERT INTO notes(id, title, amount) VALUES (?, ?, ?)", arguments: ["n\(index)", "note \(index)", index])
            }
        }
        // Kill instance 1 once its first batch is acknowledged, while the device pushes (the
        // push cursor stays fixed while a push pages: the engine's status tells the progress).
        let round = Task { try await engine.sync() }
        func pushed() async -> Int {
            if case .syncing(let pushed, _) = await engine.status.phase { return pushed }
            return 0
        }
        for _ in 0..<60_000 where await pushed() == 0 { try await Task.sleep(for: .milliseconds(1)) }
        let pushedBeforeKill = await pushed()
        // At once (a blocking call of milliseconds): the later the kill, the more pages the
        // server has acknowledged beyond the device's fixed push cursor, which the restarted
        // push must still get through.
        first.kill()
        let interrupted = await round.result

        // Another instance, a new process on the same database, takes the address (what a
        // load balancer does): the device's retry completes the push through it.
        let second = try KillableServer(executable: serverExecutable!, data: data, secret: secret, port: port, arguments: ["--postgres", url])
        _ = try await second.port()
        // The device restarts its push from its fixed cursor, below the pages the killed
        // instance acknowledged: a new request (a new serial), so it is applied, not refused
        // as stale.
        try await engine.sync()
        try await engine.sync()
        let other = try await pulled(from: firstURL, token: try await authenticator.token(namespace: "team", device: "other"))
        #expect(try other.snapshot() == database.snapshot(), "nothing lost, nothing doubled")
        let count = try await other.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM notes") }
        #expect(count == 2_000)
        if case .failure = interrupted {
            #expect(pushedBeforeKill > 0 && pushedBeforeKill < 2_000)  // it was killed mid-push
        }
        try await offload { second.kill() }
        await PostgresFixture.dropDatabase(url)
    }

    /// Its own cluster (a restart must not disturb the other tests' database), made with
    /// `.ci/postgres` when the machine can (CI and the developer's machine with PostgreSQL).
    static let script: URL? = {
        let candidate = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".ci/postgres")
        return FileManager.default.fileExists(atPath: candidate.path) ? candidate : nil
    }()

    /// Runs `.ci/postgres ACTION` for the cluster of `state` and returns what it printed.
    /// (`system`, not `Process`: Foundation's `waitUntilExit` on Linux can wait forever for a
    /// script whose daemon outlives it.)
    static func cluster(_ action: String, state: String) throws -> String {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("converge-pg-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let status = system("CONVERGE_PG_STATE='\(state)' PG_PORT= bash '\(script!.path)' \(action) > '\(log.path)' 2>&1 < /dev/null")
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ClusterFailure(output: output) }
        return output
    }

    struct ClusterFailure: Error { var output: String }

    @Test(.enabled(if: script != nil, ".ci/postgres is not here"))
    func postgresRestartedDuringARunFailsRetryablyThenSucceeds() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("converge-pg-restart-\(UUID().uuidString)").path
        let started = try await offload { try Self.cluster("start", state: state) }
        defer { _ = try? Self.cluster("stop", state: state) }
        let url = try #require(started.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        let server = try await TestServer.start(.postgres, shared: PostgresPlace(url: url, schema: nil))
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = try await server.token(device: "device")
        let (queue, database, engine) = try await device(directory, url: server.baseURL, token: token)

        // Rounds of writes and syncs; the database restarts (dropping every connection) in the middle.
        var failures = 0
        for round in 0..<20 {
            try await queue.write { db in
                for index in 0..<50 { try db.execute(sql: "INSERT INTO notes(id, title) VALUES (?, ?)", arguments: ["r\(round)-\(index)", "round \(round)"]) }
            }
            if round == 8 { _ = try await offload { try Self.cluster("restart", state: state) } }
            do {
                try await engine.sync()
            } catch {
                failures += 1  // the engine's retries ran out while the database was down: retried next round
            }
        }
        try await engine.sync()
        let other = try await pulled(from: server.baseURL, token: try await server.token(device: "other"))
        let serverCount = try await server.store().snapshot().records.count
        let pending = try database.changedRecordCount(since: try database.cursor(for: "server").sent)
        #expect(try other.snapshot() == database.snapshot(), "every write arrived once the database was back (server holds \(serverCount), device's pending \(pending), failures \(failures))")
        let count = try await other.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM notes") }
        #expect(count == 1_000)
        #expect(failures <= 2)
        await server.stop()
    }
}
