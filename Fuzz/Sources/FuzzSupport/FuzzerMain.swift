import CLibFuzzer
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The entry point of every fuzzer executable.
///
/// SwiftPM compiles an executable's entry point as `<Module>_main` and points the linker's
/// `main` at it, so libFuzzer's own `main` never runs: each fuzzer's `@main` calls this,
/// which hands the command line to libFuzzer's driver. One addition to libFuzzer's flags:
/// `<fuzzer> --generate-corpus DIR` writes the target's seed inputs into DIR and exits.
public enum FuzzerMain {
    public typealias Callback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

    public static func run(seeds: () -> [[UInt8]], _ testOneInput: Callback) -> Never {
        SeedCorpus.generateIfAsked(seeds)
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
    }

    /// A valid pointer for an empty input (libFuzzer may pass `nil` with a zero count).
    nonisolated(unsafe) public static let emptyInput = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1))
}
