@testable import ConvergeCore
import ConvergeTestSupport
import PropertyBased
import Testing

/// The metadata row's state blob (``RecordEntry/encodeState(_:)``): its own format, read
/// back exactly, deterministic, checked, and still reading the format of earlier releases.
@Suite(.computeBound) struct RecordStateCodecTests {
    /// Every record state of a random run.
    func states(seed: UInt64) -> [RecordState] {
        let (replicas, changesets) = Fixtures.randomRun(seed: seed, replicas: 3, steps: 60)
        return replicas.flatMap { $0.state.snapshot.records.map(\.state) } + changesets.flatMap { $0.records.map(\.state) }
    }

    @Test func statesRoundTripAndReencodeToTheSameBytes() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            for state in states(seed: seed) {
                let bytes = RecordEntry.encodeState(state)
                #expect(bytes.first == RecordEntry.stateMagic)
                let decoded = try? RecordEntry.decodeState(bytes)
                #expect(decoded == state)
                #expect(decoded.map(RecordEntry.encodeState) == bytes)
            }
        }
    }

    @Test func theBottomStateAndWideRecordsRoundTrip() throws {
        #expect(try RecordEntry.decodeState(RecordEntry.encodeState(RecordState())) == RecordState())
        // More columns than a scan would search well, named out of UTF-8 order.
        var state = RecordState()
        let replica = Fixtures.replicaID(1)
        for index in 0..<300 {
            state.fields["c\(299 - index)é"] = .plain(.lww(LWWRegister(value: .integer(Int64(index)), stamp: Stamp(hlc: HLC(rawValue: UInt64(index + 1)), replica: replica))))
        }
        #expect(try RecordEntry.decodeState(RecordEntry.encodeState(state)) == state)
    }

    @Test func aStateBlobOfAnEarlierReleaseStillReads() throws {
        for state in states(seed: 7) {
            let legacy = WireEncoder.encode(Changeset(records: [RecordDelta(table: "notes", key: .text("k"), state: state)]))
            #expect(RecordEntry.isLegacyState(legacy))
            #expect(try RecordEntry.decodeState(legacy) == state)
            #expect(!RecordEntry.isLegacyState(RecordEntry.encodeState(state)))
        }
    }

    @Test func damagedBlobsAreRefusedNotMisread() throws {
        let state = try #require(states(seed: 3).first { !$0.fields.isEmpty })
        let bytes = RecordEntry.encodeState(state)
        for index in bytes.indices {
            var damaged = bytes
            damaged[index] ^= 0x10
            #expect(throws: RecordBlobCorruption.self) { try RecordEntry.decodeState(damaged) }
        }
        #expect(throws: RecordBlobCorruption.self) { try RecordEntry.decodeState([]) }
        #expect(throws: RecordBlobCorruption.self) { try RecordEntry.decodeState(Array(bytes.dropLast())) }
        var future = bytes
        future[1] = 9
        #expect(throws: RecordBlobCorruption.self) { try RecordEntry.decodeState(future) }
    }

    @Test func randomBytesNeverTrap() async {
        await propertyCheck(count: 2_000, input: Gen.uint8().array(of: 0...120)) { bytes in
            _ = try? RecordEntry.decodeState(bytes)
            // With a valid header and checksum, the body parser itself is exercised.
            var framed = [RecordEntry.stateMagic, RecordEntry.stateVersion] + bytes
            let checksum = CRC32C.checksum(framed)
            for shift in stride(from: 0, to: 32, by: 8) { framed.append(UInt8(truncatingIfNeeded: checksum >> UInt32(shift))) }
            if let state = try? RecordEntry.decodeState(framed) {
                #expect((try? RecordEntry.decodeState(RecordEntry.encodeState(state))) == state)
            }
        }
    }
}
