// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Converge",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "ConvergeCore", targets: ["ConvergeCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        .target(name: "ConvergeCore"),
        .testTarget(
            name: "ConvergeCoreTests",
            dependencies: [
                "ConvergeCore",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
