import ConvergeCore
import Foundation
import GRDB

/// What a remote changeset did to one row, shown to a validator before it commits.
public struct ProposedChange: Sendable, Hashable {
    /// The row's table.
    public let table: String
    /// The row's primary key.
    public let key: Value
    /// The row before, or `nil` when there was none (or it was deleted).
    public let before: [String: Value]?
    /// The row after, or `nil` when the change deletes it.
    public let after: [String: Value]?

    /// A change of the row at `table` and `key` from `before` to `after`.
    public init(table: String, key: Value, before: [String: Value]?, after: [String: Value]?) {
        self.table = table
        self.key = key
        self.before = before
        self.after = after
    }

    /// The columns whose value differs (every column for an insert or a delete).
    public var changedColumns: [String] {
        let columns = Set((before ?? [:]).keys).union((after ?? [:]).keys)
        return columns.filter { before?[$0] != after?[$0] }.sorted()
    }
}

/// A remote change a replica refused and undid (see ``ReplicatedDatabase/apply(_:origin:validate:)``).
public struct ChangeRejection: Sendable, Hashable {
    /// Increasing, per database: a peer that delivers rejections keeps the last one it sent.
    public let id: Int64
    /// The refused record's table.
    public let table: String
    /// The refused record's primary key.
    public let key: Value
    /// The validator's reason, meant for the user.
    public let reason: String
    /// Who sent the refused change, as given to `apply`.
    public let origin: String?
    /// When the change was refused.
    public let date: Date

    /// A rejection as recorded.
    public init(id: Int64, table: String, key: Value, reason: String, origin: String?, date: Date) {
        self.id = id
        self.table = table
        self.key = key
        self.reason = reason
        self.origin = origin
        self.date = date
    }
}

extension ReplicatedDatabase {
    /// The most rejections kept; older ones are pruned.
    static let rejectionLimit = 10_000

    /// Rejections recorded by ``apply(_:origin:validate:)`` after `id`, oldest first;
    /// only those of `origin` when it is given.
    public func rejections(origin: String? = nil, after id: Int64 = 0, limit: Int = 100) throws -> [ChangeRejection] {
        try writer.readKeepingStatements { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, tbl, key, reason, origin, at FROM converge_rejections
                    WHERE id > ? AND (? IS NULL OR origin = ?) ORDER BY id LIMIT ?
                    """,
                arguments: [id, origin, origin, max(0, limit)])
            return rows.map { row in
                ChangeRejection(
                    id: row["id"], table: row["tbl"], key: Value(row["key"] as DatabaseValue), reason: row["reason"],
                    origin: row["origin"], date: Date(timeIntervalSince1970: row["at"]))
            }
        }
    }

    /// How many recorded rejections each origin has (origins without any left out).
    public func rejectionCounts() throws -> [String: Int] {
        try writer.readKeepingStatements { db in
            try Row.fetchAll(db, sql: "SELECT origin, count(*) AS n FROM converge_rejections WHERE origin IS NOT NULL GROUP BY origin")
                .reduce(into: [String: Int]()) { $0[$1["origin"]] = $1["n"] }
        }
    }

    /// Shows each visibly changed row to `validate` and undoes the refused ones with
    /// compensating local writes, inside the apply's transaction.
    ///
    /// In tables with unique indexes the rows are those `settled` shows: a held record is not
    /// visible, and one a resolved clash shows (unchanged itself) is seen arriving.
    func review(
        _ changes: [ApplyPlanner.RecordChange], settled: [UniquePlanner.Settled], in metadata: inout MetadataStore, origin: String?,
        validate: (ProposedChange) throws -> String?
    ) throws -> [ChangeRejection] {
        var rejections = [ChangeRejection]()
        // The store's time, not the wall clock: the simulator's runs stay reproducible.
        let now = Date(timeIntervalSince1970: Double(configuration.physicalTime()) / 1_000)
        var shown = changes.compactMap { change -> (RecordAddress, RecordState?, RecordState?)? in
            guard change.row != .none, let table = metadata.tables[change.address.table], table.schema.uniqueIndexes.isEmpty else { return nil }
            return (change.address, change.before, change.after)
        }
        shown += settled.map { ($0.address, $0.shownBefore ? $0.before : nil, $0.shownAfter ? $0.after : nil) }
        shown.sort { $0.0 < $1.0 }
        for (address, before, after) in shown {
            guard let table = metadata.tables[address.table] else { continue }
            let oldRow = before.flatMap { row($0, table, metadata.authority) }
            let newRow = after.flatMap { row($0, table, metadata.authority) }
            guard oldRow != newRow else { continue }
            let change = ProposedChange(table: address.table, key: address.key, before: oldRow, after: newRow)
            guard let reason = try validate(change) else { continue }
            // Captured as this replica's own write: stamped after all it received, so it wins.
            try source.withCapture { try compensate(change, table: table.schema, metadata.db) }
            try metadata.db.execute(
                sql: "INSERT INTO converge_rejections(tbl, key, reason, origin, at) VALUES (?, ?, ?, ?, ?)",
                arguments: [address.table, address.key.databaseValue, reason, origin, now.timeIntervalSince1970])
            rejections.append(ChangeRejection(
                id: metadata.db.lastInsertedRowID, table: address.table, key: address.key, reason: reason, origin: origin, date: now))
        }
        if !rejections.isEmpty {
            try metadata.db.execute(
                sql: "DELETE FROM converge_rejections WHERE id <= (SELECT max(id) FROM converge_rejections) - ?",
                arguments: [Self.rejectionLimit])
        }
        return rejections
    }

    /// ``ApplyPlanner/visibleRow(_:_:_:)`` by column name, a column without any write as NULL.
    private func row(_ state: RecordState, _ table: ReplicatedTable, _ authority: ReplicaID?) -> [String: Value]? {
        ApplyPlanner.visibleRow(state, table.schema, authority).map { Dictionary(uniqueKeysWithValues: zip(table.schema.columns, $0.map { $0 ?? .null })) }
    }

    /// Writes the app table back to `change.before`: delete an inserted row, re-insert a
    /// deleted one, set the changed columns of an updated one.
    private func compensate(_ change: ProposedChange, table schema: TableSchema, _ db: Database) throws {
        let name = quoted(schema.name)
        let keyColumn = quoted(schema.primaryKey)
        do {
            switch (change.before, change.after) {
            case (nil, _):
                try db.cachedStatement(sql: "DELETE FROM \(name) WHERE \(keyColumn) = ?").execute(arguments: [change.key.databaseValue])
            case (let before?, nil):
                let columns = schema.columns
                let list = ([keyColumn] + columns.map(quoted)).joined(separator: ", ")
                let marks = Array(repeating: "?", count: columns.count + 1).joined(separator: ", ")
                try db.execute(
                    sql: "INSERT INTO \(name)(\(list)) VALUES (\(marks))",
                    arguments: StatementArguments([change.key.databaseValue] + columns.map { (before[$0] ?? .null).databaseValue }))
            case (let before?, _?):
                let columns = change.changedColumns
                guard !columns.isEmpty else { return }
                let assignments = columns.map { "\(quoted($0)) = ?" }.joined(separator: ", ")
                try db.execute(
                    sql: "UPDATE \(name) SET \(assignments) WHERE \(keyColumn) = ?",
                    arguments: StatementArguments(columns.map { (before[$0] ?? .null).databaseValue } + [change.key.databaseValue]))
            }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            throw ApplyError(table: schema.name, key: change.key, reason: .constraintViolation(error.message ?? "\(error)"))
        }
    }
}
