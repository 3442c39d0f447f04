import ConvergeCore

/// A sync message on the simulated network; its changesets travel as wire-format bytes.
struct Message {
    enum Payload {
        /// A client's round trip: its changes after what the peer acknowledged, and where
        /// it stands in the peer's feed (with `--collect`, also what the hub's frontier needs).
        case request(push: [UInt8]?, pushNext: UInt64, pushHasMore: Bool, pullCursor: UInt64, pullPosition: UInt64?, collection: CollectionRequest?)
        /// The peer's answer: the push acknowledged, its changes after the cursor (with
        /// `--collect`, the frontier and the records the hub collected, or a reset).
        case response(ackPush: UInt64, pull: [UInt8]?, pullNext: UInt64, pullHasMore: Bool, pushHasMore: Bool, collection: CollectionAnswer?)

        var byteCount: Int {
            switch self {
            case .request(let push, _, _, _, _, let collection): return 20 + (push?.count ?? 0) + (collection == nil ? 0 : 25)
            case .response(_, let pull, _, _, _, let collection): return 20 + (pull?.count ?? 0) + (collection?.byteCount ?? 0)
            }
        }
    }

    var deliverAt: UInt64
    var order: UInt64
    var from: Int
    var to: Int
    var fromEpoch: Int
    var toEpoch: Int
    var payload: Payload

    func precedes(_ other: Message) -> Bool {
        deliverAt != other.deliverAt ? deliverAt < other.deliverAt : order < other.order
    }
}

/// `--collect`: what a device's request tells the hub for the frontier (what protocol
/// version 2 adds to a sync request).
struct CollectionRequest {
    /// The replica the device syncs as: a reset device comes back as another one.
    var replica: ReplicaID
    /// Nothing is left in the device's feed after this request's push.
    var pushComplete: Bool
    /// The request's number among the device's requests as `replica`, counting up.
    var serial: UInt64
    /// The last entry of the hub's collected log the device has dropped.
    var collectedAfter: UInt64
}

/// `--collect`: what the hub answers for collection.
struct CollectionAnswer {
    /// The replica the request came from (an answer to an identity the device has left
    /// behind, by a reset, is ignored).
    var replica: ReplicaID
    /// The device was retired: it must reset (HTTP's 410 `reset_required`); nothing was
    /// applied or pulled.
    var resetRequired = false
    var frontier: UInt64 = 0
    /// Records the hub collected after the request's `collectedAfter`, by log entry.
    var collected: [CollectedEntry] = []
    /// The last entry of the hub's collected log when it answered: an answer older than a
    /// collection the device has applied is stale (see ``Simulation``'s handling).
    var logHead: UInt64 = 0

    var byteCount: Int { 25 + collected.reduce(0) { $0 + 12 + 24 * $1.context.entries.count + $1.address.table.utf8.count + "\($1.address.key)".utf8.count } }
}

/// `--collect`: one entry of the memory hub's collected log: the record, and its
/// membership context when the hub dropped it (which life of the key went,
/// ``CollectionPlanner/isCollectedLife(_:collectedContext:)``).
struct CollectedEntry {
    var id: UInt64
    var address: RecordAddress
    var context: CausalContext
}

/// Messages in flight, by delivery time (then by send order: deterministic).
struct MessageHeap {
    private var items: [Message] = []

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    var first: Message? { items.first }

    mutating func push(_ message: Message) {
        items.append(message)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Message? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let result = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && items[left].precedes(items[smallest]) { smallest = left }
            if right < items.count && items[right].precedes(items[smallest]) { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return result
    }
}

/// What one replica has exchanged with one peer.
struct PeerCursor {
    /// Our feed position the peer acknowledged.
    var sent: UInt64 = 0
    /// While a push is paged: the last page's end (the floor `sent` stays fixed meanwhile,
    /// since records beyond a page may have older parts inside it).
    var sentPosition: UInt64?
    /// The peer's feed position we applied.
    var received: UInt64 = 0
    /// While a pull is paged: the last page's end.
    var receivedPosition: UInt64?
}

extension Mutation {
    /// Corrupts a received changeset the way a broken merge would (public for the HTTP
    /// hub, which corrupts what devices pull).
    public func corrupt(_ changeset: Changeset) -> Changeset {
        // The engine, server and hub mutations break something else than the merge.
        guard !needsHTTP && !needsCollect else { return changeset }
        var result = changeset
        for index in result.records.indices {
            var state = result.records[index].state
            switch self {
            case .dropMembershipContext:
                guard !state.membership.isBottom else { continue }
                // The context shrinks to the live tags: what the sender saw removed is forgotten.
                state = RecordState(membership: ORSet(dots: state.membership.dots, context: CausalContext()), fields: state.fields)
            case .tieIgnoresReplica:
                for (column, field) in state.fields {
                    if case .plain(.lww(let register)) = field {
                        state.fields[column] = .plain(.lww(LWWRegister(value: register.value, stamp: Stamp(hlc: register.stamp.hlc, replica: .zero))))
                    }
                }
            case .pullOverUnpushed, .stalePull, .cursorBeforeCommit, .collectAboveFrontier, .resetLosesWrites:
                break
            }
            result.records[index].state = state
        }
        return result
    }
}
