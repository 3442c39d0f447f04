/// A record's membership: the dotted add-wins observed-remove set, for one element.
///
/// `dots` are the live add-tags; `context` is everything this state has seen. The record
/// is alive while some add-tag is live. A remove clears the tags it has *seen*, so an add
/// made concurrently (its dot not covered by the remover's context) survives the join:
/// add wins.
///
/// Invariant: every dot is covered by the context, and dots are sorted without duplicates.
public struct ORSet: Sendable, Hashable, Codable {
    /// Live add-tags, sorted.
    public private(set) var dots: [Stamp]
    /// Every add and remove this state has seen.
    public private(set) var context: CausalContext

    /// The bottom state: never added, nothing seen.
    public init() {
        dots = []
        context = CausalContext()
    }

    /// A state from parts (decoding). Dots are sorted and deduplicated; the context is
    /// widened to cover them so that the invariant holds for any input.
    public init(dots: [Stamp], context: CausalContext) {
        var context = context
        for dot in dots { context.record(dot) }
        self.dots = Array(Set(dots)).sorted()
        self.context = context
    }

    /// Whether some add-tag is live: the record exists.
    public var isAlive: Bool { !dots.isEmpty }
    /// The bottom state, the join's identity: a delta that says nothing of membership.
    public var isBottom: Bool { dots.isEmpty && context.isEmpty }

    /// Dots that are dead here: seen, and removed.
    @inlinable
    public func isDead(_ dot: Stamp) -> Bool {
        context.covers(dot) && !holds(dot)
    }

    /// Whether `dot` is a live add-tag.
    ///
    /// - Complexity: O(log d): the dots are sorted.
    @inlinable
    public func holds(_ dot: Stamp) -> Bool {
        var low = 0, high = dots.count
        while low < high {
            let middle = (low + high) / 2
            if dots[middle] < dot { low = middle + 1 } else { high = middle }
        }
        return low < dots.count && dots[low] == dot
    }

    /// An add (insert, or an edit under `.updateWins`) at a fresh `dot`: it supersedes
    /// every tag it saw.
    ///
    /// - Precondition: `dot` is newer than everything seen from its replica, or is the
    ///   stamp of the current transaction (one transaction may touch a record twice).
    public mutating func add(at dot: Stamp) {
        assert(context[dot.replica] <= dot.hlc, "add with an old dot")
        dots = [dot]
        context.record(dot)
    }

    /// A remove at a fresh `dot`: clears every tag seen.
    public mutating func remove(at dot: Stamp) {
        assert(context[dot.replica] <= dot.hlc, "remove with an old dot")
        dots = []
        context.record(dot)
    }

    /// The join: a tag survives if both sides hold it, or if one holds it and the other
    /// has not seen it.
    ///
    /// - Complexity: O((d log d + c) + d log c) for d dots and c context entries.
    public func merging(_ other: ORSet) -> ORSet {
        if other.isBottom || other == self { return self }
        return mergingUnequal(other)
    }

    /// ``merging(_:)`` of a set already known to differ from this one.
    func mergingUnequal(_ other: ORSet) -> ORSet {
        if other.isBottom { return self }
        if isBottom { return other }
        var result = ORSet()
        var merged = [Stamp]()
        for dot in dots where other.holds(dot) || !other.context.covers(dot) { merged.append(dot) }
        for dot in other.dots where !holds(dot) && !context.covers(dot) { merged.append(dot) }
        merged.sort()
        result.dots = merged
        result.context = context.merging(other.context)
        return result
    }

    /// Joins `other` into this set (``merging(_:)`` in place).
    public mutating func merge(_ other: ORSet) { self = merging(other) }

    /// Checks that every dot is covered by the context and that dots are sorted without
    /// duplicates; throws the first broken invariant.
    public func checkInvariants() throws(InvariantViolation) {
        try context.checkInvariants()
        for index in dots.indices {
            guard context.covers(dots[index]) else { throw InvariantViolation("live dot \(dots[index]) not covered by its context") }
            if index > 0, !(dots[index - 1] < dots[index]) { throw InvariantViolation("dots not strictly sorted") }
        }
    }
}
