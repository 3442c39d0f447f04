import ConvergeCore

/// The messages of one sync round, shared by the client and the server.
///
/// Binary, versioned and self-delimiting. A request carries the client's identity, one
/// push batch (a wire-format changeset, possibly empty) with the feed position it reaches,
/// and the pull cursor; the response acknowledges the batch and carries one page of the
/// server's feed after the cursor.
///
/// ```
/// request  = "CVRQ" version:u8 flags:u8 replica:16 pushUpTo:varint pullCursor:varint
///            [pullAfter:varint] pullMaxRecords:varint pullMaxBytes:varint
///            changesetLength:varint changeset [rejectionsAfter:varint]
///            [collectedAfter:varint] [serial:varint]                   (version 2)
///            (flags bit 0: pull requested; bit 1: pullAfter present, when paging;
///             bit 2: rejectionsAfter present; version 2: bit 3: push complete,
///             bit 4: collectedAfter present, bit 5: serial present)
/// response = "CVRS" version:u8 flags:u8 serverReplica:16 acknowledged:varint next:varint
///            changesetLength:varint changeset [count:varint rejection*]
///            [pushedFrom:varint pushedTo:varint]
///            [frontier:varint count:varint collected*]                 (version 2)
///            (flags bit 0: hasMore; bit 1: rejections present; bit 2: pushed range present;
///             version 2: bit 3: frontier and collected records present)
/// rejection = id:varint table:string key:value reason:string
/// collected = id:varint table:string key:value
/// string   = length:varint utf8
/// value    = 0 (null) | 1 zigzag:varint | 2 bits:u64le | 3 string | 4 length:varint bytes
/// ```
///
/// Varints are unsigned LEB128 (at most 10 bytes). The changesets are ConvergeCore's wire
/// format (magic, version, CRC-32C trailer), decoded with `WireDecoder`.
///
/// Version 2 adds what tombstone collection needs (DESIGN §9). A message that uses none of
/// it is written as version 1, which every release reads; a server answers a version-1
/// request with a version-1 response, so old clients keep working (without collection),
/// and a client that meets a server refusing version 2 falls back to version 1.
public enum SyncProtocol {
    /// The newest version this release writes and reads.
    public static let version: UInt8 = 2
    /// Every version this release reads.
    public static let versions: ClosedRange<UInt8> = 1...2
    /// The HTTP content type of sync requests and responses.
    public static let contentType = "application/x-converge-sync"
    static let requestMagic: [UInt8] = Array("CVRQ".utf8)
    static let responseMagic: [UInt8] = Array("CVRS".utf8)
}

/// Why bytes did not decode as a sync message, and where.
public struct SyncProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong.
    public let reason: String
    /// The byte offset where decoding failed.
    public let offset: Int

    /// An error saying `reason` at byte `offset`.
    public init(_ reason: String, offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String { "sync message error at byte \(offset): \(reason)" }
}

/// One request of a sync round: a push batch and a pull cursor.
public struct SyncRequest: Sendable, Hashable {
    /// The client's replica: a device is bound to it on its first push.
    public var replica: ReplicaID
    /// The client's feed position that the pushed batch reaches; the server echoes it
    /// back as ``SyncResponse/acknowledged`` once the batch is applied and committed.
    public var pushUpTo: UInt64
    /// The pushed changes, in ConvergeCore's wire format; empty when nothing is pushed.
    public var changeset: [UInt8]
    /// Whether the client wants a page of the server's feed.
    public var pull: Bool
    /// The server's feed position the client has applied.
    public var pullCursor: UInt64
    /// While paging a pull: the previous page's `next`. The cursor stays fixed meanwhile,
    /// because a record beyond a page may have older parts inside it.
    public var pullAfter: UInt64?
    /// Bounds of the page asked for (the server may lower them).
    public var pullMaxRecords: UInt64
    /// See ``pullMaxRecords``.
    public var pullMaxBytes: UInt64
    /// The last rejection of this device's changes the client has recorded; the server
    /// answers with the later ones. `nil`: the client does not take rejections.
    public var rejectionsAfter: UInt64?
    /// Whether nothing is left in the client's feed after this batch (version 2): every
    /// local write made before the client had applied the server's feed up to `pullCursor`
    /// has now reached the server, which records `pullCursor` as the device's *stable
    /// position* (DESIGN §9).
    public var pushComplete: Bool
    /// The last collected record the client has dropped (version 2); the server answers
    /// with the later ones. `nil`: the client does not collect.
    public var collectedAfter: UInt64?
    /// The request's number (version 2): each request a client sends, retries included,
    /// takes a larger one than the last. A server that has served a request of this replica
    /// numbered as high refuses this one's push with 409 `stale_push`: it was delayed past a
    /// later request, and its states may be older than a delete collected since (DESIGN §9).
    /// `nil`: the client does not number its requests (nothing is refused as stale).
    public var serial: UInt64?

