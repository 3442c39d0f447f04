/// A UNIQUE index of an app table beyond its primary key: the columns whose values, taken
/// together, at most one shown record may hold.
public struct UniqueIndex: Sendable, Hashable, Codable {
    /// The index's name in the app's schema; conflicts name it.
    public var name: String
    /// The indexed columns, in index order.
    public var columns: [String]

    /// The index `name` on `columns`.
    public init(name: String, columns: [String]) {
        self.name = name
        self.columns = columns
    }
}

/// One live record's claim on a unique index: the values it holds there and when it last
/// wrote any of them.
public struct Claim: Sendable, Hashable {
    /// The index's columns' values, normalized as SQLite's index compares them (an integral
    /// real is its integer); never NULL, since NULLs never clash.
    public var values: [Value]
    /// The latest stamp among the index's columns: a record claims a value when it writes it.
    public var stamp: Stamp

    /// A claim on `values`, made at `stamp`.
    public init(values: [Value], stamp: Stamp) {
        self.values = values
        self.stamp = stamp
    }
}

extension RecordState {
    /// This record's claim on `index`, or `nil` when it claims nothing there: the record is
    /// not alive, or one of the columns shows NULL or has no write (SQL's NULLs never
    /// collide).
    public func claim(on index: UniqueIndex, schema: TableSchema, authority: ReplicaID?) -> Claim? {
        guard isAlive else { return nil }
        var values = [Value]()
        values.reserveCapacity(index.columns.count)
        var stamp = Stamp.zero
        for column in index.columns {
            guard let value = value(of: column, policy: schema.policy(of: column), authority: authority), value != .null,
                  let register = fields[column]?.visibleRegister(membership: membership)
            else { return nil }
            values.append(Claim.normalized(value))
            stamp = max(stamp, register.latestStamp)
        }
        return Claim(values: values, stamp: stamp)
    }
}

extension Claim {
    /// `value` as a unique index compares it: SQLite takes 3 and 3.0 for the same key.
    static func normalized(_ value: Value) -> Value {
        if case .real(let real) = value, real.rounded() == real, let integer = Int64(exactly: real) { return .integer(integer) }
        return value
    }
}

extension Register {
    /// The newest write this register holds.
    var latestStamp: Stamp {
        switch self {
        case .lww(let register): return register.stamp
        case .multi(let register): return register.siblings.map(\.stamp).max() ?? .zero
        }
    }
}
