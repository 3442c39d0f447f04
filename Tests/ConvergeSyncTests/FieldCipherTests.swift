@testable import ConvergeSync
import ConvergeCore
import ConvergeTestSupport
import Crypto
import Foundation
import Testing

/// The sealing of encrypted columns alone (DESIGN §11): determinism, what the associated
/// data binds, rotation, and what a value that does not open becomes.
@Suite(.computeBound) struct FieldCipherTests {
    let key1 = SymmetricKey(size: .bits256)
    let key2 = SymmetricKey(size: .bits256)
    let replica = ReplicaID(high: 1, low: 2)
    var write: SealedWrite { SealedWrite(table: "notes", key: .text("n1"), column: "body", stamp: Stamp(hlc: HLC(milliseconds: 1_000, counter: 3), replica: replica)) }

    func cipher(current: String = "k1") throws -> FieldCipher {
        FieldCipher(keys: try FieldKeys(current: current, keys: ["k1": key1, "k2": key2]))
    }

    @Test func everyValueRoundTrips() throws {
        let cipher = try cipher()
        let values: [Value] = [.null, .integer(-42), .integer(.max), .real(3.25), .real(-0.0), .text(""), .text("secret é"), .blob([]), .blob([0, 1, 255])]
        for value in values {
            let sealed = try cipher.seal(value, write)
            guard case .blob(let bytes) = sealed else { Issue.record("not a blob"); continue }
            #expect(Array(bytes.prefix(4)) == [0x43, 0x56, 0x45, 1])
            #expect(try cipher.open(sealed, write) == value)
        }
    }

    @Test func theSameWriteSealsToTheSameBytes() throws {
        let a = try cipher().seal(.text("hello"), write)
        let b = try FieldCipher(keys: FieldKeys(current: "k1", keys: ["k1": key1])).seal(.text("hello"), write)
        #expect(a == b)
        // Another plaintext, or another stamp, takes another nonce.
        let other = try cipher().seal(.text("hellO"), write)
        var later = write
        later.stamp = Stamp(hlc: HLC(milliseconds: 1_001), replica: replica)
        let moved = try cipher().seal(.text("hello"), later)
        #expect(nonce(a) != nonce(other))
        #expect(nonce(a) != nonce(moved))
    }

    private func nonce(_ value: Value) -> [UInt8] {
        guard case .blob(let bytes) = value else { return [] }
        let idLength = Int(bytes[4])
        return Array(bytes[(5 + idLength)..<(17 + idLength)])
    }

    @Test func aSealedValueMovedElsewhereDoesNotOpen() throws {
        let cipher = try cipher()
        let sealed = try cipher.seal(.text("hello"), write)
        var elsewhere = [SealedWrite]()
        for change in 0..<5 {
            var moved = write
            switch change {
            case 0: moved.table = "items"
            case 1: moved.key = .text("n2")
            case 2: moved.column = "title"
            case 3: moved.stamp = Stamp(hlc: write.stamp.hlc, replica: ReplicaID(high: 1, low: 3))
            default: moved.stamp = Stamp(hlc: HLC(rawValue: write.stamp.hlc.rawValue + 1), replica: replica)
            }
            elsewhere.append(moved)
        }
        for moved in elsewhere {
            #expect(throws: FieldEncryptionError.authenticationFailed(keyID: "k1")) { try cipher.open(sealed, moved) }
        }
        // A flipped byte anywhere after the header fails too.
        guard case .blob(var bytes) = sealed else { return }
        bytes[bytes.count - 20] ^= 1
        #expect(throws: FieldEncryptionError.authenticationFailed(keyID: "k1")) { try cipher.open(.blob(bytes), write) }
    }

    @Test func rotationKeepsOldValuesOpen() throws {
        let old = try cipher(current: "k1").seal(.text("before"), write)
        let rotated = try cipher(current: "k2")
        let new = try rotated.seal(.text("after"), write)
        #expect(try FieldCipher.keyID(of: old) == "k1")
        #expect(try FieldCipher.keyID(of: new) == "k2")
        #expect(try rotated.open(old, write) == .text("before"))
        #expect(try rotated.open(new, write) == .text("after"))
        // A device that has only the old key holds the new value.
        let behind = FieldCipher(keys: try FieldKeys(id: "k1", key: key1))
        #expect(throws: FieldEncryptionError.unknownKeyID("k2")) { try behind.open(new, write) }
        // The same id under another key does not authenticate.
        let impostor = FieldCipher(keys: try FieldKeys(id: "k1", key: SymmetricKey(size: .bits256)))
        #expect(throws: FieldEncryptionError.authenticationFailed(keyID: "k1")) { try impostor.open(old, write) }
    }