    /// A request of `replica`; every part but the replica has a default (pull from the
    /// start, push nothing).
    public init(
        replica: ReplicaID, pushUpTo: UInt64 = 0, changeset: [UInt8] = [], pull: Bool = true,
        pullCursor: UInt64 = 0, pullAfter: UInt64? = nil, pullMaxRecords: UInt64 = 1_000, pullMaxBytes: UInt64 = 1 << 20,
        rejectionsAfter: UInt64? = nil, pushComplete: Bool = false, collectedAfter: UInt64? = nil, serial: UInt64? = nil
    ) {
        self.serial = serial
        self.rejectionsAfter = rejectionsAfter
        self.pushComplete = pushComplete
        self.collectedAfter = collectedAfter
        self.replica = replica
        self.pushUpTo = pushUpTo
        self.changeset = changeset
        self.pull = pull
        self.pullCursor = pullCursor
        self.pullAfter = pullAfter
        self.pullMaxRecords = pullMaxRecords
        self.pullMaxBytes = pullMaxBytes
    }

    /// The version the message is written in: 2 only when it uses version 2's fields.
    public var version: UInt8 { pushComplete || collectedAfter != nil || serial != nil ? 2 : 1 }

    /// The same request without version 2's fields: what a server that reads only version 1
    /// is sent.
    public var asVersion1: SyncRequest {
        var request = self
        request.pushComplete = false
        request.collectedAfter = nil
        request.serial = nil
        return request
    }

    /// The request's bytes, in ``version``.
    public func encoded() -> [UInt8] {
        var out = SyncProtocol.requestMagic
        out.reserveCapacity(64 + changeset.count)
        out.append(version)
        out.append((pull ? 1 : 0) | (pullAfter == nil ? 0 : 2) | (rejectionsAfter == nil ? 0 : 4) | (pushComplete ? 8 : 0) | (collectedAfter == nil ? 0 : 16) | (serial == nil ? 0 : 32))
        out.append(contentsOf: replica.bytes)
        Varint.append(pushUpTo, to: &out)
        Varint.append(pullCursor, to: &out)
        if let pullAfter { Varint.append(pullAfter, to: &out) }
        Varint.append(pullMaxRecords, to: &out)
        Varint.append(pullMaxBytes, to: &out)
        Varint.append(UInt64(changeset.count), to: &out)
        out.append(contentsOf: changeset)
        if let rejectionsAfter { Varint.append(rejectionsAfter, to: &out) }
        if let collectedAfter { Varint.append(collectedAfter, to: &out) }
        if let serial { Varint.append(serial, to: &out) }
        return out
    }

    /// Decodes a request; throws ``SyncProtocolError`` for bytes that are not one.
    public init(decoding bytes: [UInt8]) throws(SyncProtocolError) {
        var reader = MessageReader(bytes)
        let (version, flags) = try reader.header(magic: SyncProtocol.requestMagic, what: "sync request")
        let known: UInt8 = version >= 2 ? 63 : 7
        guard flags & ~known == 0 else { throw SyncProtocolError("unknown flags \(flags) in version \(version)", offset: 5) }
        replica = try reader.replica()
        pushUpTo = try reader.varint("push position")
        pullCursor = try reader.varint("pull cursor")
        pullAfter = flags & 2 != 0 ? try reader.varint("pull page position") : nil
        pullMaxRecords = try reader.varint("pull record bound")
        pullMaxBytes = try reader.varint("pull byte bound")
        changeset = try reader.payload()
        pull = flags & 1 != 0
        rejectionsAfter = flags & 4 != 0 ? try reader.varint("rejection cursor") : nil
        pushComplete = flags & 8 != 0
        collectedAfter = flags & 16 != 0 ? try reader.varint("collection cursor") : nil
        serial = flags & 32 != 0 ? try reader.varint("request serial") : nil
        try reader.end()
    }
}

