import ConvergeServer
import Foundation
import JWTKit
import Testing

@Suite struct AuthenticatorTests {
    let secret = "a secret long enough for HS256 keys, 32+ bytes"

    @Test func es256TokensFromTheAppsAuthServiceAreAccepted() async throws {
        let issuer = ES256PrivateKey()
        let authenticator = try await Authenticator(secret: secret, es256PublicKeyPEM: issuer.publicKey.pemRepresentation)
        let token = try await Authenticator.es256Token(namespace: "team", device: "phone", privateKeyPEM: issuer.pemRepresentation)
        let principal = try await authenticator.authenticate("Bearer \(token)")
        #expect(principal.namespace == "team" && principal.device == "phone")
        // HS256 tokens still work beside it.
        let hs256 = try await authenticator.token(namespace: "team", device: "laptop")
        #expect(try await authenticator.authenticate("Bearer \(hs256)").device == "laptop")
    }

    @Test func es256TokensFromAnotherKeyAreRefused() async throws {
        let authenticator = try await Authenticator(secret: secret, es256PublicKeyPEM: ES256PrivateKey().publicKey.pemRepresentation)
        let forged = try await Authenticator.es256Token(namespace: "team", device: "phone", privateKeyPEM: ES256PrivateKey().pemRepresentation)
        await #expect(throws: ServiceError.self) { try await authenticator.authenticate("Bearer \(forged)") }
        // Without a configured key, ES256 is refused altogether.
        let hs256Only = try await Authenticator(secret: secret)
        await #expect(throws: ServiceError.self) { try await hs256Only.authenticate("Bearer \(forged)") }
    }
}
