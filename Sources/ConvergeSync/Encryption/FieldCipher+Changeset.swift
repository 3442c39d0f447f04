import ConvergeCore

/// A field of a pulled record that could not be opened: held on the device, not applied.
package struct HeldField: Sendable, Hashable {
    package var table: String
    package var key: Value
    package var column: String
    /// The field's state as received, sealed values included.
    package var state: FieldState
    package var reason: FieldEncryptionError
}

extension FieldCipher {
    /// What opening a pulled changeset gives: the changeset to apply, in plaintext, the
    /// fields held back, and the key id each opened write was sealed with (so that a relay
    /// of it seals to the same bytes).
    package struct Opened: Sendable {
        package var changeset: Changeset
        package var held: [HeldField]
        package var keyIDs: [SealedWrite: String]
    }

    /// Seals every value of the encrypted columns in `changeset`: LWW values, multi-value
    /// siblings, and the registers of every incarnation. Stamps, contexts and membership
    /// are left as they are, so the server merges exactly as before.
    ///
    /// - Parameters:
    ///   - keyID: The key id a write was sealed with before (received under it, or sent
    ///     already), so that it seals to the same bytes again; `nil` for the current key.
    /// - Returns: The sealed changeset and the key id used for each write.
    package func seal(
        _ changeset: Changeset, schemas: [String: TableSchema], keyID: (SealedWrite) -> String? = { _ in nil }
    ) throws(FieldEncryptionError) -> (changeset: Changeset, keyIDs: [SealedWrite: String]) {
        var used = [SealedWrite: String]()
        var result = changeset
        for index in result.records.indices {
            let delta = result.records[index]
            guard let schema = schemas[delta.table], !schema.encryptedColumns.isEmpty else { continue }
            for (column, state) in delta.state.fields where schema.isEncrypted(column) {
                result.records[index].state.fields[column] = try Self.mapValues(state) { (value, stamp) throws(FieldEncryptionError) in
                    let write = SealedWrite(table: delta.table, key: delta.key, column: column, stamp: stamp)
                    let id = keyID(write).flatMap { keys.keys[$0] == nil ? nil : $0 } ?? keys.currentKeyID
                    used[write] = id
                    return try seal(value, write, keyID: id)
                }
            }
        }
        return (result, used)
    }

    /// Opens every value of the encrypted columns in `changeset`. A field with any value
    /// that does not open (unknown key, tampered, not sealed) is taken out whole and held,
    /// so that nothing of it is half-applied; the rest of its record applies.
    package func open(_ changeset: Changeset, schemas: [String: TableSchema]) -> Opened {
        var opened = Opened(changeset: changeset, held: [], keyIDs: [:])
        for index in opened.changeset.records.indices {
            let delta = opened.changeset.records[index]
            guard let schema = schemas[delta.table], !schema.encryptedColumns.isEmpty else { continue }
            for (column, state) in delta.state.fields where schema.isEncrypted(column) {
                var keyIDs = [SealedWrite: String]()
                do {
                    let plain = try Self.mapValues(state) { (value, stamp) throws(FieldEncryptionError) in
                        let write = SealedWrite(table: delta.table, key: delta.key, column: column, stamp: stamp)
                        keyIDs[write] = try Self.keyID(of: value)
                        return try open(value, write)
                    }
                    opened.changeset.records[index].state.fields[column] = plain
                    opened.keyIDs.merge(keyIDs) { first, _ in first }
                } catch {
                    opened.changeset.records[index].state.fields[column] = nil
                    opened.held.append(HeldField(table: delta.table, key: delta.key, column: column, state: state, reason: error))
                }
            }
        }
        // A record left with nothing (its only field held) is not sent to the store.
        opened.changeset.records.removeAll { $0.state.isBottom }
        return opened
    }

    /// `state` with every written value replaced by `transform(value, stamp)`.
    static func mapValues(
        _ state: FieldState, _ transform: (Value, Stamp) throws(FieldEncryptionError) -> Value
    ) throws(FieldEncryptionError) -> FieldState {
        func map(_ register: Register) throws(FieldEncryptionError) -> Register {
            switch register {
            case .lww(let lww):
                return .lww(LWWRegister(value: try transform(lww.value, lww.stamp), stamp: lww.stamp))
            case .multi(let mv):
                var siblings = [MVRegister.Sibling]()
                for sibling in mv.siblings { siblings.append(MVRegister.Sibling(stamp: sibling.stamp, value: try transform(sibling.value, sibling.stamp))) }
                return .multi(MVRegister(siblings: siblings, context: mv.context))
            }
        }
        switch state {
        case .plain(let register):
            return .plain(try map(register))
        case .incarnated(let entries):
            var mapped = [FieldState.Incarnated]()
            for entry in entries { mapped.append(FieldState.Incarnated(incarnation: entry.incarnation, register: try map(entry.register))) }
            return .incarnated(mapped)
        }
    }
}
