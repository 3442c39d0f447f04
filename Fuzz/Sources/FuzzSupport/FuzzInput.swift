/// Turns a fuzzer's bytes into choices.
///
/// Every byte sequence is a valid input: each choice takes one byte and reduces it into its
/// range, and reading past the end gives zeros, so libFuzzer's mutations (flips, inserts,
/// splices) always land on some choice rather than on a parse error. Callers stop when
/// ``isExhausted`` turns true.
public struct FuzzInput: Sendable {
    public let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Copies the `count` bytes at `start` (the arguments of `LLVMFuzzerTestOneInput`).
    public init(start: UnsafeRawPointer, count: Int) {
        self.init(Array(UnsafeRawBufferPointer(start: start, count: count)))
    }

    public var isExhausted: Bool { position >= bytes.count }

    /// The next byte, or 0 past the end.
    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    /// A choice in `0..<bound` from one byte; `bound` must be in `1...256`.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0 && bound <= 256, "a choice takes one byte")
        return Int(byte()) % bound
    }

    public mutating func bool() -> Bool { byte() & 1 == 1 }
}
