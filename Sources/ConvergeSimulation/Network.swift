import ConvergeCore

/// A sync message on the simulated network; its changesets travel as wire-format bytes.
struct Message {
    enum Payload {
        /// A client's round trip: its changes after what the peer acknowledged, and where
        /// it stands in the peer's feed.
        case request(push: [UInt8]?, pushNext: UInt64, pushHasMore: Bool, pullCursor: UInt64, pullPosition: UInt64?)
        /// The peer's answer: the push acknowledged, its changes after the cursor.
        case response(ackPush: UInt64, pull: [UInt8]?, pullNext: UInt64, pullHasMore: Bool, pushHasMore: Bool)

        var byteCount: Int {
            switch self {
            case .request(let push, _, _, _, _): return 20 + (push?.count ?? 0)
            case .response(_, let pull, _, _, _): return 20 + (pull?.count ?? 0)
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
        // The engine and server mutations break something else than the merge.
        guard !needsHTTP else { return changeset }
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
            case .pullOverUnpushed, .stalePull, .cursorBeforeCommit:
                break
            }
            result.records[index].state = state
        }
        return result
    }
}
