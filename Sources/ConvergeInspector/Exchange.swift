import ConvergeCore
import ConvergeSQLite
import Foundation

/// `converge export --since CURSOR FILE`: the changes after a cursor as a changeset file
/// in the wire format, for device-to-device sync without a server, or a backup (`--since 0`).
///
/// It opens the store, which folds captured local writes so that they are in the feed:
/// run it on the device's own file; on a copy, the store takes a new identity first (a
/// copy must never reissue the original's stamps), and the export carries it.
struct ExportReport: InspectorReport {
    var file: String
    var since: UInt64
    var nextCursor: UInt64
    var records: Int
    var fields: Int
    var bytes: Int

    /// Records per feed page: bounds what one read transaction holds.
    static let pageRecordsMax = 1_000
    static let pageBytesMax = 4 << 20

    static func make(_ inspected: InspectedFile, since cursor: UInt64, to path: String, overwrite: Bool) throws -> ExportReport {
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw InspectorError(.fileExists, "\(path) exists; pass --overwrite to replace it")
        }
        let store = try inspected.openStore()
        var records = [RecordDelta]()
        var position = cursor
        // The cursor stays fixed and `after:` advances (see `changes(since:after:)`): a
        // record changed again beyond a page still comes whole, with the parts newer
        // than `cursor`.
        while true {
            let batch = try store.changes(since: cursor, after: position, maxRecords: pageRecordsMax, maxBytes: pageBytesMax)
            records += batch.changeset.records
            position = batch.next
            if !batch.hasMore { break }
        }
        let changeset = Changeset(records: records)
        let bytes = WireEncoder.encode(changeset)
        // Checked before anything is written: a file that would not read back is no backup.
        guard (try? WireDecoder.decode(bytes)) == changeset else {
            throw InspectorError(.badChangeset, "the encoded changeset does not decode to itself; nothing written")
        }
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw InspectorError(.io, "cannot write \(path): \(error.localizedDescription)")
        }
        return ExportReport(file: path, since: cursor, nextCursor: position, records: records.count, fields: changeset.fieldCount, bytes: bytes.count)
    }

    var human: String {
        "exported \(records) records (\(fields) fields, \(Format.bytes(bytes))) changed after cursor \(since) to \(file)\n"
            + "next cursor: \(nextCursor)  (converge export DATABASE --since \(nextCursor) FILE sends only what changes from now on)\n"
    }
}

/// `converge import FILE`: applies a changeset file (a join: importing twice, or files in
/// any order, ends the same). A file that does not decode changes nothing.
struct ImportReport: InspectorReport {
    var file: String
    var records: Int
    var changedRecords: Int
    var quarantinedRecords: Int
    var releasedRecords: Int
    var identityReset: Bool

    /// A changeset file larger than this is refused before it is read (it is held in memory).
    static let fileBytesMax = 1 << 30

    static func make(_ inspected: InspectedFile, from path: String) throws -> ImportReport {
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            throw InspectorError(.noSuchFile, "no such changeset file: \(path)")
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= fileBytesMax else { throw InspectorError(.badChangeset, "\(path) holds \(Format.bytes(size)), more than the \(Format.bytes(fileBytesMax)) accepted") }
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw InspectorError(.io, "cannot read \(path): \(error.localizedDescription)")
        }
        // Decoded whole (checksummed) before the store is opened: a corrupt file is
        // refused with the database untouched.
        let changeset: Changeset
        do {
            changeset = try WireDecoder.decode(bytes)
        } catch {
            throw InspectorError(.badChangeset, "\(path) is not a readable Converge changeset: \(error)")
        }
        let report = try inspected.openStore().apply(changeset, origin: "import \(URL(fileURLWithPath: path).lastPathComponent)", validate: nil)
        return ImportReport(
            file: path, records: changeset.records.count, changedRecords: report.changedRecords, quarantinedRecords: report.quarantinedRecords,
            releasedRecords: report.releasedRecords, identityReset: report.identityReset)
    }

    var human: String {
        var text = "imported \(file): \(records) records, \(changedRecords) changed this database"
        if quarantinedRecords > 0 { text += ", \(quarantinedRecords) quarantined (stamped too far ahead)" }
        if releasedRecords > 0 { text += ", \(releasedRecords) released from quarantine" }
        text += "\n"
        if identityReset { text += "the file held this replica's own stamps beyond its clock: the database took a new identity\n" }
        return text
    }
}
