/// A map from column names to values, kept sorted by the names' UTF-8 bytes: how a record
/// holds its field states and the feed positions of its fields.
///
/// Why not a `Dictionary`: a record has a handful of columns, and everything that visits
/// them wants them in one order. Kept sorted, a state encodes without sorting its fields
/// (the metadata blob and the wire format list columns in UTF-8 byte order), two states
/// join by walking their columns in step (no hashing, no lookups), a feed's delta is built
/// by appending, and two equal maps are two equal arrays. Looking a column up is a binary
/// search over a few names.
///
/// Keys are compared by their bytes, not by `String`'s canonical equivalence: a precomposed
/// and a decomposed "é" are two columns, as they are two columns in the wire format and two
/// text values in ``Value``.
///
/// It reads like a dictionary (`map[column]`, `keys`, `values`, `for (column, state) in map`,
/// dictionary literals), so code written against `[String: FieldState]` reads the same.
public struct ColumnMap<Mapped> {
    /// The columns, strictly ascending in UTF-8 byte order.
    public private(set) var keys: [String]
    /// The values, `values[i]` belonging to `keys[i]`.
    public internal(set) var values: [Mapped]

    /// The empty map.
    public init() {
        keys = []
        values = []
    }

    /// A map of `pairs`, whose keys must be unique (as `Dictionary(uniqueKeysWithValues:)`).
    public init<S: Sequence>(uniqueKeysWithValues pairs: S) where S.Element == (String, Mapped) {
        var sorted = Array(pairs)
        if !isStrictlyAscending(sorted.lazy.map { $0.0 }) {
            sorted.sort { utf8Less($0.0, $1.0) }
            for index in sorted.indices.dropFirst() {
                precondition(!utf8Equal(sorted[index - 1].0, sorted[index].0), "duplicate column \(sorted[index].0) in ColumnMap(uniqueKeysWithValues:)")
            }
        }
        keys = []
        values = []
        keys.reserveCapacity(sorted.count)
        values.reserveCapacity(sorted.count)
        for (key, value) in sorted {
            keys.append(key)
            values.append(value)
        }
    }

    /// The map of a dictionary's entries.
    public init(_ dictionary: [String: Mapped]) {
        self.init(uniqueKeysWithValues: dictionary.lazy.map { ($0.key, $0.value) })
    }

    /// A map of keys already strictly ascending and their values (checked in debug builds):
    /// no sort, no copy of `keys` (a store's capture log reader shares one key array for
    /// every row of a table).
    package init(ascendingKeys keys: [String], values: [Mapped]) {
        assert(keys.count == values.count)
        assert(isStrictlyAscending(keys), "keys not strictly ascending")
        self.keys = keys
        self.values = values
    }

    /// The entries as a dictionary. Two columns that `String` takes for one (a precomposed
    /// and a decomposed "é") become one entry, holding the value of the first.
    public var dictionary: [String: Mapped] {
        Dictionary(zip(keys, values), uniquingKeysWith: { first, _ in first })
    }

    /// The position `key` has, or would be inserted at, and whether it is there.
    func search(_ key: String) -> (index: Int, found: Bool) {
        // Appending in order is the common way maps are built: check the end first.
        guard let last = keys.last else { return (0, false) }
        if utf8Less(last, key) { return (keys.count, false) }
        var low = 0, high = keys.count - 1
        while low < high {
            let middle = (low + high) / 2
            if utf8Less(keys[middle], key) { low = middle + 1 } else { high = middle }
        }
        return (low, utf8Equal(keys[low], key))
    }

    /// The position of `key`, or `nil` when it is absent.
    public func index(forKey key: String) -> Int? {
        let (index, found) = search(key)
        return found ? index : nil
    }

    /// The value of `key`; setting `nil` removes it.
    public subscript(key: String) -> Mapped? {
        get {
            let (index, found) = search(key)
            return found ? values[index] : nil
        }
        set {
            let (index, found) = search(key)
            switch (found, newValue) {
            case (true, let value?): values[index] = value
            case (true, nil): keys.remove(at: index); values.remove(at: index)
            case (false, let value?): keys.insert(key, at: index); values.insert(value, at: index)
            case (false, nil): break
            }
        }
    }

    /// Removes `key`, returning its value.
    @discardableResult
    public mutating func removeValue(forKey key: String) -> Mapped? {
        let (index, found) = search(key)
        guard found else { return nil }
        keys.remove(at: index)
        return values.remove(at: index)
    }

    /// Reserves room for `count` entries.
    public mutating func reserveCapacity(_ count: Int) {
        keys.reserveCapacity(count)
        values.reserveCapacity(count)
    }

    /// The position of `key` at or after `cursor`, for lookups made in ascending key order:
    /// `cursor` moves past the keys below `key`, so a walk of n lookups over m keys costs
    /// O(n + m) comparisons. `nil` when `key` is absent.
    func index(forKey key: String, advancing cursor: inout Int) -> Int? {
        while cursor < keys.count, utf8Less(keys[cursor], key) { cursor += 1 }
        return cursor < keys.count && utf8Equal(keys[cursor], key) ? cursor : nil
    }

