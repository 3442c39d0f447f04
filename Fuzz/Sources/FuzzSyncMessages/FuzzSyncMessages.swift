import ConvergeCore
import ConvergeProtocol
import FuzzSupport

// FuzzSyncMessages: arbitrary bytes into the sync protocol's decoders, the server's first
// contact with a request body and the client's with an answer.
//
// Decoding never traps; a refusal names an offset inside the input; whatever decodes
// re-encodes to bytes that decode to an equal message and re-encode to the same bytes
// (inputs may use longer varints than needed, so the first encoding may differ). Each input is tried as a request and as a response, as is and with each
// magic in front (so mutations reach the body without forging a header).

@main
enum FuzzSyncMessagesMain {
    static func main() {
        FuzzerMain.run(seeds: seeds) { data, count in
            fuzz(data.map(UnsafeRawPointer.init) ?? FuzzerMain.emptyInput, count)
        }
    }

    static func seeds() -> [[UInt8]] {
        let replica = FuzzFixtures.replicaID(1)
        let changeset = WireEncoder.encode(Changeset())
        let requests = [
            SyncRequest(replica: replica),
            SyncRequest(replica: replica, pushUpTo: 300, changeset: changeset, pull: true, pullCursor: 12, pullAfter: 40, rejectionsAfter: 2),
            SyncRequest(replica: replica, pull: false, pullMaxRecords: .max, pullMaxBytes: 1, rejectionsAfter: 0),
        ].map { $0.encoded() }
        let responses = [
            SyncResponse(serverReplica: replica, acknowledged: 0, changeset: [], next: 0, hasMore: false),
            SyncResponse(
                serverReplica: replica, acknowledged: 300, changeset: changeset, next: 41, hasMore: true,
                rejections: [
                    SyncRejection(id: 1, table: "invoices", key: .text("inv-1"), reason: "the total cannot be negative"),
                    SyncRejection(id: 2, table: "t", key: .integer(-3), reason: "é"),
                    SyncRejection(id: 3, table: "t", key: .real(0.5), reason: ""),
                    SyncRejection(id: 4, table: "t", key: .blob([1, 2]), reason: "b"),
                    SyncRejection(id: 5, table: "t", key: .null, reason: "n"),
                ]),
        ].map { $0.encoded() }
        return requests + responses
    }
}

let requestMagic = Array("CVRQ".utf8)
let responseMagic = Array("CVRS".utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    checkRequest(bytes)
    checkResponse(bytes)
    checkRequest(requestMagic + [SyncProtocol.version] + bytes)
    checkResponse(responseMagic + [SyncProtocol.version] + bytes)
    return 0
}

func checkRequest(_ bytes: [UInt8]) {
    let request: SyncRequest
    do {
        request = try SyncRequest(decoding: bytes)
    } catch {
        require(error.offset >= 0 && error.offset <= bytes.count, "request error offset \(error.offset) outside \(bytes.count) bytes")
        return
    }
    let encoded = request.encoded()
    guard let again = try? SyncRequest(decoding: encoded) else { fatalError("re-encoded request does not decode") }
    require(again == request, "request round trip differs")
    require(again.encoded() == encoded, "request encoding is not stable")
}

func checkResponse(_ bytes: [UInt8]) {
    let response: SyncResponse
    do {
        response = try SyncResponse(decoding: bytes)
    } catch {
        require(error.offset >= 0 && error.offset <= bytes.count, "response error offset \(error.offset) outside \(bytes.count) bytes")
        return
    }
    let encoded = response.encoded()
    guard let again = try? SyncResponse(decoding: encoded) else { fatalError("re-encoded response does not decode") }
    require(again == response, "response round trip differs")
    require(again.encoded() == encoded, "response encoding is not stable")
}
