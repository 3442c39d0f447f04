import ConvergeCore

/// Test fixtures: schemas covering both delete policies and critical fields, and a random
/// workload over several replicas, so that laws are checked on states real runs reach.
enum Fixtures {
    static let notes = TableSchema(
        name: "notes", primaryKey: "id", columns: ["title", "body", "amount"],
        policies: ["amount": .critical], deletePolicy: .updateWins)
    static let items = TableSchema(
        name: "items", primaryKey: "id", columns: ["name", "qty", "status"],
        policies: ["qty": .critical], deletePolicy: .deleteWins)
    static let schemas = [notes, items]

    static func replicaID(_ index: Int) -> ReplicaID {
        ReplicaID(high: 0x4000 | UInt64(index + 1) << 20, low: 0x8000_0000_0000_0000 | UInt64(index))
    }

    static func makeReplicas(_ count: Int) -> [Replica] {
        (0..<count).map { index in
            var replica = Replica(id: replicaID(index))
            for schema in schemas { replica.replicate(schema) }
            return replica
        }
    }

    static func randomValue(_ rng: inout SeededGenerator) -> Value {
        switch rng.below(6) {
        case 0: return .null
        case 1, 2: return .integer(Int64(rng.below(5)))
        case 3: return .real(Double(rng.below(100)) / 4)
        case 4: return .text(["a", "b", "é", "e\u{301}"][rng.below(4)])
        default: return .blob([UInt8(rng.below(3))])
        }
    }

    static func randomOperation(_ rng: inout SeededGenerator, keys: Int = 4) -> Replica.Operation {
        let schema = schemas[rng.below(schemas.count)]
        let key = Value.text("k\(rng.below(keys))")
        var values = [String: Value]()
        for column in schema.columns where rng.chance(0.6) { values[column] = randomValue(&rng) }
        switch rng.below(10) {
        case 0, 1, 2:
            for column in schema.columns where values[column] == nil { values[column] = .null }
            return .insert(table: schema.name, key: key, values: values)
        case 3, 4: return .delete(table: schema.name, key: key)
        default:
            if values.isEmpty { values[schema.columns[0]] = randomValue(&rng) }
            return .update(table: schema.name, key: key, values: values)
        }
    }

    /// Runs a random workload: local transactions and partial, duplicated, reordered
    /// exchanges. Returns the replicas and every changeset produced (for law checks).
    static func randomRun(seed: UInt64, replicas count: Int, steps: Int) -> (replicas: [Replica], changesets: [Changeset]) {
        var rng = SeededGenerator(seed: seed)
        var replicas = makeReplicas(count)
        var clocks = (0..<count).map { _ in UInt64(1_000_000 + rng.below(5_000)) }
        var changesets = [Changeset]()
        var inFlight = [(to: Int, changeset: Changeset)]()
        for _ in 0..<steps {
            let who = rng.below(count)
            clocks[who] += UInt64(rng.below(3))
            if rng.chance(0.05) { clocks[who] -= min(clocks[who], UInt64(rng.below(50))) } // clock goes backwards
            switch rng.below(10) {
            case 0...4:
                let operations = (0..<(1 + rng.below(3))).map { _ in randomOperation(&rng) }
                let changeset = replicas[who].perform(operations, physicalMilliseconds: clocks[who])
                if !changeset.isEmpty {
                    changesets.append(changeset)
                    inFlight.append((rng.below(count), changeset))
                }
            case 5:
                let conflicts = replicas[who].conflicts().compactMap(\.field)
                if let conflict = conflicts.first {
                    let changeset = replicas[who].resolve(
                        table: conflict.table, key: conflict.key, column: conflict.column,
                        to: randomValue(&rng), physicalMilliseconds: clocks[who])
                    changesets.append(changeset)
                    inFlight.append((rng.below(count), changeset))
                }
            case 6, 7:
                // A partial feed: records after a random cursor, bounded.
                let other = rng.below(count)
                let cursor = UInt64(rng.below(Int(replicas[who].state.sequence) + 1))
                let changeset = replicas[who].state.changes(since: cursor, limit: 1 + rng.below(4)).changeset
                changesets.append(changeset)
                replicas[other].apply(changeset, physicalMilliseconds: clocks[other])
            default:
                if !inFlight.isEmpty {
                    let index = rng.below(inFlight.count)
                    let message = inFlight[index]
                    if rng.chance(0.7) { inFlight.remove(at: index) } // else: delivered again later
                    replicas[message.to].apply(message.changeset, physicalMilliseconds: clocks[message.to])
                }
            }
        }
        return (replicas, changesets)
    }

    /// Full exchange: every replica receives every other's whole feed.
    static func exchangeAll(_ replicas: inout [Replica]) {
        for _ in 0..<2 {
            for source in replicas.indices {
                let changeset = replicas[source].state.changes(since: 0).changeset
                for target in replicas.indices where target != source {
                    replicas[target].apply(changeset, physicalMilliseconds: 2_000_000)
                }
            }
        }
    }
}
