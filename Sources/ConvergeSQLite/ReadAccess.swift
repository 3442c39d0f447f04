import ConvergeCore
import GRDB

extension DatabaseReader {
    /// A read-only access that keeps the connection's compiled statements.
    ///
    /// On a `DatabaseQueue`, GRDB's `read(_:)` guards the access with `PRAGMA query_only`,
    /// on and off again, and SQLite expires every prepared statement of a connection when a
    /// flag pragma changes. The next apply or fold on that connection would then compile each
    /// of its cached statements again, the capture triggers of the app's tables with them: in
    /// the simulator's main job that was 7-10 % of the run in statement authorization alone.
    ///
    /// The reads that call this are Converge's own SELECTs, so on a queue they run in a
    /// deferred transaction of the serialized connection instead: one snapshot, no write
    /// lock, and the statement cache stays valid. On a `DatabasePool` this is `read(_:)`
    /// (a reader connection of its own, with its snapshot).
    package func readKeepingStatements<T>(_ body: (Database) throws -> T) throws -> T {
        guard let queue = self as? DatabaseQueue else { return try read(body) }
        return try queue.unsafeRead { db in
            if db.isInsideTransaction { return try body(db) }
            var result: T?
            try db.inTransaction(.deferred) {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }
}

extension StatementArguments {
    /// Arguments from values already converted, on the hot paths (apply, load).
    ///
    /// GRDB's initializer for a sequence of `DatabaseValue` maps it through a key path that
    /// is instantiated on every call: that alone was 13 % of an apply's time. Boxed as
    /// optionals, the values take GRDB's closure-mapped initializer instead.
    ///
    /// Up to eight values, the arguments are built as a literal: GRDB then builds them in code
    /// specialized for the literal's array, which costs less than half of the generic
    /// sequence's path per value (an app row's upsert, on every record an apply writes).
    init(converted values: [DatabaseValue]) {
        switch values.count {
        case 1: self = [values[0]]
        case 2: self = [values[0], values[1]]
        case 3: self = [values[0], values[1], values[2]]
        case 4: self = [values[0], values[1], values[2], values[3]]
        case 5: self = [values[0], values[1], values[2], values[3], values[4]]
        case 6: self = [values[0], values[1], values[2], values[3], values[4], values[5]]
        case 7: self = [values[0], values[1], values[2], values[3], values[4], values[5], values[6]]
        case 8: self = [values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7]]
        default: self.init(values.map { Optional<any DatabaseValueConvertible>.some($0) })
        }
    }
}

/// Whether SQLite's `=` and `IN` take two keys for equal: an integer and a real of the
/// same number are (3 and 3.0), as for a point read. A batched read files each row it
/// returns under the keys asked for that it equals.
package func sqlKeysEqual(_ a: Value, _ b: Value) -> Bool {
    switch (a, b) {
    case (.integer(let i), .real(let r)), (.real(let r), .integer(let i)): return Double(i) == r
    default: return a == b
    }
}

/// Keys per batched `key IN (...)` read: SQLite's variable limit is far above; larger
/// statements gain nothing and make the statement cache hold more distinct texts.
package let keysPerBatchedRead = 256

/// The marks and arguments of a batched `key IN (...)` read: the keys padded to a power of
/// two by repeating the last one (`IN` ignores repeats). Batches of any length then share a
/// few statement texts (at most nine up to 256 keys), compiled and cached once, instead of
/// one text per length.
package func paddedInList(_ keys: [DatabaseValue]) -> (marks: String, arguments: [DatabaseValue]) {
    precondition(!keys.isEmpty, "an IN list needs a key")
    let width = keys.count == 1 ? 1 : 1 << (Int.bitWidth - (keys.count - 1).leadingZeroBitCount)
    let arguments = keys + Array(repeating: keys[keys.count - 1], count: width - keys.count)
    return (Array(repeating: "?", count: width).joined(separator: ", "), arguments)
}
