import ConvergeCore

/// The metadata row's blob formats, as ``RecordEntry`` (ConvergeCore) defines them, with
/// an unreadable blob reported as this store's ``MetadataCorruption`` of the record.
enum RecordEntryCodec {
    static func decodeState(_ bytes: [UInt8], table: String, key: Value) throws -> RecordState {
        do {
            return try RecordEntry.decodeState(bytes)
        } catch {
            throw MetadataCorruption(table: table, key: key, detail: error.detail)
        }
    }

    static func encodeSequences(_ entry: RecordEntry) -> [UInt8] {
        entry.encodeSequences()
    }

    static func decodeSequences(_ bytes: [UInt8], table: String, key: Value) throws -> (UInt64, ColumnMap<UInt64>) {
        do {
            return try RecordEntry.decodeSequences(bytes)
        } catch {
            throw MetadataCorruption(table: table, key: key, detail: error.detail)
        }
    }
}
