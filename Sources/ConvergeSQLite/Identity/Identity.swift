import ConvergeCore
import Foundation
import GRDB

/// The replica's durable identity and the fingerprint that tells a copied file.
struct Identity {
    var replica: ReplicaID
    var clock: HLC
    /// The replica designated as authority for `.authority` columns, if any.
    var authority: ReplicaID?
    /// The file no longer matches the fingerprint stored with the identity.
    var wasCopied: Bool

    /// `path|device|inode` of a database file, or `nil` for an in-memory database.
    static func fingerprint(path: String) -> String? {
        guard !path.isEmpty, path != ":memory:", !path.hasPrefix("file::memory:"),
              let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let device = attributes[.systemNumber], let inode = attributes[.systemFileNumber]
        else { return nil }
        return "\(URL(fileURLWithPath: path).standardizedFileURL.path)|\(device)|\(inode)"
    }

    static func loadOrCreate(_ db: Database, fingerprint: String?, newReplica: () -> ReplicaID) throws -> Identity {
        if let row = try Row.fetchOne(db, sql: "SELECT replica, clock, fingerprint, authority FROM converge_identity") {
            let bytes: DatabaseValue = row["replica"]
            guard case .blob(let data) = bytes.storage, let replica = ReplicaID(bytes: [UInt8](data)) else {
                throw MetadataCorruption(table: "converge_identity", key: nil, detail: "replica id is not 16 bytes")
            }
            let stored: String? = row["fingerprint"]
            var clock = HLC(rawValue: UInt64(bitPattern: row["clock"]))
            // Local writes captured but not yet folded carry stamps above the saved mark.
            for table in try String.fetchAll(db, sql: "SELECT name FROM converge_tables") {
                let log = quoted(MetadataSchema.logTable(table))
                if try db.tableExists(MetadataSchema.logTable(table)),
                   // The last row holds the largest reading (the clock only moves up);
                   // SQL's `max` would compare the stored bit patterns as signed.
                   let latest = try Int64.fetchOne(db, sql: "SELECT hlc FROM \(log) ORDER BY id DESC LIMIT 1") {
                    clock = max(clock, HLC(rawValue: UInt64(bitPattern: latest)))
                }
            }
            let copied = stored != nil && fingerprint != nil && stored != fingerprint
            if stored == nil, let fingerprint {
                try db.execute(sql: "UPDATE converge_identity SET fingerprint = ?", arguments: [fingerprint])
            }
            var authority: ReplicaID?
            let authorityValue: DatabaseValue = row["authority"]
            if case .blob(let data) = authorityValue.storage {
                guard let id = ReplicaID(bytes: [UInt8](data)) else {
                    throw MetadataCorruption(table: "converge_identity", key: nil, detail: "authority id is not 16 bytes")
                }
                authority = id
            }
            return Identity(replica: replica, clock: clock, authority: authority, wasCopied: copied)
        }
        let replica = newReplica()
        try db.execute(
            sql: "INSERT INTO converge_identity(singleton, replica, clock, sequence, fingerprint, schema_version) VALUES (1, ?, 0, 0, ?, ?)",
            arguments: [Data(replica.bytes), fingerprint, MetadataSchema.version])
        return Identity(replica: replica, clock: .zero, authority: nil, wasCopied: false)
    }
}

extension ReplicatedDatabase {
    /// Takes a new replica identity and re-stamps the local writes no peer has acknowledged.
    ///
    /// Called on open when the file turns out to be a copy, on apply when a peer holds this
    /// replica's stamps beyond its clock (the file was rewound), or on request. Without it a
    /// copy would reissue stamps others have seen, and they would drop its new writes as
    /// already known.
    public func resetIdentity() throws {
        let old = source.replica
        let new = configuration.makeReplicaID()
        let fingerprint = Identity.fingerprint(path: writer.path)
        do {
            try restamp(from: old, to: new, fingerprint: fingerprint)
        } catch {
            source.replica = old  // the transaction rolled back: the old identity stands
            throw error
        }
    }

    private func restamp(from old: ReplicaID, to new: ReplicaID, fingerprint: String?) throws {
        try withMetadata { metadata in
            let acknowledged = UInt64(bitPattern: try Int64.fetchOne(metadata.db, sql: "SELECT max(sent) FROM converge_peers") ?? 0)
            source.replica = new
            let rows = try Row.fetchAll(metadata.db, sql: "SELECT tbl, key, state, seqs FROM converge_records WHERE seq > ?", arguments: [Int64(bitPattern: acknowledged)])
            for row in rows {
                let address = RecordAddress(table: row["tbl"], key: Value(row["key"] as DatabaseValue))
                guard let table = metadata.tables[address.table] else { continue }
                let entry = try metadata.decode(row, address)
                guard entry.state.isAlive, entry.state.maxHLC(of: old) > .zero else { continue }
                var state = entry.state
                var values = [String: Value]()
                for column in table.schema.columns {
                    if let value = state.value(of: column, policy: table.schema.policy(of: column), authority: metadata.authority) { values[column] = value }
                }
                state.insert(values, at: source.stamp(), schema: table.schema)
                try metadata.commit(entry, changedTo: state, at: address)
            }
            try metadata.db.execute(sql: "UPDATE converge_identity SET replica = ?, fingerprint = ?", arguments: [Data(new.bytes), fingerprint])
        }
    }

}
