import ArgumentParser
import ConvergePostgres
import ConvergeServer
import Foundation
import Hummingbird

@main
struct ConvergeServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "converge-server",
        abstract: "The Converge sync server: one replicated SQLite store per namespace, or PostgreSQL for several instances.",
        discussion: """
            Every option can also be set by an environment variable: CONVERGE_HOST, CONVERGE_PORT,
            CONVERGE_DATA, CONVERGE_POSTGRES_URL, CONVERGE_JWT_SECRET, CONVERGE_SCHEMA, CONVERGE_MAX_BODY_BYTES,
            CONVERGE_MAX_CONNECTIONS, CONVERGE_REQUEST_HEAD_TIMEOUT_SECONDS, CONVERGE_MAX_HEADER_BYTES,
            CONVERGE_TLS_CERT, CONVERGE_TLS_KEY, CONVERGE_ADMIN_TOKEN.
            Without a JWT secret the server makes a random one and prints a development token.
            """)

    @Option(help: "The address to listen on.")
    var host: String = ProcessInfo.processInfo.environment["CONVERGE_HOST"] ?? "127.0.0.1"

    @Option(help: "The port to listen on (0: any free port).")
    var port: Int = ProcessInfo.processInfo.environment["CONVERGE_PORT"].flatMap(Int.init) ?? 8080

    @Option(help: "The folder of the namespaces' databases.")
    var data: String = ProcessInfo.processInfo.environment["CONVERGE_DATA"] ?? "converge-data"

    @Option(
        name: .customLong("postgres"),
        help: "Store namespaces in this PostgreSQL database (postgres://user:password@host:port/database; or CONVERGE_POSTGRES_URL) instead of SQLite files: any number of instances may share it.")
    var postgresURL: String?

    @Option(name: .customLong("postgres-schema"), help: "The PostgreSQL schema of Converge's tables (default: the connection's, usually public; or CONVERGE_POSTGRES_SCHEMA).")
    var postgresSchema: String?

    @Option(name: .customLong("postgres-connections"), help: "The most connections this instance opens to PostgreSQL (default 16).")
    var postgresConnections: Int = ProcessInfo.processInfo.environment["CONVERGE_POSTGRES_CONNECTIONS"].flatMap(Int.init) ?? 16

    @Option(name: .customLong("jwt-secret"), help: "The HS256 secret of bearer tokens.")
    var jwtSecretOption: String?

    @Option(name: .customLong("jwt-es256-public-key"), help: "A PEM file of a P-256 public key: ES256 tokens it verifies are accepted too.")
    var es256KeyOption: String?

    @Option(name: .customLong("schema"), help: "A JSON file of the app's tables (see Examples/schema.json and ServerSchema).")
    var schemaOption: String?

    @Option(name: .customLong("max-body-bytes"), help: "The largest request body accepted.")
    var maxBodyBytes: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_BODY_BYTES"].flatMap(Int.init) ?? 8 << 20

    // Request limits and namespace resources (see ServerConfiguration and the README): each
    // also read from CONVERGE_<NAME IN CAPITALS>, for example CONVERGE_MAX_KEY_BYTES.
    @Option(name: .customLong("max-replicas-per-request"), help: "Distinct replicas one pushed changeset may name (default 10000).")
    var maxReplicasPerRequest: Int?

    @Option(name: .customLong("max-records-per-request"), help: "Records one pushed changeset may carry (default 10000).")
    var maxRecordsPerRequest: Int?

    @Option(name: .customLong("max-fields-per-request"), help: "Field states one pushed changeset may carry (default 200000).")
    var maxFieldsPerRequest: Int?

    @Option(name: .customLong("max-key-bytes"), help: "Bytes of a pushed record key (default 1024).")
    var maxKeyBytes: Int?

    @Option(name: .customLong("max-value-bytes"), help: "Bytes of one pushed text or blob value (default 4194304).")
    var maxValueBytes: Int?

    @Option(name: .customLong("max-name-bytes"), help: "Bytes of a pushed table or column name (default 256).")
    var maxNameBytes: Int?

    @Option(name: .customLong("max-dots-per-record"), help: "Add-tags (live dots and incarnations) of one pushed record (default 256).")
    var maxDotsPerRecord: Int?

    @Option(name: .customLong("max-clock-ahead-ms"), help: "How far ahead of the server's time a pushed stamp may be before the push is refused (default 604800000, a week).")
    var maxClockAheadMilliseconds: UInt64?

    @Option(name: .customLong("max-open-namespaces"), help: "Namespace stores kept open at once (default 256).")
    var maxOpenNamespaces: Int?

    @Option(name: .customLong("namespace-idle-seconds"), help: "A namespace store unused this long is closed (default 300).")
    var namespaceIdleSeconds: Int?

    @Option(name: .customLong("max-namespaces"), help: "Namespaces that may exist; pushes that would create more are refused (default: no bound).")
    var maxNamespaces: Int?

    @Option(
        name: .customLong("max-connections"),
        help: "The most connections open at once (capped below the limit of open files, which the server raises to its hard limit).")
    var maxConnections: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_CONNECTIONS"].flatMap(Int.init) ?? 1_000

    @Option(name: .customLong("request-head-timeout-seconds"), help: "How long a new connection may take to send its first request head.")
    var requestHeadTimeoutSeconds: Int = ProcessInfo.processInfo.environment["CONVERGE_REQUEST_HEAD_TIMEOUT_SECONDS"].flatMap(Int.init) ?? 10

    @Option(name: .customLong("max-header-bytes"), help: "The largest request head (request line and header fields) accepted.")
    var maxHeaderBytes: Int = ProcessInfo.processInfo.environment["CONVERGE_MAX_HEADER_BYTES"].flatMap(Int.init) ?? 32 << 10

    @Option(name: .customLong("print-token"), help: "Print a token for NAMESPACE:DEVICE and exit (it expires after --token-lifetime-seconds).")
    var printToken: String?

    @Option(name: .customLong("token-lifetime-seconds"), help: "Lifetime of the tokens this server signs (--print-token, the development token); default 3600.")
    var tokenLifetimeSeconds: Int?

    @Option(name: .customLong("token-leeway-seconds"), help: "Clock leeway for a token's exp, nbf and iat (default 60).")
    var tokenLeewaySeconds: Int?

    @Option(name: .customLong("token-issuer"), help: "Accept only tokens whose iss is this (and sign tokens with it).")
    var tokenIssuer: String?

    @Option(name: .customLong("token-audience"), help: "Accept only tokens whose aud includes this (and sign tokens with it).")
    var tokenAudience: String?

    @Option(name: .customLong("tls-cert"), help: "Serve HTTPS (TLS 1.2+) with this PEM certificate chain (or CONVERGE_TLS_CERT); needs --tls-key. Renewed files are taken without a restart.")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "The PEM private key of --tls-cert (or CONVERGE_TLS_KEY).")
    var tlsKey: String?

    @Option(name: .customLong("admin-token"), help: "The admin API's bearer credential (32+ bytes; or CONVERGE_ADMIN_TOKEN). Without it the admin API is off.")
    var adminToken: String?

    @Option(name: .customLong("retention-days"), help: "Retire devices not seen for this many days, so that tombstones can be collected (default 30; or CONVERGE_RETENTION_DAYS). A retired device resets and resyncs, keeping its user's writes.")
    var retentionDays: Double?

    @Flag(name: .customLong("keep-tombstones"), help: "Never collect deleted records nor retire devices.")
    var keepTombstones = false

    @Flag(name: .customLong("allow-tokens-without-expiry"), help: "Accept tokens without exp (refused by default: they cannot be taken back).")
    var allowTokensWithoutExpiry = false

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let jwtSecret = jwtSecretOption ?? environment["CONVERGE_JWT_SECRET"]
        let schema = schemaOption ?? environment["CONVERGE_SCHEMA"]
        let es256KeyPath = es256KeyOption ?? environment["CONVERGE_JWT_ES256_PUBLIC_KEY"]
        let es256Key = try es256KeyPath.map { try String(contentsOfFile: $0, encoding: .utf8) }
        let secret = jwtSecret ?? (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        var configuration = ServerConfiguration(
            dataDirectory: URL(fileURLWithPath: data, isDirectory: true),
            jwtSecret: secret,
            jwtES256PublicKeyPEM: es256Key,
            maxBodyBytes: maxBodyBytes,
            schema: try schema.map { try ServerSchema.load(from: URL(fileURLWithPath: $0)) } ?? ServerSchema(),
            requestHeadTimeoutSeconds: requestHeadTimeoutSeconds,
            maxConnections: maxConnections,
            maxHeaderBytes: maxHeaderBytes)
        applyLimits(to: &configuration, environment: environment)
        configuration.tokens = TokenPolicy(
            requireExpiry: !(allowTokensWithoutExpiry || environment["CONVERGE_ALLOW_TOKENS_WITHOUT_EXPIRY"] == "1"),
            leewaySeconds: tokenLeewaySeconds ?? environment["CONVERGE_TOKEN_LEEWAY_SECONDS"].flatMap(Int.init) ?? 60,
            issuer: tokenIssuer ?? environment["CONVERGE_TOKEN_ISSUER"],
            audience: tokenAudience ?? environment["CONVERGE_TOKEN_AUDIENCE"],
            lifetimeSeconds: tokenLifetimeSeconds ?? environment["CONVERGE_TOKEN_LIFETIME_SECONDS"].flatMap(Int.init) ?? 3_600)
        let retention = retentionDays ?? environment["CONVERGE_RETENTION_DAYS"].flatMap(Double.init) ?? 30
        guard retention.isFinite, retention > 0, retention <= 36_500 else { throw ValidationError("--retention-days must be between 0 and 36500 (got \(retention))") }
        configuration.collection = .init(enabled: !keepTombstones, retentionSeconds: UInt64(retention * 86_400))
        switch (tlsCertificate ?? environment["CONVERGE_TLS_CERT"], tlsKey ?? environment["CONVERGE_TLS_KEY"]) {
        case (nil, nil): break
        case (let certificate?, let key?):
            configuration.tls = TLSSettings(certificateFile: URL(fileURLWithPath: certificate), privateKeyFile: URL(fileURLWithPath: key))
        case (nil, _?): throw ValidationError("--tls-key needs --tls-cert (the certificate of the key)")
        case (_?, nil): throw ValidationError("--tls-cert needs --tls-key (the certificate's private key)")
        }
        configuration.adminToken = adminToken ?? environment["CONVERGE_ADMIN_TOKEN"]
        if let token = configuration.adminToken, token.utf8.count < 32 {
            throw ValidationError("--admin-token must be at least 32 bytes long")
        }
        if let printToken {
            let parts = printToken.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--print-token expects NAMESPACE:DEVICE") }
            let authenticator = try await Authenticator(secret: secret, policy: configuration.tokens)
            let expires = Date(timeIntervalSinceNow: TimeInterval(configuration.tokens.lifetimeSeconds))
            print(try await authenticator.token(namespace: parts[0], device: parts[1], expires: expires))
            // The token alone on standard output (for scripts); when it expires beside it.
            FileHandle.standardError.write(Data("expires \(ISO8601DateFormatter().string(from: expires)) (in \(configuration.tokens.lifetimeSeconds) s)\n".utf8))
            return
        }
        // Each connection holds a descriptor: the soft limit (often 1,024) would cap
        // maxConnections well below what the machine allows.
        ConvergeHTTPServer.raiseOpenFilesLimit()
        var storage: PostgresStorage?
        if let url = postgresURL ?? environment["CONVERGE_POSTGRES_URL"], !url.isEmpty {
            storage = try await PostgresStorage(
                url: url, schema: configuration.schema, store: configuration.store, maximumConnections: postgresConnections,
                maxNamespaces: configuration.maxNamespaces, databaseSchema: postgresSchema ?? environment["CONVERGE_POSTGRES_SCHEMA"])
        }
        let service = try await SyncService(configuration: configuration, storage: storage)
        let host = self.host
        let dataPath = storage.map { "PostgreSQL \($0.location)" } ?? configuration.dataDirectory.path
        // Built before anything is printed: a certificate or key that cannot be used stops
        // the server here, with the file and the problem (and a non-zero exit).
        let https = configuration.tls != nil
        let app: any ApplicationProtocol
        do {
            app = try ConvergeHTTPServer.application(service: service, host: host, port: port) { port in
                // The first line says which protocol is served; scripts read the URL from it.
                if !https {
                    print("Converge server listening on http://\(host):\(port) (plain HTTP; data in \(dataPath))")
                } else {
                    print("Converge server listening on https://\(host):\(port) (HTTPS, TLS 1.2+; data in \(dataPath))")
                }
                fflush(nil)
            }
        } catch {
            await storage?.shutdown()
            throw error
        }
        if jwtSecret == nil {
            let token = try await service.authenticator.token(namespace: "dev", device: "dev")
            print("No JWT secret given (--jwt-secret or CONVERGE_JWT_SECRET): using a random one for this run.")
            print("A token for namespace 'dev', device 'dev': \(token)")
            fflush(nil)
        }
        try await app.runService()
        await storage?.shutdown()
    }

    /// The request limits and namespace bounds given by flags, else by the environment,
    /// else the configuration's defaults.
    private func applyLimits(to configuration: inout ServerConfiguration, environment: [String: String]) {
        func value<T: LosslessStringConvertible>(_ option: T?, _ variable: String) -> T? {
            option ?? environment[variable].flatMap(T.init)
        }
        if let v = value(maxReplicasPerRequest, "CONVERGE_MAX_REPLICAS_PER_REQUEST") { configuration.maxReplicasPerRequest = v }
        if let v = value(maxRecordsPerRequest, "CONVERGE_MAX_RECORDS_PER_REQUEST") { configuration.maxRecordsPerRequest = v }
        if let v = value(maxFieldsPerRequest, "CONVERGE_MAX_FIELDS_PER_REQUEST") { configuration.maxFieldsPerRequest = v }
        if let v = value(maxKeyBytes, "CONVERGE_MAX_KEY_BYTES") { configuration.maxKeyBytes = v }
        if let v = value(maxValueBytes, "CONVERGE_MAX_VALUE_BYTES") { configuration.maxValueBytes = v }
        if let v = value(maxNameBytes, "CONVERGE_MAX_NAME_BYTES") { configuration.maxNameBytes = v }
        if let v = value(maxDotsPerRecord, "CONVERGE_MAX_DOTS_PER_RECORD") { configuration.maxDotsPerRecord = v }
        if let v = value(maxClockAheadMilliseconds, "CONVERGE_MAX_CLOCK_AHEAD_MS") { configuration.maxClockAheadMilliseconds = v }
        if let v = value(maxOpenNamespaces, "CONVERGE_MAX_OPEN_NAMESPACES") { configuration.maxOpenNamespaces = v }
        if let v = value(namespaceIdleSeconds, "CONVERGE_NAMESPACE_IDLE_SECONDS") { configuration.namespaceIdleSeconds = v }
        if let v = value(maxNamespaces, "CONVERGE_MAX_NAMESPACES") { configuration.maxNamespaces = v }
    }
}
