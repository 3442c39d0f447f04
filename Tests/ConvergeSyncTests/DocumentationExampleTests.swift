import ConvergeCore
import Crypto
import ConvergePostgres
import ConvergeServer
import ConvergeSimulation
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import Testing

/// The Swift samples of the DocC articles (`Sources/*/*.docc`), compiled here so that they
/// stay true, and run where they need no server.
///
/// ``articleSamplesAreCompiled()`` keeps the articles and this file in step: every ```swift
/// block of an article must appear here verbatim (up to indentation; each paragraph of the
/// block contiguous, the block's `import` lines aside), or in the example app's sources
/// (`Examples/Inventory`, which CI builds and runs), unless the line before the block marks it
/// `<!-- not compiled: why -->`. Change a sample in an article, and this test fails until the
/// same code is here.
@Suite struct DocumentationExampleTests {
    // MARK: The checker

    /// Articles whose samples are not checked (none: every article's samples are here).
    static let unchecked: Set<String> = []

    @Test func articleSamplesAreCompiled() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let compiled = try [URL(fileURLWithPath: #filePath)] + swiftFiles(in: root.appendingPathComponent("Examples/Inventory/Sources"))
        let sources = try compiled.map { ($0.lastPathComponent, try normalizedLines(of: String(contentsOf: $0, encoding: .utf8))) }
        var checked = 0, fragments = 0, missing = [String]()
        for article in try articles(in: root.appendingPathComponent("Sources")) where !Self.unchecked.contains(article.lastPathComponent) {
            for block in try swiftBlocks(of: String(contentsOf: article, encoding: .utf8)) {
                if block.fragment { fragments += 1; continue }
                checked += 1
                let paragraphs = block.paragraphs
                let found = sources.contains { source in paragraphs.allSatisfy { contains(source.1, $0) } }
                if !found {
                    let first = paragraphs.first { !$0.isEmpty }?.first ?? "(empty)"
                    missing.append("\(article.lastPathComponent):\(block.line): \(first)")
                }
            }
        }
        print("doc examples: \(checked - missing.count) of \(checked) article samples compiled, \(fragments) marked not compiled")
        #expect(checked > 30, "the articles were not found under \(root.path)")
        #expect(missing.isEmpty, "samples not found in DocumentationExampleTests.swift or Examples/Inventory (copy them here, or mark them `<!-- not compiled: why -->`):\n\(missing.joined(separator: "\n"))")
    }

    // MARK: Runs of the samples that need no server

    @Test func coreLandingPageSample() throws {
        try DocumentationSamples.coreLandingPage()
    }

    @Test func storeSamples() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("converge-doc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let samples = DocumentationSamples()
        try samples.sqliteLandingPage(path: folder.appendingPathComponent("landing.sqlite").path)
        let (dbQueue, converge) = try samples.gettingStartedReplicate(path: folder.appendingPathComponent("start.sqlite").path)
        try samples.gettingStartedWrite(dbQueue: dbQueue)
        try GettingStartedExample.declareBesideARecordType()
        try samples.gettingStartedExchange()
        try samples.conflictsSamples()
        try samples.choosingPolicies()
        try ChoosingPoliciesExample.declare()
        try samples.clockSkew()
        try samples.identity()
        try samples.tombstones(converge)
    }

    // The sample of ConvergeSimulation's *Testing an App with the Simulator*, as it reads there.

    @Test func replicasConvergeThroughEveryFault() {
        var options = SimulationOptions(seed: 7, replicas: 6, ops: 400, store: .core, faults: Set(FaultKind.allCases))
        options.batchRecords = 20
        let report = simulate(options)
        #expect(report.passed, "\(report.text)\nreplay: \(options.replayCommand)")
        #expect(report.lostWrites == 0)
    }

    // MARK: Reading the articles

    struct Block {
        var line: Int
        var fragment: Bool
        var lines: [String]

        /// The block's lines, trimmed, `import` lines left out, split at blank lines.
        var paragraphs: [[String]] {
            var result = [[String]](), current = [String]()
            for line in lines.map(trimmedLine) where !line.hasPrefix("import ") {
                if line.isEmpty {
                    if !current.isEmpty { result.append(current) }
                    current = []
                } else {
                    current.append(line)
                }
            }
            if !current.isEmpty { result.append(current) }
            return result
        }
    }

    func articles(in sources: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: sources, includingPropertiesForKeys: nil)
            .flatMap { module in
                (try? FileManager.default.contentsOfDirectory(at: module, includingPropertiesForKeys: nil)) ?? []
            }
            .filter { $0.pathExtension == "docc" }
            .flatMap { catalog in try FileManager.default.contentsOfDirectory(at: catalog, includingPropertiesForKeys: nil) }
            .filter { $0.pathExtension == "md" }
            .sorted { $0.path < $1.path }
    }

