import CompressNIO
import ConvergeCore
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import NIOCore
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// gzip and deflate request bodies are accepted, answers are compressed when asked for.
@Suite(.timeLimit(.minutes(3))) struct CompressionTests {
    func post(_ server: TestServer, _ body: [UInt8], encoding: String?, token: String) async throws -> (Int, HTTPURLResponse, Data) {
        var request = URLRequest(url: server.baseURL.appendingPathComponent("v1/sync"))
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        if let encoding { request.setValue(encoding, forHTTPHeaderField: "Content-Encoding") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, http, data)
    }

    func compress(_ bytes: [UInt8], _ algorithm: CompressionAlgorithm) throws -> [UInt8] {
        var buffer = ByteBuffer(bytes: bytes)
        let compressed = try buffer.compress(with: algorithm)
        return Array(compressed.readableBytesView)
    }

    @Test func compressedBodiesAndAnswers() async throws {
        let server = try await TestServer.start(maxBodyBytes: 64 << 10)
        let directory = try Fixtures.temporaryDirectory()
        let device = try await Device.make("device", server: server, in: directory)
        try await device.database.writer.write { db in
            for index in 0..<100 {
                try db.execute(sql: "INSERT INTO notes(id, body) VALUES (?, ?)", arguments: ["n\(index)", String(repeating: "lorem ipsum ", count: 20)])
            }
        }
        let token = try await server.token(device: "device")
        let batch = try device.database.changes(since: 0)
        let request = SyncRequest(replica: device.database.replicaID, pushUpTo: batch.next, changeset: WireEncoder.encode(batch.changeset), pull: true)

        let gzip = try await post(server, try compress(request.encoded(), .gzip()), encoding: "gzip", token: token)
        #expect(gzip.0 == 200)
        #expect(try await server.store().snapshot().records.count == 100)
        #expect(try SyncResponse(decoding: [UInt8](gzip.2)).acknowledged == batch.next)
        // Another device pulls the 100 records: URLSession asked for compression and decodes
        // the answer transparently.
        let pull = SyncRequest(replica: .random(), pull: true)
        let pulled = try await post(server, pull.encoded(), encoding: nil, token: try await server.token(device: "other"))
        #expect(pulled.0 == 200)
        #expect(pulled.1.value(forHTTPHeaderField: "Vary") == "Accept-Encoding")
        let page = try SyncResponse(decoding: [UInt8](pulled.2))
        #expect(try WireDecoder.decode(page.changeset).records.count == 100)

        let deflate = try await post(server, try compress(request.encoded(), .zlib()), encoding: "deflate", token: token)
        #expect(deflate.0 == 200)

        let before = try await server.store().snapshot()
        let corrupt = try await post(server, Array("not gzip at all".utf8), encoding: "gzip", token: token)
        #expect(corrupt.0 == 400)
        let unknown = try await post(server, request.encoded(), encoding: "br", token: token)
        #expect(unknown.0 == 415)
        // A small body that inflates beyond the limit.
        let bomb = SyncRequest(replica: device.database.replicaID, changeset: [UInt8](repeating: 0, count: 1 << 20))
        let inflated = try await post(server, try compress(bomb.encoded(), .gzip()), encoding: "gzip", token: token)
        #expect(inflated.0 == 413)
        #expect(try await server.store().snapshot() == before)

        await server.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
