import ConvergeCore
import Foundation
import GRDB

/// The clock and identity shared by the capture triggers and the store.
///
/// The triggers call `converge_stamp()`, which returns one stamp per transaction: the first
/// call of a transaction ticks the clock, later calls reuse it, and the end of the
/// transaction (commit or rollback, seen by a transaction observer) forgets it. While
/// Converge applies remote changes, `converge_capturing()` is false, so its own writes into
/// the app tables are not captured as local ones.
///
/// Every clock movement inside a write transaction (a tick for a stamp, a receive, a raise)
/// is *pending* until the transaction commits, and is discarded when it rolls back: a
/// refused resolve, an app transaction rolled back, or an apply that threw must not leave
/// the clock ahead of what the database holds (DESIGN §2: a write that changes nothing
/// moves no clock), or a later local write would be stamped higher than it should and
/// could win a last-writer-wins race it should lose. Write transactions are serialized by
/// GRDB's writer, so one pending clock is enough.
final class StampSource: @unchecked Sendable {
    private let lock = NSLock()
    private var _replica: ReplicaID
    /// The committed clock.
    private var _clock: HybridClock
    /// The clock as the current write transaction moved it; published on commit.
    private var pending: HybridClock?
    private var transactionStamp: HLC?
    private var capturing = true
    let physicalTime: @Sendable () -> UInt64

    init(replica: ReplicaID, clock: HybridClock, physicalTime: @escaping @Sendable () -> UInt64) {
        _replica = replica
        _clock = clock
        self.physicalTime = physicalTime
    }

    var replica: ReplicaID {
        get { lock.withLock { _replica } }
        set { lock.withLock { _replica = newValue } }
    }

    /// The committed clock: what the database holds.
    var clock: HybridClock { lock.withLock { _clock } }

    /// The clock as seen inside the current write transaction (pending moves included): what
    /// the transaction persists as the high-water mark.
    var transactionClock: HybridClock { lock.withLock { pending ?? _clock } }

    /// The current transaction's stamp, taken on first use.
    func stamp() -> Stamp {
        lock.withLock {
            if let transactionStamp { return Stamp(hlc: transactionStamp, replica: _replica) }
            var clock = pending ?? _clock
            let hlc = clock.tick(physicalMilliseconds: physicalTime())
            pending = clock
            transactionStamp = hlc
            return Stamp(hlc: hlc, replica: _replica)
        }
    }

    /// Ends the current write transaction: its clock moves stand if it committed, and are
    /// forgotten if it rolled back. Calling it again for the same transaction does nothing.
    func endTransaction(committed: Bool) {
        lock.withLock {
            if committed, let pending { _clock = pending }
            pending = nil
            transactionStamp = nil
        }
    }

    func receive(_ hlc: HLC) {
        lock.withLock {
            var clock = pending ?? _clock
            _ = clock.receive(hlc, physicalMilliseconds: physicalTime())
            pending = clock
        }
    }

    func raise(to hlc: HLC) {
        lock.withLock {
            var clock = pending ?? _clock
            clock.raise(to: hlc)
            pending = clock
        }
    }

    var isCapturing: Bool { lock.withLock { capturing } }

    /// Runs `body` with capture off (Converge's own writes into app tables).
    func withoutCapture<T>(_ body: () throws -> T) rethrows -> T {
        lock.withLock { capturing = false }
        defer { lock.withLock { capturing = true } }
        return try body()
    }

    /// Runs `body` with capture on, inside a `withoutCapture` block (a compensating write
    /// made while applying is this replica's own).
    func withCapture<T>(_ body: () throws -> T) rethrows -> T {
        lock.withLock { capturing = true }
        defer { lock.withLock { capturing = false } }
        return try body()
    }

    /// Installs the SQL functions and the transaction observer on a connection.
    func install(in db: Database) {
        db.add(function: DatabaseFunction("converge_stamp", argumentCount: 0, pure: false) { [unowned self] _ in
            Int64(bitPattern: self.stamp().hlc.rawValue)
        })
        db.add(function: DatabaseFunction("converge_capturing", argumentCount: 0, pure: false) { [unowned self] _ in
            self.isCapturing
        })
        db.add(transactionObserver: TransactionEnd(source: self), extent: .databaseLifetime)
    }

    private final class TransactionEnd: TransactionObserver {
        let source: StampSource
        init(source: StampSource) { self.source = source }
        func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { false }
        func databaseDidChange(with event: DatabaseEvent) {}
        func databaseDidCommit(_ db: Database) { source.endTransaction(committed: true) }
        func databaseDidRollback(_ db: Database) { source.endTransaction(committed: false) }
    }
}
