import ConvergeCore

/// What unique indexes make of the expected final state (DESIGN §4, "Unique constraints"),
/// derived from the oracle's expected rows and the stamps of the writes they show, from the
/// specification rather than by calling `UniquePlanner`:
///
/// - a live record *claims*, on each index, the values its row shows in the index's
///   columns when none is NULL (NULLs never clash), at the latest stamp among the writes
///   those columns show;
/// - of the records claiming the same values, the claim with the smallest stamp (then the
///   smallest key) *holds* them, the others are *held*;
/// - a record is shown when it holds every claim it makes; the held ones are kept (their
///   writes are not lost) but absent from the app table, and every replica lists each clash
///   as a constraint conflict, holder first, the held ones in the order they would take over.
struct ExpectedConstraints {
    /// The live records held out of the app table, with the indexes that hold them (sorted).
    var held: [RecordAddress: [String]] = [:]
    /// Every clash of two or more claims, in ``Oracle/constraintOrder``.
    var conflicts: [ConstraintConflict] = []
}

extension Oracle {
    func expectedConstraints() -> ExpectedConstraints {
        var result = ExpectedConstraints()
        for table in tables.tables where !table.uniqueIndexes.isEmpty {
            struct Group: Hashable { var index: String; var values: [Value] }
            var groups = [Group: (index: UniqueIndex, values: [Value], claimants: [ConstraintConflict.Claimant])]()
            for address in addresses where address.table == table.name {
                let expected = expected(address)
                guard let row = expected.row else { continue }
                let values = Dictionary(uniqueKeysWithValues: table.columns.map { ($0, row[$0] ?? .null) })
                for index in table.uniqueIndexes {
                    var claimed = [Value]()
                    var stamp = Stamp.zero
                    for column in index.columns {
                        guard let value = row[column], value != .null, let latest = expected.winners[column]?.keys.max() else { break }
                        claimed.append(value)
                        stamp = max(stamp, latest)
                    }
                    guard claimed.count == index.columns.count else { continue }
                    groups[Group(index: index.name, values: claimed), default: (index, claimed, [])].claimants.append(
                        ConstraintConflict.Claimant(key: address.key, values: values, stamp: stamp))
                }
            }
            for group in groups.values where group.claimants.count > 1 {
                let claimants = group.claimants.sorted { ($0.stamp, $0.key) < ($1.stamp, $1.key) }
                for claimant in claimants.dropFirst() {
                    result.held[RecordAddress(table: table.name, key: claimant.key), default: []].append(group.index.name)
                }
                result.conflicts.append(ConstraintConflict(
                    table: table.name, index: group.index.name, columns: group.index.columns, values: group.values,
                    holder: claimants[0], held: Array(claimants.dropFirst())))
            }
        }
        result.held = result.held.mapValues { $0.sorted() }
        result.conflicts.sort(by: Oracle.constraintOrder)
        return result
    }

    /// Constraint conflicts by table, index and values: the order the checks compare in.
    static func constraintOrder(_ a: ConstraintConflict, _ b: ConstraintConflict) -> Bool {
        if a.table != b.table { return a.table.utf8.lexicographicallyPrecedes(b.table.utf8) }
        if a.index != b.index { return a.index.utf8.lexicographicallyPrecedes(b.index.utf8) }
        return a.values.lexicographicallyPrecedes(b.values)
    }

    /// The records a replica's constraint conflicts say are held, with the indexes holding them.
    static func heldRecords(_ conflicts: [ConstraintConflict]) -> [RecordAddress: [String]] {
        var result = [RecordAddress: [String]]()
        for conflict in conflicts {
            for claimant in conflict.held { result[RecordAddress(table: conflict.table, key: claimant.key), default: []].append(conflict.index) }
        }
        return result.mapValues { $0.sorted() }
    }
}
