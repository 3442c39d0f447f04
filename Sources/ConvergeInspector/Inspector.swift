import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// What the `converge` command line can be asked to do on a database file.
public enum InspectorCommand: Sendable, Hashable {
    /// Identity, clock, replicated tables and policies, peers, conflicts, quarantine,
    /// rejections, sizes.
    case status
    /// Open conflicts: critical fields with every concurrent value, and unique-index
    /// clashes with their holder and held records.
    case conflicts
    /// Resolves a conflicted field by writing `value`. `key` and `value` are read as SQLite
    /// would store them in their column (see ``ArgumentValue``).
    case resolve(table: String, key: String, column: String, value: String)
    /// Every field's stamps and siblings of one record.
    case history(table: String, key: String)
    /// Rebuilds the visible rows from the metadata and compares them with the app tables.
    case verify
    /// Writes the changes after `since` to `file` in the wire format.
    case export(since: UInt64, file: String, overwrite: Bool)
    /// Applies a changeset file.
    case `import`(file: String)
}

/// What a command printed and how it ended.
public struct InspectorResult: Sendable, Hashable {
    /// Standard output: the report, human or JSON.
    public var output: String
    /// Standard error: the error, if any (JSON with `--json`).
    public var errorOutput: String
    public var exitCode: Int32
}

/// The inspector's commands, callable without the command line (the tests do).
///
/// Exit codes: 0 success; 1 `verify` found differences; 2 the command could not run (no
/// such file, not a Converge database, a bad argument, a corrupt changeset file, a change
/// the store refused): nothing was changed.
public enum Inspector {
    public static let exitDifferences: Int32 = 1
    public static let exitFailure: Int32 = 2

    public static func run(_ command: InspectorCommand, database path: String, json: Bool) -> InspectorResult {
        do {
            let report = try report(for: command, database: path)
            let output = json ? JSONOutput.render(report) : report.human
            return InspectorResult(output: output, errorOutput: "", exitCode: report.exitCode)
        } catch {
            let failure = InspectorError(error)
            let message = json ? JSONOutput.render(ErrorReport(error: failure)) : "converge: \(failure.message)\n"
            return InspectorResult(output: "", errorOutput: message, exitCode: exitFailure)
        }
    }

    static func report(for command: InspectorCommand, database path: String) throws -> any InspectorReport {
        let file = try InspectedFile.open(path)
        switch command {
        case .status: return try StatusReport.make(file)
        case .conflicts: return try ConflictsReport.make(file)
        case .resolve(let table, let key, let column, let value): return try ResolveReport.make(file, table: table, key: key, column: column, value: value)
        case .history(let table, let key): return try HistoryReport.make(file, table: table, key: key)
        case .verify: return try VerifyReport.make(file)
        case .export(let since, let output, let overwrite): return try ExportReport.make(file, since: since, to: output, overwrite: overwrite)
        case .import(let input): return try ImportReport.make(file, from: input)
        }
    }
}

/// A command's result: printed as text for people or JSON for scripts.
protocol InspectorReport: Encodable {
    var human: String { get }
    var exitCode: Int32 { get }
}

extension InspectorReport {
    var exitCode: Int32 { 0 }
}

struct ErrorReport: Encodable {
    struct Body: Encodable {
        var code: String
        var message: String
    }
    var error: Body

    init(error: InspectorError) { self.error = Body(code: error.code.rawValue, message: error.message) }
}
