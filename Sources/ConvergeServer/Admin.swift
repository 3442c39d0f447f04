import ConvergeCore
import Foundation

/// The admin API (issue #21): an operator lists a namespace's devices and revokes one.
///
/// It has its own credential, ``ServerConfiguration/adminToken``, sent as
/// `Authorization: Bearer <admin token>`; a device's JWT is never accepted here, and without a
/// configured admin token the endpoints answer 404 (the API is off).
///
/// - `GET /admin/v1/namespaces/<namespace>/devices`: `{"devices": [{"device", "replica",
///   "boundAt", "lastSeen", "lastPush", "lastPull", "revokedAt", "rejections"}]}` (dates as
///   ISO-8601, absent when unknown; activity is kept since the namespace's store opened).
/// - `POST /admin/v1/namespaces/<namespace>/devices/<device>/revoke`: the device's tokens
///   are refused with 401 from then on, also after a restart; `{"revoked": true}`, or
///   `false` when it was revoked already.
/// - `POST /admin/v1/namespaces/<namespace>/devices/<device>/retire`: the device no longer
///   holds the namespace's tombstone collection back (DESIGN §9), as if the retention window
///   had passed; its next sync is answered 410 `reset_required`, and its engine resets and
///   comes back as a new replica, keeping what its user typed. `{"retired": true}`, or
///   `false` when it was retired already.
extension SyncService {
    /// A device's principal, refused (401) when the device is revoked: every device request
    /// goes through it.
    public func authenticate(_ authorization: String?) async throws(ServiceError) -> Principal {
        let principal = try await authenticator.authenticate(authorization)
        try await checkNotRevoked(principal)
        return principal
    }

    func checkNotRevoked(_ principal: Principal) async throws(ServiceError) {
        let revoked: Bool
        do {
            revoked = try await storage.existingStore(for: principal.namespace)?.isRevoked(device: principal.device) ?? false
        } catch {
            throw ServiceError(status: 500, code: "internal", message: "\(error)")
        }
        if revoked {
            throw ServiceError(status: 401, code: "revoked", message: "device \(principal.device) of namespace \(principal.namespace) is revoked")
        }
    }

    /// Checks the admin credential: constant-time, so that timing tells nothing about it.
    func authorizeAdmin(_ authorization: String?) throws(ServiceError) {
        guard let expected = configuration.adminToken else {
            throw ServiceError(status: 404, code: "not_found", message: "the admin API is off (no admin token configured)")
        }
        let prefix = "bearer "
        guard let authorization, authorization.count > prefix.count, authorization.prefix(prefix.count).lowercased() == prefix else {
            throw ServiceError(status: 401, code: "unauthorized", message: "missing admin bearer token")
        }
        let given = Array(authorization.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces).utf8)
        let wanted = Array(expected.utf8)
        var difference = UInt8(given.count == wanted.count ? 0 : 1)
        for index in 0..<max(given.count, wanted.count) {
            difference |= (index < given.count ? given[index] : 0) ^ (index < wanted.count ? wanted[index] : 0)
        }
        guard difference == 0 else { throw ServiceError(status: 401, code: "unauthorized", message: "invalid admin token") }
    }

    struct DevicesBody: Encodable {
        let namespace: String
        let devices: [DeviceInfo]
    }

    /// `GET /admin/v1/namespaces/<namespace>/devices`.
    public func adminDevices(authorization: String?, namespace: String) async -> ServiceResponse {
        do {
            try authorizeAdmin(authorization)
            guard Namespace.isValid(namespace) else { throw ServiceError(status: 400, code: "bad_namespace", message: "invalid namespace name") }
            let devices = try await storage.existingStore(for: namespace)?.devices() ?? []
            return .json(DevicesBody(namespace: namespace, devices: devices))
        } catch let error as ServiceError {
            return error.response
        } catch {
            return ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
    }

    /// `POST /admin/v1/namespaces/<namespace>/devices/<device>/revoke`.
    public func adminRevoke(authorization: String?, namespace: String, device: String) async -> ServiceResponse {
        do {
            try authorizeAdmin(authorization)
            guard Namespace.isValid(namespace) else { throw ServiceError(status: 400, code: "bad_namespace", message: "invalid namespace name") }
            guard (1...256).contains(device.utf8.count) else { throw ServiceError(status: 400, code: "bad_device", message: "invalid device name") }
            // Revoking a device of a namespace that does not exist yet creates it: the
            // revocation must hold once the device first pushes.
            let revoked = try await storage.store(for: namespace).revoke(device: device)
            return .json(["revoked": revoked])
        } catch let error as ServiceError {
            return error.response
        } catch {
            return ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
    }

    /// `POST /admin/v1/namespaces/<namespace>/devices/<device>/retire`.
    public func adminRetire(authorization: String?, namespace: String, device: String) async -> ServiceResponse {
        do {
            try authorizeAdmin(authorization)
            guard Namespace.isValid(namespace) else { throw ServiceError(status: 400, code: "bad_namespace", message: "invalid namespace name") }
            guard (1...256).contains(device.utf8.count) else { throw ServiceError(status: 400, code: "bad_device", message: "invalid device name") }
            guard let store = try await storage.existingStore(for: namespace) else {
                throw ServiceError(status: 404, code: "no_namespace", message: "namespace \(namespace) does not exist")
            }
            let retired = try await store.retire(device: device, nowMilliseconds: configuration.store.physicalTime())
            return .json(["retired": retired])
        } catch let error as ServiceError {
            return error.response
        } catch {
            return ServiceError(status: 500, code: "internal", message: "\(error)").response
        }
    }
}
