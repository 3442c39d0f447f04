import ConvergeCore
import FuzzSupport

// FuzzDecode: arbitrary bytes into `WireDecoder.decode`.
//
// Decoding never traps (ASan and the Swift runtime catch any trap or overflow), and whatever
// decodes is a well-formed changeset: its states satisfy their invariants, it re-encodes to
// bytes that decode to an equal changeset and re-encode to the same bytes, its normalized
// form obeys the join laws and round-trips too, and applying it to an empty replica gives a
// state equal to that normalized form.
//
// The same bytes are read as a metadata row's state blob (`RecordEntry.decodeState`), as is
// and framed with its header and checksum: whatever reads is a valid state that re-encodes to
// the same bytes; and every record state that decodes from a changeset round-trips as a blob.
//
// Each input is tried three ways, so that mutations reach the body parser without having to
// forge a CRC-32C: as is; with its last four bytes replaced by the right checksum; and as a
// body framed with magic, version and checksum.

@main
enum FuzzDecodeMain {
    static func main() {
        FuzzerMain.run(seeds: SeedCorpus.decodeSeeds) { data, count in
            fuzz(data.map(UnsafeRawPointer.init) ?? FuzzerMain.emptyInput, count)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    checkDecoding(bytes)
    if bytes.count >= WireFormat.overheadBytes {
        let fixed = withChecksum(Array(bytes.dropLast(4)))
        if fixed != bytes { checkDecoding(fixed) }
    }
    checkDecoding(withChecksum(WireFormat.magic + [WireFormat.version] + bytes))
    checkStateBlob(bytes)
    checkStateBlob(withChecksum([0xC5, 0x01] + bytes))
    return 0
}

/// A state blob that reads is a valid state, and its encoding is stable.
func checkStateBlob(_ bytes: [UInt8]) {
    guard let state = try? RecordEntry.decodeState(bytes) else { return }
    requireInvariants("state blob") { try state.checkInvariants() }
    checkStateRoundTrip(state)
}

/// `state` written as a blob reads back equal, and writes the same bytes again.
func checkStateRoundTrip(_ state: RecordState) {
    let encoded = RecordEntry.encodeState(state)
    guard let again = try? RecordEntry.decodeState(encoded) else { fatalError("a state blob does not decode: \(state)") }
    require(again == state, "state blob: decode(encode(x)) != x\n  x: \(state)\n  got: \(again)")
    require(RecordEntry.encodeState(again) == encoded, "state blob encoding is not stable")
}

func withChecksum(_ body: [UInt8]) -> [UInt8] {
    let checksum = CRC32C.checksum(body)
    return body + (0..<4).map { UInt8(truncatingIfNeeded: checksum >> UInt32(8 * $0)) }
}

func checkDecoding(_ bytes: [UInt8]) {
    let changeset: Changeset
    do {
        changeset = try WireDecoder.decode(bytes)
    } catch {
        // A refusal must say where: within the input.
        require(error.offset >= 0 && error.offset <= bytes.count, "error offset \(error.offset) outside \(bytes.count) bytes: \(error)")
        return
    }
    requireInvariants("decoded changeset") { try changeset.checkInvariants() }
    for delta in changeset.records { checkStateRoundTrip(delta.state) }

    // Round trip: decode(encode(x)) == x, and the encoding is stable.
    let encoded = WireEncoder.encode(changeset)
    let again = decodeOrTrap(encoded, "re-encoded changeset")
    require(again == changeset, "decode(encode(x)) != x\n  x: \(changeset)\n  got: \(again)")
    require(WireEncoder.encode(again) == encoded, "encoding is not stable")

    // The normalized form: a fixed point of the join, and a round trip of its own.
    let normalized = changeset.normalized
    requireInvariants("normalized changeset") { try normalized.checkInvariants() }
    require(normalized.merging(normalized) == normalized, "changeset join is not idempotent")
    require(changeset.merging(normalized) == normalized && normalized.merging(changeset) == normalized,
            "a changeset joined with its normal form is not the normal form")
    require(decodeOrTrap(WireEncoder.encode(normalized), "normalized changeset") == normalized,
            "normalized changeset does not round-trip")
    for delta in normalized.records {
        requireJoinLaws("record state", [delta.state, RecordState()]) { $0.merging($1) }
    }

    // Applying is a join: into an empty replica, at a time that quarantines nothing.
    var replica = Replica(id: FuzzFixtures.replicaID(0))
    for schema in FuzzFixtures.schemas { replica.replicate(schema) }
    let report = replica.apply(changeset, physicalMilliseconds: HLC.acceptedMillisecondsMax)
    require(report.quarantinedRecords == 0 && replica.quarantine.isEmpty, "nothing should be quarantined")
    requireInvariants("replica state after apply") { try replica.state.checkInvariants() }
    require(replica.state.snapshot == droppingBottomRecords(normalized), "applied state != normalized changeset")
    if changeset.maxHLC > .zero {
        require(replica.clock.latest > changeset.maxHLC, "apply did not move the clock past the received stamps")
    }
    _ = replica.conflicts()
}

func decodeOrTrap(_ bytes: [UInt8], _ what: String) -> Changeset {
    do {
        return try WireDecoder.decode(bytes)
    } catch {
        fatalError("\(what) does not decode: \(error)\n  bytes: \(bytes)")
    }
}
