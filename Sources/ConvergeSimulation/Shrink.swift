import ConvergeCore

/// The smallest failing options found from a failing run.
public struct ShrinkResult: Sendable {
    /// The smallest options found that still fail: a one-line reproducer
    /// (``SimulationOptions/replayCommand``).
    public var options: SimulationOptions
    /// The report of the run with ``options``.
    public var report: SimulationReport
    /// Runs tried.
    public var attempts: Int
}

/// Runs a simulation with `options`.
public func simulate(_ options: SimulationOptions, progress: ((SimulationProgress) -> Void)? = nil) -> SimulationReport {
    Simulation(options: options).run(progress: progress)
}

/// Shrinks a failing run (diverged, or broke a session guarantee): fewer operations, fewer
/// replicas, fewer keys, one fault kind fewer, a plainer topology, as long as the run still
/// fails. Every candidate is a
/// deterministic replay, so the result is itself a one-line reproducer. `run` runs a
/// candidate (over HTTP: ConvergeSimulationHTTP's `simulateOverHTTPBlocking`).
public func shrink(
    _ failing: SimulationOptions, report: SimulationReport, maxAttempts: Int = 80,
    onStep: ((SimulationOptions, SimulationReport) -> Void)? = nil,
    run: (SimulationOptions) -> SimulationReport = { simulate($0) }
) -> ShrinkResult {
    var current = failing
    var currentReport = report
    var attempts = 0
    var improved = true
    while improved && attempts < maxAttempts {
        improved = false
        for candidate in candidates(current) {
            guard attempts < maxAttempts else { break }
            attempts += 1
            let result = run(candidate)
            if !result.passed {
                current = candidate
                currentReport = result
                improved = true
                onStep?(candidate, result)
                break
            }
        }
    }
    return ShrinkResult(options: current, report: currentReport, attempts: attempts)
}

private func candidates(_ options: SimulationOptions) -> [SimulationOptions] {
    var result = [SimulationOptions]()
    func with(_ change: (inout SimulationOptions) -> Void) {
        var copy = options
        change(&copy)
        if copy != options { result.append(copy) }
    }
    let keys = options.effectiveKeysPerTable
    if options.ops > 1 { with { $0.ops = options.ops / 2; $0.keysPerTable = keys } }
    if options.replicas > 2 { with { $0.replicas = max(2, options.replicas / 2) } }
    for fault in options.faults.sorted() { with { $0.faults.remove(fault) } }
    if options.ops > 4 { with { $0.ops = options.ops - options.ops / 4; $0.keysPerTable = keys } }
    if options.replicas > 2 { with { $0.replicas = options.replicas - 1 } }
    if keys > 1 { with { $0.keysPerTable = max(1, keys / 2) } }
    if options.topology == .mesh { with { $0.topology = .hub } }
    if options.ops > 1 { with { $0.ops = options.ops - 1; $0.keysPerTable = keys } }
    return result
}
