import ConvergeCore
import ConvergeSync
import Foundation
import Metrics
import MetricsTestKit
import Testing

/// Metrics from the store and the engine reach the backend the app bootstraps (issue #22):
/// rounds, records, bytes, apply time, and the status gauges.
@Suite struct ObservabilityTests {
    /// The process's one metrics backend: tests share it, so they assert at-least counts.
    static let metrics: TestMetrics = {
        let metrics = TestMetrics()
        MetricsSystem.bootstrap(metrics)
        return metrics
    }()

    func total(_ label: String, _ dimensions: [(String, String)] = []) -> Int64 {
        Self.metrics.counters(label: label, dimensions: dimensions).reduce(0) { $0 + $1.totalValue }
    }

    @Test func roundsAndAppliesAreCounted() async throws {
        let metrics = Self.metrics
        let roundsBefore = total("converge_sync_rounds_total", [("result", "ok")])
        let pushedBefore = total("converge_sync_pushed_records_total")
        let appliedBefore = total("converge_applied_records_total")
        try await TestServer.run { server, directory in
            let a = try await Device.make("a", server: server, in: directory)
            let b = try await Device.make("b", server: server, in: directory)
            for index in 0..<5 { try a.execute("INSERT INTO notes(id, title) VALUES (?, 'x')", ["n\(index)"]) }
            try await a.sync()
            try await b.sync()
            #expect(try b.rows("notes").count == 5)
        }
        #expect(total("converge_sync_rounds_total", [("result", "ok")]) >= roundsBefore + 2)
        #expect(total("converge_sync_pushed_records_total") >= pushedBefore + 5)
        // The server's apply of the push and b's apply of the pull.
        #expect(total("converge_applied_records_total") >= appliedBefore + 10)
        #expect(try metrics.expectTimer("converge_apply_seconds").values.isEmpty == false)
        #expect(try metrics.expectTimer("converge_sync_round_seconds").values.isEmpty == false)
        _ = try metrics.expectGauge("converge_sync_pending_changes")
    }
}