    /// Adds `key`, which must sort after every key already held (checked in debug builds).
    mutating func append(_ key: String, _ value: Mapped) {
        assert(keys.last.map { utf8Less($0, key) } ?? true, "append of \(key) out of order")
        keys.append(key)
        values.append(value)
    }

    /// The map with the same keys and transformed values.
    public func mapValues<T>(_ transform: (Mapped) throws -> T) rethrows -> ColumnMap<T> {
        ColumnMap<T>(ascendingKeys: keys, values: try values.map(transform))
    }

    /// The entries for which `isIncluded` holds, as a map.
    public func filter(_ isIncluded: (Element) throws -> Bool) rethrows -> ColumnMap {
        var result = ColumnMap()
        for (key, value) in self where try isIncluded((key, value)) { result.append(key, value) }
        return result
    }

    /// Joins `other` into this map: keys of both take `combine(mine, theirs)`, keys of one
    /// are kept.
    public mutating func merge(_ other: ColumnMap, uniquingKeysWith combine: (Mapped, Mapped) throws -> Mapped) rethrows {
        try join(other, changing: { try combine($0, $1) })
    }

    /// Joins `other` into this map; `change(mine, theirs)` returns the joined value of a key
    /// both hold, or `nil` when it is `mine` unchanged. Walks both in step, O(n + m)
    /// comparisons. A value is written only when it changes, so a join that changes nothing
    /// leaves storage shared with another map shared (no copy); when `other` adds no key (an
    /// edit of fields already written, the common case) values change in place.
    mutating func join(_ other: ColumnMap, changing change: (Mapped, Mapped) throws -> Mapped?) rethrows {
        if other.keys.isEmpty { return }
        if keys.isEmpty { self = other; return }
        var i = 0, j = 0
        while j < other.keys.count, i < keys.count {
            if utf8Equal(keys[i], other.keys[j]) {
                if let changed = try change(values[i], other.values[j]) { values[i] = changed }
                i += 1
                j += 1
            } else if utf8Less(keys[i], other.keys[j]) {
                i += 1
            } else {
                break
            }
        }
        if j == other.keys.count { return }
        // `other` holds a key this map lacks: merge the rest into new arrays.
        var mergedKeys = Array(keys[..<i]), mergedValues = Array(values[..<i])
        mergedKeys.reserveCapacity(keys.count + other.keys.count - j)
        mergedValues.reserveCapacity(keys.count + other.keys.count - j)
        while i < keys.count || j < other.keys.count {
            if j == other.keys.count || (i < keys.count && utf8Less(keys[i], other.keys[j])) {
                mergedKeys.append(keys[i]); mergedValues.append(values[i]); i += 1
            } else if i == keys.count || utf8Less(other.keys[j], keys[i]) {
                mergedKeys.append(other.keys[j]); mergedValues.append(other.values[j]); j += 1
            } else {
                mergedKeys.append(keys[i]); mergedValues.append(try change(values[i], other.values[j]) ?? values[i]); i += 1; j += 1
            }
        }
        keys = mergedKeys
        values = mergedValues
    }

    /// Keys strictly ascending, one value per key.
    public func checkInvariants() throws(InvariantViolation) {
        guard keys.count == values.count else { throw InvariantViolation("\(keys.count) columns but \(values.count) values") }
        for index in keys.indices.dropFirst() where !utf8Less(keys[index - 1], keys[index]) {
            throw InvariantViolation("columns \(keys[index - 1]) and \(keys[index]) out of order")
        }
    }
}

extension ColumnMap: RandomAccessCollection {
    public typealias Element = (key: String, value: Mapped)
    public var startIndex: Int { 0 }
    public var endIndex: Int { keys.count }
    public subscript(position: Int) -> Element { (keys[position], values[position]) }
}

extension ColumnMap: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, Mapped)...) {
        self.init(uniqueKeysWithValues: elements)
    }
}

extension ColumnMap: Sendable where Mapped: Sendable {}
extension ColumnMap: Equatable where Mapped: Equatable {}
extension ColumnMap: Hashable where Mapped: Hashable {}

extension ColumnMap: Codable where Mapped: Codable {
    /// Encoded as the dictionary it stands for, so its JSON is what `[String: Mapped]` gave.
    /// Two columns that `String` takes for one would become one key: that throws rather
    /// than drop a value.
    public func encode(to encoder: any Encoder) throws {
        let dictionary = dictionary
        guard dictionary.count == keys.count else {
            throw EncodingError.invalidValue(keys, .init(
                codingPath: encoder.codingPath, debugDescription: "columns that are canonically equivalent strings cannot be keys of one dictionary"))
        }
        var container = encoder.singleValueContainer()
        try container.encode(dictionary)
    }

    public init(from decoder: any Decoder) throws {
        self.init(try decoder.singleValueContainer().decode([String: Mapped].self))
    }
}

extension ColumnMap: CustomStringConvertible {
    public var description: String {
        if keys.isEmpty { return "[:]" }
        return "[" + zip(keys, values).map { "\(String(reflecting: $0)): \($1)" }.joined(separator: ", ") + "]"
    }
}

/// Whether `names` are strictly ascending in UTF-8 byte order (sorted, none twice).
func isStrictlyAscending(_ names: some Collection<String>) -> Bool {
    zip(names, names.dropFirst()).allSatisfy { utf8Less($0, $1) }
}
