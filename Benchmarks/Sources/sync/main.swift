// Sync benchmarks (issue #8), through a real server on loopback HTTP in this process:
//
// 1. first sync: a device holding workload W (100,000 rows × 5 fields) pushes everything
//    to an empty server, then a new device pulls everything; each against the in-process
//    `ReplicatedDatabase.apply` of the same full changeset (goal: ratio ≤ 1.5);
// 2. concurrency: 200 devices × 50 rounds × 20 fields, concurrently; round latency,
//    errors, lost fields, resident memory.
//
// Prints tables, then one JSON line with the figures.
//
//     swift run -c release --package-path Benchmarks sync [--rows N] [--devices N] [--rounds N]
//         [--namespaces N] [--shared-rows N] [--only first|concurrency] [--batches default|big|both] [--no-breakdown]
import Foundation

let options = Options.parse(CommandLine.arguments)
var figures = Figures()
if options.runFirstSync { figures.append(try await FirstSyncBenchmark.run(options)) }
if options.runConcurrency { figures.append(try await ConcurrencyBenchmark.run(options)) }
print("")
print(figures.json)
