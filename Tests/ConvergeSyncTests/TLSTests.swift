import AsyncHTTPClient
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Crypto
import Foundation
import GRDB
import NIOCore
import NIOSSL
import Testing
import X509
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// HTTPS on the server (issue #21): devices sync over TLS with a client that trusts the
/// server's CA, plain HTTP to the TLS port gets nowhere, unusable certificate files stop the
/// server with the file and the problem, and a renewed certificate is taken without a restart.
@Suite(.timeLimit(.minutes(3))) struct TLSTests {
    /// A throwaway CA and a server certificate it signed for `localhost`, as PEM files.
    struct Authority {
        let caPEM: String
        let certificateFile: URL
        let keyFile: URL

        static func make(in directory: URL, name: String = "server") throws -> Authority {
            let caKey = P256.Signing.PrivateKey()
            let caName = try DistinguishedName { CommonName("Converge test CA \(UUID().uuidString.prefix(8))") }
            let now = Date()
            let ca = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(caKey.publicKey),
                notValidBefore: now - 3_600, notValidAfter: now + 86_400, issuer: caName, subject: caName,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                    Critical(KeyUsage(keyCertSign: true))
                },
                issuerPrivateKey: .init(caKey))
            let key = P256.Signing.PrivateKey()
            let leaf = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                notValidBefore: now - 3_600, notValidAfter: now + 86_400, issuer: caName,
                subject: try DistinguishedName { CommonName("localhost") },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth])
                    SubjectAlternativeNames([.dnsName("localhost")])
                },
                issuerPrivateKey: .init(caKey))
            let certificateFile = directory.appendingPathComponent("\(name)-cert.pem")
            let keyFile = directory.appendingPathComponent("\(name)-key.pem")
            try leaf.serializeAsPEM().pemString.write(to: certificateFile, atomically: true, encoding: .utf8)
            try key.pemRepresentation.write(to: keyFile, atomically: true, encoding: .utf8)
            return Authority(caPEM: try ca.serializeAsPEM().pemString, certificateFile: certificateFile, keyFile: keyFile)
        }

        var settings: TLSSettings { TLSSettings(certificateFile: certificateFile, privateKeyFile: keyFile) }
    }

    /// An HTTP client that trusts only `caPEM` (or the system's roots, without one), and does
    /// not follow redirects.
    ///
    /// A refused handshake is retried until the connect timeout, so a probe that expects a
    /// refusal passes a short one; the default is long, because a handshake of debug-built
    /// BoringSSL on a loaded two-core machine can take seconds.
    static func client(trusting caPEM: String?, connectTimeout: TimeAmount = .seconds(30)) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caPEM { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8))) }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: connectTimeout, read: .seconds(30))
        // Answers as they come (the operator page's 303 and its cookie are what is checked).
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The engine's transport over AsyncHTTPClient: URLSession on Linux cannot be told to trust
    /// a CA of the test's own, and the engine takes any transport.
    struct TrustingTransport: SyncTransport {
        let client: HTTPClient
        let baseURL: String

        func send(_ request: SyncRequest, token: String?) async throws -> SyncResponse {
            var http = HTTPClientRequest(url: baseURL + "/v1/sync")
            http.method = .POST
            http.headers.add(name: "Content-Type", value: SyncProtocol.contentType)
            if let token { http.headers.add(name: "Authorization", value: "Bearer \(token)") }
            http.body = .bytes(ByteBuffer(bytes: request.encoded()))
            let response: HTTPClientResponse
            let body: ByteBuffer
            do {
                response = try await client.execute(http, timeout: .seconds(30))
                body = try await response.body.collect(upTo: 64 << 20)
            } catch {
                throw SyncTransportError.network("\(error)")
            }
            guard response.status == .ok else { throw SyncTransportError.status(Int(response.status.code), String(buffer: body)) }
            do {
                return try SyncResponse(decoding: Array(buffer: body))
            } catch {
                throw SyncTransportError.invalidResponse("\(error)")
            }
        }
    }

    static func device(_ name: String, _ server: TestServer, transport: any SyncTransport, in directory: URL) async throws -> Device {
        let queue = try DatabaseQueue(path: directory.appendingPathComponent("\(name)-\(UUID().uuidString).sqlite").path)
        try await queue.write { db in
            try db.execute(sql: Fixtures.createNotes)
            try db.execute(sql: Fixtures.createItems)
        }
        let database = try ReplicatedDatabase(queue)
        try database.replicate(table: "notes", policies: ["amount": .critical], deletePolicy: .updateWins)
        try database.replicate(table: "items", policies: ["qty": .critical], deletePolicy: .deleteWins)
        let engine = try SyncEngine(
            database: database, transport: transport, configuration: SyncEngine.Configuration(retry: Fixtures.quickRetry),
            token: try await server.token(device: name))
        return Device(name: name, database: database, engine: engine)
    }

    /// `https://localhost:<port>`: the name the certificate is for.
    static func httpsURL(_ server: TestServer) -> String { "https://localhost:\(server.port)" }

    @Test func devicesSyncOverTLSWithAClientThatTrustsTheCA() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try Authority.make(in: directory)
        let server = try await TestServer.start(configure: { $0.tls = authority.settings })
        #expect(server.baseURL.scheme == "https")
        let client = try Self.client(trusting: authority.caPEM)
        let stranger = try Self.client(trusting: nil, connectTimeout: .seconds(2))
        do {
            let transport = TrustingTransport(client: client, baseURL: Self.httpsURL(server))
            let phone = try await Self.device("phone", server, transport: transport, in: directory)
            let laptop = try await Self.device("laptop", server, transport: transport, in: directory)
            try phone.execute("INSERT INTO notes(id, title) VALUES ('n1', 'over TLS')")
            try await phone.sync()
            try await laptop.sync()
            #expect(try laptop.rows("notes").count == 1)
            #expect(try laptop.rows("notes").first?.contains("over TLS") == true)
            #expect(try await server.store().snapshot().records.count == 1)

            // A client that does not trust the CA refuses the server: the handshake fails.
            let probe = HTTPClientRequest(url: Self.httpsURL(server) + "/health")
            await #expect(throws: (any Error).self) { _ = try await stranger.execute(probe, timeout: .seconds(10)) }
            let health = try await client.execute(probe, timeout: .seconds(60))
            #expect(health.status.code == 200)
        } catch {
            try? await client.shutdown()
            try? await stranger.shutdown()
            await server.stop()
            throw error
        }
        try await client.shutdown()
        try await stranger.shutdown()
        await server.stop()
    }

    /// A refused WebSocket upgrade is answered with the server's own JSON error, encrypted
    /// like any answer (the handler that writes it sits after the TLS handler).
    @Test func aRefusedWebSocketUpgradeIsAnsweredOverTLS() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try Authority.make(in: directory)
        let server = try await TestServer.start(configure: { $0.tls = authority.settings })
        let client = try Self.client(trusting: authority.caPEM)
        do {
            var upgrade = HTTPClientRequest(url: Self.httpsURL(server) + "/v1/ws")
            for (name, value) in [
                ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Authorization", "Bearer not-a-token"),
            ] {
                upgrade.headers.add(name: name, value: value)
            }
            let response = try await client.execute(upgrade, timeout: .seconds(60))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
            #expect(response.status.code == 401)
            #expect(body.contains(#""code":"unauthorized""#), "body: \(body)")
        } catch {
            try? await client.shutdown()
            await server.stop()
            throw error
        }
        try await client.shutdown()
        await server.stop()
    }

    @Test func plainHTTPToTheTLSPortIsRefused() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try Authority.make(in: directory)
        let server = try await TestServer.start(configure: { $0.tls = authority.settings })
        let plain = HTTPSyncTransport(baseURL: URL(string: "http://127.0.0.1:\(server.port)")!, configuration: .init(requestTimeout: 10, resourceTimeout: 20))
        let phone = try await Self.device("phone", server, transport: plain, in: directory)
        try phone.execute("INSERT INTO notes(id, title) VALUES ('n1', 'in clear')")
        await #expect(throws: SyncError.self) { try await phone.sync() }
        // A raw request too: no HTTP answer comes back, only a closed connection.
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(server.port)/health")!)
        request.timeoutInterval = 10
        await #expect(throws: (any Error).self) { _ = try await URLSession.shared.data(for: request) }
        // Nothing was stored: the namespace was never created.
        #expect(try await server.service.storage.existingStore(for: "team") == nil)
        await server.stop()
    }

    @Test func unusableCertificateFilesStopTheServerWithTheFileAndTheProblem() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try Authority.make(in: directory)
        let other = try Authority.make(in: directory, name: "other")
        let missing = directory.appendingPathComponent("missing-cert.pem")
        let garbage = directory.appendingPathComponent("garbage.pem")
        try "not a certificate".write(to: garbage, atomically: true, encoding: .utf8)

        func startFailure(_ settings: TLSSettings) async throws -> TLSFileError? {
            var configuration = ServerConfiguration(dataDirectory: directory.appendingPathComponent("data"), jwtSecret: Fixtures.makeSecret())
            configuration.tls = settings
            let service = try await SyncService(configuration: configuration)
            do {
                let running = try await RunningServer.start(service: service)
                await running.stop()
                return nil
            } catch let error as TLSFileError {
                return error
            }
        }
        let noFile = try #require(try await startFailure(TLSSettings(certificateFile: missing, privateKeyFile: authority.keyFile)))
        #expect(noFile.path == missing.path && noFile.reason.contains("no such certificate file"))
        let notPEM = try #require(try await startFailure(TLSSettings(certificateFile: garbage, privateKeyFile: authority.keyFile)))
        #expect(notPEM.path == garbage.path && notPEM.description.contains("certificate"))
        let badKey = try #require(try await startFailure(TLSSettings(certificateFile: authority.certificateFile, privateKeyFile: garbage)))
        #expect(badKey.path == garbage.path && badKey.reason.contains("private key"))
        let mismatch = try #require(try await startFailure(TLSSettings(certificateFile: authority.certificateFile, privateKeyFile: other.keyFile)))
        #expect(mismatch.path.contains(other.keyFile.path) && mismatch.reason.contains("does not match"))

        // The command line: a message naming the file on standard error, a non-zero exit.
        guard let executable = serverExecutable else { return }
        let process = Process()
        process.executableURL = executable
        process.arguments = [
            "--port", "0", "--data", directory.appendingPathComponent("cli").path, "--jwt-secret", Fixtures.makeSecret(),
            "--tls-cert", missing.path, "--tls-key", authority.keyFile.path,
        ]
        process.environment = ProcessInfo.processInfo.environment.filter { $0.key != "CONVERGE_POSTGRES_URL" }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let (status, message) = try await offload { () -> (Int32, String) in
            let data = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        #expect(status != 0)
        #expect(message.contains(missing.path) && message.contains("no such certificate file"), "stderr: \(message)")
    }

    @Test func aRenewedCertificateIsTakenWithoutARestart() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try Authority.make(in: directory)
        let renewed = try Authority.make(in: directory, name: "renewed")
        var settings = first.settings
        settings.reloadCheckSeconds = 0.1
        let server = try await TestServer.start(configure: { $0.tls = settings })
        let probe = HTTPClientRequest(url: Self.httpsURL(server) + "/health")

        /// Whether a new connection from a client trusting `ca` gets an answer; a refusal is
        /// waited for up to `connectTimeout`.
        func trusted(by ca: String, connectTimeout: TimeAmount = .seconds(30)) async throws -> Bool {
            let client = try Self.client(trusting: ca, connectTimeout: connectTimeout)
            let ok = (try? await client.execute(probe, timeout: .seconds(60)).status.code == 200) ?? false
            try await client.shutdown()
            return ok
        }
        #expect(try await trusted(by: first.caPEM))
        #expect(try await !trusted(by: renewed.caPEM, connectTimeout: .seconds(2)))

        // A botched renewal (a key file that is not a key) keeps the old certificate serving.
        try "half written".write(to: first.keyFile, atomically: true, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await trusted(by: first.caPEM))

        // The renewal lands as a renewal tool writes it: the new key, then the new certificate.
        try Data(contentsOf: renewed.keyFile).write(to: first.keyFile, options: .atomic)
        try Data(contentsOf: renewed.certificateFile).write(to: first.certificateFile, options: .atomic)
        var switched = false
        for _ in 0..<100 where !switched {
            try await Task.sleep(for: .milliseconds(100))
            switched = try await trusted(by: renewed.caPEM, connectTimeout: .seconds(5))
        }
        #expect(switched, "the renewed certificate was never served")
        #expect(try await !trusted(by: first.caPEM, connectTimeout: .seconds(2)))
        await server.stop()
    }
}
