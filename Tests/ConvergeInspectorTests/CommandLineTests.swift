import ConvergeCore
import ConvergeTestSupport
import Foundation
import Testing

/// The built `converge` executable, run as a subprocess: argument parsing, output streams
/// and exit statuses as a shell sees them.
@Suite(.computeBound) struct CommandLineTests {
    /// The executable beside the test bundle (SwiftPM builds every product into one
    /// folder), or `nil` when this run did not build it.
    static func executable() -> URL? {
        var candidates = [URL]()
        for start in [Bundle.main.executableURL, URL(fileURLWithPath: CommandLine.arguments[0])].compactMap({ $0 }) {
            var folder = start.deletingLastPathComponent()
            // Inside a bundle (`….xctest/Contents/MacOS`): up to the build folder.
            for _ in 0..<4 {
                candidates.append(folder.appendingPathComponent("converge"))
                folder = folder.deletingLastPathComponent()
            }
        }
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug/converge"))
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    func run(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        // Read before waiting: a report larger than the pipe's buffer would block the child.
        let out = output.fileHandleForReading.readDataToEndOfFile(), err = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    @Test func theExecutableRunsCommandsAndExitsWithTheirStatus() throws {
        guard let converge = Self.executable() else {
            print("CommandLineTests: skipped, no built `converge` executable beside the tests (run `swift build --build-tests`)")
            return
        }
        let fixture = try Fixture()
        let (a, _) = try fixture.conflictedPair()

        let status = try run(converge, ["status", fixture.path("a.sqlite"), "--json"])
        #expect(status.status == 0, "\(status.error)")
        let object = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
        #expect(object?["replica"] as? String == a.uuidString())

        let conflicts = try run(converge, ["conflicts", fixture.path("a.sqlite")])
        #expect(conflicts.status == 0 && conflicts.output.contains("notes 'n' amount: 2 values"))

        try fixture.tamper("a.sqlite", "UPDATE notes SET title = 'Tampered' WHERE id = 'n'")
        let verify = try run(converge, ["verify", fixture.path("a.sqlite")])
        #expect(verify.status == 1 && verify.output.contains("notes 'n': title is 'Tampered'"))

        let missing = try run(converge, ["verify", fixture.path("missing.sqlite")])
        #expect(missing.status == 2 && missing.error.contains("no such file"))
        // A usage error (history needs TABLE and KEY) exits 2 as well, with the usage.
        let usage = try run(converge, ["history", fixture.path("a.sqlite")])
        #expect(usage.status == 2 && usage.error.contains("Usage"))
        let help = try run(converge, ["--help"])
        #expect(help.status == 0 && help.output.contains("verify"))
    }
}
