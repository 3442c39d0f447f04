import Prometheus

/// The server's Prometheus metrics, in their own registry (one per server, so several
/// servers can run in one process).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let fieldsIn: Counter
    private let fieldsOut: Counter
    private let recordsIn: Counter
    private let recordsOut: Counter
    private let latency: DurationHistogram
    private let rejections: Counter

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
    }

    func rejected(_ count: Int) { rejections.increment(by: Int64(count)) }

    /// A retired device was told to reset (410).
    func resetRequired() {
        registry.makeCounter(descriptor: Self.name("resets_required", "total", "Requests of retired devices answered with 410 reset_required")).increment()
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "converge", subsystem: "sync", metricName: metric, unitName: unit, helpText: help)
    }

    /// The metrics in Prometheus' text format.
    public func exposition() -> String { registry.emitToString() }
}
