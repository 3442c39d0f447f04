import ConvergeCore
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB

/// A shop's phone and laptop, each with its own database, edit the inventory while offline
/// and sync through a Converge server: a stock count changed on both (a critical-field
/// conflict), the same new SKU entered on both (a constraint conflict), a product deleted on
/// one and renamed on the other (the delete wins); the laptop's user settles both conflicts,
/// and both devices are checked to hold the same rows and merge states at the end. Every
/// step says what it does; any check that fails ends the run with exit 1.
///
///     inventory --server URL --phone-token TOKEN --laptop-token TOKEN [--keep]
///
/// `Examples/Inventory/run.sh` starts a server and runs this with its tokens.
@main
struct Inventory {
    static func main() async {
        let options: Options
        do {
            options = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
        } catch {
            print("inventory: \(error)\n\(Options.usage)")
            exit(2)
        }
        do {
            try await Session(options: options).run()
        } catch {
            print("\nFAILED: \(error)")
            exit(1)
        }
    }
}

struct Options {
    static let usage = "usage: inventory --server URL --phone-token TOKEN --laptop-token TOKEN [--keep]"

    var server: URL
    var phoneToken: String
    var laptopToken: String
    /// Keep the devices' database files (to look at them with `swift run converge status FILE`).
    var keep = false

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    init(arguments: [String]) throws {
        var values = [String: String]()
        var rest = arguments[...]
        while let flag = rest.popFirst() {
            switch flag {
            case "--keep": keep = true
            case "--server", "--phone-token", "--laptop-token":
                guard let value = rest.popFirst() else { throw Invalid(description: "\(flag) needs a value") }
                values[flag] = value
            default: throw Invalid(description: "unknown argument \(flag)")
            }
        }
        guard let server = values["--server"].flatMap(URL.init(string:)), server.scheme != nil else {
            throw Invalid(description: "--server URL is required (for example http://127.0.0.1:8080)")
        }
        guard let phone = values["--phone-token"], let laptop = values["--laptop-token"] else {
            throw Invalid(description: "--phone-token and --laptop-token are required")
        }
        self.server = server
        self.phoneToken = phone
        self.laptopToken = laptop
    }
}

/// A check of the session that did not hold.
struct CheckFailed: Error, CustomStringConvertible {
    var description: String
}

func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    guard condition else { throw CheckFailed(description: message()) }
}

struct Session {
    let options: Options

    func run() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("converge-inventory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer {
            if options.keep {
                print("\nThe devices' databases are kept in \(folder.path) (try: swift run converge status \(folder.path)/phone.sqlite)")
            } else {
                try? FileManager.default.removeItem(at: folder)
            }
        }
        print("Converge inventory: a phone and a laptop sync through the server at \(options.server.absoluteString)")

        // 1. Each device opens its own database, as an app does at launch.
        step(1, "The phone and the laptop open their databases (migrations, then replicate(Item.self))")
        let phone = try Device.open("phone", path: folder.appendingPathComponent("phone.sqlite").path, server: options.server, token: options.phoneToken)
        let laptop = try Device.open("laptop", path: folder.appendingPathComponent("laptop.sqlite").path, server: options.server, token: options.laptopToken)
        let names = [phone.converge.replicaID: phone.name, laptop.converge.replicaID: laptop.name]
        for device in [phone, laptop] {
            say(device, "replica \(device.converge.replicaID.uuidString().prefix(8)), item table replicated: quantity critical, status authority, sku unique, deletes win")
        }

        // 2. The phone enters the catalog; the laptop gets it from the server.
        step(2, "The phone enters the catalog, uploads it, and the laptop syncs")
        let pen = Item(id: UUID().uuidString, name: "Blue pen", sku: "PEN-BLUE", quantity: 10)
        let mug = Item(id: UUID().uuidString, name: "Mug", sku: "MUG-01", quantity: 4)
        try await phone.dbQueue.write { db in
            try pen.insert(db)
            try mug.insert(db)
        }
        say(phone, "adds \"\(pen.name)\" ×\(pen.quantity) and \"\(mug.name)\" ×\(mug.quantity): \(await phone.pendingUploads()) changes to upload")
        try await upload(phone)
        try await sync(laptop)
        show(laptop, try laptop.items())
        try expect(try laptop.items() == phone.items(), "the laptop shows the phone's catalog")

