import ConvergeCore
import ConvergeSQLite
import GRDB

/// Field-level encryption at the sync boundary (DESIGN §11): values of encrypted columns
/// are sealed as a batch leaves and opened as a page arrives, so the store keeps plaintext
/// and the server only ever sees ciphertext. Stamps are untouched: merges are the same.
extension SyncEngine {
    /// Replaces the field keys (a rotation, or keys that arrived late), then applies the
    /// held fields they open.
    ///
    /// New writes are sealed with `keys.currentKeyID` from the next round on; values sealed
    /// with any key in `keys` open. Fields held for want of a key are opened and applied
    /// now, and the next round pushes nothing twice.
    ///
    /// - Returns: How many held fields were applied.
    @discardableResult
    public func setFieldKeys(_ keys: FieldKeys) throws -> Int {
        fieldCipher = FieldCipher(keys: keys)
        let released = try releaseHeldFields()
        refreshStatus()
        return released
    }

    /// The fields this device received but could not open, with why (see
    /// ``SyncStatus/heldFields``). They are kept, not dropped, and applied once
    /// ``setFieldKeys(_:)`` gives a key that opens them.
    public nonisolated func heldFields() throws -> [HeldEncryptedField] {
        try database.writer.readKeepingStatements { db in try FieldVault.heldList(db) }
    }

    /// `changeset` with every value of an encrypted column sealed; a write sealed before
    /// is sealed under the same key id again, so it has the same bytes.
    func seal(_ changeset: Changeset) throws -> Changeset {
        let schemas = database.replicatedTables
        let encrypted = changeset.records.filter { schemas[$0.table]?.encryptedColumns.isEmpty == false }
        guard let first = encrypted.first else { return changeset }
        guard let cipher = fieldCipher else { throw FieldEncryptionError.noKeys(table: first.table) }
        var writes = [SealedWrite]()
        for delta in encrypted {
            for (column, state) in delta.state.fields where schemas[delta.table]!.isEncrypted(column) {
                for stamp in Self.writtenStamps(state) { writes.append(SealedWrite(table: delta.table, key: delta.key, column: column, stamp: stamp)) }
            }
        }
        return try database.writer.write { db in
            let known = try FieldVault.keyIDs(of: writes, db)
            let sealed = try cipher.seal(changeset, schemas: schemas) { known[$0] }
            let live = Set(writes)
            try FieldVault.remember(sealed.keyIDs, isSuperseded: { !live.contains($0) }, db)
            return sealed.changeset
        }
    }

    /// `changeset` (pulled) with every value of an encrypted column opened. Fields that
    /// do not open are held on the device and left out, the rest applies.
    func open(_ changeset: Changeset, report: inout SyncReport) throws -> Changeset {
        let schemas = database.replicatedTables
        guard changeset.records.contains(where: { schemas[$0.table]?.encryptedColumns.isEmpty == false }) else { return changeset }
        // Without keys nothing opens: everything is held, as under an unknown key id.
        let cipher = fieldCipher ?? FieldCipher(keys: Self.noKeys)
        let opened = cipher.open(changeset, schemas: schemas)
        let incoming = Self.fieldStates(changeset)
        try database.writer.write { db in
            try FieldVault.hold(opened.held, db)
            try FieldVault.remember(opened.keyIDs, isSuperseded: { Self.isSuperseded($0, by: incoming) }, db)
        }
        report.heldFields += opened.held.count
        if !opened.held.isEmpty {
            configuration.logger.notice("encrypted fields held", metadata: ["count": "\(opened.held.count)", "first": "\(opened.held[0].reason)"])
        }
        return opened.changeset
    }

    /// Opens and applies the held fields the current keys open.
    func releaseHeldFields() throws -> Int {
        guard let cipher = fieldCipher else { return 0 }
        let held = try database.writer.readKeepingStatements { db in try FieldVault.held(db) }
        guard !held.isEmpty else { return 0 }
        let opened = cipher.open(held, schemas: database.replicatedTables)
        let stillHeld = Set(opened.held.map { FieldAddress(table: $0.table, key: $0.key, column: $0.column) })
        let released = held.records.filter { delta in
            !stillHeld.contains(FieldAddress(table: delta.table, key: delta.key, column: delta.state.fields.keys.first!))
        }
        // Why each is still held may have changed (another key under the same id).
        try database.writer.write { db in try FieldVault.updateReasons(of: opened.held, db) }
        guard !released.isEmpty else { return 0 }
        // Applied first, released after: a crash in between applies them again (a join).
        applying.set(true)
        defer { applying.set(false) }
        do {
            _ = try database.apply(opened.changeset)
        } catch let error as ApplyError {
            // A record the store refuses (a key of the wrong type: its other fields were
            // never applied with it) stays held with why, rather than fail every round.
            let refused = released.map { delta in
                HeldField(table: delta.table, key: delta.key, column: delta.state.fields.keys.first!, state: delta.state.fields.values.first!,
                          reason: .refused("\(error)"))
            }
            try database.writer.write { db in try FieldVault.updateReasons(of: refused, db) }
            configuration.logger.warning("held encrypted fields refused by the store", metadata: ["error": "\(error)"])
            return 0
        }
        try database.writer.write { db in
            try FieldVault.remember(opened.keyIDs, isSuperseded: { _ in false }, db)
            for delta in released {
                try FieldVault.release(table: delta.table, key: delta.key, column: delta.state.fields.keys.first!, db)
            }
        }
        configuration.logger.notice("held encrypted fields applied", metadata: ["count": "\(released.count)"])
        return released.count
    }

    /// Forgets what is held of records the server collected.
    func dropHeldFields(of addresses: [RecordAddress]) throws {
        try database.writer.write { db in try FieldVault.dropHeld(of: addresses, db) }
    }

    private struct FieldAddress: Hashable {
        var table: String
        var key: Value
        var column: String
    }

    /// A ring that opens nothing (a device given no keys yet).
    private static let noKeys: FieldKeys = {
        // Never used to seal: `seal` refuses without keys. An empty ring cannot be built
        // through the public initializer, which requires a current key.
        try! FieldKeys(id: "-", key: .init(size: .bits256))
    }()

    /// The stamps of the writes a field state holds (its values', not its contexts').
    static func writtenStamps(_ state: FieldState) -> [Stamp] {
        func stamps(_ register: Register) -> [Stamp] {
            switch register {
            case .lww(let lww): return [lww.stamp]
            case .multi(let mv): return mv.siblings.map(\.stamp)
            }
        }
        switch state {
        case .plain(let register): return stamps(register)
        case .incarnated(let entries): return entries.flatMap { stamps($0.register) }
        }
    }

    private static func fieldStates(_ changeset: Changeset) -> [FieldAddress: FieldState] {
        var result = [FieldAddress: FieldState]()
        for delta in changeset.records {
            for (column, state) in delta.state.fields { result[FieldAddress(table: delta.table, key: delta.key, column: column)] = state }
        }
        return result
    }

    /// Whether the merge with `incoming` surely drops `write` (so its key id need not be kept).
    private static func isSuperseded(_ write: SealedWrite, by incoming: [FieldAddress: FieldState]) -> Bool {
        guard case .plain(let register)? = incoming[FieldAddress(table: write.table, key: write.key, column: write.column)] else { return false }
        switch register {
        case .lww(let lww): return write.stamp < lww.stamp
        case .multi(let mv): return mv.context.covers(write.stamp) && !mv.siblings.contains { $0.stamp == write.stamp }
        }
    }
}
