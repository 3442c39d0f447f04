// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Converge",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "ConvergeCore", targets: ["ConvergeCore"]),
        .library(name: "ConvergeSQLite", targets: ["ConvergeSQLite"]),
        .library(name: "ConvergeSimulation", targets: ["ConvergeSimulation"]),
        .executable(name: "converge-sim", targets: ["converge-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // The pure model: no dependencies, no I/O, no clock reads.
        .target(name: "ConvergeCore"),
        // The replicated SQLite store.
        .target(
            name: "ConvergeSQLite",
            dependencies: ["ConvergeCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The deterministic many-replica simulator, as a library the tests drive too.
        .target(name: "ConvergeSimulation", dependencies: ["ConvergeCore", "ConvergeSQLite"]),
        .executableTarget(
            name: "converge-sim",
            dependencies: ["ConvergeSimulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(
            name: "ConvergeCoreTests",
            dependencies: ["ConvergeCore", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "ConvergeSQLiteTests",
            dependencies: ["ConvergeSQLite", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(name: "ConvergeSimulationTests", dependencies: ["ConvergeSimulation"]),
    ],
    swiftLanguageModes: [.v6]
)
