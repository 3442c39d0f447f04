import ConvergeCore
import ConvergeSync
import ConvergeTestSupport
import Testing

/// The sync messages: round trips, and untrusted bytes refused with a reason, never a trap.
@Suite(.computeBound) struct ProtocolTests {
    static let replica = ReplicaID(bytes: Array(1...16))!

    static let rejections = [
        SyncRejection(id: 1, table: "invoices", key: .text("inv-1"), reason: "the total cannot be negative"),
        SyncRejection(id: 300, table: "t", key: .integer(-42), reason: "é ✓"),
        SyncRejection(id: .max, table: "t", key: .integer(.min), reason: ""),
        SyncRejection(id: 7, table: "t", key: .real(-0.5), reason: "r"),
        SyncRejection(id: 8, table: "t", key: .blob([0, 255, 7]), reason: "b"),
        SyncRejection(id: 9, table: "t", key: .null, reason: "n"),
    ]

    @Test func requestsRoundTrip() throws {
        let requests = [
            SyncRequest(replica: Self.replica),
            SyncRequest(replica: Self.replica, pushUpTo: 9, changeset: [1, 2, 3], pull: false, pullCursor: 4, pullAfter: 7, rejectionsAfter: 0),
            SyncRequest(replica: Self.replica, pullCursor: .max, pullMaxRecords: 1, pullMaxBytes: .max, rejectionsAfter: .max),
        ]
        for request in requests { #expect(try SyncRequest(decoding: request.encoded()) == request) }
    }

    @Test func responsesRoundTrip() throws {
        let responses = [
            SyncResponse(serverReplica: Self.replica, acknowledged: 3, changeset: [], next: 5, hasMore: false),
            SyncResponse(serverReplica: Self.replica, acknowledged: 3, changeset: [9, 9], next: 5, hasMore: true, rejections: Self.rejections),
        ]
        for response in responses { #expect(try SyncResponse(decoding: response.encoded()) == response) }
    }

    @Test func everyTruncationAndBitFlipIsRefusedOrDecodes() {
        let bytes = SyncResponse(serverReplica: Self.replica, acknowledged: 3, changeset: [9], next: 5, hasMore: false, rejections: Self.rejections).encoded()
        for length in 0..<bytes.count {
            #expect(throws: SyncProtocolError.self) { try SyncResponse(decoding: Array(bytes[..<length])) }
        }
        for index in bytes.indices {
            for bit in 0..<8 {
                var flipped = bytes
                flipped[index] ^= 1 << bit
                _ = try? SyncResponse(decoding: flipped)  // must not trap
            }
        }
    }

    @Test func hostileCountsAndStringsAreRefused() {
        var header = SyncResponse(serverReplica: Self.replica, acknowledged: 0, changeset: [], next: 0, hasMore: false).encoded()
        header[5] = 2  // rejections present
        // A count far beyond what the message holds.
        #expect(throws: SyncProtocolError.self) { try SyncResponse(decoding: header + [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) }
        // A table name that is not UTF-8.
        #expect(throws: SyncProtocolError.self) { try SyncResponse(decoding: header + [1, 1, 2, 0xC3, 0x28, 0, 0]) }
        // An unknown value tag.
        #expect(throws: SyncProtocolError.self) { try SyncResponse(decoding: header + [1, 1, 1, 0x74, 9, 0]) }
        // Unknown flags.
        var request = SyncRequest(replica: Self.replica).encoded()
        request[5] |= 8
        #expect(throws: SyncProtocolError.self) { try SyncRequest(decoding: request) }
    }
}
