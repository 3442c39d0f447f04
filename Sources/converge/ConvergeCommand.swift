import ArgumentParser
import ConvergeInspector
import Foundation

/// `converge`: inspects a device's Converge database file. The logic is in
/// `ConvergeInspector`; this only parses arguments and prints.
@main
struct ConvergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "converge",
        abstract: "Inspect a Converge database file: status, conflicts, history, verify, export and import changesets.",
        discussion: """
            Exit status: 0 success, 1 verify found differences, 2 the command could not run \
            (no such file, not a Converge database, a bad argument, a corrupt changeset file, \
            a change the store refused); nothing is changed then.
            """,
        subcommands: [Status.self, Conflicts.self, Resolve.self, History.self, Verify.self, Export.self, Import.self]
    )

    /// Arguments every subcommand takes.
    struct Common: ParsableArguments {
        @Argument(help: "The SQLite database file (never created: a missing file is an error).")
        var database: String

        @Flag(help: "JSON output for scripts (sorted keys, full replica ids).")
        var json = false
    }

    /// Runs one inspector command and exits with its status.
    static func perform(_ command: InspectorCommand, _ common: Common) -> Never {
        let result = Inspector.run(command, database: common.database, json: common.json)
        FileHandle.standardOutput.write(Data(result.output.utf8))
        FileHandle.standardError.write(Data(result.errorOutput.utf8))
        Foundation.exit(result.exitCode)
    }

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            // Usage errors exit 2, as every other failure to run does (ArgumentParser's own
            // code for them is 64); help and version requests still exit 0.
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(Inspector.exitFailure)
            }
            exit(withError: error)
        }
    }
}

extension ConvergeCommand {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Identity, clock, replicated tables and policies, pending changes per peer, conflicts, quarantine, rejections, sizes.")
        @OptionGroup var common: Common
        func run() { ConvergeCommand.perform(.status, common) }
    }

    struct Conflicts: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open conflicts: critical fields with every concurrent value, unique-index clashes with their holder and held records.")
        @OptionGroup var common: Common
        func run() { ConvergeCommand.perform(.conflicts, common) }
    }

    struct Resolve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resolve a conflicted field by writing VALUE.",
            discussion: """
                KEY and VALUE are read as SQLite stores them in their column: 3 is an integer \
                in an INTEGER column and text in a TEXT one; 'quoted' is always text, x'00ff' \
                a blob, NULL null.
                """)
        @OptionGroup var common: Common
        @Argument var table: String
        @Argument var key: String
        @Argument var column: String
        @Argument var value: String
        func run() { ConvergeCommand.perform(.resolve(table: table, key: key, column: column, value: value), common) }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every field's stamps and siblings of one record: who wrote what when.")
        @OptionGroup var common: Common
        @Argument var table: String
        @Argument var key: String
        func run() { ConvergeCommand.perform(.history(table: table, key: key), common) }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild the visible rows from the metadata and compare them with the app tables; exit 1 on a difference.")
        @OptionGroup var common: Common
        func run() { ConvergeCommand.perform(.verify, common) }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the changes after CURSOR to FILE (a changeset in the wire format) and print the next cursor.")
        @OptionGroup var common: Common
        @Option(help: "The feed cursor to export after (0: everything).") var since: UInt64
        @Argument(help: "The changeset file to write.") var file: String
        @Flag(help: "Replace FILE if it exists.") var overwrite = false
        func run() { ConvergeCommand.perform(.export(since: since, file: file, overwrite: overwrite), common) }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply a changeset FILE (written by export) to the database.")
        @OptionGroup var common: Common
        @Argument(help: "The changeset file to apply.") var file: String
        func run() { ConvergeCommand.perform(.import(file: file), common) }
    }
}