    @Test func garbageIsRefusedWithAReason() throws {
        let cipher = try cipher()
        #expect(throws: FieldEncryptionError.notEncrypted) { try cipher.open(.text("plain"), write) }
        #expect(throws: FieldEncryptionError.notEncrypted) { try cipher.open(.null, write) }
        for bytes: [UInt8] in [[], [1, 2, 3], [0x43, 0x56, 0x45, 9, 1, 65], [0x43, 0x56, 0x45, 1, 0], [0x43, 0x56, 0x45, 1, 2, 0x6b, 0x31, 0, 0]] {
            #expect(throws: FieldEncryptionError.self) { try cipher.open(.blob(bytes), write) }
        }
        #expect(throws: FieldEncryptionError.unknownKeyID("nope")) { try FieldKeys(current: "nope", keys: ["k1": key1]) }
        #expect(throws: FieldEncryptionError.invalidKeyID("")) { try FieldKeys(current: "", keys: ["": key1]) }
    }

    /// Every register form of a field is sealed, stamps and contexts kept; opening gives
    /// the original back, and a field that does not open is held whole while the rest of
    /// its record applies.
    @Test func changesetsSealEveryRegisterForm() throws {
        let cipher = try cipher()
        let other = ReplicaID(high: 9, low: 9)
        let s1 = Stamp(hlc: HLC(milliseconds: 10), replica: replica)
        let s2 = Stamp(hlc: HLC(milliseconds: 11), replica: other)
        let mv = MVRegister(siblings: [.init(stamp: s1, value: .integer(1)), .init(stamp: s2, value: .integer(2))], context: CausalContext())
        let state = RecordState(membership: ORSet(), fields: [
            "title": .plain(.lww(LWWRegister(value: .text("visible"), stamp: s1))),
            "body": .plain(.lww(LWWRegister(value: .text("hidden"), stamp: s1))),
            "amount": .plain(.multi(mv)),
            "pin": .incarnated([FieldState.Incarnated(incarnation: s1, register: .lww(LWWRegister(value: .integer(1234), stamp: s2)))]),
        ])
        let changeset = Changeset(records: [RecordDelta(table: "notes", key: .text("n1"), state: state)])
        let schema = TableSchema(name: "notes", primaryKey: "id", columns: ["title", "body", "amount", "pin"], policies: ["amount": .critical], encryptedColumns: ["body", "amount", "pin"])
        let sealed = try cipher.seal(changeset, schemas: ["notes": schema])
        #expect(sealed.keyIDs.count == 4)
        let fields = sealed.changeset.records[0].state.fields
        #expect(fields["title"] == state.fields["title"])
        #expect(fields["body"] != state.fields["body"])
        #expect(ConvergeSyncTestsStamps.of(fields["amount"]!) == [s1, s2])
        // Nothing of the plaintext survives in the wire bytes.
        let wire = WireEncoder.encode(sealed.changeset)
        #expect(!wire.containsBytes(Array("hidden".utf8)))
        #expect(try WireDecoder.decode(wire) == sealed.changeset)

        let opened = cipher.open(sealed.changeset, schemas: ["notes": schema])
        #expect(opened.held.isEmpty)
        #expect(opened.changeset == changeset)

        // A damaged field is held whole; the others open.
        var damaged = sealed.changeset
        damaged.records[0].state.fields["body"] = .plain(.lww(LWWRegister(value: .blob([0x43, 0x56, 0x45, 1, 1, 0x6b] + Array(repeating: 0, count: 40)), stamp: s1)))
        let partly = cipher.open(damaged, schemas: ["notes": schema])
        #expect(partly.held.map(\.column) == ["body"])
        #expect(partly.changeset.records[0].state.fields["body"] == nil)
        #expect(partly.changeset.records[0].state.fields["amount"] == state.fields["amount"])
    }
}

enum ConvergeSyncTestsStamps {
    static func of(_ state: FieldState) -> [Stamp] { SyncEngine.writtenStamps(state) }
}

extension Array where Element == UInt8 {
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        for start in 0...(count - needle.count) where self[start..<(start + needle.count)].elementsEqual(needle) { return true }
        return false
    }
}
