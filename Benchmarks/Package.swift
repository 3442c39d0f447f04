// swift-tools-version: 6.1
// The benchmarks of Converge: their own package, so that the library's users never resolve
// package-benchmark. Run them from the repository root:
//
//     swift package --package-path Benchmarks benchmark          # package-benchmark suites
//     swift run -c release --package-path Benchmarks figures     # the quoted figures, one run
//     swift run -c release --package-path Benchmarks workload    # workload W: store vs plain SQLite
//     swift run -c release --package-path Benchmarks sync        # sync over loopback HTTP
//     swift run -c release --package-path Benchmarks churn       # tombstone collection under churn
//
// To add a suite or a tool: append a target to `targets` below (benchmark suites live in
// `Benchmarks/<Name>/<Name>.swift` and use `benchmarkSuite(_:dependencies:)`).
import PackageDescription

/// A package-benchmark suite: an executable in `Benchmarks/<name>/` with the boilerplate plugin.
func benchmarkSuite(_ name: String, dependencies: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: [
            "BenchmarkSupport",
            .product(name: "Benchmark", package: "benchmark"),
        ] + dependencies,
        path: "Benchmarks/\(name)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

let package = Package(
    name: "ConvergeBenchmarks",
    platforms: [.macOS(.v14), .iOS(.v17)],
    dependencies: [
        .package(name: "Converge", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Deterministic workloads shared by the suites and the `figures` tool.
        .target(
            name: "BenchmarkSupport",
            dependencies: [.product(name: "ConvergeCore", package: "Converge")]
        ),
        // package-benchmark suites.
        benchmarkSuite("CoreBenchmarks"),
        // One run of ContinuousClock measurements: a table and a JSON line to quote.
        .executableTarget(name: "figures", dependencies: ["BenchmarkSupport"]),
        // Workload W's rows and updates (seeded), shared by `workload` and `sync`.
        .target(
            name: "WorkloadW",
            dependencies: [.product(name: "ConvergeCore", package: "Converge")]
        ),
        // Workload W on the SQLite store against plain SQLite, in one process.
        .systemLibrary(name: "CZlib"),
        .executableTarget(
            name: "workload",
            dependencies: [
                "WorkloadW",
                .product(name: "ConvergeCore", package: "Converge"),
                .product(name: "ConvergeSQLite", package: "Converge"),
                .product(name: "GRDB", package: "GRDB.swift"),
                "CZlib",
            ]
        ),
        // Sync through a real server on loopback: first sync of workload W (push and pull)
        // against an in-process apply, and many concurrent devices (issue #8); on the SQLite
        // server and on PostgreSQL with one or several instances, and many small namespaces (#17).
        .executableTarget(
            name: "sync",
            dependencies: [
                "WorkloadW",
                .product(name: "ConvergeCore", package: "Converge"),
                .product(name: "ConvergeSQLite", package: "Converge"),
                .product(name: "ConvergeSync", package: "Converge"),
                .product(name: "ConvergeServer", package: "Converge"),
                .product(name: "ConvergePostgres", package: "Converge"),
                .product(name: "PostgresNIO", package: "postgres-nio"),  // the benchmark's databases
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),  // sqlite3_memory_used
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Churn: devices insert and delete records round after round, with the server's
        // tombstone collection on and off; store sizes against a fresh store (issue #19).
        .executableTarget(
            name: "churn",
            dependencies: [
                "WorkloadW",
                .product(name: "ConvergeCore", package: "Converge"),
                .product(name: "ConvergeSQLite", package: "Converge"),
                .product(name: "ConvergeSync", package: "Converge"),
                .product(name: "ConvergeServer", package: "Converge"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
