// swift-tools-version: 6.1
// The inventory example: a small app on GRDB records, and a scripted session of two devices
// that edit offline and sync through a real `converge-server` (issue #22). Run it from the
// repository root (it builds and starts the server, then runs the session):
//
//     bash Examples/Inventory/run.sh
//
// A package of its own, depending on the client products alone: its build compiles no
// server stack (no Hummingbird, no NIO), which is what an app's build would compile.
import PackageDescription

let package = Package(
    name: "Inventory",
    platforms: [.macOS(.v14), .iOS(.v17)],
    dependencies: [
        .package(name: "Converge", path: "../.."),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        .executableTarget(
            name: "inventory",
            dependencies: [
                .product(name: "ConvergeCore", package: "Converge"),
                .product(name: "ConvergeSQLite", package: "Converge"),
                .product(name: "ConvergeSync", package: "Converge"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