/// The answer to a ``SyncRequest``.
public struct SyncResponse: Sendable, Hashable {
    /// The server's replica.
    public var serverReplica: ReplicaID
    /// The client's feed position now held by the server (the request's `pushUpTo`).
    public var acknowledged: UInt64
    /// One page of the server's feed after the pull cursor (wire format; empty if none).
    public var changeset: [UInt8]
    /// The pull cursor to continue from.
    public var next: UInt64
    /// Whether more changes follow `next`.
    public var hasMore: Bool
    /// The server's validation refused these changes of the device and undid them (the
    /// compensating writes come with the pulled changes), oldest first.
    public var rejections: [SyncRejection]
    /// The server's feed positions its apply of the pushed batch took: just before and
    /// after it, when they hold nothing but the push's records (`nil` otherwise). A client
    /// whose pull cursor is at the lower end may move it to the upper end: that part of
    /// the feed is its own batch, merged into states it already holds.
    public var pushedRange: ClosedRange<UInt64>?
    /// The namespace's frontier (version 2): the smallest stable position over its active
    /// devices; records deleted at or below it are collected (DESIGN §9). `nil`: the server
    /// does not collect, or the request was version 1.
    public var frontier: UInt64?
    /// Records the server collected after the request's `collectedAfter`, oldest first: the
    /// client drops each one it holds deleted (and keeps one it revived since).
    public var collected: [SyncCollected]

    /// An answer of the server `serverReplica`.
    public init(
        serverReplica: ReplicaID, acknowledged: UInt64, changeset: [UInt8], next: UInt64, hasMore: Bool,
        rejections: [SyncRejection] = [], pushedRange: ClosedRange<UInt64>? = nil, frontier: UInt64? = nil,
        collected: [SyncCollected] = []
    ) {
        self.frontier = frontier
        self.collected = collected
        self.rejections = rejections
        self.pushedRange = pushedRange
        self.serverReplica = serverReplica
        self.acknowledged = acknowledged
        self.changeset = changeset
        self.next = next
        self.hasMore = hasMore
    }

    /// The version the message is written in: 2 only when it carries a frontier.
    public var version: UInt8 { frontier != nil ? 2 : 1 }

    /// The response's bytes, in ``version``.
    public func encoded() -> [UInt8] {
        var out = SyncProtocol.responseMagic
        out.reserveCapacity(48 + changeset.count)
        out.append(version)
        out.append((hasMore ? 1 : 0) | (rejections.isEmpty ? 0 : 2) | (pushedRange == nil ? 0 : 4) | (frontier == nil ? 0 : 8))
        out.append(contentsOf: serverReplica.bytes)
        Varint.append(acknowledged, to: &out)
        Varint.append(next, to: &out)
        Varint.append(UInt64(changeset.count), to: &out)
        out.append(contentsOf: changeset)
        if !rejections.isEmpty {
            Varint.append(UInt64(rejections.count), to: &out)
            for rejection in rejections {
                Varint.append(rejection.id, to: &out)
                MessageWriter.string(rejection.table, to: &out)
                MessageWriter.value(rejection.key, to: &out)
                MessageWriter.string(rejection.reason, to: &out)
            }
        }
        if let pushedRange {
            Varint.append(pushedRange.lowerBound, to: &out)
            Varint.append(pushedRange.upperBound, to: &out)
        }
        if let frontier {
            Varint.append(frontier, to: &out)
            Varint.append(UInt64(collected.count), to: &out)
            for record in collected {
                Varint.append(record.id, to: &out)
                MessageWriter.string(record.table, to: &out)
                MessageWriter.value(record.key, to: &out)
            }
        }
        return out
    }

