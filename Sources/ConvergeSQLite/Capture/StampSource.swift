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
final class StampSource: @unchecked Sendable {
    private let lock = NSLock()
    private var _replica: ReplicaID
    private var _clock: HybridClock
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

    var clock: HybridClock { lock.withLock { _clock } }

    /// The current transaction's stamp, taken on first use.
    func stamp() -> Stamp {
        lock.withLock {
            if let transactionStamp { return Stamp(hlc: transactionStamp, replica: _replica) }
            let hlc = _clock.tick(physicalMilliseconds: physicalTime())
            transactionStamp = hlc
            return Stamp(hlc: hlc, replica: _replica)
        }
    }

    func endTransaction() { lock.withLock { transactionStamp = nil } }

    func receive(_ hlc: HLC) {
        lock.withLock { _ = _clock.receive(hlc, physicalMilliseconds: physicalTime()) }
    }

    func raise(to hlc: HLC) { lock.withLock { _clock.raise(to: hlc) } }

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
        func databaseDidCommit(_ db: Database) { source.endTransaction() }
        func databaseDidRollback(_ db: Database) { source.endTransaction() }
    }
}
