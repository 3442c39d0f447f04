// The churn benchmark (issue #19, DESIGN §9 "Tombstone collection"): 3 devices each
// insert 10,000 records and delete all but 100 of them, ten times over, syncing after each
// batch of inserts and each batch of deletes, against one server in this process (its
// `SyncService` through an in-memory transport: no HTTP). Run twice in this process, with
// the server's tombstone collection on and off, the two runs interleaved round by round
// so that both see the same machine load. Every store is a file-backed SQLite database in
// the temporary folder; sizes are the files (main + WAL) after `wal_checkpoint(TRUNCATE)`.
//
// Goal: the largest store after the churn, with collection, is at most 1.2 × a fresh
// store holding the same live rows (`size_ratio`), and no deleted record's metadata is
// left anywhere (`dead_records_left`). Prints tables, then one JSON line.
//
//     swift run -c release --package-path Benchmarks churn [--records N] [--rounds R]
//         [--devices D] [--keep K] [--transaction-rows N] [--only on|off] [--max-drain-passes N]
import Foundation
import WorkloadW

let options = Options.parse(CommandLine.arguments)
let folder = FileManager.default.temporaryDirectory.appendingPathComponent("converge-churn-bench-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)

let liveRows = options.devices * options.rounds * options.keep
let inserted = options.devices * options.rounds * options.records
print("""
    CHURN — \(options.devices) devices × \(options.rounds) rounds × \(grouped(options.records)) records inserted per device and round \
    (\(grouped(inserted)) in all)
    each round: every device inserts its batch and syncs, then every device deletes all but the first \(options.keep) of its batch \
    and syncs; live at the end: \(grouped(liveRows)) rows
    rows: workload W (random UUID text keys, 5 value columns), \(grouped(options.transactionRows))-row local transactions; \
    SyncEngine defaults (push 100 records, pull pages 1,000)
    server: SyncService in this process through an in-memory transport (no HTTP), namespaces in SQLite (DatabasePool, WAL); \
    devices: DatabasePool (WAL) each; new stores use incremental auto-vacuum
    two runs, collection ON and OFF (ServerConfiguration.collection.enabled), interleaved round by round (ABBA) in this process
    sizes: main file + WAL after PRAGMA wal_checkpoint(TRUNCATE); times: wall clock and CPU of the whole process, per run
    folder: \(folder.path)
    """)

let workload = WorkloadW(rows: inserted)
let (fresh, compact, freshTiming) = try Churn.fresh(Churn.liveItems(workload, options: options), in: folder, options: options)

let runs = try await Churn.run(workload: workload, options: options, folder: folder)
let on = runs.first(where: \.collection)
let off = runs.first(where: { !$0.collection })

for run in runs {
    let label = run.collection ? "ON" : "OFF"
    var rounds = TextTable("collection \(label): per round (figures taken between rounds, without checkpoint)")
    rounds.row("round", "time (s)", "CPU (s)", "tombstones: server", "devices", "server pages", "largest device")
    for (index, round) in run.rounds.enumerated() {
        rounds.row("\(index + 1)", format(round.timing.wall), format(round.timing.cpu), grouped(round.serverTombstones), grouped(round.deviceTombstones),
                   size(round.serverBytes), size(round.largestDeviceBytes))
    }
    rounds.print()

    var stores = TextTable("collection \(label): stores after the churn (checkpointed)")
    stores.row("store", "file + WAL", "bytes", "× fresh", "× compacted", "free pages", "app rows", "records", "tombstones")
    for store in run.stores + [fresh, compact] {
        stores.row(store.name + (store.checkpointed ? "" : " (checkpoint busy)"), size(store.fileBytes), grouped(store.fileBytes),
                   format(Double(store.fileBytes) / Double(fresh.fileBytes)), format(Double(store.fileBytes) / Double(compact.fileBytes)),
                   grouped(store.freePages), grouped(store.rows),
                   grouped(store.records), grouped(store.tombstones))
    }
    stores.print()

    var times = TextTable("collection \(label): time")
    times.row("phase", "wall (s)", "CPU (s)")
    times.row("local inserts and deletes", format(run.writes.wall), format(run.writes.cpu))
    times.row("syncs in the loop (\(options.devices * options.rounds * 2))", format(run.syncs.wall), format(run.syncs.cpu))
    times.row("= measured loop", format(run.loop.wall), format(run.loop.cpu))
    times.row("+ final syncs (\(run.drainPasses) pass\(run.drainPasses == 1 ? "" : "es") of every device)", format(run.drain.wall), format(run.drain.cpu))
    if run.collection { times.row("+ final reclaimSpace() of every store (\(grouped(run.reclaimedPages)) pages)", format(run.reclaim.wall), format(run.reclaim.cpu)) }
    times.row("= total", format(run.total.wall), format(run.total.cpu))
    times.print()
    print("requests \(grouped(run.requests)), records pushed \(grouped(run.pushed)) / pulled \(grouped(run.pulled)), "
          + "dropped by devices on the server's word \(grouped(run.collectedByDevices)), server's list of collected records \(grouped(run.serverCollectedList)) rows")
    print("converged: \(run.converged)\(run.convergenceNote.isEmpty ? "" : " — " + run.convergenceNote)")
}

// Where the space goes: the largest store of each run against the compacted fresh store,
// table by table (tables and indexes of one page are summed in the last row).
for run in runs {
    let store = run.largest
    let label = run.collection ? "ON" : "OFF"
    guard let tables = store.tables, let reference = compact.tables else {
        print("\n\(label): dbstat is not available in this SQLite")
        continue
    }
    let referenceByName = Dictionary(reference.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    var table = TextTable("""
        \(label): where the largest store's space goes (\(store.name), \(grouped(store.fileBytes)) bytes, \(grouped(store.freePages)) free pages) \
        against the compacted fresh store (\(grouped(compact.fileBytes)) bytes); dbstat
        """)
    table.row("table or index", "bytes", "unused", "fill", "fresh bytes", "unused", "fill", "extra bytes")
    func fill(_ bytes: Int, _ unused: Int) -> String { bytes == 0 ? "-" : format(100 * (1 - Double(unused) / Double(bytes)), 0) + " %" }
    var small = (bytes: 0, fresh: 0, names: 0)
    for entry in tables {
        let fresh = referenceByName[entry.name] ?? (name: entry.name, bytes: 0, unused: 0)
        if entry.bytes <= store.pageSize && fresh.bytes <= store.pageSize {
            small.bytes += entry.bytes
            small.fresh += fresh.bytes
            small.names += 1
            continue
        }
        table.row(entry.name, grouped(entry.bytes), grouped(entry.unused), fill(entry.bytes, entry.unused),
                  grouped(fresh.bytes), grouped(fresh.unused), fill(fresh.bytes, fresh.unused), grouped(entry.bytes - fresh.bytes))
    }
    table.row("\(small.names) tables and indexes of one page", grouped(small.bytes), "", "", grouped(small.fresh), "", "", grouped(small.bytes - small.fresh))
    table.row("free pages", grouped(store.freePages * store.pageSize), "", "", grouped(compact.freePages * compact.pageSize), "", "",
              grouped((store.freePages - compact.freePages) * store.pageSize))
    table.print()
    if let vacuumed = store.vacuumedBytes, let freshVacuumed = compact.vacuumedBytes {
        print("VACUUM INTO copies (every page rebuilt full; not part of the run): \(store.name) \(grouped(vacuumed)) bytes, "
              + "fresh store \(grouped(freshVacuumed)) bytes: ratio \(format(Double(vacuumed) / Double(freshVacuumed), 3))")
    }
}

var figures = Figures()
if let on {
    figures.set("size_ratio", Double(on.largest.fileBytes) / Double(fresh.fileBytes))
    figures.set("size_ratio_compact", Double(on.largest.fileBytes) / Double(compact.fileBytes))
    if let vacuumed = on.largest.vacuumedBytes, let freshVacuumed = compact.vacuumedBytes {
        figures.set("size_ratio_vacuumed", Double(vacuumed) / Double(freshVacuumed))
    }
    figures.set("dead_records_left", on.tombstones)
}
if let on, let off {
    figures.set("collect_cost_ratio", on.total.wall / off.total.wall)
    figures.set("collect_cost_ratio_cpu", on.total.cpu / off.total.cpu)
}
if let off {
    figures.set("size_ratio_off", Double(off.largest.fileBytes) / Double(fresh.fileBytes))
    figures.set("dead_records_left_off", off.tombstones)
}
figures.set("fresh_bytes", fresh.fileBytes)
figures.set("fresh_compact_bytes", compact.fileBytes)
figures.set("fresh_write_s", freshTiming.wall)
for run in runs {
    let label = run.collection ? "on" : "off"
    figures.set("\(label)_largest_bytes", run.largest.fileBytes)
    for store in run.stores {
        let name = store.name.replacingOccurrences(of: "-", with: "")
        figures.set("\(label)_\(name)_bytes", store.fileBytes)
        figures.set("\(label)_\(name)_records", store.records)
        figures.set("\(label)_\(name)_tombstones", store.tombstones)
        figures.set("\(label)_\(name)_rows", store.rows)
    }
    figures.set("\(label)_total_s", run.total.wall)
    figures.set("\(label)_total_cpu_s", run.total.cpu)
    figures.set("\(label)_loop_s", run.loop.wall)
    figures.set("\(label)_writes_s", run.writes.wall)
    figures.set("\(label)_syncs_s", run.syncs.wall)
    figures.set("\(label)_final_syncs_s", run.drain.wall)
    figures.set("\(label)_final_passes", run.drainPasses)
    if run.collection { figures.set("\(label)_reclaim_s", run.reclaim.wall) }
    figures.set("\(label)_requests", run.requests)
    figures.set("\(label)_dropped_by_devices", run.collectedByDevices)
    figures.set("\(label)_converged", run.converged)
}
figures.set("devices", options.devices)
figures.set("rounds", options.rounds)
figures.set("records_per_round", options.records)
figures.set("kept_per_round", options.keep)
figures.set("live_rows", liveRows)
try? FileManager.default.removeItem(at: folder)
print("")
print(figures.json)