    /// Decodes a response; throws ``SyncProtocolError`` for bytes that are not one.
    public init(decoding bytes: [UInt8]) throws(SyncProtocolError) {
        var reader = MessageReader(bytes)
        let (version, flags) = try reader.header(magic: SyncProtocol.responseMagic, what: "sync response")
        let known: UInt8 = version >= 2 ? 15 : 7
        guard flags & ~known == 0 else { throw SyncProtocolError("unknown flags \(flags) in version \(version)", offset: 5) }
        serverReplica = try reader.replica()
        acknowledged = try reader.varint("acknowledged position")
        next = try reader.varint("next cursor")
        changeset = try reader.payload()
        hasMore = flags & 1 != 0
        var rejections = [SyncRejection]()
        if flags & 2 != 0 {
            let start = reader.offset
            let count = try reader.varint("rejection count")
            // Each rejection takes at least 4 bytes: never trust a count beyond that.
            guard count <= UInt64(bytes.count - reader.offset) / 4 else {
                throw SyncProtocolError("rejection count \(count) exceeds what the message can hold", offset: start)
            }
            for _ in 0..<count {
                let id = try reader.varint("rejection id")
                let table = try reader.string("rejected table")
                let key = try reader.value("rejected key")
                let reason = try reader.string("rejection reason")
                rejections.append(SyncRejection(id: id, table: table, key: key, reason: reason))
            }
        }
        self.rejections = rejections
        if flags & 4 != 0 {
            let start = reader.offset
            let from = try reader.varint("pushed range start")
            let to = try reader.varint("pushed range end")
            guard from <= to else { throw SyncProtocolError("pushed range \(from)...\(to) is reversed", offset: start) }
            pushedRange = from...to
        } else {
            pushedRange = nil
        }
        var collected = [SyncCollected]()
        if flags & 8 != 0 {
            frontier = try reader.varint("frontier")
            let start = reader.offset
            let count = try reader.varint("collected count")
            // Each collected record takes at least 3 bytes: never trust a count beyond that.
            guard count <= UInt64(bytes.count - reader.offset) / 3 else {
                throw SyncProtocolError("collected count \(count) exceeds what the message can hold", offset: start)
            }
            for _ in 0..<count {
                let id = try reader.varint("collected id")
                let table = try reader.string("collected table")
                let key = try reader.value("collected key")
                collected.append(SyncCollected(id: id, table: table, key: key))
            }
        } else {
            frontier = nil
        }
        self.collected = collected
        try reader.end()
    }
}

/// A change of this device the server refused and undid, with its reason for the user.
public struct SyncRejection: Sendable, Hashable {
    /// The server's number for it, increasing per namespace.
    public var id: UInt64
    /// The refused record's table.
    public var table: String
    /// The refused record's primary key.
    public var key: Value
    /// The server's reason, meant for the user.
    public var reason: String

    /// A rejection as the server numbered it.
    public init(id: UInt64, table: String, key: Value, reason: String) {
        self.id = id
        self.table = table
        self.key = key
        self.reason = reason
    }
}

/// A record the server collected (its delete was causally stable, DESIGN §9).
public struct SyncCollected: Sendable, Hashable {
    /// The server's number for it, increasing per namespace.
    public var id: UInt64
    /// The collected record's table.
    public var table: String
    /// The collected record's primary key.
    public var key: Value

    /// A collected record as the server numbered it.
    public init(id: UInt64, table: String, key: Value) {
        self.id = id
        self.table = table
        self.key = key
    }
}

enum MessageWriter {
    static func string(_ string: String, to out: inout [UInt8]) {
        let bytes = Array(string.utf8)
        Varint.append(UInt64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }

    static func value(_ value: Value, to out: inout [UInt8]) {
        switch value {
        case .null:
            out.append(0)
        case .integer(let v):
            out.append(1)
            Varint.append(UInt64(bitPattern: (v << 1) ^ (v >> 63)), to: &out)
        case .real(let v):
            out.append(2)
            withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) }
        case .text(let v):
            out.append(3)
            string(v, to: &out)
        case .blob(let bytes):
            out.append(4)
            Varint.append(UInt64(bytes.count), to: &out)
            out.append(contentsOf: bytes)
        }
    }
}

