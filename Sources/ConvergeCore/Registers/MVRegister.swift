/// A multi-value register, for *critical* fields: concurrent writes are all kept until a
/// person chooses.
///
/// Each sibling is a write `(stamp, value)` that no other known write has observed; the
/// context records every write seen. A new write observes all current siblings, so it
/// replaces them; two writes that did not see each other both survive the join. Siblings
/// with two or more distinct values are a *conflict*: every replica shows the same
/// provisional value (the sibling with the largest stamp) and the same sibling list.
///
/// Invariant: siblings sorted by stamp, one per stamp, each covered by the context.
public struct MVRegister: Sendable, Hashable, Codable {
    /// One write no other known write has observed.
    public struct Sibling: Sendable, Hashable, Codable {
        /// The write's stamp.
        public let stamp: Stamp
        /// The value written.
        public let value: Value
        /// The write of `value` at `stamp`.
        public init(stamp: Stamp, value: Value) {
            self.stamp = stamp
            self.value = value
        }
    }

    /// The concurrent writes, sorted by stamp: one when there is no conflict.
    public private(set) var siblings: [Sibling]
    /// Every write this register has seen.
    public private(set) var context: CausalContext

    /// The bottom state: no write seen.
    public init() {
        siblings = []
        context = CausalContext()
    }

    /// A state from parts (decoding). Siblings are sorted; on a duplicated stamp the larger
    /// value is kept (as the join would); the context is widened to cover them.
    public init(siblings: [Sibling], context: CausalContext) {
        var context = context
        var byStamp = [Stamp: Value]()
        for sibling in siblings {
            context.record(sibling.stamp)
            if let existing = byStamp[sibling.stamp], !(existing < sibling.value) { continue }
            byStamp[sibling.stamp] = sibling.value
        }
        self.siblings = byStamp.map { Sibling(stamp: $0.key, value: $0.value) }.sorted { $0.stamp < $1.stamp }
        self.context = context
    }

    /// A register holding one write: the form a plain value takes when a field turns critical.
    public init(value: Value, stamp: Stamp) {
        self.init(siblings: [Sibling(stamp: stamp, value: value)], context: CausalContext())
    }

    /// Whether no write was seen (the bottom of the lattice).
    public var isBottom: Bool { siblings.isEmpty && context.isEmpty }

    /// The value every replica shows while a conflict is open: the latest sibling's.
    public var provisionalValue: Value? { siblings.last?.value }

    /// The distinct values among the siblings, in stamp order of their latest write.
    public var values: [Value] {
        var seen = Set<Value>()
        var result = [Value]()
        for sibling in siblings.reversed() where seen.insert(sibling.value).inserted { result.append(sibling.value) }
        return result.reversed()
    }

    /// Two or more distinct concurrent values: someone must choose.
    public var isConflicted: Bool {
        guard let first = siblings.first?.value else { return false }
        return siblings.contains { $0.value != first }
    }

    /// The value under a deterministic resolver that prefers `authority`'s writes
    /// (the server's "server wins" fields); the provisional value when it wrote none.
    public func value(preferring authority: ReplicaID) -> Value? {
        siblings.last(where: { $0.stamp.replica == authority })?.value ?? provisionalValue
    }

    /// A local write at a fresh `stamp`: it observes, and so replaces, every sibling.
    public mutating func write(_ value: Value, at stamp: Stamp) {
        assert(context[stamp.replica] <= stamp.hlc, "write with an old stamp")
        context.record(stamp)
        siblings = [Sibling(stamp: stamp, value: value)]
    }

    /// The join: as the OR-set on the siblings' stamps; on a stamp present on both sides
    /// with different values (corruption) the larger value wins.
    public func merging(_ other: MVRegister) -> MVRegister {
        if other.isBottom || other == self { return self }
        if isBottom { return other }
        var merged = [Sibling]()
        var i = 0, j = 0
        while i < siblings.count || j < other.siblings.count {
            if j == other.siblings.count || (i < siblings.count && siblings[i].stamp < other.siblings[j].stamp) {
                if !other.context.covers(siblings[i].stamp) { merged.append(siblings[i]) }
                i += 1
            } else if i == siblings.count || other.siblings[j].stamp < siblings[i].stamp {
                if !context.covers(other.siblings[j].stamp) { merged.append(other.siblings[j]) }
                j += 1
            } else {
                merged.append(siblings[i].value < other.siblings[j].value ? other.siblings[j] : siblings[i])
                i += 1; j += 1
            }
        }
        var result = MVRegister()
        result.siblings = merged
        result.context = context.merging(other.context)
        return result
    }

    /// Joins `other` into this register (``merging(_:)`` in place).
    public mutating func merge(_ other: MVRegister) { self = merging(other) }

    /// Checks that the siblings are sorted, one per stamp, each covered by the context;
    /// throws the first broken invariant.
    public func checkInvariants() throws(InvariantViolation) {
        try context.checkInvariants()
        for index in siblings.indices {
            guard context.covers(siblings[index].stamp) else { throw InvariantViolation("sibling \(siblings[index].stamp) not covered by its context") }
            if index > 0, !(siblings[index - 1].stamp < siblings[index].stamp) { throw InvariantViolation("siblings not strictly sorted") }
        }
    }
}