        // 3. Offline: neither device syncs. Each edit is valid on its own device.
        step(3, "Offline, both devices edit (neither syncs)")
        try await phone.dbQueue.write { db in
            var item = try Item.find(db, key: pen.id)
            item.quantity -= 3
            item.name = "Blue pen, fine tip"
            try item.update(db)
        }
        say(phone, "sells 3 pens (quantity 10 → 7) and renames them \"Blue pen, fine tip\"")
        try await laptop.dbQueue.write { db in
            var item = try Item.find(db, key: pen.id)
            item.quantity += 12
            try item.update(db)
        }
        say(laptop, "receives a delivery of 12 pens (quantity 10 → 22)")
        let lined = Item(id: UUID().uuidString, name: "Notebook A5, lined", sku: "NB-A5", quantity: 5)
        try await phone.dbQueue.write { db in try lined.insert(db) }
        say(phone, "adds \"\(lined.name)\" ×\(lined.quantity) with SKU \(lined.sku!)")
        // A moment later, so that the phone's claim of the SKU is the first one.
        try await Task.sleep(for: .milliseconds(5))
        let squared = Item(id: UUID().uuidString, name: "Notebook A5, squared", sku: "NB-A5", quantity: 8)
        try await laptop.dbQueue.write { db in try squared.insert(db) }
        say(laptop, "adds \"\(squared.name)\" ×\(squared.quantity) with the same SKU \(squared.sku!)")
        try await phone.dbQueue.write { db in _ = try mug.delete(db) }
        say(phone, "deletes \"\(mug.name)\" (discontinued)")
        try await laptop.dbQueue.write { db in
            var item = try Item.find(db, key: mug.id)
            item.name = "Mug, white"
            try item.update(db)
        }
        say(laptop, "renames \"\(mug.name)\" to \"Mug, white\", not knowing it is deleted")
        for device in [phone, laptop] {
            say(device, "has \(await device.pendingUploads()) changes to upload; each device alone is consistent")
        }

        // 4. Back online. The merge keeps every edit, field by field: the rename (the
        // phone's alone), both stock counts (a critical field), both notebooks (one held);
        // and the delete wins over the concurrent rename (the table's delete policy).
        step(4, "Back online: the phone uploads, then both sync")
        try await upload(phone)
        try await sync(laptop)
        try await sync(phone)
        for device in [phone, laptop] {
            show(device, try device.items())
            for conflict in try device.converge.conflicts() {
                say(device, try describe(conflict, on: device, names: names))
            }
        }
        let conflicts = try phone.converge.conflicts()
        try expect(conflicts == laptop.converge.conflicts(), "both devices list the same conflicts")
        try expect(conflicts.count == 2, "two conflicts, found \(conflicts.count)")
        let field = try conflicts.compactMap(\.field).first.orFail("a quantity conflict")
        try expect(field.column == "quantity" && field.key == .text(pen.id), "the conflict is the pen's quantity")
        try expect(Set(field.siblings.map(\.value)) == [.integer(7), .integer(22)], "its values are 7 and 22")
        let clash = try conflicts.compactMap(\.constraint).first.orFail("a SKU conflict")
        try expect(clash.index == "item_sku" && clash.values == [.text("NB-A5")], "the clash is on SKU NB-A5")
        try expect(clash.holder.key == .text(lined.id), "the first claim (the phone's lined notebook) holds the SKU")
        try expect(clash.held.map(\.key) == [.text(squared.id)], "the laptop's squared notebook is held")
        try expect(try laptop.item(squared.id) == nil, "the held notebook is not in the laptop's item table")
        try expect(try phone.items() == laptop.items(), "both devices show the same rows")
        try expect(try phone.item(pen.id)?.name == "Blue pen, fine tip", "the phone's rename merged beside the stock counts")
        try expect(try phone.item(mug.id) == nil && laptop.item(mug.id) == nil, "the deleted mug stays deleted on both devices")
        say(laptop, "\"\(mug.name)\" is gone here too: deletes win over concurrent edits in this table (.deleteWins)")
        say(laptop, "\"\(squared.name)\" is held, not lost: kept in Converge's metadata, out of the item table until the clash is settled")

        // 5. The user settles both conflicts on the laptop, with ordinary writes.
        step(5, "The laptop's user settles both conflicts")
        try await laptop.dbQueue.write { db in
            var item = try Item.find(db, key: pen.id)
            item.quantity = 19
            try item.update(db)
        }
        say(laptop, "counts the pens on the shelf: 19, and saves the record (Item.update): a write of the critical column resolves it")
        // The held record has no row for SQL or GRDB to write: it is edited through Converge.
        try laptop.converge.update(table: Item.databaseTableName, key: .text(squared.id), values: [Item.Columns.sku.name: .text("NB-A5-SQ")])
        say(laptop, "gives \"\(squared.name)\" its own SKU NB-A5-SQ with converge.update(table:key:values:) (a held record has no row to save): it shows at once")
        try expect(try laptop.converge.conflicts().isEmpty, "no conflict left on the laptop")
        try expect(try laptop.item(squared.id)?.sku == "NB-A5-SQ", "the squared notebook is back in the laptop's item table")

