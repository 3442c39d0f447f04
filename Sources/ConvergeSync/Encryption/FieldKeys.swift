import Crypto
import Foundation

/// The namespace keys that seal encrypted columns (DESIGN §11), by key id, and which one
/// seals new writes.
///
/// The server never holds them: the app distributes them to its users' devices (a key
/// exchange, a passphrase, a platform keychain shared between devices) and gives them to
/// the engine with ``SyncEngine/Configuration/fieldKeys`` or ``SyncEngine/setFieldKeys(_:)``.
///
/// ```swift
/// let keys = try FieldKeys(current: "2025-06", keys: ["2025-01": oldKey, "2025-06": newKey])
/// ```
///
/// Rotation is adding a key and making it current: new writes are sealed with it, and
/// values sealed with an older key keep opening as long as that key stays in the ring.
/// Removing a key makes the values sealed with it unreadable on this device (they are
/// held, not dropped, until it comes back).
public struct FieldKeys: Sendable {
    /// The key id that seals new writes.
    public let currentKeyID: String
    /// Every key this device may open values with, by key id.
    public let keys: [String: SymmetricKey]

    /// The largest key id, in UTF-8 bytes (it is stored in every sealed value).
    public static let keyIDBytesMax = 64

    /// - Parameters:
    ///   - current: The id of the key that seals new writes; it must be in `keys`.
    ///   - keys: The keys by id. Each is 128, 192 or 256 bits (`SymmetricKey(size: .bits256)`);
    ///     ids are 1 to ``keyIDBytesMax`` UTF-8 bytes.
    /// - Throws: ``FieldEncryptionError`` for a missing current key, a bad id or a bad key size.
    public init(current: String, keys: [String: SymmetricKey]) throws(FieldEncryptionError) {
        for (id, key) in keys {
            guard !id.utf8.isEmpty, id.utf8.count <= Self.keyIDBytesMax else { throw .invalidKeyID(id) }
            guard [128, 192, 256].contains(key.bitCount) else { throw .invalidKeySize(keyID: id, bits: key.bitCount) }
        }
        guard keys[current] != nil else { throw .unknownKeyID(current) }
        self.currentKeyID = current
        self.keys = keys
    }

    /// One key, current.
    public init(id: String, key: SymmetricKey) throws(FieldEncryptionError) {
        try self.init(current: id, keys: [id: key])
    }
}

/// Why a value of an encrypted column could not be sealed or opened.
///
/// Opening never fails a sync round: a value that does not open is *held* on the device
/// (``SyncEngine/heldFields()``), with one of these as the reason, and retried when the
/// keys change. So a server or a device that sends garbage cannot corrupt local data or
/// stall the sync; it only leaves that one field unread.
public enum FieldEncryptionError: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    /// A key id that is empty, too long, or (for the current key) not in the ring.
    case invalidKeyID(String)
    /// A key that is not 128, 192 or 256 bits.
    case invalidKeySize(keyID: String, bits: Int)
    /// A value sealed with a key this device does not have (yet).
    case unknownKeyID(String)
    /// The device replicates a table with encrypted columns but was given no keys: its
    /// writes cannot leave it.
    case noKeys(table: String)
    /// The bytes are not a sealed value (wrong magic, version or length): `detail` says where.
    case malformedEnvelope(String)
    /// The value does not authenticate under its key: tampered with, moved from another
    /// field or stamp, or sealed with another key under the same id.
    case authenticationFailed(keyID: String)
    /// A plain value where the schema expects a sealed one (a device that does not encrypt
    /// the column, or a server that made the value up).
    case notEncrypted
    /// The value opened, but the store refused its record (an `ApplyError`, for instance a
    /// key of the wrong type): it stays held rather than fail every round.
    case refused(String)

    public var description: String {
        switch self {
        case .invalidKeyID(let id): return "invalid key id \"\(id)\" (1 to \(FieldKeys.keyIDBytesMax) UTF-8 bytes)"
        case .invalidKeySize(let id, let bits): return "key \"\(id)\" has \(bits) bits (expected 128, 192 or 256)"
        case .unknownKeyID(let id): return "no key with id \"\(id)\""
        case .noKeys(let table): return "table \(table) has encrypted columns but the sync engine has no field keys"
        case .malformedEnvelope(let detail): return "malformed encrypted value: \(detail)"
        case .authenticationFailed(let id): return "encrypted value does not authenticate under key \"\(id)\""
        case .notEncrypted: return "plain value in an encrypted column"
        case .refused(let detail): return "opened, but refused by the store: \(detail)"
        }
    }
}
