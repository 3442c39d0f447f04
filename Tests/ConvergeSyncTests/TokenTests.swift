import ConvergeCore
import ConvergeServer
import ConvergeSync
import Crypto
import Foundation
import JWTKit
import Synchronization
import Testing

/// Access tokens (issue #21): `exp` required, `nbf`/`iat` not in the future, `iss`/`aud` as
/// configured, the header's `alg` that of the key, and the engine's refresher when a token
/// expires during a run. Every refusal is a 401 that changes nothing.
@Suite(.timeLimit(.minutes(3))) struct TokenTests {
    let secret = "a secret long enough for HS256 keys, 32+ bytes"

    /// A token signed with `secret` carrying exactly `claims`.
    func sign(_ claims: SyncClaims, secret: String? = nil) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret ?? self.secret), digestAlgorithm: .sha256)
        return try await keys.sign(claims)
    }

    func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// A compact JWS with any header, HMAC-SHA256-signed with `secret` (or unsigned).
    func raw(header: String, claims: SyncClaims, signed: Bool) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970  // NumericDate, as JWT wants
        let signingInput = base64URL(Data(header.utf8)) + "." + base64URL(try encoder.encode(claims))
        guard signed else { return signingInput + "." }
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return signingInput + "." + base64URL(Data(mac))
    }

    func refused(_ authenticator: Authenticator, _ token: String, _ fragment: String? = nil) async {
        do {
            _ = try await authenticator.authenticate("Bearer \(token)")
            Issue.record("token accepted: \(token)")
        } catch {
            #expect(error.status == 401)
            if let fragment { #expect(error.message.contains(fragment), "\(error.message)") }
        }
    }

    @Test func tokensMustCarryAnUnexpiredExpiry() async throws {
        let authenticator = try await Authenticator(secret: secret)
        let fresh = try await authenticator.token(namespace: "team", device: "d")
        #expect(try await authenticator.authenticate("Bearer \(fresh)").device == "d")
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d")), "without expiry")
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: Date(timeIntervalSinceNow: -120))), "expired")
        // Within the leeway (60 s by default), a just-expired token still passes.
        #expect(try await authenticator.authenticate("Bearer \(try await sign(SyncClaims(namespace: "team", device: "d", expires: Date(timeIntervalSinceNow: -10))))").device == "d")
        // The explicit opt-out accepts tokens without `exp`, never expired ones.
        let lenient = try await Authenticator(secret: secret, policy: TokenPolicy(requireExpiry: false))
        #expect(try await lenient.authenticate("Bearer \(try await sign(SyncClaims(namespace: "team", device: "d")))").device == "d")
        await refused(lenient, try await sign(SyncClaims(namespace: "team", device: "d", expires: Date(timeIntervalSinceNow: -120))), "expired")
    }

    @Test func tokensFromTheFutureAreRefused() async throws {
        let authenticator = try await Authenticator(secret: secret, policy: TokenPolicy(leewaySeconds: 5))
        let later = Date(timeIntervalSinceNow: 3_600)
        let expiry = Date(timeIntervalSinceNow: 7_200)
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, notBefore: later)), "not valid before")
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, issuedAt: later)), "issued in the future")
        let now = try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, issuedAt: Date(), notBefore: Date()))
        #expect(try await authenticator.authenticate("Bearer \(now)").device == "d")
    }

    @Test func issuerAndAudienceAreCheckedWhenConfigured() async throws {
        let authenticator = try await Authenticator(secret: secret, policy: TokenPolicy(issuer: "auth.example", audience: "converge"))
        let expiry = Date(timeIntervalSinceNow: 600)
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, issuer: "evil", audience: "converge")), "issued by")
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, issuer: "auth.example", audience: "other")), "meant for")
        await refused(authenticator, try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry)), "issued by")
        let good = try await sign(SyncClaims(namespace: "team", device: "d", expires: expiry, issuer: "auth.example", audience: "converge"))
        #expect(try await authenticator.authenticate("Bearer \(good)").device == "d")
        // The server's own tokens carry its policy's claims.
        #expect(try await authenticator.authenticate("Bearer \(try await authenticator.token(namespace: "team", device: "e"))").device == "e")
    }

    @Test func theHeaderMustNameTheKeysAlgorithm() async throws {
        let authenticator = try await Authenticator(secret: secret)
        let claims = SyncClaims(namespace: "team", device: "d", expires: Date(timeIntervalSinceNow: 600))
        // The same HMAC-SHA256 signature, under headers that do not say HS256.
        #expect(try await authenticator.authenticate("Bearer \(try raw(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: claims, signed: true))").device == "d")
        await refused(authenticator, try raw(header: #"{"alg":"HS512","typ":"JWT"}"#, claims: claims, signed: true))
        await refused(authenticator, try raw(header: #"{"alg":"none","typ":"JWT"}"#, claims: claims, signed: false))
        await refused(authenticator, try raw(header: #"{"alg":"none","typ":"JWT"}"#, claims: claims, signed: true))
        // A token signed with another secret.
        await refused(authenticator, try await sign(claims, secret: "another secret, long enough for HS256 keys"))
    }

    @Test func refusedTokensAre401AndChangeNothing() async throws {
        try await TestServer.run { server, directory in
            let device = try await Device.make("device", server: server, in: directory)
            try device.execute("INSERT INTO notes(id, title) VALUES ('n', 'x')")
            try await device.sync()
            let store = try await server.store()
            let before = try await store.snapshot()
            let request = SyncRequest(replica: device.database.replicaID, pushUpTo: 1, changeset: WireEncoder.encode(try device.database.changes(since: 0).changeset))
            let noExpiry = try await sign(SyncClaims(namespace: "team", device: "device"), secret: server.service.configuration.jwtSecret)
            let expired = try await server.service.authenticator.token(namespace: "team", device: "device", expires: Date(timeIntervalSinceNow: -600))
            for token in [noExpiry, expired] {
                #expect(try await server.post(request.encoded(), token: token).status == 401)
                #expect(try await server.get("/v1/status", token: token).status == 401)
            }
            #expect(try await store.snapshot() == before)
        }
    }

    /// A token that expires during a run: the engine's next round gets a 401, asks the
    /// refresher once, and goes on with the fresh token.
    @Test func theRefresherRenewsATokenThatExpiresDuringARun() async throws {
        try await TestServer.run { server, directory in
            let refreshes = Mutex(0)
            // The server allows 60 s of clock leeway: this token is refused six seconds from now.
            let expiresAt = ContinuousClock.now + .seconds(6)
            let shortLived = try await server.service.authenticator.token(namespace: "team", device: "device", expires: Date(timeIntervalSinceNow: -54))
            let device = try await Device.make("device", server: server, in: directory, token: shortLived, refreshToken: {
                refreshes.withLock { $0 += 1 }
                return try await server.token(device: "device")
            })
            try device.execute("INSERT INTO notes(id, title) VALUES ('a', 'before expiry')")
            try await device.sync()
            // On a loaded machine the first round may already have outlived the token; then
            // it refreshed there, and the check below still needs one more refresh.
            if ContinuousClock.now < expiresAt - .seconds(1) { #expect(refreshes.withLock { $0 } == 0) }
            let before = refreshes.withLock { $0 }
            try await Task.sleep(until: expiresAt + .milliseconds(500))
            try device.execute("INSERT INTO notes(id, title) VALUES ('b', 'after expiry')")
            // The refreshed token is the server's own, valid for an hour: a refresh happens
            // only if the first round did not already take one.
            try await device.sync()
            #expect(refreshes.withLock { $0 } == max(before, 1))
            #expect(try await server.store().snapshot().records.count == 2)
        }
    }
}
