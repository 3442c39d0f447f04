/// One field's register: last-writer-wins for ordinary fields, multi-value for critical
/// and authority fields.
///
/// A column's policy fixes its kind, so both sides of a join normally agree. Should they
/// not (a column turned critical while older writes still travel), the multi-value side
/// wins: the kinds form an ordered sum, every `.multi` above every `.lww`, which keeps the
/// join a semilattice. The write that turned up as `.multi` was made after the policy
/// change, on a replica that already showed the older value.
public enum Register: Sendable, Hashable, Codable {
    /// A last-writer-wins register (`.lww` columns).
    case lww(LWWRegister)
    /// A multi-value register (`.critical` and `.authority` columns).
    case multi(MVRegister)

    /// The join: of the registers when both have the same kind, else the `.multi` side.
    public func merging(_ other: Register) -> Register {
        switch (self, other) {
        case (.lww(let a), .lww(let b)): return .lww(a.merging(b))
        case (.multi(let a), .multi(let b)): return .multi(a.merging(b))
        case (.multi, .lww): return self
        case (.lww, .multi): return other
        }
    }

    /// A local write of `value` at a fresh `stamp`, observing this register.
    public func writing(_ value: Value, at stamp: Stamp) -> Register {
        switch self {
        case .lww: return .lww(LWWRegister(value: value, stamp: stamp))
        case .multi(var register):
            register.write(value, at: stamp)
            return .multi(register)
        }
    }

    /// A fresh register of the kind `policy` asks for, holding one write.
    public static func written(_ value: Value, at stamp: Stamp, policy: ColumnPolicy) -> Register {
        switch policy {
        case .lww: return .lww(LWWRegister(value: value, stamp: stamp))
        case .critical, .authority:
            var register = MVRegister()
            register.write(value, at: stamp)
            return .multi(register)
        }
    }

    /// The largest stamp among the register's writes and context.
    public var maxHLC: HLC {
        switch self {
        case .lww(let register): return register.stamp.hlc
        case .multi(let register): return max(register.context.maxHLC, register.siblings.last?.stamp.hlc ?? .zero)
        }
    }

    /// Checks a multi-value register's invariants (a last-writer-wins one has none).
    public func checkInvariants() throws(InvariantViolation) {
        if case .multi(let register) = self { try register.checkInvariants() }
    }
}