        // 6. One more sync each way, then the devices must agree in every row and every
        // merge state.
        step(6, "The laptop uploads, both sync, and the devices are compared")
        try await upload(laptop)
        try await sync(phone)
        try await sync(laptop)
        let shelf = try phone.items()
        show(phone, shelf)
        for device in [phone, laptop] {
            try expect(try device.converge.conflicts().isEmpty, "\(device.name): no conflict left")
            try expect(await device.pendingUploads() == 0, "\(device.name): nothing left to upload")
        }
        try expect(try laptop.items() == shelf, "both devices show the same rows")
        try expect(
            Set(try phone.converge.snapshot().records) == Set(try laptop.converge.snapshot().records),
            "both devices hold the same merge states")
        let expected = [
            Item(id: lined.id, name: "Notebook A5, lined", sku: "NB-A5", quantity: 5),
            Item(id: squared.id, name: "Notebook A5, squared", sku: "NB-A5-SQ", quantity: 8),
            Item(id: pen.id, name: "Blue pen, fine tip", sku: "PEN-BLUE", quantity: 19),
        ]
        try expect(shelf == expected, "the shelf is not the one both users meant:\n\(table(expected))\nbut:\n\(table(shelf))")
        print("\nOK: the phone and the laptop hold the same \(shelf.count) items and merge states, no conflict left, nothing left to upload.")
    }

    // MARK: Syncing, with what each wait did

    /// Waits until everything the device wrote is on the server (an upload checkpoint).
    func upload(_ device: Device) async throws {
        let before = try device.lastRound()
        try await device.engine.waitUntilUploaded(timeout: .seconds(30))
        let pending = await device.pendingUploads()
        say(device, "waitUntilUploaded: \(try device.rounds(after: before)); \(pending) left to upload")
        try expect(pending == 0, "\(device.name): everything uploaded")
    }

    /// Waits until the device has uploaded everything and pulled what the server had.
    func sync(_ device: Device) async throws {
        let before = try device.lastRound()
        try await device.engine.waitUntilSynced(timeout: .seconds(30))
        say(device, "waitUntilSynced: \(try device.rounds(after: before))")
    }

    // MARK: Narrative

    func step(_ number: Int, _ title: String) {
        print("\n\(number). \(title)")
    }

    func say(_ device: Device, _ text: String) {
        print("   \(device.name.padding(toLength: 7, withPad: " ", startingAt: 0))\(text)")
    }

    func show(_ device: Device, _ items: [Item]) {
        say(device, "shows:")
        print(table(items))
    }

    /// A conflict as the app would present it: which item, which values, from which device.
    func describe(_ conflict: Conflict, on device: Device, names: [ReplicaID: String]) throws -> String {
        func who(_ stamp: Stamp) -> String { names[stamp.replica] ?? "replica \(stamp.replica)" }
        func name(_ values: [String: Value]) -> String {
            if case .text(let name)? = values["name"] { return name }
            return "?"
        }
        switch conflict {
        case .field(let field):
            let values = field.siblings.map { "\($0.value) (\(who($0.stamp)))" }.joined(separator: ", ")
            let shown = field.siblings.last.map { "\($0.value)" } ?? "?"
            let item: String
            if case .text(let id) = field.key, let row = try device.item(id) { item = "\"\(row.name)\"" } else { item = "\(field.key)" }
            return "conflict: \(field.column) of \(item) holds \(values); shows \(shown) until someone chooses"
        case .constraint(let clash):
            let held = clash.held.map { "\"\(name($0.values))\" (\(who($0.stamp)))" }.joined(separator: ", ")
            return "conflict: \(clash.columns.joined(separator: ", ")) \(clash.values.map(\.description).joined(separator: ", ")) claimed twice (index \(clash.index)): "
                + "\"\(name(clash.holder.values))\" (\(who(clash.holder.stamp)), the first claim) shows, \(held) is held"
        }
    }
}

/// The rows as a small table.
func table(_ items: [Item]) -> String {
    func column(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0) }
    var lines = ["          \(column("SKU", 10)) \(column("NAME", 22)) QUANTITY"]
    for item in items {
        lines.append("          \(column(item.sku ?? "-", 10)) \(column(item.name, 22)) \(item.quantity)")
    }
    return lines.joined(separator: "\n")
}

extension Optional {
    func orFail(_ what: String) throws -> Wrapped {
        guard let self else { throw CheckFailed(description: "expected \(what)") }
        return self
    }
}