    func swiftFiles(in folder: URL) throws -> [URL] {
        guard let walker = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: nil) else { return [] }
        return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }.sorted { $0.path < $1.path }
    }

    func swiftBlocks(of text: String) -> [Block] {
        var blocks = [Block](), current: Block?
        var previous = ""
        for (number, line) in text.components(separatedBy: "\n").enumerated() {
            if var block = current {
                if trimmedLine(line) == "```" {
                    blocks.append(block)
                    current = nil
                } else {
                    block.lines.append(line)
                    current = block
                }
            } else if trimmedLine(line) == "```swift" {
                let marker = trimmedLine(previous)
                current = Block(line: number + 1, fragment: marker.hasPrefix("<!-- not compiled"), lines: [])
            }
            previous = line
        }
        return blocks
    }

    func normalizedLines(of text: String) -> [String] {
        text.components(separatedBy: "\n").map(trimmedLine).filter { !$0.isEmpty }
    }

    /// Whether `paragraph` appears in `lines` as consecutive lines.
    func contains(_ lines: [String], _ paragraph: [String]) -> Bool {
        guard !paragraph.isEmpty else { return true }
        guard lines.count >= paragraph.count else { return false }
        return (0...(lines.count - paragraph.count)).contains { start in
            lines[start..<(start + paragraph.count)].elementsEqual(paragraph)
        }
    }
}

/// A line without its indentation and trailing spaces.
private func trimmedLine(_ line: String) -> String {
    line.trimmingCharacters(in: .whitespaces)
}

// MARK: - The samples

/// Stand-ins for what the samples take from the app around them (its user interface, its
/// sign-in), so that they compile as they read.
private final class Label { var text = "" }
private final class Badge { var count = 0 }
private struct Auth: Sendable { func freshToken() async throws -> String { "token" } }

private struct DocumentationSamples {
    let label = Label()
    let conflictBadge = Badge()
    let badge = Badge()

    func showAlert(_ message: String) {}
    func show(_ message: String) {}
    func showNotice(_ message: String) {}
    func logOut() async throws {}

    static func openStore(_ sql: String...) throws -> (DatabaseQueue, ReplicatedDatabase) {
        let dbQueue = try DatabaseQueue()
        try dbQueue.write { db in for statement in sql { try db.execute(sql: statement) } }
        return (dbQueue, try ReplicatedDatabase(dbQueue))
    }

    static func plainQueue(_ sql: String...) throws -> DatabaseQueue {
        let dbQueue = try DatabaseQueue()
        try dbQueue.write { db in for statement in sql { try db.execute(sql: statement) } }
        return dbQueue
    }

    static let itemTable = "CREATE TABLE item(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', qty INTEGER NOT NULL DEFAULT 0, status TEXT)"

    // ConvergeCore.md

    static func coreLandingPage() throws {
        let schema = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty"], policies: ["qty": .critical])
        var phone = Replica(id: .random()), laptop = Replica(id: .random())
        phone.replicate(schema); laptop.replicate(schema)

        let created = phone.perform([.insert(table: "items", key: .text("pen"), values: ["name": .text("Pen"), "qty": .integer(1)])], physicalMilliseconds: 1_000)
        laptop.apply(created, physicalMilliseconds: 1_000)
        let fromPhone = phone.perform([.update(table: "items", key: .text("pen"), values: ["qty": .integer(2)])], physicalMilliseconds: 2_000)
        let fromLaptop = laptop.perform([.update(table: "items", key: .text("pen"), values: ["qty": .integer(5)])], physicalMilliseconds: 2_001)

        // Sync in any order, over the binary wire format.
        phone.apply(try WireDecoder.decode(WireEncoder.encode(fromLaptop)), physicalMilliseconds: 3_000)
        laptop.apply(try WireDecoder.decode(WireEncoder.encode(fromPhone)), physicalMilliseconds: 3_000)

        let siblings = phone.conflicts().first?.field?.siblings.map(\.value)   // [2, 5]: a critical field keeps both
        #expect(siblings == [.integer(2), .integer(5)])
        #expect(phone.row(table: "items", key: .text("pen")) == laptop.row(table: "items", key: .text("pen")))
    }

    // ConvergeSQLite.md

