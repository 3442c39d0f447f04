import ConvergeCore
import ConvergeTestSupport
import Testing

/// Text values compare by their UTF-8 bytes, not by String's Unicode
/// canonical equivalence: every replica and platform must sort keys and tell them apart the
/// same way, and two keys a user typed differently stay two records.
@Suite(.computeBound) struct TextOrderTests {
    /// Precomposed and decomposed "é": equal as Swift strings, two keys here.
    static let precomposed = "\u{E9}", decomposed = "e\u{301}"

    /// The definition the buffer comparisons must agree with.
    static func bytesLess(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }

    @Test func canonicallyEquivalentTextsAreTwoKeys() {
        #expect(Self.precomposed == Self.decomposed)  // the control: String's `==` says equal
        #expect(Value.text(Self.precomposed) != Value.text(Self.decomposed))
        #expect(Set([Value.text(Self.precomposed), .text(Self.decomposed)]).count == 2)
        // "e" (0x65) comes before 0xC3, the first byte of the precomposed form.
        #expect(Value.text(Self.decomposed) < Value.text(Self.precomposed))
        #expect(!(Value.text(Self.precomposed) < Value.text(Self.decomposed)))
    }

    @Test func prefixesAndLongTextsSortByBytes() {
        #expect(Value.text("") < Value.text("a"))
        #expect(Value.text("ab") < Value.text("abc"))
        #expect(!(Value.text("abc") < Value.text("abc")))
        #expect(Value.text("abc") == Value.text("abc"))
        // Longer than a small string's 15 bytes: the native, heap-allocated representation.
        let long = "6F9619FF-8B86-D011-B42D-00C04FC964F"
        #expect(Value.text(long + "E") < Value.text(long + "F"))
        #expect(Value.text(long + "F") != Value.text(long + "E"))
        #expect(Value.text(long + "F") == Value.text(String(decoding: Array((long + "F").utf8), as: UTF8.self)))
    }

    /// Random texts of every length up to 40 bytes over a small alphabet with multi-byte
    /// characters, so that shared prefixes, equal texts and both representations all occur.
    @Test func orderAndEqualityAgreeWithTheBytes() {
        let alphabet = ["a", "b", "z", Self.precomposed, Self.decomposed, "\u{1F600}", "\u{301}"]
        var rng = SeededGenerator(seed: 0x7465_7874)
        func text() -> String { (0..<rng.below(14)).map { _ in alphabet[rng.below(alphabet.count)] }.joined() }
        for _ in 0..<20_000 {
            let a = text(), b = rng.chance(0.2) ? a : text()
            #expect((Value.text(a) < Value.text(b)) == Self.bytesLess(a, b), "\(Array(a.utf8)) < \(Array(b.utf8))")
            #expect((Value.text(a) == Value.text(b)) == (Array(a.utf8) == Array(b.utf8)))
            // Table names are plain identifiers (a changeset's are checked), and an address
            // tells tables apart as Swift strings: distinct ones sort by their bytes.
            if a != b {
                #expect((RecordAddress(table: a, key: .null) < RecordAddress(table: b, key: .null)) == Self.bytesLess(a, b))
            }
        }
    }
}
