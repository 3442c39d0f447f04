import ConvergeSQLite
import Foundation

extension SyncEngine {
    /// Returns once every local change made before the call is on the server: the server
    /// has acknowledged the feed up to where it stood at the call. Close a shift, print an
    /// invoice or log out after it.
    ///
    /// Runs rounds as needed (in turn with the engine's own), retrying after failures with
    /// the engine's backoff, until the checkpoint is reached or `timeout` has passed.
    /// Cancelling the calling task stops the wait.
    ///
    /// - Throws: ``SyncError/timedOut(_:)`` when the time runs out (the last failure is in
    ///   the message), ``SyncError/cancelled`` when the task is cancelled, and the round's
    ///   error when it cannot be retried (unauthorized, forbidden, rejected).
    public func waitUntilUploaded(timeout: Duration = .seconds(30)) async throws {
        try await wait(timeout: timeout, pullToo: false)
    }

    /// Like ``waitUntilUploaded(timeout:)``, and also waits for a complete pull that began
    /// after the call: what was on the server then is here too.
    public func waitUntilSynced(timeout: Duration = .seconds(30)) async throws {
        try await wait(timeout: timeout, pullToo: true)
    }

    private func wait(timeout: Duration, pullToo: Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let target: UInt64
        do {
            target = try database.capturedFeedPosition()
        } catch {
            throw SyncError.local("\(error)")
        }
        var pulled = !pullToo
        var lastFailure: SyncError?
        var attempt = 0
        while try acknowledged() < target || !pulled {
            if Task.isCancelled { throw SyncError.cancelled }
            guard clock.now < deadline else {
                throw SyncError.timedOut("the server acknowledged position \(try acknowledged()) of \(target)\(lastFailure.map { "; last error: \($0)" } ?? "")")
            }
            do {
                _ = try await sync()
                pulled = true
                lastFailure = nil
            } catch let error as SyncError {
                switch error {
                case .unauthorized, .forbidden, .rejected, .local, .invalidResponse, .resetRequired: throw error
                case .cancelled: throw error
                case .offline, .serverError, .timedOut:
                    lastFailure = error
                    attempt += 1
                    let pause = min(configuration.retry.delay(beforeRetry: attempt), deadline - clock.now)
                    if pause > .zero { try? await Task.sleep(for: pause) }
                }
            }
        }
    }

    private nonisolated func acknowledged() throws -> UInt64 {
        do {
            return try database.cursor(for: configuration.peer).sent
        } catch {
            throw SyncError.local("\(error)")
        }
    }
}
