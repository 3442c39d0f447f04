import Foundation
import JWTKit

/// The claims of a sync token: the namespace it may read and write, and the device.
public struct SyncClaims: JWTPayload, Equatable {
    public var namespace: String
    public var device: String
    public var exp: ExpirationClaim?

    public init(namespace: String, device: String, expires: Date? = nil) {
        self.namespace = namespace
        self.device = device
        exp = expires.map { ExpirationClaim(value: $0) }
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp?.verifyNotExpired()
    }
}

/// Who a request comes from.
public struct Principal: Sendable, Hashable {
    public var namespace: String
    public var device: String
}

/// Verifies (and, for tools and tests, signs) bearer tokens: HS256 with the server's
/// secret, and ES256 with a public key when one is configured (tokens then come from the
/// app's own auth service, which keeps the private key).
public struct Authenticator: Sendable {
    private let keys: JWTKeyCollection
    private let es256Keys: JWTKeyCollection?

    /// - Parameter es256PublicKeyPEM: A P-256 public key in PEM form; tokens it verifies
    ///   are accepted too.
    /// - Throws: ``WeakSecret`` for a secret shorter than 32 bytes (HS256's hash size), or
    ///   jwt-kit's error for a key that is not a P-256 public key.
    public init(secret: String, es256PublicKeyPEM: String? = nil) async throws {
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
    }

    /// An ES256 token for `namespace` and `device`, signed with a P-256 private key in PEM
    /// form (what an app's auth service issues; for tools and tests).
    public static func es256Token(namespace: String, device: String, privateKeyPEM: String, expires: Date? = nil) async throws -> String {
        let collection = JWTKeyCollection()
        await collection.add(ecdsa: try ES256PrivateKey(pem: privateKeyPEM))
        return try await collection.sign(SyncClaims(namespace: namespace, device: device, expires: expires))
    }

    /// A signed token for `namespace` and `device`.
    public func token(namespace: String, device: String, expires: Date? = nil) async throws -> String {
        try await keys.sign(SyncClaims(namespace: namespace, device: device, expires: expires))
    }

    /// The principal of an `Authorization: Bearer …` header.
    public func authenticate(_ authorization: String?) async throws(ServiceError) -> Principal {
        guard let authorization else { throw ServiceError(status: 401, code: "unauthorized", message: "missing bearer token") }
        let prefix = "bearer "
        guard authorization.count > prefix.count, authorization.prefix(prefix.count).lowercased() == prefix else {
            throw ServiceError(status: 401, code: "unauthorized", message: "expected a bearer token")
        }
        let token = authorization.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        let claims: SyncClaims
        if let verified = try? await keys.verify(token, as: SyncClaims.self) {
            claims = verified
        } else if let es256Keys, let verified = try? await es256Keys.verify(token, as: SyncClaims.self) {
            claims = verified
        } else {
            throw ServiceError(status: 401, code: "unauthorized", message: "invalid token")
        }
        guard Namespace.isValid(claims.namespace) else {
            throw ServiceError(status: 401, code: "unauthorized", message: "invalid namespace in token")
        }
        guard (1...256).contains(claims.device.utf8.count) else {
            throw ServiceError(status: 401, code: "unauthorized", message: "invalid device in token")
        }
        return Principal(namespace: claims.namespace, device: claims.device)
    }
}

/// An HS256 secret must hold at least 32 bytes.
public struct WeakSecret: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String { "the JWT secret must be at least 32 bytes long" }
}

/// An error answer: an HTTP status and `{"error": {"code": …, "message": …}}`.
public struct ServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String

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
        let body = (try? JSONEncoder().encode(Body(error: .init(code: code, message: message)))) ?? Data()
        return ServiceResponse(status: status, contentType: "application/json", body: [UInt8](body))
    }
}