    func sqliteLandingPage(path: String) throws {
        try DatabaseQueue(path: path).write { db in try db.execute(sql: Self.itemTable) }
        let dbQueue = try DatabaseQueue(path: path)
        let converge = try ReplicatedDatabase(dbQueue)
        try converge.replicate(table: "item", policies: ["qty": .critical])
        #expect(converge.replicatedTables["item"] != nil)
    }

    // GettingStarted.md

    func gettingStartedReplicate(path: String) throws -> (DatabaseQueue, ReplicatedDatabase) {
        let dbQueue = try DatabaseQueue(path: path)
        try dbQueue.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS item(
                    id TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL DEFAULT '',
                    qty INTEGER NOT NULL DEFAULT 0)
                """)
        }
        let converge = try ReplicatedDatabase(dbQueue)
        try converge.replicate(table: "item", policies: ["qty": .critical], deletePolicy: .updateWins)
        return (dbQueue, converge)
    }

    func gettingStartedWrite(dbQueue: DatabaseQueue) throws {
        try dbQueue.write { db in
            try db.execute(sql: "INSERT INTO item(id, name, qty) VALUES ('pen', 'Pen', 1)")
            try db.execute(sql: "UPDATE item SET name = 'Blue pen' WHERE id = 'pen'")
        }
        #expect(try dbQueue.read { db in try String.fetchOne(db, sql: "SELECT name FROM item") } == "Blue pen")
    }

    func gettingStartedExchange() throws {
        let (_, phone) = try Self.openStore(Self.itemTable)
        let (_, laptop) = try Self.openStore(Self.itemTable)
        try phone.replicate(table: "item")
        try laptop.replicate(table: "item")
        try phone.writer.write { db in try db.execute(sql: "INSERT INTO item(id, name) VALUES ('pen', 'Pen')") }
        try laptop.writer.write { db in try db.execute(sql: "INSERT INTO item(id, name) VALUES ('cup', 'Cup')") }

        /// Sends `from`'s changes that `to` has not received yet.
        func send(from: ReplicatedDatabase, to: ReplicatedDatabase, peer: String) throws {
            var cursor = try from.cursor(for: peer)
            var position: UInt64? = nil
            while true {
                let batch = try from.changes(since: cursor.sent, after: position)
                let bytes = WireEncoder.encode(batch.changeset)       // over any transport
                try to.apply(try WireDecoder.decode(bytes))
                guard batch.hasMore else {
                    cursor.sent = batch.next
                    try from.setCursor(cursor, for: peer)             // only once applied
                    return
                }
                position = batch.next                               // same cursor, next page
            }
        }

        try send(from: phone, to: laptop, peer: "laptop")
        try send(from: laptop, to: phone, peer: "phone")

        #expect(try phone.snapshot() == laptop.snapshot())
    }

    // Conflicts.md

    func conflictsSamples() throws {
        let (dbQueue, converge) = try Self.openStore(Self.itemTable)
        try converge.replicate(table: "item", policies: ["qty": .critical])
        // or: static let replication = Replication(columns: [.critical(Column("qty"))])
        try dbQueue.write { db in try db.execute(sql: "INSERT INTO item(id, name, qty) VALUES ('pen', 'Pen', 1)") }

        for conflict in try converge.conflicts() {
            switch conflict {
            case .field(let field):
                print(field.table, field.key, field.column, field.siblings.map(\.value))
            case .constraint(let clash):
                print(clash.index, clash.values, clash.holder.key, clash.held.map(\.key))
            }
        }

        try converge.resolve(table: "item", key: .text("pen"), column: "qty", to: .integer(3))

        try dbQueue.write { db in
            try db.execute(sql: "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email UNIQUE, name)")
        }
        try converge.replicate(table: "people", allowUniqueIndexes: true)
        try dbQueue.write { db in try db.execute(sql: "INSERT INTO people(id, email) VALUES ('mine', 'ann@example.com')") }

        // Give the held record another e-mail: it shows, and the clash is gone.
        try converge.update(table: "people", key: .text("mine"), values: ["email": .text("ann@home.example")])
        // Or drop it.
        try converge.delete(table: "people", key: .text("mine"))

        #expect(try converge.conflicts().isEmpty)
        #expect(try dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT qty FROM item WHERE id = 'pen'") } == 3)
    }

    /// Compiled, not run: it observes until cancelled.
    func observeConflicts(_ converge: ReplicatedDatabase) async throws {
        for try await conflicts in converge.observeConflicts().values(in: converge.writer) {
            badge.count = conflicts.count
        }
    }

    // TombstonesAndResets.md

    func tombstones(_ converge: ReplicatedDatabase) throws {
        let acknowledged = try converge.cursor(for: "server").sent
        try converge.resetForResync(acknowledged: acknowledged)
        // ... pull everything from the server (the feed from cursor 0) and apply it ...
        let rewritten = try converge.reapplyKeptWrites()   // then push them as usual
        #expect(rewritten >= 0)
    }

    // ChoosingPolicies.md

    func choosingPolicies() throws {
        let (dbQueue, converge) = try Self.openStore(Self.itemTable, "CREATE TABLE people(id TEXT PRIMARY KEY NOT NULL, email UNIQUE, name)")
        try converge.replicate(table: "item", policies: ["qty": .critical, "status": .authority], deletePolicy: .deleteWins)

        try converge.replicate(table: "people", allowUniqueIndexes: true)

        #expect(try dbQueue.read { db in try db.tableExists("item") })
    }

    // ClockSkewAndQuarantine.md

    func clockSkew() throws {
        let dbQueue = try Self.plainQueue(Self.itemTable)
        var configuration = ReplicatedDatabase.Configuration()
        configuration.maxDriftMilliseconds = 10 * 60 * 1000   // ten minutes
        let converge = try ReplicatedDatabase(dbQueue, configuration: configuration)
        try converge.replicate(table: "item")

        // A device whose clock runs a day ahead.
        var ahead = configuration
        ahead.physicalTime = { UInt64(Date().timeIntervalSince1970 * 1000) + 86_400_000 }
        let future = try ReplicatedDatabase(try Self.plainQueue(Self.itemTable), configuration: ahead)
        try future.replicate(table: "item")
        try future.writer.write { db in try db.execute(sql: "INSERT INTO item(id, name) VALUES ('pen', 'Pen')") }
        let changeset = try future.changes(since: 0).changeset

        let report = try converge.apply(changeset)
        if report.quarantinedRecords > 0 {
            print("\(report.quarantinedRecords) changes are stamped ahead of this device's clock; they will show once its time catches up")
        }
        let held = try converge.quarantinedCount()
        #expect(held == 1)

        let released = try converge.releaseQuarantine(force: true)
        #expect(released == 1)
        #expect(try converge.quarantinedCount() == 0)
    }

    // IdentityAndRestoredBackups.md

    func identity() throws {
        let (_, converge) = try Self.openStore(Self.itemTable)
        let (_, server) = try Self.openStore(Self.itemTable)
        try converge.replicate(table: "item")
        try server.replicate(table: "item")
        let changesetFromTheServer = try server.changes(since: 0).changeset

        let report = try converge.apply(changesetFromTheServer)
        if report.identityReset {
            // This database was restored or copied: it now writes as a new replica.
            print("new identity:", converge.replicaID)
        }

        let before = converge.replicaID
        try converge.resetIdentity()
        #expect(converge.replicaID != before)
    }

    // ConvergeSync.md and SyncingWithAServer.md: compiled, not run (they need a server).

    func syncLandingPage(_ converge: ReplicatedDatabase, token: String, auth: Auth) async throws {
        let engine = try SyncEngine(
            database: converge,
            transport: HTTPSyncTransport(baseURL: URL(string: "https://sync.example.com")!),
            token: token, refreshToken: { try await auth.freshToken() })
        try await engine.start()
    }

    func syncingWithAServer(_ dbQueue: DatabaseQueue, token: String, auth: Auth) async throws {
        let converge = try ReplicatedDatabase(dbQueue)
        try converge.replicate(table: "item", policies: ["qty": .critical])

        let engine = try SyncEngine(
            database: converge,
            transport: HTTPSyncTransport(baseURL: URL(string: "https://sync.example.com")!),
            token: token,
            refreshToken: { try await auth.freshToken() })

        try await engine.start()                 // automatic rounds from now on
        try await engine.sync()                  // "Sync now": one round, its report
        await engine.trigger()                   // something happened: a round soon

        do {
            try await engine.waitUntilUploaded(timeout: .seconds(30))
            try await logOut()
        } catch SyncError.timedOut(let message) {
            showAlert("Some changes are not on the server yet: \(message)")
        }

        for rejection in try engine.rejections() {
            show("\(rejection.table) \(rejection.key): \(rejection.reason)")
        }
        try await engine.dismissRejections()
    }

    func syncStatus(_ engine: SyncEngine) async {
        for await status in await engine.statusUpdates() {
            switch status.phase {
            case .idle: label.text = status.pendingChanges == 0 ? "Up to date" : "\(status.pendingChanges) to upload"
            case .syncing: label.text = "Syncing…"
            case .offline: label.text = "Offline"
            case .error: label.text = "Sync failed: \(status.lastError?.description ?? "")"
            }
            conflictBadge.count = status.conflicts
        }
    }

    // RetentionWindowAndResets.md

    func retentionWindow(_ engine: SyncEngine) async throws {
        var shownReset: SyncReset?
        for await status in await engine.statusUpdates() {
            if let reset = status.lastReset, reset != shownReset {
                shownReset = reset
                showNotice("""
                    This device had not synced for a long time, so its data was refreshed from the \
                    server. Your \(reset.reappliedRecords) unsent changes were kept.
                    """)
            }
        }

        let lastReset = try engine.log(limit: 100).first { $0.resetReappliedRecords != nil }
        _ = lastReset
    }

    // ConvergeServer.md and ConvergePostgres.md: compiled, not run.

    func serverLandingPage(secret: String) async throws {
        let service = try await SyncService(configuration: ServerConfiguration(
            dataDirectory: URL(fileURLWithPath: "./data", isDirectory: true),
            jwtSecret: secret,
            schema: try ServerSchema.load(from: URL(fileURLWithPath: "schema.json")),
            validator: { change, pusher in
                guard case .integer(let qty)? = change.after?["qty"], qty < 0 else { return nil }
                return "a quantity cannot be negative"
            }))
        let server = try await RunningServer.start(service: service, host: "127.0.0.1", port: 8080)
        _ = server
    }

    func postgresLandingPage(configuration: ServerConfiguration) async throws {
        let storage = try await PostgresStorage(
            url: "postgres://converge@127.0.0.1:5432/converge",
            schema: configuration.schema, store: configuration.store, maximumConnections: 16)
        let service = try await SyncService(configuration: configuration, storage: storage)
        _ = service
    }
}

// GettingStarted.md: a record type that declares its replication.

private enum GettingStartedExample {
    struct Item: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
        var id: String
        var name: String
        var qty: Int

        static let replication = Replication(columns: [.critical(Column("qty"))], deletePolicy: .deleteWins)
    }

    static func declareBesideARecordType() throws {
        let (dbQueue, converge) = try DocumentationSamples.openStore(DocumentationSamples.itemTable)

        try converge.replicate(Item.self)

        try dbQueue.write { db in
            try Item(id: "cup", name: "Cup", qty: 2).insert(db)   // captured like any write
        }
        #expect(try converge.changedRecordCount(since: 0) == 1)
    }
}

// ChoosingPolicies.md: the inventory's product.

private enum ChoosingPoliciesExample {
    struct Product: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
        var id: String
        var name: String
        var sku: String?
        var quantity: Int
        var status: String?

        enum Columns {
            static let sku = Column(CodingKeys.sku)
            static let quantity = Column(CodingKeys.quantity)
            static let status = Column(CodingKeys.status)
        }

        static let replication = Replication(
            columns: [.critical(Columns.quantity), .authority(Columns.status)],
            deletePolicy: .deleteWins,
            allowUniqueIndexes: true)
    }

    static func declare() throws {
        let (_, converge) = try DocumentationSamples.openStore(
            "CREATE TABLE product(id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL DEFAULT '', sku TEXT UNIQUE, quantity INTEGER NOT NULL DEFAULT 0, status TEXT)")
        try converge.replicate(Product.self)
        #expect(converge.replicatedTables["product"] != nil)
    }
}

// EncryptingFields.md: encrypted columns, their keys, and a rotation.

private enum EncryptingFieldsExample {
    struct Note: Codable, FetchableRecord, PersistableRecord, ReplicatedRecord {
        var id: String
        var title: String?
        var body: String?
        var amount: Int?

        enum Columns {
            static let body = Column(CodingKeys.body)
            static let amount = Column(CodingKeys.amount)
        }

        static let replication = Replication(columns: [.critical(Columns.amount)], encrypted: [Columns.body, Columns.amount])
    }

    static func configure(
        _ converge: ReplicatedDatabase, transport: any SyncTransport, token: String, namespaceKey: SymmetricKey
    ) throws -> SyncEngine {
        try converge.replicate(table: "notes", policies: ["amount": .critical], encrypted: ["body", "amount"])

        var configuration = SyncEngine.Configuration()
        configuration.fieldKeys = try FieldKeys(id: "2025-06", key: namespaceKey)   // a SymmetricKey
        let engine = try SyncEngine(database: converge, transport: transport, configuration: configuration, token: token)
        return engine
    }

    static func rotate(_ engine: SyncEngine, oldKey: SymmetricKey, newKey: SymmetricKey) async throws {
        try await engine.setFieldKeys(FieldKeys(current: "2025-12", keys: ["2025-06": oldKey, "2025-12": newKey]))
    }
}

