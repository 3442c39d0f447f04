import ConvergeCore
import ConvergeTestSupport
import Foundation
import Testing

/// A record's fields live in a ``ColumnMap``: sorted by the columns' UTF-8 bytes, read like a
/// dictionary. Checked against a dictionary keyed by the names' bytes, the definition of
/// what it must hold, after every operation.
@Suite(.computeBound) struct ColumnMapTests {
    static let precomposed = "\u{E9}", decomposed = "e\u{301}"
    static let names = ["a", "b", "ab", "title", "amount", "z", precomposed, decomposed, "e", "\u{1F600}", "6F9619FF-8B86-D011-B42D-00C04FC964FE"]

    /// What the map must hold, keyed by bytes (so canonically equivalent names are two).
    struct Reference {
        var entries: [[UInt8]: Int] = [:]
        subscript(key: String) -> Int? {
            get { entries[Array(key.utf8)] }
            set { entries[Array(key.utf8)] = newValue }
        }
        var sorted: [(String, Int)] {
            entries.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { (String(decoding: $0.key, as: UTF8.self), $0.value) }
        }
    }

    static func expectEqual(_ map: ColumnMap<Int>, _ reference: Reference, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: Never.self, sourceLocation: sourceLocation) { try map.checkInvariants() }
        let expected = reference.sorted
        #expect(map.count == expected.count, sourceLocation: sourceLocation)
        #expect(map.keys.map { Array($0.utf8) } == expected.map { Array($0.0.utf8) }, sourceLocation: sourceLocation)
        #expect(map.values == expected.map(\.1), sourceLocation: sourceLocation)
        for name in names { #expect(map[name] == reference[name], sourceLocation: sourceLocation) }
    }

    @Test func randomEditsAgreeWithADictionaryOfBytes() {
        var rng = SeededGenerator(seed: 0x636F_6C73)
        var map = ColumnMap<Int>()
        var reference = Reference()
        for step in 0..<4_000 {
            let name = Self.names[Int.random(in: 0..<Self.names.count, using: &rng)]
            switch Int.random(in: 0..<4, using: &rng) {
            case 0, 1:
                map[name] = step
                reference[name] = step
            case 2:
                #expect(map.removeValue(forKey: name) == reference[name])
                reference[name] = nil
            default:
                map[name] = nil
                reference[name] = nil
            }
            Self.expectEqual(map, reference)
            #expect(map.index(forKey: name).map { map[$0].value } == reference[name])
        }
    }

    /// The join walks both maps in step: the in-place path (no new key) and the general one.
    @Test func mergeAgreesWithADictionaryOfBytes() {
        var rng = SeededGenerator(seed: 0x6D72_6765)
        for _ in 0..<2_000 {
            var left = ColumnMap<Int>(), right = ColumnMap<Int>()
            var expected = Reference()
            for name in Self.names {
                let a = Int.random(in: 0..<3, using: &rng) == 0 ? nil : Int.random(in: 0..<100, using: &rng)
                let b = Int.random(in: 0..<3, using: &rng) == 0 ? nil : Int.random(in: 0..<100, using: &rng)
                left[name] = a
                right[name] = b
                expected[name] = switch (a, b) {
                case let (a?, b?): max(a, b)
                case let (a?, nil): a
                case let (nil, b?): b
                case (nil, nil): nil
                }
            }
            var merged = left
            merged.merge(right, uniquingKeysWith: max)
            Self.expectEqual(merged, expected)
            // Into a map that already holds every key of the other: values change in place.
            var superset = merged
            superset.merge(left) { _, theirs in -theirs }
            for (key, value) in superset { #expect(value == (left[key].map { -$0 } ?? merged[key])) }
        }
    }

    @Test func canonicallyEquivalentNamesAreTwoColumns() throws {
        #expect(Self.precomposed == Self.decomposed)  // the control: String says equal
        let map: ColumnMap<Int> = [Self.precomposed: 1, Self.decomposed: 2]
        #expect(map.count == 2)
        #expect(map[Self.precomposed] == 1 && map[Self.decomposed] == 2)
        #expect(map.keys.map { Array($0.utf8) } == [Array(Self.decomposed.utf8), Array(Self.precomposed.utf8)])
        // A dictionary cannot hold both: encoding refuses rather than dropping one.
        #expect(throws: EncodingError.self) { try JSONEncoder().encode(map) }
    }

    @Test func codableAsTheDictionaryItStandsFor() throws {
        let map: ColumnMap<Int> = ["title": 1, "amount": 2, "z": 3]
        let dictionary = ["title": 1, "amount": 2, "z": 3]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(map) == encoder.encode(dictionary))
        #expect(try JSONDecoder().decode(ColumnMap<Int>.self, from: encoder.encode(dictionary)) == map)
        #expect(map.dictionary == dictionary)
        #expect(ColumnMap(dictionary) == map)
        #expect(map.description == "[\"amount\": 2, \"title\": 1, \"z\": 3]")
    }

    @Test func filterAndMapValuesKeepTheOrder() {
        let map: ColumnMap<Int> = ["c": 3, "a": 1, "b": 2, "d": 4]
        #expect(Array(map.keys) == ["a", "b", "c", "d"])
        let even = map.filter { $0.value % 2 == 0 }
        #expect(Array(even.keys) == ["b", "d"])
        #expect(map.mapValues { $0 * 10 }.values == [10, 20, 30, 40])
        #expect(ColumnMap(uniqueKeysWithValues: [("d", 4), ("b", 2)]) == ["b": 2, "d": 4])
    }

    /// The wire format may list a record's columns in any order, and a column twice: the
    /// decoded state holds them sorted, a repeated column joined, as encoding it sorted would.
    @Test func decodedFieldsAreSortedAndRepeatsJoined() throws {
        let replica = ReplicaID(high: 7, low: 7)
        func lww(_ value: Int64, _ time: UInt64) -> FieldState {
            .plain(.lww(LWWRegister(value: .integer(value), stamp: Stamp(hlc: HLC(rawValue: time), replica: replica))))
        }
        // Two records numbering their columns differently put the table's column list out of
        // byte order: "z" first, then "a".
        let first = RecordState(membership: ORSet(), fields: ["z": lww(1, 1)])
        let second = RecordState(membership: ORSet(), fields: ["z": lww(2, 2), "a": lww(3, 3), "m": lww(4, 4)])
        let changeset = Changeset(records: [
            RecordDelta(table: "t", key: .integer(1), state: first), RecordDelta(table: "t", key: .integer(2), state: second),
        ])
        let decoded = try WireDecoder.decode(WireEncoder.encode(changeset))
        #expect(decoded == changeset)
        for record in decoded.records {
            try record.state.checkInvariants()
            #expect(record.state.fields.keys == record.state.fields.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        }
    }
}
