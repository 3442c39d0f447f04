import ConvergeCore
import Crypto
import Foundation

/// One write of an encrypted field: what the associated data binds a sealed value to.
package struct SealedWrite: Sendable, Hashable {
    package var table: String
    package var key: Value
    package var column: String
    package var stamp: Stamp

    package init(table: String, key: Value, column: String, stamp: Stamp) {
        self.table = table
        self.key = key
        self.column = column
        self.stamp = stamp
    }
}

/// Seals and opens the values of encrypted columns (DESIGN §11): pure, no I/O.
///
/// A sealed value is a blob, self-describing:
///
/// ```
/// "CVE" 0x01 | key id length (1 byte) | key id (UTF-8) | nonce (12) | ciphertext | tag (16)
/// ```
///
/// AES-GCM under a subkey of the namespace key, with associated data binding the value to
/// its table, record key, column, stamp and key id, so a sealed value moved to another
/// field or stamp does not open. The nonce is synthetic: an HMAC (under another subkey) of
/// the associated data and the plaintext, cut to 12 bytes. So the same write seals to the
/// same bytes every time, on every device that has the key (the server and every replica
/// see one value per stamp, and a relayed write passes the server's authorship check), and
/// a key and nonce pair never seals two different plaintexts, whatever a buggy caller does.
package struct FieldCipher: Sendable {
    private struct Subkeys: Sendable {
        let encryption: SymmetricKey
        let nonce: SymmetricKey
    }

    package let keys: FieldKeys
    private let subkeys: [String: Subkeys]

    static let magic: [UInt8] = [0x43, 0x56, 0x45]  // "CVE"
    static let version: UInt8 = 1
    static let nonceBytes = 12
    static let tagBytes = 16

    package init(keys: FieldKeys) {
        self.keys = keys
        var subkeys = [String: Subkeys]()
        for (id, key) in keys.keys {
            subkeys[id] = Subkeys(
                encryption: HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Array("converge field encryption v1".utf8), outputByteCount: 32),
                nonce: HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Array("converge field nonce v1".utf8), outputByteCount: 32))
        }
        self.subkeys = subkeys
    }

    // MARK: One value

    /// Seals `value`, written at `write`, with key `keyID` (the current key when `nil`).
    package func seal(_ value: Value, _ write: SealedWrite, keyID: String? = nil) throws(FieldEncryptionError) -> Value {
        let id = keyID ?? keys.currentKeyID
        guard let subkeys = subkeys[id] else { throw .unknownKeyID(id) }
        let plaintext = Self.encode(value)
        let aad = Self.associatedData(write, keyID: id)
        let digest = HMAC<SHA256>.authenticationCode(for: aad + plaintext, using: subkeys.nonce)
        let nonceBytes = Array(Array(digest).prefix(Self.nonceBytes))
        do {
            let box = try AES.GCM.seal(plaintext, using: subkeys.encryption, nonce: AES.GCM.Nonce(data: nonceBytes), authenticating: aad)
            var envelope = Self.magic + [Self.version, UInt8(id.utf8.count)] + Array(id.utf8)
            envelope += nonceBytes
            envelope += box.ciphertext
            envelope += box.tag
            return .blob(envelope)
        } catch {
            // Only a nonce of the wrong size could fail here, and it is always 12 bytes.
            preconditionFailure("AES-GCM seal failed: \(error)")
        }
    }

    /// The key id a sealed value names, without opening it.
    package static func keyID(of value: Value) throws(FieldEncryptionError) -> String {
        try parse(value).keyID
    }

    /// Opens a value sealed at `write`.
    package func open(_ value: Value, _ write: SealedWrite) throws(FieldEncryptionError) -> Value {
        let envelope = try Self.parse(value)
        guard let subkeys = subkeys[envelope.keyID] else { throw .unknownKeyID(envelope.keyID) }
        let aad = Self.associatedData(write, keyID: envelope.keyID)
        let plaintext: Data
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: envelope.nonce), ciphertext: envelope.ciphertext, tag: envelope.tag)
            plaintext = try AES.GCM.open(box, using: subkeys.encryption, authenticating: aad)
        } catch {
            throw .authenticationFailed(keyID: envelope.keyID)
        }
        guard let opened = Self.decode(Array(plaintext)) else {
            // Authentic, so sealed by a device with the key: a newer encoding, not an attack.
            throw .malformedEnvelope("unknown plaintext encoding under key \"\(envelope.keyID)\"")
        }
        return opened
    }

    private struct Envelope {
        var keyID: String
        var nonce: ArraySlice<UInt8>
        var ciphertext: ArraySlice<UInt8>
        var tag: ArraySlice<UInt8>
    }

    private static func parse(_ value: Value) throws(FieldEncryptionError) -> Envelope {
        guard case .blob(let bytes) = value else { throw .notEncrypted }
        guard bytes.count >= 5, Array(bytes.prefix(3)) == magic else { throw .malformedEnvelope("no \"CVE\" magic") }
        guard bytes[3] == version else { throw .malformedEnvelope("unsupported version \(bytes[3])") }
        let idLength = Int(bytes[4])
        guard idLength > 0, idLength <= FieldKeys.keyIDBytesMax else { throw .malformedEnvelope("key id of \(idLength) bytes") }
        let idEnd = 5 + idLength
        guard bytes.count >= idEnd + nonceBytes + tagBytes else {
            throw .malformedEnvelope("\(bytes.count) bytes, fewer than a key id, a nonce and a tag")
        }
        guard let keyID = String(validating: bytes[5..<idEnd], as: UTF8.self) else { throw .malformedEnvelope("key id is not UTF-8") }
        let nonceEnd = idEnd + nonceBytes
        return Envelope(
            keyID: keyID, nonce: bytes[idEnd..<nonceEnd], ciphertext: bytes[nonceEnd..<(bytes.count - tagBytes)],
            tag: bytes[(bytes.count - tagBytes)...])
    }

    // MARK: Encodings

    /// The value as sealed: its storage class, then its bytes (integers and reals
    /// big-endian, text as UTF-8). NULL is sealed too, so the server does not learn which
    /// fields are empty.
    static func encode(_ value: Value) -> [UInt8] {
        switch value {
        case .null: return [0]
        case .integer(let number): return [1] + bigEndian(UInt64(bitPattern: number))
        case .real(let number): return [2] + bigEndian(number.bitPattern)
        case .text(let text): return [3] + Array(text.utf8)
        case .blob(let bytes): return [4] + bytes
        }
    }

    static func decode(_ bytes: [UInt8]) -> Value? {
        guard let tag = bytes.first else { return nil }
        let body = bytes.dropFirst()
        func number() -> UInt64? { body.count == 8 ? body.reduce(0) { $0 << 8 | UInt64($1) } : nil }
        switch tag {
        case 0: return body.isEmpty ? .null : nil
        case 1: return number().map { .integer(Int64(bitPattern: $0)) }
        case 2: return number().map { Value.real(normalizing: Double(bitPattern: $0)) }
        case 3: return String(validating: body, as: UTF8.self).map { .text($0) }
        case 4: return .blob(Array(body))
        default: return nil
        }
    }

    /// Domain, version, then each part length-prefixed: nothing can be shifted from one
    /// part into another.
    static func associatedData(_ write: SealedWrite, keyID: String) -> [UInt8] {
        var bytes = Array("converge.field".utf8) + [version]
        func part(_ data: [UInt8]) {
            bytes += bigEndian(UInt32(data.count))
            bytes += data
        }
        part(Array(write.table.utf8))
        part(encode(write.key))
        part(Array(write.column.utf8))
        bytes += bigEndian(write.stamp.hlc.rawValue)
        bytes += write.stamp.replica.bytes
        part(Array(keyID.utf8))
        return bytes
    }

    private static func bigEndian<T: FixedWidthInteger>(_ number: T) -> [UInt8] {
        withUnsafeBytes(of: number.bigEndian) { Array($0) }
    }
}
