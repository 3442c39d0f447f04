import ConvergeCore
import ConvergeSQLite
import GRDB

/// Why a command could not run. Every one leaves the database as it was.
public struct InspectorError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        case noSuchFile = "no_such_file"
        case notSQLite = "not_sqlite"
        case notConverge = "not_converge_database"
        case corruptMetadata = "corrupt_metadata"
        case badArgument = "bad_argument"
        case noSuchTable = "no_such_table"
        case noSuchColumn = "no_such_column"
        case noSuchRecord = "no_such_record"
        case notInConflict = "not_in_conflict"
        case fileExists = "file_exists"
        case badChangeset = "bad_changeset"
        case refused = "refused"
        case io = "io"
        case database = "database"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Any error a command met, as the inspector reports it.
    init(_ error: any Error) {
        switch error {
        case let error as InspectorError: self = error
        case let error as MetadataCorruption: self.init(.corruptMetadata, error.description)
        case let error as ApplyError: self.init(.refused, error.description)
        case let error as SchemaError: self.init(.refused, error.description)
        case let error as RecordNotFound: self.init(.noSuchRecord, error.description)
        case let error as DatabaseError where error.resultCode == .SQLITE_NOTADB:
            self.init(.notSQLite, "not an SQLite database: \(error.message ?? "\(error)")")
        case let error as DatabaseError: self.init(.database, "SQLite error: \(error.message ?? "\(error)")")
        default: self.init(.io, "\(error)")
        }
    }
}
