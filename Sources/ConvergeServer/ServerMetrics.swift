import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// The server's Prometheus metrics, in their own registry (one per server, so several
/// servers can run in one process).
public final class ServerMetrics: Sendable {
    /// The registry holding this server's metrics, to export (`GET /metrics`).
    public let registry = PrometheusCollectorRegistry()
    private let fieldsIn: Counter
    private let fieldsOut: Counter
    private let recordsIn: Counter
    private let recordsOut: Counter
    private let latency: DurationHistogram
    private let rejections: Counter
    /// What the operator page shows (`GET /admin`): Prometheus counters hold totals only,
    /// while an operator asks "how many rounds a minute, and how many fail, right now".
    private let recent = NIOLockedValueBox(RecentActivity())

    /// Metrics at zero, in a fresh registry.
    public init() {
        fieldsIn = registry.makeCounter(descriptor: Self.name("fields_in", "total", "Field states received in pushes"))
        fieldsOut = registry.makeCounter(descriptor: Self.name("fields_out", "total", "Field states sent in pulled pages"))
        recordsIn = registry.makeCounter(descriptor: Self.name("records_in", "total", "Record deltas received in pushes"))
        recordsOut = registry.makeCounter(descriptor: Self.name("records_out", "total", "Record deltas sent in pulled pages"))
        rejections = registry.makeCounter(descriptor: Self.name("rejections", "total", "Pushed changes refused by validation and undone"))
        latency = registry.makeDurationHistogram(
            descriptor: Self.name("request_duration", "seconds", "Time to answer a sync request"),
            buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                      .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)])
    }

    func round(result: String, duration: Duration, recordsIn: Int, fieldsIn: Int, recordsOut: Int, fieldsOut: Int) {
        registry.makeCounter(descriptor: Self.name("requests", "total", "Sync requests by result"), labels: [("result", result)]).increment()
        self.recordsIn.increment(by: Int64(recordsIn))
        self.fieldsIn.increment(by: Int64(fieldsIn))
        self.recordsOut.increment(by: Int64(recordsOut))
        self.fieldsOut.increment(by: Int64(fieldsOut))
        latency.record(duration)
        recent.withLockedValue { $0.note(result: result, minute: RecentActivity.minute(of: Date())) }
    }

    func rejected(_ count: Int) {
        rejections.increment(by: Int64(count))
        recent.withLockedValue { $0.rejections += count }
    }

    /// A retired device was told to reset (410).
    func resetRequired() {
        registry.makeCounter(descriptor: Self.name("resets_required", "total", "Requests of retired devices answered with 410 reset_required")).increment()
        recent.withLockedValue { $0.resetsRequired += 1 }
    }

    /// The recent activity as of `now`, for the operator page.
    func activity(now: Date = Date()) -> RecentActivity.Summary {
        recent.withLockedValue { $0.summary(minute: RecentActivity.minute(of: now)) }
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "converge", subsystem: "sync", metricName: metric, unitName: unit, helpText: help)
    }

    /// The metrics in Prometheus' text format.
    public func exposition() -> String { registry.emitToString() }
}

/// Sync rounds per minute over the last hour, and totals since the server started, kept in
/// memory (a restart forgets them; Prometheus keeps the history).
struct RecentActivity: Sendable {
    /// Minutes kept: one hour, 60 small buckets whatever the traffic.
    static let minutesKept = 60

    struct Bucket: Sendable {
        var minute: Int64
        var succeeded = 0
        var failed = 0
    }

    private var buckets: [Bucket] = []
    /// Rounds since start by result (`ok`, `unauthorized`, `too_large`, …).
    private(set) var byResult: [String: Int] = [:]
    var rejections = 0
    var resetsRequired = 0

    static func minute(of date: Date) -> Int64 { Int64((date.timeIntervalSince1970 / 60).rounded(.down)) }

    mutating func note(result: String, minute: Int64) {
        byResult[result, default: 0] += 1
        if buckets.last?.minute != minute {
            buckets.append(Bucket(minute: minute))
            buckets.removeAll { $0.minute <= minute - Int64(Self.minutesKept) }
        }
        if result == "ok" { buckets[buckets.count - 1].succeeded += 1 } else { buckets[buckets.count - 1].failed += 1 }
    }

    struct Summary: Sendable {
        /// Rounds of the minute under way, and of the one before it.
        var thisMinute: (succeeded: Int, failed: Int)
        var lastMinute: (succeeded: Int, failed: Int)
        /// Rounds of the last 60 minutes.
        var lastHour: (succeeded: Int, failed: Int)
        var byResult: [String: Int]
        var rejections: Int
        var resetsRequired: Int
    }

    func summary(minute: Int64) -> Summary {
        func total(_ range: ClosedRange<Int64>) -> (succeeded: Int, failed: Int) {
            buckets.filter { range.contains($0.minute) }.reduce((0, 0)) { ($0.0 + $1.succeeded, $0.1 + $1.failed) }
        }
        return Summary(
            thisMinute: total(minute...minute), lastMinute: total((minute - 1)...(minute - 1)),
            lastHour: total((minute - Int64(Self.minutesKept) + 1)...minute), byResult: byResult, rejections: rejections,
            resetsRequired: resetsRequired)
    }
}
