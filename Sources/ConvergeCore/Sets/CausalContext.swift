/// What a state has seen: for each replica, the highest clock reading of its events.
///
/// A dot `(h, r)` is *covered* when `self[r] >= h`. Keeping one high-water mark per
/// replica (instead of a set of dots) is sound per object because one replica's events
/// on one object are totally ordered and every state it ships includes its earlier ones.
///
/// Stored as an array sorted by replica: contexts hold one to a few entries, where a
/// sorted array beats a dictionary on size, speed and deterministic encoding.
public struct CausalContext: Sendable, Hashable, Codable {
    /// One replica's high-water mark.
    public struct Entry: Sendable, Hashable, Codable {
        /// The replica.
        public let replica: ReplicaID
        /// The highest clock reading of its events seen.
        public let hlc: HLC
        /// The mark `hlc` for `replica`.
        public init(replica: ReplicaID, hlc: HLC) {
            self.replica = replica
            self.hlc = hlc
        }
    }

    /// Entries sorted by replica, one per replica, none with a zero clock.
    public private(set) var entries: [Entry]

    /// The empty context (the join's identity).
    public init() { entries = [] }

    /// Builds a context from entries in any order; duplicates keep their maximum.
    ///
    /// Sorts once instead of inserting one by one: entries in descending replica order
    /// (as untrusted bytes may list them) would make insertion quadratic.
    ///
    /// - Complexity: O(n) when the entries are already sorted by replica, else O(n log n).
    public init<S: Sequence>(_ entries: S) where S.Element == Entry {
        var sorted = entries.filter { $0.hlc > .zero }
        var strictlySorted = true
        for index in sorted.indices.dropFirst() where !(sorted[index - 1].replica < sorted[index].replica) {
            strictlySorted = false
            break
        }
        if !strictlySorted {
            // Within one replica the largest clock comes last: it is the one kept.
            sorted.sort { $0.replica != $1.replica ? $0.replica < $1.replica : $0.hlc < $1.hlc }
            var kept = [Entry]()
            kept.reserveCapacity(sorted.count)
            for entry in sorted {
                if let last = kept.last, last.replica == entry.replica { kept[kept.count - 1] = entry } else { kept.append(entry) }
            }
            sorted = kept
        }
        self.entries = sorted
    }

    /// This context with every one of `dots` recorded as seen.
    ///
    /// - Complexity: O((n + m) log m) for n entries and m dots, whatever their order
    ///   (``record(_:)`` one by one is O(n) per dot).
    public func recording<S: Sequence>(_ dots: S) -> CausalContext where S.Element == Stamp {
        merging(CausalContext(dots.lazy.map { Entry(replica: $0.replica, hlc: $0.hlc) }))
    }

    /// Whether nothing was seen (the bottom of the lattice).
    public var isEmpty: Bool { entries.isEmpty }

    /// The high-water mark for `replica`, `HLC.zero` when unseen.
    ///
    /// - Complexity: O(log n)
    public subscript(replica: ReplicaID) -> HLC {
        let index = position(of: replica)
        return index < entries.count && entries[index].replica == replica ? entries[index].hlc : .zero
    }

    /// Whether the event `dot` has been seen.
    @inlinable
    public func covers(_ dot: Stamp) -> Bool {
        dot.hlc <= self[dot.replica]
    }

    /// Records `dot` as seen (raises its replica's mark to it).
    ///
    /// - Complexity: O(log n) when `dot`'s replica has an entry, else O(n).
    public mutating func record(_ dot: Stamp) {
        guard dot.hlc > .zero else { return }
        let index = position(of: dot.replica)
        if index < entries.count && entries[index].replica == dot.replica {
            if entries[index].hlc < dot.hlc { entries[index] = Entry(replica: dot.replica, hlc: dot.hlc) }
        } else {
            entries.insert(Entry(replica: dot.replica, hlc: dot.hlc), at: index)
        }
    }

    /// The join: the pointwise maximum.
    ///
    /// - Complexity: O(n + m)
    public func merging(_ other: CausalContext) -> CausalContext {
        if other.entries.isEmpty || other == self { return self }
        if entries.isEmpty { return other }
        var result = [Entry]()
        result.reserveCapacity(entries.count + other.entries.count)
        var i = 0, j = 0
        while i < entries.count || j < other.entries.count {
            if j == other.entries.count || (i < entries.count && entries[i].replica < other.entries[j].replica) {
                result.append(entries[i]); i += 1
            } else if i == entries.count || other.entries[j].replica < entries[i].replica {
                result.append(other.entries[j]); j += 1
            } else {
                result.append(entries[i].hlc >= other.entries[j].hlc ? entries[i] : other.entries[j])
                i += 1; j += 1
            }
        }
        var merged = CausalContext()
        merged.entries = result
        return merged
    }

    /// Joins `other` into this context (``merging(_:)`` in place).
    public mutating func merge(_ other: CausalContext) { self = merging(other) }

    /// The largest clock reading in the context (for advancing the local clock on apply).
    public var maxHLC: HLC { entries.lazy.map(\.hlc).max() ?? .zero }

    /// The context as bytes for a store to keep: each entry as its replica's 16 bytes and
    /// its clock reading as 8 bytes, big-endian, in replica order (24 bytes an entry).
    public var packedBytes: [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(entries.count * 24)
        for entry in entries {
            bytes += entry.replica.bytes
            withUnsafeBytes(of: entry.hlc.rawValue.bigEndian) { bytes += $0 }
        }
        return bytes
    }

    /// A context read back from ``packedBytes``; throws on bytes that are not one (a length
    /// that is not a multiple of 24, entries out of order, duplicated or at zero).
    public init(packedBytes bytes: some Collection<UInt8>) throws(InvariantViolation) {
        let bytes = Array(bytes)
        guard bytes.count % 24 == 0 else { throw InvariantViolation("a packed causal context of \(bytes.count) bytes (not a multiple of 24)") }
        var entries = [Entry]()
        entries.reserveCapacity(bytes.count / 24)
        var offset = 0
        while offset < bytes.count {
            guard let replica = ReplicaID(bytes: bytes[offset..<offset + 16]) else { throw InvariantViolation("a packed causal context with a bad replica") }
            let hlc = bytes[offset + 16..<offset + 24].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            entries.append(Entry(replica: replica, hlc: HLC(rawValue: hlc)))
            offset += 24
        }
        self.init()
        self.entries = entries
        try checkInvariants()
    }

    /// `entries` is sorted by replica, without duplicates or zero marks.
    public func checkInvariants() throws(InvariantViolation) {
        for index in entries.indices {
            guard entries[index].hlc > .zero else { throw InvariantViolation("context entry with zero clock") }
            if index > 0, !(entries[index - 1].replica < entries[index].replica) {
                throw InvariantViolation("context entries not strictly sorted by replica")
            }
        }
    }

    private func position(of replica: ReplicaID) -> Int {
        var low = 0, high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].replica < replica { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// A broken invariant of a lattice state: a bug or corrupt input, never a normal outcome.
public struct InvariantViolation: Error, Sendable, Hashable, CustomStringConvertible {
    public let description: String
    /// A violation described by `description`.
    public init(_ description: String) { self.description = description }
}
