import ConvergeCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Traps with `message` when `condition` is false, so that libFuzzer reports the input.
///
/// `fatalError` rather than `precondition`: it keeps its message in release builds.
@inline(__always)
public func require(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() { fatalError("property violated: \(message())", file: file, line: line) }
}

/// Traps when `body` reports a broken invariant.
public func requireInvariants(
    _ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line,
    _ body: () throws -> Void
) {
    do {
        try body()
    } catch {
        fatalError("invariant broken in \(what()): \(error)", file: file, line: line)
    }
}

/// Checks the join-semilattice laws on every pair and triple of `states`: idempotence,
/// commutativity, associativity, and that the join is an upper bound. The cost is cubic:
/// keep `states` to a handful.
public func requireJoinLaws<T: Equatable>(
    _ name: String, _ states: [T], file: StaticString = #fileID, line: UInt = #line, join: (T, T) -> T
) {
    for a in states {
        require(join(a, a) == a, "\(name): join is not idempotent on \(a)", file: file, line: line)
        for b in states {
            let ab = join(a, b)
            require(ab == join(b, a), "\(name): join is not commutative on\n  \(a)\n  \(b)", file: file, line: line)
            require(join(ab, b) == ab && join(a, ab) == ab, "\(name): join is not an upper bound of\n  \(a)\n  \(b)", file: file, line: line)
            for c in states {
                require(
                    join(ab, c) == join(a, join(b, c)),
                    "\(name): join is not associative on\n  \(a)\n  \(b)\n  \(c)", file: file, line: line)
            }
        }
    }
}

/// `changeset` without the records whose state is bottom (which a replica does not keep).
public func droppingBottomRecords(_ changeset: Changeset) -> Changeset {
    Changeset(records: changeset.records.filter { !$0.state.isBottom })
}

/// Set `CONVERGE_FUZZ_TRACE=1` to have a fuzzer print what each input exercised (to see
/// that the seeds and the fuzzer reach the interesting paths).
public let fuzzTraceEnabled: Bool = getenv("CONVERGE_FUZZ_TRACE") != nil
