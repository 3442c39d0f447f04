import ArgumentParser
import ConvergeServer
import Foundation
import Hummingbird

@main
struct ConvergeServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "converge-server",
        abstract: "The Converge sync server: one replicated SQLite store per namespace.",
        discussion: """
            Every option can also be set by an environment variable: CONVERGE_HOST, CONVERGE_PORT,
            CONVERGE_DATA, CONVERGE_JWT_SECRET, CONVERGE_SCHEMA, CONVERGE_MAX_BODY_BYTES,
            CONVERGE_MAX_CONNECTIONS, CONVERGE_REQUEST_HEAD_TIMEOUT_SECONDS, CONVERGE_MAX_HEADER_BYTES.
            Without a JWT secret the server makes a random one and prints a development token.
            """)

    @Option(help: "The address to listen on.")
    var host: String = ProcessInfo.processInfo.environment["CONVERGE_HOST"] ?? "127.0.0.1"

    @Option(help: "The port to listen on (0: any free port).")
    var port: Int = ProcessInfo.processInfo.environment["CONVERGE_PORT"].flatMap(Int.init) ?? 8080

    @Option(help: "The folder of the namespaces' databases.")
    var data: String = ProcessInfo.processInfo.environment["CONVERGE_DATA"] ?? "converge-data"

    @Option(name: .customLong("jwt-secret"), help: "The HS256 secret of bearer tokens.")
    var jwtSecretOption: String?

    @Option(name: .customLong("jwt-es256-public-key"), help: "A PEM file of a P-256 public key: ES256 tokens it verifies are accepted too.")
    var es256KeyOption: String?

    @Option(name: .customLong("schema"), help: "A JSON file of the app's tables (see ServerSchema).")
    var schemaOption: String?

    @Option(name: .customLong("max-body-bytes"), help: "The largest request body accepted.")
    var maxBodyBytes: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_BODY_BYTES"].flatMap(Int.init) ?? 8 << 20

    @Option(
        name: .customLong("max-connections"),
        help: "The most connections open at once (capped below the limit of open files, which the server raises to its hard limit).")
    var maxConnections: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_CONNECTIONS"].flatMap(Int.init) ?? 1_000

    @Option(name: .customLong("request-head-timeout-seconds"), help: "How long a new connection may take to send its first request head.")
    var requestHeadTimeoutSeconds: Int = ProcessInfo.processInfo.environment["CONVERGE_REQUEST_HEAD_TIMEOUT_SECONDS"].flatMap(Int.init) ?? 10

    @Option(name: .customLong("max-header-bytes"), help: "The largest request head (request line and header fields) accepted.")
    var maxHeaderBytes: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_HEADER_BYTES"].flatMap(Int.init) ?? 32 << 10

    @Option(name: .customLong("print-token"), help: "Print a token for NAMESPACE:DEVICE and exit.")
    var printToken: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let jwtSecret = jwtSecretOption ?? environment["CONVERGE_JWT_SECRET"]
        let schema = schemaOption ?? environment["CONVERGE_SCHEMA"]
        let es256KeyPath = es256KeyOption ?? environment["CONVERGE_JWT_ES256_PUBLIC_KEY"]
        let es256Key = try es256KeyPath.map { try String(contentsOfFile: $0, encoding: .utf8) }
        let secret = jwtSecret ?? (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let configuration = ServerConfiguration(
            dataDirectory: URL(fileURLWithPath: data, isDirectory: true),
            jwtSecret: secret,
            jwtES256PublicKeyPEM: es256Key,
            maxBodyBytes: maxBodyBytes,
            schema: try schema.map { try ServerSchema(contentsOf: URL(fileURLWithPath: $0)) } ?? ServerSchema(),
            requestHeadTimeoutSeconds: requestHeadTimeoutSeconds,
            maxConnections: maxConnections,
            maxHeaderBytes: maxHeaderBytes)
        if let printToken {
            let parts = printToken.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--print-token expects NAMESPACE:DEVICE") }
            print(try await Authenticator(secret: secret).token(namespace: parts[0], device: parts[1]))
            return
        }
        // Each connection holds a descriptor: the soft limit (often 1,024) would cap
        // maxConnections well below what the machine allows.
        ConvergeHTTPServer.raiseOpenFilesLimit()
        let service = try await SyncService(configuration: configuration)
        if jwtSecret == nil {
            let token = try await service.authenticator.token(namespace: "dev", device: "dev")
            print("No JWT secret given (--jwt-secret or CONVERGE_JWT_SECRET): using a random one for this run.")
            print("A token for namespace 'dev', device 'dev': \(token)")
            fflush(nil)
        }
        let host = self.host
        let dataPath = configuration.dataDirectory.path
        let app = ConvergeHTTPServer.application(service: service, host: host, port: port) { port in
            print("Converge server listening on http://\(host):\(port) (data in \(dataPath))")
            fflush(nil)
        }
        try await app.runService()
    }
}
