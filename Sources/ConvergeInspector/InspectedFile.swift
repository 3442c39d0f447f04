import ConvergeCore
import ConvergeSQLite
import Foundation
import GRDB

/// A database file opened for inspection: checked to be a Converge database, read through a
/// read-only connection.
///
/// Reading commands never open a ``ReplicatedDatabase``: its initializer writes (it creates
/// missing metadata tables and, on a file that is a copy, which an inspected file often
/// is, takes a new replica identity). Only the commands that change the database (`resolve`,
/// `import`) and `export` (the feed folds captured local writes into the metadata first,
/// so that their sequence numbers exist) open the store, through ``openStore()``.
struct InspectedFile {
    let path: String
    let reader: DatabaseQueue

    static func open(_ path: String) throws -> InspectedFile {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InspectorError(.noSuchFile, "no such file: \(path)")
        }
        guard !isDirectory.boolValue else { throw InspectorError(.noSuchFile, "\(path) is a directory, not a database file") }
        var configuration = Configuration()
        // Read-only: opening never creates or changes a file (SQLite would make an empty
        // database of a missing path on a read-write connection).
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        let reader: DatabaseQueue
        let isConverge: Bool
        do {
            reader = try DatabaseQueue(path: path, configuration: configuration)
            isConverge = try reader.read { db in try ReplicatedDatabase.hasConvergeMetadata(db) }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            throw InspectorError(.notSQLite, "\(path) is not an SQLite database")
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CANTOPEN {
            throw InspectorError(.io, "cannot open \(path): \(error.message ?? "\(error)")")
        }
        guard isConverge else {
            throw InspectorError(.notConverge, "\(path) is an SQLite database but not a Converge one (no converge_identity table)")
        }
        return InspectedFile(path: path, reader: reader)
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        try reader.read(body)
    }

    /// The replicated store on this file, for commands that write. Captured local writes
    /// are folded by the store's own operations.
    func openStore() throws -> ReplicatedDatabase {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        return try ReplicatedDatabase(try DatabaseQueue(path: path, configuration: configuration))
    }

    /// The replicated table `name`, or a clear error naming the ones there are.
    func table(_ name: String) throws -> ReplicatedDatabase.StoredTable {
        let tables = try read { db in try ReplicatedDatabase.storedTables(db) }
        guard let table = tables[name] else {
            let known = tables.keys.sorted().joined(separator: ", ")
            throw InspectorError(.noSuchTable, "\(name) is not a replicated table (replicated: \(known.isEmpty ? "none" : known))")
        }
        return table
    }

    /// Bytes of the file and of its WAL and shared-memory files (0 when absent).
    func fileSizes() -> (database: Int, wal: Int, shm: Int) {
        func size(_ path: String) -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
        }
        return (size(path), size(path + "-wal"), size(path + "-shm"))
    }
}

enum SQL {
    /// Quotes an identifier for SQL.
    static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
