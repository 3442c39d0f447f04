// Sync benchmarks (issues #8 and #17), through a real server on loopback HTTP in this process:
//
// 1. first sync: a device holding workload W (100,000 rows × 5 fields) pushes everything
//    to an empty server, then a new device pulls everything; each against the in-process
//    `ReplicatedDatabase.apply` of the same full changeset (goal: ratio ≤ 1.5);
// 2. concurrency: 200 devices × 50 rounds × 20 fields, concurrently; round latency,
//    errors, lost fields, resident memory;
// 3. namespaces (only with `--only namespaces`): 10,000 namespaces of 10 records each;
//    the server's memory and storage as they fill.
//
// `--storage` picks the server: the embedded SQLite storage (the default), PostgreSQL
// (`CONVERGE_POSTGRES_URL`; a fresh database per configuration), or `all`: both in one run,
// with their ratios (benchmark 2 then also runs PostgreSQL with `--servers` instances, 3 by
// default).
//
// Prints tables, then one JSON line with the figures.
//
//     swift run -c release --package-path Benchmarks sync [--rows N] [--devices N] [--rounds N]
//         [--namespaces N] [--shared-rows N] [--only first|concurrency|namespaces] [--batches default|small|both] [--no-breakdown]
//         [--storage sqlite|postgres|all] [--servers N] [--pg-connections N]
//         [--namespace-count N] [--sqlite-namespace-count N] [--records-per-namespace N]
import Foundation

let options = Options.parse(CommandLine.arguments)
var figures = Figures()
if options.runFirstSync { figures.append(try await FirstSyncBenchmark.run(options)) }
if options.runConcurrency { figures.append(try await ConcurrencyBenchmark.run(options)) }
if options.runNamespaces { figures.append(try await NamespacesBenchmark.run(options)) }
print("")
print(figures.json)
