import ConvergeCore
import ConvergeTestSupport
import Testing

/// The README's example, compiled and run as a test so that it stays true.
@Suite(.computeBound) struct ReadmeExampleTests {
    @Test func twoReplicasMerge() throws {
        let schema = TableSchema(name: "items", primaryKey: "id", columns: ["name", "qty"], policies: ["qty": .critical])
        var phone = Replica(id: .random()), laptop = Replica(id: .random())
        phone.replicate(schema); laptop.replicate(schema)

        // Both devices edit offline...
        let created = phone.perform([.insert(table: "items", key: .text("pen"), values: ["name": .text("Pen"), "qty": .integer(1)])], physicalMilliseconds: 1_000)
        laptop.apply(created, physicalMilliseconds: 1_000)
        let fromPhone = phone.perform([.update(table: "items", key: .text("pen"), values: ["name": .text("Blue pen"), "qty": .integer(2)])], physicalMilliseconds: 2_000)
        let fromLaptop = laptop.perform([.update(table: "items", key: .text("pen"), values: ["qty": .integer(5)])], physicalMilliseconds: 2_001)

        // ...then sync, in any order, over the binary wire format.
        phone.apply(try WireDecoder.decode(WireEncoder.encode(fromLaptop)), physicalMilliseconds: 3_000)
        laptop.apply(try WireDecoder.decode(WireEncoder.encode(fromPhone)), physicalMilliseconds: 3_000)

        #expect(phone.row(table: "items", key: .text("pen")) == laptop.row(table: "items", key: .text("pen")))
        #expect(phone.row(table: "items", key: .text("pen"))?["name"] == .text("Blue pen"))   // field by field
        #expect(phone.conflicts().first?.field?.siblings.map(\.value).sorted() == [.integer(2), .integer(5)])  // critical: both kept
    }
}
