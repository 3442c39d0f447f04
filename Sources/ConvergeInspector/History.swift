import ConvergeCore
import ConvergeSQLite
import GRDB

/// `converge history TABLE KEY`: one record's merge state, field by field: who wrote what
/// when, the concurrent values kept, and what each state has seen.
///
/// Local writes captured and not folded yet are folded in here, in memory (as the next
/// fold will store them), so that the history shows the device's latest writes; their
/// count says so.
struct HistoryReport: InspectorReport {
    struct ContextEntry: Encodable {
        var replica: String
        var upTo: JSONTime
    }

    struct Membership: Encodable {
        var alive: Bool
        /// Live add-tags: the inserts (or, under update-wins, edits) that keep it alive.
        var addTags: [JSONStamp]
        var seen: [ContextEntry]
        var sequence: UInt64?
    }

    struct Write: Encodable {
        var value: JSONValue
        var stamp: JSONStamp
    }

    struct RegisterReport: Encodable {
        /// `lww` (one write) or `multi` (every concurrent write kept).
        var kind: String
        var writes: [Write]
        var seen: [ContextEntry]
    }

    struct Incarnation: Encodable {
        var incarnation: JSONStamp
        /// A live add-tag: its values show. A removed one's never show again.
        var live: Bool
        var register: RegisterReport
    }

    struct Field: Encodable {
        var column: String
        var policy: String
        var shown: JSONValue?
        var conflict: Bool
        var sequence: UInt64?
        /// Under update-wins, the one register.
        var register: RegisterReport?
        /// Under delete-wins, a register per incarnation.
        var incarnations: [Incarnation]?
    }

    var table: String
    var key: JSONValue
    var deletePolicy: String
    var membership: Membership
    var fields: [Field]
    struct Cell: Encodable {
        var column: String
        var value: JSONValue
    }

    /// The row in the app table, in column order (a list, not an object: JSON key
    /// strategies would rename columns); `nil` when there is none.
    var row: [Cell]?
    var unfoldedWrites: Int
    var quarantined: Bool

    static func make(_ file: InspectedFile, table name: String, key keyText: String) throws -> HistoryReport {
        let table = try file.table(name)
        let schema = table.schema
        return try file.read { db in
            let key = try ArgumentValue.parse(keyText, declaredType: table.keyType)
            let identity = try ReplicatedDatabase.storedIdentity(db)
            let record = try ReplicatedDatabase.storedRecord(db, table: name, key: key)
            let writes = try ReplicatedDatabase.capturedWrites(db, table: table, replica: identity.replica).filter { $0.key == key }
            var state = record?.state ?? RecordState()
            if !writes.isEmpty {
                state = CapturePlanner.fold(writes, schema: schema, stored: [key: state]).first?.after ?? state
            }
            let quarantined = try ReplicatedDatabase.quarantinedRecords(db).contains { $0.table == name && $0.key == key }
            guard record != nil || !writes.isEmpty || quarantined else {
                throw InspectorError(.noSuchRecord, "no record \(key) in \(name) (neither in the metadata nor captured)")
            }
            var row: [Cell]?
            if try db.tableExists(name) {
                let columns = ([schema.primaryKey] + schema.columns).map(SQL.quoted).joined(separator: ", ")
                if let found = try Row.fetchOne(
                    db, sql: "SELECT \(columns) FROM \(SQL.quoted(name)) WHERE \(SQL.quoted(schema.primaryKey)) = ?", arguments: [key.databaseValue]) {
                    row = schema.columns.enumerated().map { Cell(column: $0.element, value: JSONValue(Value(found[$0.offset + 1] as DatabaseValue))) }
                }
            }
            let membership = state.membership
            let fields = schema.columns.map { column -> Field in
                let policy = schema.policy(of: column)
                var field = Field(
                    column: column, policy: Format.policy(policy), shown: state.value(of: column, policy: policy, authority: identity.authority).map(JSONValue.init),
                    conflict: state.isAlive && state.multiValue(of: column)?.isConflicted == true, sequence: record?.fieldSequences[column])
                switch state.fields[column] {
                case .plain(let register): field.register = report(register)
                case .incarnated(let entries):
                    field.incarnations = entries.map {
                        Incarnation(incarnation: JSONStamp($0.incarnation), live: membership.dots.contains($0.incarnation), register: report($0.register))
                    }
                case nil: break
                }
                return field
            }
            return HistoryReport(
                table: name, key: JSONValue(key), deletePolicy: schema.deletePolicy.rawValue,
                membership: Membership(
                    alive: state.isAlive, addTags: membership.dots.map(JSONStamp.init), seen: seen(membership.context),
                    sequence: record?.membershipSequence),
                fields: fields, row: row, unfoldedWrites: writes.count, quarantined: quarantined)
        }
    }

