import Foundation

/// Command-line options (`--name value`).
struct Options: Sendable {
    /// Records each device inserts per round.
    var records = 10_000
    /// Rounds of insert-then-delete.
    var rounds = 10
    var devices = 3
    /// Records of each device's batch that stay live (the first ones of the batch: random
    /// keys, so a random sample); the rest are deleted in the same round. By default 1 %
    /// of `records` (100 of 10,000).
    var keep = 100
    /// Rows per local transaction (inserts and deletes).
    var transactionRows = 1_000
    var runWithCollection = true
    var runWithoutCollection = true
    /// The most passes of the final syncs (every device once per pass) spent waiting for
    /// collection to finish.
    var maxDrainPasses = 200

    static let usage = """
        usage: churn [--records N] [--rounds R] [--devices D] [--keep K (default N/100)] [--transaction-rows N]
                     [--only on|off] [--max-drain-passes N]
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var keep: Int?
        var index = 1
        func value(_ name: String, minimum: Int = 1) -> Int {
            index += 1
            guard index < arguments.count, let number = Int(arguments[index]), number >= minimum else {
                fail("\(name) needs an integer ≥ \(minimum)")
            }
            return number
        }
        while index < arguments.count {
            switch arguments[index] {
            case "--records": options.records = value("--records")
            case "--rounds": options.rounds = value("--rounds")
            case "--devices": options.devices = value("--devices")
            case "--keep": keep = value("--keep", minimum: 0)
            case "--transaction-rows": options.transactionRows = value("--transaction-rows")
            case "--max-drain-passes": options.maxDrainPasses = value("--max-drain-passes")
            case "--only":
                index += 1
                switch index < arguments.count ? arguments[index] : "" {
                case "on": options.runWithoutCollection = false
                case "off": options.runWithCollection = false
                default: fail("--only takes on or off")
                }
            case "--help", "-h":
                print(usage)
                exit(0)
            default: fail("unknown argument \(arguments[index])")
            }
            index += 1
        }
        options.keep = min(keep ?? max(1, options.records / 100), options.records)
        return options
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("churn: \(message)\n\(usage)\n".utf8))
        exit(2)
    }
}

/// The figures of the final JSON line, in the order they were added.
struct Figures: Sendable {
    enum Value: Sendable {
        case number(Double), integer(Int), bool(Bool)

        var json: String {
            switch self {
            case .number(let value):
                guard value.isFinite else { return "null" }
                return value.magnitude >= 1_000 ? String(Int(value.rounded())) : String(format: "%.4g", value)
            case .integer(let value): return String(value)
            case .bool(let value): return value ? "true" : "false"
            }
        }
    }

    private(set) var entries: [(String, Value)] = []

    mutating func set(_ key: String, _ value: Double) { entries.append((key, .number(value))) }
    mutating func set(_ key: String, _ value: Int) { entries.append((key, .integer(value))) }
    mutating func set(_ key: String, _ value: Bool) { entries.append((key, .bool(value))) }

    var json: String { "{" + entries.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ") + "}" }
}

/// A table printed with aligned columns (the first column left, the others right).
struct TextTable {
    let title: String
    private var rows: [[String]] = []

    init(_ title: String) { self.title = title }

    mutating func row(_ cells: String...) { rows.append(cells) }
    mutating func row(_ cells: [String]) { rows.append(cells) }

    func print() {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        let lines = rows.map { cells in
            cells.enumerated().map { column, cell in
                // The label column left, the figures right.
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        Swift.print("\n" + title)
        Swift.print(String(repeating: "-", count: max(title.count, lines.map(\.count).max() ?? 0)))
        for line in lines { Swift.print(line) }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// Wall-clock time and the process's CPU time (server and devices both run here).
struct Timing: Sendable {
    var wall: Double = 0
    var cpu: Double = 0

    var text: String { "\(format(wall)) s (CPU \(format(cpu)) s)" }

    static func + (a: Timing, b: Timing) -> Timing { Timing(wall: a.wall + b.wall, cpu: a.cpu + b.cpu) }
    static func += (a: inout Timing, b: Timing) { a = a + b }
}

func timed<T>(_ body: () throws -> T) rethrows -> (T, Timing) {
    let start = ContinuousClock.now, cpu = processCPUSeconds()
    let result = try body()
    return (result, Timing(wall: (ContinuousClock.now - start).seconds, cpu: processCPUSeconds() - cpu))
}

func timed<T>(isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T) async rethrows -> (T, Timing) {
    let start = ContinuousClock.now, cpu = processCPUSeconds()
    let result = try await body()
    return (result, Timing(wall: (ContinuousClock.now - start).seconds, cpu: processCPUSeconds() - cpu))
}

/// CPU time of the whole process (user + system, every thread), in seconds.
func processCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

/// 1234567 → "1,234,567".
func grouped(_ value: Int) -> String {
    let text = String(value.magnitude)
    var result = ""
    for (index, character) in text.enumerated() {
        if index > 0 && (text.count - index) % 3 == 0 { result.append(",") }
        result.append(character)
    }
    return (value < 0 ? "-" : "") + result
}

/// Bytes as KiB or MiB, one decimal.
func size(_ bytes: Int) -> String {
    bytes >= 1 << 20 ? "\(format(Double(bytes) / 1_048_576, 1)) MiB" : "\(format(Double(bytes) / 1024, 1)) KiB"
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Progress on standard error (unbuffered; the tables and the JSON line go to standard output).
func progress(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}
