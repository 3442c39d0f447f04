@testable import ConvergeCore
import ConvergeTestSupport
import PropertyBased
import Testing

@Suite(.computeBound) struct WireTests {
    @Test func roundTripOfGeneratedChangesets() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            let (_, changesets) = Fixtures.randomRun(seed: seed, replicas: 3, steps: 80)
            for changeset in changesets {
                let bytes = WireEncoder.encode(changeset)
                let decoded = try? WireDecoder.decode(bytes)
                #expect(decoded?.normalized == changeset.normalized)
                #expect(decoded.map(WireEncoder.encode) == bytes)
            }
        }
    }

    @Test func checksumMatchesTheStandardVectorAndTheBitwiseDefinition() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        var rng = SeededGenerator(seed: 11)
        for length in 0..<80 {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            #expect(CRC32C.checksum(bytes) == crc ^ 0xFFFF_FFFF, "length \(length)")
            #expect(CRC32C.checksum(bytes[...]) == crc ^ 0xFFFF_FFFF)
        }
    }

    @Test func valuesRoundTripExactly() throws {
        let values: [Value] = [
            .null, .integer(0), .integer(.min), .integer(.max), .real(0), .real(-0.0), .real(12.34), .real(.pi),
            .real(.infinity), .real(-.greatestFiniteMagnitude), .real(.leastNonzeroMagnitude), .text(""), .text("é"), .text("e\u{301}"),
            .text("5F0C8E1A-3B2D-4C6E-8F90-123456789ABC"), .text("5f0c8e1a-3b2d-4c6e-8f90-123456789abc"),
            .text("5f0c8e1a-3b2d-4c6e-8f90-123456789ABC"), .blob([]), .blob([0, 255]),
        ]
        let replica = Fixtures.replicaID(0)
        let records = values.enumerated().map { index, value in
            RecordDelta(table: "t", key: value, state: RecordState(membership: ORSet(), fields: [
                "c": .plain(.lww(LWWRegister(value: value, stamp: Stamp(hlc: HLC(rawValue: UInt64(index + 1)), replica: replica)))),
            ]))
        }
        let decoded = try WireDecoder.decode(WireEncoder.encode(Changeset(records: records)))
        #expect(decoded == Changeset(records: records))
    }

    @Test func randomBytesNeverTrap() async {
        await propertyCheck(count: 2_000, input: Gen.uint8().array(of: 0...200)) { bytes in
            _ = try? WireDecoder.decode(bytes)
            // With a valid header and checksum, the body parser itself is exercised.
            var framed = WireFormat.magic + [WireFormat.version] + bytes
            let checksum = CRC32C.checksum(framed)
            for shift in stride(from: 0, to: 32, by: 8) { framed.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
            _ = try? WireDecoder.decode(framed)
        }
    }

    @Test func mutatedBytesNeverTrapAndReencodeStably() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SeededGenerator(seed: seed)
            let (_, changesets) = Fixtures.randomRun(seed: seed, replicas: 3, steps: 40)
            guard let changeset = changesets.last else { return }
            var bytes = WireEncoder.encode(changeset)
            bytes.removeLast(4)
            for _ in 0...rng.below(4) {
                let index = 5 + rng.below(max(bytes.count - 5, 1))
                if index < bytes.count { bytes[index] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            let checksum = CRC32C.checksum(bytes)
            for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
            if let decoded = try? WireDecoder.decode(bytes) {
                #expect((try? WireDecoder.decode(WireEncoder.encode(decoded))) == decoded)
            }
        }
    }

    @Test func flippedBitFailsTheChecksum() throws {
        let (_, changesets) = Fixtures.randomRun(seed: 7, replicas: 3, steps: 40)
        let bytes = WireEncoder.encode(changesets.last!)
        for bit in 0..<(bytes.count * 8) where bit / 8 >= 5 {
            var corrupt = bytes
            corrupt[bit / 8] ^= 1 << UInt8(bit % 8)
            #expect(throws: WireError.self) { try WireDecoder.decode(corrupt) }
        }
    }

    @Test func errorsSayWhatAndWhere() {
        #expect(throws: WireError(.tooShort, offset: 0, context: "header")) { try WireDecoder.decode([1, 2]) }
        #expect(throws: WireError(.badMagic, offset: 0, context: "magic")) { try WireDecoder.decode(Array("XXXX".utf8) + [1, 0, 0, 0, 0]) }
        var hostile = WireFormat.magic + [WireFormat.version, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]  // 4 billion replicas
        let checksum = CRC32C.checksum(hostile)
        for shift in stride(from: 0, to: 32, by: 8) { hostile.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
        #expect(throws: WireError(.countTooLarge(0xFFFF_FFFF), offset: 5, context: "replica table")) { try WireDecoder.decode(hostile) }
    }

    @Test func crc32cKnownAnswer() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}
