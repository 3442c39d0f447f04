import Foundation
import JWTKit

/// The claims of a sync token: the namespace it may read and write, the device, and when
/// it may be used (`exp`, `nbf`, `iat`; optionally `iss` and `aud`).
///
/// The time claims are checked by ``Authenticator`` with its ``TokenPolicy`` (clock leeway
/// included), not here.
public struct SyncClaims: JWTPayload, Equatable {
    /// The namespace (one user's or team's data) the token may read and write.
    public var namespace: String
    /// The device the token was issued to; the server binds it to one replica.
    public var device: String
    /// When the token expires; required unless `TokenPolicy.requireExpiry` is off.
    public var exp: ExpirationClaim?
    /// When the token was issued; refused if in the future (beyond the leeway).
    public var iat: IssuedAtClaim?
    /// The token is refused before this time (beyond the leeway).
    public var nbf: NotBeforeClaim?
    /// Who issued the token; checked only when `TokenPolicy.issuer` is set.
    public var iss: IssuerClaim?
    /// Who the token is for; checked only when `TokenPolicy.audience` is set.
    public var aud: AudienceClaim?

    /// Claims for `device` in `namespace`; each nil date or string leaves its claim out.
    public init(
        namespace: String, device: String, expires: Date? = nil, issuedAt: Date? = nil, notBefore: Date? = nil,
        issuer: String? = nil, audience: String? = nil
    ) {
        self.namespace = namespace
        self.device = device
        exp = expires.map { ExpirationClaim(value: $0) }
        iat = issuedAt.map { IssuedAtClaim(value: $0) }
        nbf = notBefore.map { NotBeforeClaim(value: $0) }
        iss = issuer.map { IssuerClaim(value: $0) }
        aud = audience.map { AudienceClaim(value: [$0]) }
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// What a token must carry to be accepted, beyond a valid signature.
public struct TokenPolicy: Sendable, Hashable {
    /// Refuse tokens without `exp` (the default): a token that never expires cannot be
    /// taken back from a stolen device. Opt out only for tokens issued before this rule.
    public var requireExpiry: Bool
    /// How far the server's clock and the issuer's may disagree, for `exp`, `nbf` and `iat`.
    public var leewaySeconds: Int
    /// When set, `iss` must equal it.
    public var issuer: String?
    /// When set, `aud` must include it.
    public var audience: String?
    /// The lifetime of tokens this server signs (``Authenticator/token(namespace:device:expires:)``).
    public var lifetimeSeconds: Int

    /// Negative leeways count as 0, and lifetimes below 1 second as 1 second.
    public init(requireExpiry: Bool = true, leewaySeconds: Int = 60, issuer: String? = nil, audience: String? = nil, lifetimeSeconds: Int = 3_600) {
        self.requireExpiry = requireExpiry
        self.leewaySeconds = max(0, leewaySeconds)
        self.issuer = issuer
        self.audience = audience
        self.lifetimeSeconds = max(1, lifetimeSeconds)
    }
}

/// Who a request comes from.
public struct Principal: Sendable, Hashable {
    /// The namespace the request may read and write, from the token.
    public var namespace: String
    /// The device the token names.
    public var device: String
}

/// Verifies (and, for tools and tests, signs) bearer tokens: HS256 with the server's
/// secret, and ES256 with a public key when one is configured (tokens then come from the
/// app's own auth service, which keeps the private key).
///
/// A token is accepted only when its header names the algorithm of the key that verified
/// it (a valid HS256 signature under an `alg: none` or `HS512` header is refused), its
/// signature verifies, and its claims pass the ``TokenPolicy``: `exp` present and not past,
/// `nbf` and `iat` not in the future (each within the leeway), `iss` and `aud` as configured.
public struct Authenticator: Sendable {
    private let keys: JWTKeyCollection
    private let es256Keys: JWTKeyCollection?
    /// The rules tokens must pass beyond their signature.
    public let policy: TokenPolicy
    /// The wall clock; tests inject another.
    private let now: @Sendable () -> Date

    /// - Parameters:
    ///   - secret: The HS256 secret, at least 32 bytes.
    ///   - es256PublicKeyPEM: A P-256 public key in PEM form; tokens it verifies
    ///     are accepted too.
    ///   - policy: What a token must carry beyond a valid signature.
    ///   - now: The wall clock (tests inject another).
    /// - Throws: ``WeakSecret`` for a secret shorter than 32 bytes (HS256's hash size), or
    ///   jwt-kit's error for a key that is not a P-256 public key.
    public init(
        secret: String, es256PublicKeyPEM: String? = nil, policy: TokenPolicy = TokenPolicy(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws {
        guard secret.utf8.count >= 32 else { throw WeakSecret() }
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        if let es256PublicKeyPEM {
            let collection = JWTKeyCollection()
            await collection.add(ecdsa: try ES256PublicKey(pem: es256PublicKeyPEM))
            es256Keys = collection
        } else {
            es256Keys = nil
        }
        self.policy = policy
        self.now = now
    }

    /// An ES256 token for `namespace` and `device`, signed with a P-256 private key in PEM
    /// form (what an app's auth service issues; for tools and tests).
    public static func es256Token(
        namespace: String, device: String, privateKeyPEM: String, expires: Date? = Date(timeIntervalSinceNow: 3_600)
    ) async throws -> String {
        let collection = JWTKeyCollection()
        await collection.add(ecdsa: try ES256PrivateKey(pem: privateKeyPEM))
        return try await collection.sign(SyncClaims(namespace: namespace, device: device, expires: expires, issuedAt: Date()))
    }

    /// A signed token for `namespace` and `device`, expiring at `expires` (by default after
    /// the policy's lifetime), carrying the policy's `iss` and `aud` when it has them.
    public func token(namespace: String, device: String, expires: Date? = nil) async throws -> String {
        let issued = now()
        let expiry = expires ?? issued.addingTimeInterval(TimeInterval(policy.lifetimeSeconds))
        return try await keys.sign(SyncClaims(
            namespace: namespace, device: device, expires: expiry, issuedAt: issued, issuer: policy.issuer, audience: policy.audience))
    }

    /// The principal of an `Authorization: Bearer …` header.
    public func authenticate(_ authorization: String?) async throws(ServiceError) -> Principal {
        func refuse(_ message: String) -> ServiceError { ServiceError(status: 401, code: "unauthorized", message: message) }
        guard let authorization else { throw refuse("missing bearer token") }
        let prefix = "bearer "
        guard authorization.count > prefix.count, authorization.prefix(prefix.count).lowercased() == prefix else {
            throw refuse("expected a bearer token")
        }
        let token = authorization.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        guard token.utf8.count <= Self.maxTokenBytes else { throw refuse("token too long") }
        let algorithm = Self.headerAlgorithm(of: token)
        let claims: SyncClaims
        if algorithm == "HS256", let verified = try? await keys.verify(token, as: SyncClaims.self) {
            claims = verified
        } else if algorithm == "ES256", let es256Keys, let verified = try? await es256Keys.verify(token, as: SyncClaims.self) {
            claims = verified
        } else {
            throw refuse("invalid token")
        }
        let now = now()
        let leeway = TimeInterval(policy.leewaySeconds)
        if let exp = claims.exp {
            guard exp.value.addingTimeInterval(leeway) > now else { throw refuse("token expired at \(exp.value)") }
        } else if policy.requireExpiry {
            throw refuse("token without expiry (exp)")
        }
        if let nbf = claims.nbf, nbf.value > now.addingTimeInterval(leeway) { throw refuse("token not valid before \(nbf.value)") }
        if let iat = claims.iat, iat.value > now.addingTimeInterval(leeway) { throw refuse("token issued in the future (\(iat.value))") }
        if let issuer = policy.issuer, claims.iss?.value != issuer { throw refuse("token not issued by \(issuer)") }
        if let audience = policy.audience, !(claims.aud?.value.contains(audience) ?? false) { throw refuse("token not meant for \(audience)") }
        guard Namespace.isValid(claims.namespace) else { throw refuse("invalid namespace in token") }
        guard (1...256).contains(claims.device.utf8.count) else { throw refuse("invalid device in token") }
        return Principal(namespace: claims.namespace, device: claims.device)
    }

    /// Tokens longer than this are refused before any parsing.
    static let maxTokenBytes = 8_192

    /// The `alg` of a compact JWS's header, or `nil` when it cannot be read.
    static func headerAlgorithm(of token: String) -> String? {
        guard let header = token.split(separator: ".", omittingEmptySubsequences: false).first else { return nil }
        var base64 = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        return object["alg"] as? String
    }
}

/// An HS256 secret must hold at least 32 bytes.
public struct WeakSecret: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String { "the JWT secret must be at least 32 bytes long" }
}

/// An error answer: an HTTP status and `{"error": {"code": …, "message": …}}`.
public struct ServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The HTTP status of the answer.
    public var status: Int
    /// A stable, machine-readable code (such as `"internal"`) that clients can match on.
    public var code: String
    /// A human-readable explanation, for logs; not meant to be parsed.
    public var message: String

    /// An error answer with `status` and the body's `code` and `message`.
    public init(status: Int, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status) \(code): \(message)" }

    var response: ServiceResponse {
        struct Body: Encodable {
            struct Detail: Encodable {
                let code: String
                let message: String
            }
            let error: Detail
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            let body = try encoder.encode(Body(error: .init(code: code, message: message)))
            return ServiceResponse(status: status, contentType: "application/json", body: [UInt8](body))
        } catch {
            // Two strings always encode; were that ever to change, the answer still says
            // what happened instead of arriving empty.
            assertionFailure("an error answer could not be encoded: \(error)")
            let body = #"{"error":{"code":"internal","message":"the error answer could not be encoded"}}"#
            return ServiceResponse(status: 500, contentType: "application/json", body: Array(body.utf8))
        }
    }
}
