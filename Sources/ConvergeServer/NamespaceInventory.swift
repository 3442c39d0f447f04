import Foundation

/// Storage that can say what it holds: which namespaces exist and how much room each takes.
///
/// A sync round never needs this (a token names its namespace), so it is not part of
/// ``NamespaceStorage``; the operator page (`GET /admin`) lists the namespaces of storage
/// that conforms, and otherwise shows one namespace asked for by name.
public protocol NamespaceInventory: NamespaceStorage {
    /// The names of the namespaces that exist, sorted, at most `limit` of them, and how many
    /// exist in all.
    func namespaces(limit: Int) async throws -> (names: [String], total: Int)

    /// The bytes `namespace` takes in storage, or `nil` when the storage cannot tell.
    func storedBytes(of namespace: String) async throws -> Int64?
}

extension SQLiteStorage: NamespaceInventory {
    /// The `<namespace>.sqlite` files of the data folder.
    public func namespaces(limit: Int) async throws -> (names: [String], total: Int) {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".sqlite") }
            .map { String($0.dropLast(".sqlite".count)) }
            .filter(Namespace.isValid)
            .sorted()
        return (Array(names.prefix(max(0, limit))), names.count)
    }

    /// The database file with its write-ahead log and shared-memory index.
    public func storedBytes(of namespace: String) async throws -> Int64? {
        guard Namespace.isValid(namespace) else { return nil }
        let base = directory.appendingPathComponent("\(namespace).sqlite").path
        var total: Int64 = 0
        var found = false
        for path in [base, base + "-wal", base + "-shm"] {
            guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber else { continue }
            total += size.int64Value
            found = true
        }
        return found ? total : nil
    }
}
