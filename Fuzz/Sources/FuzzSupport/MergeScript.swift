/// The operation script `FuzzMerge` runs: its steps, how bytes parse into them and how they
/// print back into bytes (for the seed corpus). Parsing and printing live side by side so
/// that they cannot drift apart: `parse(print(steps)) == steps`.
///
/// Layout: one opcode byte (taken modulo the number of step kinds), then one byte per
/// argument, each reduced into its range. Any byte sequence is a script.
public enum MergeScript {
    /// How a changeset travels from one replica to another.
    public enum Delivery: Int, Sendable, Hashable, CaseIterable {
        /// Applied at once.
        case now
        /// Put in flight; a later `deliver` step applies it, maybe twice, maybe never.
        case later
        /// Encoded and decoded with the wire codec, then applied at once.
        case viaWire
    }

    /// One local operation of a transaction.
    public struct Operation: Sendable, Hashable {
        public enum Kind: Int, Sendable, Hashable, CaseIterable { case insert, update, delete }
        public var kind: Kind
        /// Index in ``FuzzFixtures/schemas``.
        public var table: Int
        /// Index in ``FuzzFixtures/keys``.
        public var key: Int
        /// Value indexes (in ``FuzzFixtures/values``) by column index; `nil`: not written.
        public var values: [Int?]
        /// An insert that leaves unwritten columns out instead of setting them to NULL.
        public var partialInsert: Bool

        public init(kind: Kind, table: Int, key: Int, values: [Int?], partialInsert: Bool = false) {
            self.kind = kind
            self.table = table
            self.key = key
            self.values = values
            self.partialInsert = partialInsert
        }
    }

    public enum Step: Sendable, Hashable {
        /// One transaction of one to three operations.
        case perform(replica: Int, operations: [Operation])
        /// Resolves the replica's `conflict`-th open conflict (modulo their number) to `value`.
        case resolve(replica: Int, conflict: Int, value: Int)
        case advanceClock(replica: Int, milliseconds: Int)
        /// Physical time going backwards (NTP step, manual change).
        case rewindClock(replica: Int, milliseconds: Int)
        /// A large jump; see ``ClockJump``.
        case jumpClock(replica: Int, jump: ClockJump)
        /// The feed of `from` after a cursor (`cursor` 0...255 scaled into its sequence), at
        /// most `limit` records (255: no limit).
        case sendChanges(from: Int, to: Int, cursor: Int, limit: Int, delivery: Delivery)
        /// A full-state transfer.
        case sendSnapshot(from: Int, to: Int, delivery: Delivery)
        /// Delivers the `index`-th changeset in flight (modulo their number); `keep` leaves it
        /// in flight, to be delivered again.
        case deliver(index: Int, keep: Bool, viaWire: Bool)
        case releaseQuarantine(replica: Int, force: Bool)
    }

    public enum ClockJump: Int, Sendable, Hashable, CaseIterable {
        /// Ten minutes ahead: beyond the drift allowance, so peers quarantine its stamps.
        case farAhead
        /// Back to half the current reading.
        case farBack
        /// To the largest physical time allowed.
        case toLimit
        /// To zero.
        case toZero
    }

    static let stepKinds = 9

    /// Parses the next step; `nil` once the input is exhausted.
    public static func nextStep(_ input: inout FuzzInput) -> Step? {
        guard !input.isExhausted else { return nil }
        let replicas = FuzzFixtures.replicaCount
        switch input.below(stepKinds) {
        case 0:
            let replica = input.below(replicas)
            let count = 1 + input.below(3)
            return .perform(replica: replica, operations: (0..<count).map { _ in operation(&input) })
        case 1:
            return .resolve(replica: input.below(replicas), conflict: Int(input.byte()), value: input.below(FuzzFixtures.values.count))
        case 2:
            return .advanceClock(replica: input.below(replicas), milliseconds: Int(input.byte()))
        case 3:
            return .rewindClock(replica: input.below(replicas), milliseconds: Int(input.byte()))
        case 4:
            return .jumpClock(replica: input.below(replicas), jump: ClockJump(rawValue: input.below(ClockJump.allCases.count))!)
        case 5:
            return .sendChanges(
                from: input.below(replicas), to: input.below(replicas), cursor: Int(input.byte()), limit: Int(input.byte()),
                delivery: Delivery(rawValue: input.below(Delivery.allCases.count))!)
        case 6:
            return .sendSnapshot(
                from: input.below(replicas), to: input.below(replicas),
                delivery: Delivery(rawValue: input.below(Delivery.allCases.count))!)
        case 7:
            return .deliver(index: Int(input.byte()), keep: input.bool(), viaWire: input.bool())
        default:
            return .releaseQuarantine(replica: input.below(replicas), force: input.bool())
        }
    }

    static func operation(_ input: inout FuzzInput) -> Operation {
        let kind = Operation.Kind(rawValue: input.below(Operation.Kind.allCases.count))!
        let table = input.below(FuzzFixtures.schemas.count)
        let key = input.below(FuzzFixtures.keys.count)
        let mask = input.byte()
        let columns = FuzzFixtures.schemas[table].columns.count
        let values: [Int?] = (0..<columns).map { column in
            mask & (1 << column) != 0 ? input.below(FuzzFixtures.values.count) : nil
        }
        return Operation(kind: kind, table: table, key: key, values: values, partialInsert: mask & 0x80 != 0)
    }

    /// The bytes that parse back into `steps`.
    public static func print(_ steps: [Step]) -> [UInt8] {
        var bytes = [UInt8]()
        func put(_ value: Int) { bytes.append(UInt8(value)) }
        for step in steps {
            switch step {
            case .perform(let replica, let operations):
                precondition((1...3).contains(operations.count))
                put(0); put(replica); put(operations.count - 1)
                for operation in operations {
                    put(operation.kind.rawValue); put(operation.table); put(operation.key)
                    var mask = operation.partialInsert ? 0x80 : 0
                    for (column, value) in operation.values.enumerated() where value != nil { mask |= 1 << column }
                    put(mask)
                    for value in operation.values { if let value { put(value) } }
                }
            case .resolve(let replica, let conflict, let value):
                put(1); put(replica); put(conflict); put(value)
            case .advanceClock(let replica, let milliseconds):
                put(2); put(replica); put(milliseconds)
            case .rewindClock(let replica, let milliseconds):
                put(3); put(replica); put(milliseconds)
            case .jumpClock(let replica, let jump):
                put(4); put(replica); put(jump.rawValue)
            case .sendChanges(let from, let to, let cursor, let limit, let delivery):
                put(5); put(from); put(to); put(cursor); put(limit); put(delivery.rawValue)
            case .sendSnapshot(let from, let to, let delivery):
                put(6); put(from); put(to); put(delivery.rawValue)
            case .deliver(let index, let keep, let viaWire):
                put(7); put(index); put(keep ? 1 : 0); put(viaWire ? 1 : 0)
            case .releaseQuarantine(let replica, let force):
                put(8); put(replica); put(force ? 1 : 0)
            }
        }
        return bytes
    }
}
