// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for Converge, built apart from the main package so that the sanitizer
// flags never reach its normal builds. Build and run them with `Fuzz/run.sh` (see README.md):
//
//     swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//
// One executable target per fuzzer, each defining `LLVMFuzzerTestOneInput` and a `@main` that
// hands it to libFuzzer's driver (`FuzzerMain`); `run.sh` lists every `Sources/Fuzz*` folder
// but `FuzzSupport` as a target.
let core = Target.Dependency.product(name: "ConvergeCore", package: "Converge")

let package = Package(
    name: "ConvergeFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Converge", path: ".."),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // Shared by every fuzzer: the byte reader, the fixtures, the checks, the seed corpora.
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer", core]),
        // The declaration of libFuzzer's driver function, which each fuzzer's `main` calls.
        .target(name: "CLibFuzzer"),
        // Arbitrary bytes into the wire decoder.
        .executableTarget(name: "FuzzDecode", dependencies: ["FuzzSupport", core]),
        // Bytes as an operation script over three core replicas.
        .executableTarget(name: "FuzzMerge", dependencies: ["FuzzSupport", core]),
        // Arbitrary bytes into the sync protocol's request and response decoders.
        .executableTarget(
            name: "FuzzSyncMessages",
            // ConvergeProtocol, not ConvergeSync: the messages without the client's engine and
            // its swift-crypto, which the sanitized release build would otherwise compile.
            dependencies: ["FuzzSupport", core, .product(name: "ConvergeProtocol", package: "Converge")]
        ),
        // Changesets, valid, mutated and hostile, applied to an in-memory SQLite store.
        .executableTarget(
            name: "FuzzApply",
            dependencies: [
                "FuzzSupport", core,
                .product(name: "ConvergeSQLite", package: "Converge"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
