import Foundation
import Testing

/// Runs a compute-bound test on threads of its own, a few at a time, instead of on Swift's
/// cooperative pool.
///
/// Swift Testing starts every test of the run at once, and a synchronous test (or an async
/// one that never suspends: a property check, a simulation) holds a thread of the
/// cooperative pool until it returns. The pool has one thread per core: on a two-core
/// machine two such tests stall every task of the process, among them the in-process sync
/// servers, their clients and the timers of the tests that wait for them, which then miss
/// their deadlines although nothing is wrong. Tests marked `.computeBound` run on
/// ``ComputeThreads`` instead: the operating system shares the cores between them and the
/// pool, and at most ``ComputeThreads/threadCount`` of them run at a time (the others
/// wait their turn, so no time limit belongs on a compute-bound suite).
public struct ComputeBoundTrait: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        // A suite's own scope only wraps its tests, which get a scope each.
        guard testCase != nil else { return try await function() }
        try await withTaskExecutorPreference(ComputeThreads.shared) { try await function() }
    }
}

extension Trait where Self == ComputeBoundTrait {
    /// Runs the test (or every test of the suite) on ``ComputeThreads``, away from the
    /// cooperative pool.
    public static var computeBound: Self { ComputeBoundTrait() }
}

/// A task executor of a fixed number of threads of its own, running jobs first come, first
/// served.
final class ComputeThreads: TaskExecutor, @unchecked Sendable {
    /// One per core, so that compute-bound tests take about half the machine and the
    /// cooperative pool the other half.
    static let shared = ComputeThreads(threadCount: max(2, ProcessInfo.processInfo.activeProcessorCount))

    let threadCount: Int
    private let condition = NSCondition()
    /// Guarded by `condition`.
    private var jobs: [UnownedJob] = []
    private var next = 0

    private init(threadCount: Int) {
        precondition(threadCount > 0, "an executor needs a thread")
        self.threadCount = threadCount
        for index in 0..<threadCount {
            let thread = Thread { self.serve() }  // the executor lives as long as the process
            thread.name = "converge-tests.compute.\(index)"
            // As deep as the main thread's: some tests recurse through large states.
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func serve() {
        while true {
            condition.lock()
            while next == jobs.count { condition.wait() }
            let job = jobs[next]
            next += 1
            if next == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                next = 0
            }
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