/// Bounds-checked reading of untrusted bytes (core's ``ByteReader``, the one reader of every
/// encoding), with its errors said as ``SyncProtocolError``s.
struct MessageReader {
    var input: ByteReader

    init(_ bytes: [UInt8]) { input = ByteReader(bytes) }

    var bytes: [UInt8] { input.bytes }
    var offset: Int { input.position }

    /// The read of `body`, a failure of the shared reader said as this protocol's error.
    private mutating func reading<T>(_ body: (inout ByteReader) throws(WireError) -> T) throws(SyncProtocolError) -> T {
        do throws(WireError) {
            return try body(&input)
        } catch {
            throw SyncProtocolError(Self.reason(error), offset: error.offset)
        }
    }

    private static func reason(_ error: WireError) -> String {
        switch error.reason {
        case .truncated: return "truncated \(error.context)"
        case .varintTooLong: return "\(error.context) overflows 64 bits"
        case .countTooLarge(let count): return "\(error.context) length \(count) exceeds the bytes left"
        case .invalidUTF8: return "\(error.context) is not valid UTF-8"
        default: return "\(error.context): \(error.reason)"
        }
    }

    /// The message's version and flags.
    mutating func header(magic: [UInt8], what: String) throws(SyncProtocolError) -> (version: UInt8, flags: UInt8) {
        guard bytes.count >= magic.count + 2 else { throw SyncProtocolError("\(what) too short (\(bytes.count) bytes)", offset: 0) }
        guard Array(bytes[0..<magic.count]) == magic else { throw SyncProtocolError("not a \(what) (bad magic)", offset: 0) }
        guard SyncProtocol.versions.contains(bytes[magic.count]) else {
            throw SyncProtocolError("unsupported \(what) version \(bytes[magic.count])", offset: magic.count)
        }
        input.position = magic.count + 2
        return (bytes[magic.count], bytes[magic.count + 1])
    }

    mutating func replica() throws(SyncProtocolError) -> ReplicaID {
        let start = offset
        let raw = try reading { reader throws(WireError) in try reader.raw(16, "replica identity") }
        guard let replica = ReplicaID(bytes: raw) else { throw SyncProtocolError("truncated replica identity", offset: start) }
        return replica
    }

    mutating func varint(_ what: String) throws(SyncProtocolError) -> UInt64 {
        try reading { reader throws(WireError) in try reader.varint(what) }
    }

    mutating func payload() throws(SyncProtocolError) -> [UInt8] {
        Array(try bytes("changeset"))
    }

    mutating func bytes(_ what: String) throws(SyncProtocolError) -> ArraySlice<UInt8> {
        try reading { reader throws(WireError) in try reader.lengthPrefixed(what) }
    }

    mutating func string(_ what: String) throws(SyncProtocolError) -> String {
        try reading { reader throws(WireError) in try reader.string(what) }
    }

    mutating func value(_ what: String) throws(SyncProtocolError) -> Value {
        let tag = try reading { reader throws(WireError) in try reader.byte(what) }
        switch tag {
        case 0: return .null
        case 1:
            let zigzag = try varint(what)
            return .integer(Int64(bitPattern: zigzag >> 1) ^ -Int64(bitPattern: zigzag & 1))
        case 2:
            let raw = try reading { reader throws(WireError) in try reader.raw(8, what) }
            var bits: UInt64 = 0
            for (index, byte) in raw.enumerated() { bits |= UInt64(byte) << (8 * UInt64(index)) }
            return .real(Double(bitPattern: bits))
        case 3: return .text(try string(what))
        case 4: return .blob(Array(try bytes(what)))
        default: throw SyncProtocolError("unknown value tag \(tag) in \(what)", offset: offset - 1)
        }
    }

    func end() throws(SyncProtocolError) {
        guard input.isAtEnd else { throw SyncProtocolError("\(input.remaining) trailing bytes", offset: offset) }
    }
}