    static func seen(_ context: CausalContext) -> [ContextEntry] {
        context.entries.map { ContextEntry(replica: $0.replica.uuidString(), upTo: JSONTime($0.hlc)) }
    }

    static func report(_ register: Register) -> RegisterReport {
        switch register {
        case .lww(let lww):
            return RegisterReport(kind: "lww", writes: [Write(value: JSONValue(lww.value), stamp: JSONStamp(lww.stamp))], seen: [])
        case .multi(let mv):
            return RegisterReport(kind: "multi", writes: mv.siblings.map { Write(value: JSONValue($0.value), stamp: JSONStamp($0.stamp)) }, seen: seen(mv.context))
        }
    }

    var human: String {
        var text = "\(table) \(Format.value(key.value))  (\(deletePolicy))\n"
        text += "  \(membership.alive ? "alive" : "deleted")"
        text += membership.sequence.map { ", membership changed at sequence \($0)" } ?? ""
        text += "\n"
        for tag in membership.addTags { text += "    added   \(Self.stamp(tag))\n" }
        for entry in membership.seen { text += "    seen    \(Self.replica(entry.replica)) up to \(Format.time(HLC(rawValue: entry.upTo.hlc)))\n" }
        if unfoldedWrites > 0 { text += "  \(unfoldedWrites) local write(s) captured, not folded yet: shown folded in\n" }
        if quarantined { text += "  a remote change stamped too far ahead is quarantined for this record\n" }
        for field in fields {
            let shown = field.shown.map { Format.value($0.value) } ?? "(no write)"
            text += "\n  \(field.column) (\(field.policy))  shows \(shown)"
            if field.conflict { text += "  CONFLICT" }
            if let sequence = field.sequence { text += "  [sequence \(sequence)]" }
            text += "\n"
            if let register = field.register { text += Self.lines(register, indent: "    ") }
            for incarnation in field.incarnations ?? [] {
                text += "    incarnation \(Self.stamp(incarnation.incarnation))\(incarnation.live ? "" : " (removed: never shows again)")\n"
                text += Self.lines(incarnation.register, indent: "      ")
            }
            if field.register == nil && field.incarnations == nil { text += "    no write\n" }
        }
        text += "\n  row in the table: "
        if let row {
            text += row.map { "\($0.column)=\(Format.value($0.value.value))" }.joined(separator: ", ") + "\n"
        } else {
            text += "none\n"
        }
        return text
    }

    private static func lines(_ register: RegisterReport, indent: String) -> String {
        var rows = register.writes.map { [Format.value($0.value.value), Self.stamp($0.stamp)] }
        rows += register.seen.map { ["seen", "\(replica($0.replica)) up to \(Format.time(HLC(rawValue: $0.upTo.hlc)))"] }
        return Format.table(["VALUE", "WRITTEN"], rows, indent: indent)
    }

    private static func stamp(_ stamp: JSONStamp) -> String {
        "\(Format.time(HLC(rawValue: stamp.hlc))) by \(replica(stamp.replica))"
    }

    private static func replica(_ text: String) -> String { ReplicaID(text).map(Format.replica) ?? text }
}
