// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Converge",
    // macOS 14 / iOS 17: Hummingbird 2 (the server) requires them, and one floor for the
    // whole package keeps the client and the server building from the same checkout.
    platforms: [.macOS(.v14), .iOS(.v17), .tvOS(.v17), .visionOS(.v1)],
    products: [
        .library(name: "ConvergeCore", targets: ["ConvergeCore"]),
        .library(name: "ConvergeSQLite", targets: ["ConvergeSQLite"]),
        .library(name: "ConvergeSimulation", targets: ["ConvergeSimulation"]),
        .executable(name: "converge-sim", targets: ["converge-sim"]),
        .executable(name: "converge-sim-http", targets: ["converge-sim-http"]),
        .library(name: "ConvergeProtocol", targets: ["ConvergeProtocol"]),
        .library(name: "ConvergeSync", targets: ["ConvergeSync"]),
        .library(name: "ConvergeServer", targets: ["ConvergeServer"]),
        .library(name: "ConvergePostgres", targets: ["ConvergePostgres"]),
        .executable(name: "converge-server", targets: ["converge-server"]),
        .executable(name: "converge", targets: ["converge"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        // Already in the graph through jwt-kit; the token tests sign raw JWS with it.
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // HTTPS on the server (already in the graph through postgres-nio); the TLS tests make
        // their certificates with swift-certificates and talk through async-http-client.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // The pure model: no dependencies, no I/O, no clock reads.
        .target(name: "ConvergeCore"),
        // The replicated SQLite store.
        .target(
            name: "ConvergeSQLite",
            dependencies: [
                "ConvergeCore", .product(name: "GRDB", package: "GRDB.swift"),
                // Logging and metrics facades only (no NIO): the app picks the backends.
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The deterministic many-replica simulator, as a library the tests drive too.
        .target(name: "ConvergeSimulation", dependencies: ["ConvergeCore", "ConvergeSQLite"]),
        // The simulator's command line, shared by its two executables.
        .target(
            name: "ConvergeSimulationCLI",
            dependencies: ["ConvergeCore", "ConvergeSimulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The README's main job: no server stack, so its release build takes minutes.
        .executableTarget(name: "converge-sim", dependencies: ["ConvergeSimulationCLI"]),
        // What the test targets share: the `.computeBound` trait, which keeps the tests that
        // hold a thread for long off Swift's cooperative pool (the in-process servers of the
        // sync tests need it).
        .target(name: "ConvergeTestSupport", path: "Tests/ConvergeTestSupport"),
        .testTarget(
            name: "ConvergeCoreTests",
            dependencies: ["ConvergeCore", "ConvergeTestSupport", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "ConvergeSQLiteTests",
            dependencies: [
                "ConvergeSQLite", "ConvergeTestSupport", .product(name: "PropertyBased", package: "swift-property-based"),
                // sqlite3_stmt_status: a test counts the recompilations of a cached statement.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .testTarget(name: "ConvergeSimulationTests", dependencies: ["ConvergeSimulation", "ConvergeTestSupport"]),
        // The sync messages client and server speak (binary, versioned): no dependencies
        // beyond the core, so the server does not depend on the client module.
        .target(name: "ConvergeProtocol", dependencies: ["ConvergeCore"]),
        // The client sync engine: no server stack (URLSession for HTTP).
        .target(
            name: "ConvergeSync",
            dependencies: [
                "ConvergeCore", "ConvergeProtocol", "ConvergeSQLite", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                // Field-level encryption (DESIGN §11): `Crypto` has no NIO, and forwards to
                // CryptoKit on Apple platforms.
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // The sync server (Hummingbird 2): one replicated SQLite store per namespace.
        .target(
            name: "ConvergeServer",
            dependencies: [
                "ConvergeCore", "ConvergeSQLite", "ConvergeProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ]
        ),
        // The simulator's hub through the real server over loopback HTTP (`--transport http`).
        .target(
            name: "ConvergeSimulationHTTP",
            dependencies: [
                "ConvergeSimulation", "ConvergeSync", "ConvergeServer", "ConvergePostgres", .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // The simulator with `--transport http`: the same command line, plus the real server.
        .executableTarget(name: "converge-sim-http", dependencies: ["ConvergeSimulationCLI", "ConvergeSimulationHTTP"]),
        // The server's storage on PostgreSQL (DESIGN §10): shared tables keyed by namespace,
        // any number of server instances on one database. A second shell around the planner.
        .target(
            name: "ConvergePostgres",
            dependencies: [
                "ConvergeCore", "ConvergeSQLite", "ConvergeServer", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "converge-server",
            dependencies: ["ConvergeServer", "ConvergePostgres", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(
            name: "ConvergeSyncTests",
            dependencies: [
                "ConvergeSync", "ConvergeServer", "ConvergeSimulationHTTP", "ConvergePostgres", "ConvergeTestSupport",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // The `converge` inspector of a device's database file: the logic as a library the
        // tests call directly (no server stack), the command line a thin wrapper around it.
        .target(name: "ConvergeInspector", dependencies: ["ConvergeCore", "ConvergeSQLite", .product(name: "GRDB", package: "GRDB.swift")]),
        .executableTarget(
            name: "converge",
            dependencies: ["ConvergeInspector", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(
            name: "ConvergeInspectorTests",
            dependencies: ["ConvergeInspector", "ConvergeSQLite", "ConvergeTestSupport", .product(name: "GRDB", package: "GRDB.swift")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
