import ConvergeCore
import Foundation
import GRDB

extension ChangeRejection {
    /// When the change was refused (``physicalMilliseconds`` as a `Date`).
    public var date: Date { Date(timeIntervalSince1970: Double(physicalMilliseconds) / 1_000) }

    /// A rejection as recorded, refused at `date` (to the millisecond).
    public init(id: Int64, table: String, key: Value, reason: String, origin: String?, date: Date) {
        self.init(
            id: id, table: table, key: key, reason: reason, origin: origin,
            physicalMilliseconds: UInt64(max(0, (date.timeIntervalSince1970 * 1_000).rounded())))
    }
}

extension ReplicatedDatabase {
    /// The most rejections kept; older ones are pruned.
    static let rejectionLimit = 10_000

    /// Rejections recorded by ``apply(_:origin:validate:)`` after `id`, oldest first;
    /// only those of `origin` when it is given.
    public func rejections(origin: String? = nil, after id: Int64 = 0, limit: Int = 100) throws -> [ChangeRejection] {
        try writer.readKeepingStatements { db in
            // Cached: a sync server asks once per request.
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT id, tbl, key, reason, origin, at FROM converge_rejections
                    WHERE id > ? AND (? IS NULL OR origin = ?) ORDER BY id LIMIT ?
                    """),
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

    /// Shows each visibly changed row to `validate` and stores the compensating writes
    /// ``ValidationPlanner`` plans for the refused ones (states and rows, this replica's own
    /// writes at the transaction's stamp, after everything the apply received), inside the
    /// apply's transaction.
    ///
    /// In tables with unique indexes the rows are those `settled` shows: a held record is not
    /// visible, and one a resolved clash shows (unchanged itself) is seen arriving; their
    /// compensations settle like any write.
    func review(
        _ changes: [ApplyPlanner.RecordChange], settled: [UniquePlanner.Settled], in metadata: inout MetadataStore, origin: String?,
        validate: (ProposedChange) throws -> String?
    ) throws -> [ChangeRejection] {
        let schemas = metadata.tables.mapValues(\.schema)
        let compensations = try ValidationPlanner.plan(
            ValidationPlanner.shown(changes, settled: settled, schemas: schemas), schemas: schemas, authority: metadata.authority,
            stamp: source.stamp, validate: validate)
        guard !compensations.isEmpty else { return [] }
        // The store's time, not the wall clock: the simulator's runs stay reproducible.
        let now = configuration.physicalTime()
        let entries = try metadata.load(compensations.map(\.address))
        var rejections = [ChangeRejection]()
        for compensation in compensations {
            let address = compensation.address
            try metadata.commit(entries[address] ?? .empty, changedTo: compensation.after, at: address)
            if let table = metadata.tables[address.table], table.schema.uniqueIndexes.isEmpty {
                try Materializer.write(compensation.row, key: address.key, in: table, metadata.db)
            }
            try metadata.db.cachedStatement(sql: "INSERT INTO converge_rejections(tbl, key, reason, origin, at) VALUES (?, ?, ?, ?, ?)")
                .execute(arguments: [address.table, address.key.databaseValue, compensation.reason, origin, Double(now) / 1_000])
            rejections.append(ChangeRejection(
                id: metadata.db.lastInsertedRowID, table: address.table, key: address.key, reason: compensation.reason, origin: origin,
                physicalMilliseconds: now))
        }
        _ = try metadata.settleUnique()
        try metadata.db.execute(
            sql: "DELETE FROM converge_rejections WHERE id <= (SELECT max(id) FROM converge_rejections) - ?",
            arguments: [Self.rejectionLimit])
        return rejections
    }
}
