import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// The operator page (issue #21): `GET /admin`, a server-rendered HTML page over the admin
/// API, for an operator with a browser rather than curl.
///
/// A browser cannot send the admin token as a header on every click, so the page has a
/// login form: the admin token posted once opens a session, held in an `HttpOnly`,
/// `SameSite=Strict` cookie (`Secure` on HTTPS) that scripts cannot read and other sites
/// cannot make the browser send. Every action is a form post that must also carry the
/// session's own CSRF token and, when the browser sends one, the page's own `Origin`. A
/// device's JWT opens nothing here. Sessions live in memory: a restart logs operators out.
///
/// - `GET /admin`: the login form, or the page (namespaces, devices, activity).
/// - `POST /admin/login` (`token`): a session and back to the page; 401 for a wrong token.
/// - `POST /admin/devices` (`namespace`, `device`, `action` = `revoke` or `retire`, `csrf`):
///   the admin API's call, then back to the page.
/// - `POST /admin/logout` (`csrf`): ends the session.
enum OperatorPage {
    static let cookieName = "converge_admin"
    /// Namespaces listed on the page; more are counted, and any can be shown by name.
    static let maxListedNamespaces = 50
    /// The largest form accepted (a token, names and a CSRF token fit in far less).
    static let maxFormBytes = 16 << 10

    static func addRoutes(to router: Router<BasicRequestContext>, service: SyncService) {
        let sessions = OperatorSessions()
        let secure = service.configuration.tls != nil
        router.get("/admin") { request, _ -> Response in
            guard service.configuration.adminToken != nil else { return page(404, OperatorHTML.message("The operator page is off", "Start the server with --admin-token to turn it on.")) }
            guard let session = sessions.session(request.cookies[cookieName]?.value) else {
                return page(200, OperatorHTML.login(error: nil))
            }
            let shown = request.uri.queryParameters.get("namespace").flatMap { Namespace.isValid($0) ? $0 : nil }
            let overview = await OperatorOverview.gather(service: service, namespace: shown, limit: maxListedNamespaces)
            return page(200, OperatorHTML.dashboard(overview, csrf: session.csrf))
        }
        router.post("/admin/login") { request, _ -> Response in
            guard let expected = service.configuration.adminToken else { return page(404, OperatorHTML.message("The operator page is off", "Start the server with --admin-token to turn it on.")) }
            guard sameOrigin(request, secure: secure) else { return page(403, OperatorHTML.message("Refused", "This form must be sent from the operator page itself.")) }
            let form = try await OperatorForm(request)
            guard let token = form["token"], constantTimeEqual(token, expected) else {
                return page(401, OperatorHTML.login(error: "Wrong admin token."))
            }
            let session = sessions.open()
            var answer = redirect("/admin")
            var cookie = "\(cookieName)=\(session.id); Path=/admin; HttpOnly; SameSite=Strict; Max-Age=\(Int(OperatorSessions.lifetimeSeconds))"
            if secure { cookie += "; Secure" }
            answer.headers[.setCookie] = cookie
            return answer
        }
        router.post("/admin/logout") { request, _ -> Response in
            let id = request.cookies[cookieName]?.value
            guard let session = sessions.session(id) else { return redirect("/admin") }
            let form = try await OperatorForm(request)
            guard sameOrigin(request, secure: secure), let csrf = form["csrf"], constantTimeEqual(csrf, session.csrf) else {
                return page(403, OperatorHTML.message("Refused", "This form must be sent from the operator page itself."))
            }
            sessions.close(id)
            var answer = redirect("/admin")
            answer.headers[.setCookie] = "\(cookieName)=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0" + (secure ? "; Secure" : "")
            return answer
        }
        router.post("/admin/devices") { request, _ -> Response in
            guard let adminToken = service.configuration.adminToken else { return page(404, OperatorHTML.message("The operator page is off", "Start the server with --admin-token to turn it on.")) }
            guard let session = sessions.session(request.cookies[cookieName]?.value) else {
                return page(401, OperatorHTML.login(error: "Your session has ended: log in again."))
            }
            let form = try await OperatorForm(request)
            guard sameOrigin(request, secure: secure), let csrf = form["csrf"], constantTimeEqual(csrf, session.csrf) else {
                return page(403, OperatorHTML.message("Refused", "This form must be sent from the operator page itself."))
            }
            let namespace = form["namespace"] ?? "", device = form["device"] ?? ""
            let authorization = "Bearer \(adminToken)"
            let answer: ServiceResponse
            switch form["action"] {
            case "revoke": answer = await service.adminRevoke(authorization: authorization, namespace: namespace, device: device)
            case "retire": answer = await service.adminRetire(authorization: authorization, namespace: namespace, device: device)
            default: return page(400, OperatorHTML.message("Unknown action", "The form asked for neither revoke nor retire."))
            }
            guard answer.status == 200 else {
                return page(answer.status, OperatorHTML.message("The server refused", String(decoding: answer.body, as: UTF8.self)))
            }
            return redirect("/admin?namespace=" + (namespace.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
        }
    }

    /// An HTML answer that no other site may frame, that runs no script, and that no cache
    /// keeps. Its referrer policy is `same-origin`, not `no-referrer`: under the latter a
    /// browser sends `Origin: null` with the page's own form posts, which could then not be
    /// told from another site's.
    static func page(_ status: Int, _ html: String) -> Response {
        Response(
            status: HTTPResponse.Status(code: status),
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                .init("X-Frame-Options")!: "DENY", .init("Referrer-Policy")!: "same-origin",
                .xContentTypeOptions: "nosniff",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// 303: after a form post, the browser loads the page with a GET (a reload does not
    /// post again).
    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// Whether a form post comes from this server's own pages: its `Origin` (sent by every
    /// current browser with a post), else its `Sec-Fetch-Site`, must not name another site.
    /// Requests with neither (not from a browser) rely on the cookie and the CSRF token.
    static func sameOrigin(_ request: Request, secure: Bool) -> Bool {
        if let origin = request.headers[.origin] {
            guard let host = request.head.authority else { return false }
            return origin == "\(secure ? "https" : "http")://\(host)"
        }
        if let site = request.headers[.init("Sec-Fetch-Site")!] {
            return site == "same-origin" || site == "none"
        }
        return true
    }

    /// Compares secrets in time that depends on their lengths only.
    static func constantTimeEqual(_ given: String, _ expected: String) -> Bool {
        let a = Array(given.utf8), b = Array(expected.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}

/// The operator sessions: random identifiers (the cookie) with their CSRF token, expiring
/// after `lifetimeSeconds`, at most `maxSessions` at once (the oldest goes first).
final class OperatorSessions: Sendable {
    static let lifetimeSeconds: Double = 8 * 3_600
    static let maxSessions = 64

    struct Session: Sendable {
        let id: String
        let csrf: String
        let expires: ContinuousClock.Instant
    }

    private let clock = ContinuousClock()
    private let sessions = NIOLockedValueBox<[String: Session]>([:])

    func open() -> Session {
        let session = Session(id: Self.randomToken(), csrf: Self.randomToken(), expires: clock.now + .seconds(Self.lifetimeSeconds))
        let now = clock.now
        sessions.withLockedValue { sessions in
            sessions = sessions.filter { $0.value.expires > now }
            while sessions.count >= Self.maxSessions, let oldest = sessions.min(by: { $0.value.expires < $1.value.expires }) {
                sessions[oldest.key] = nil
            }
            sessions[session.id] = session
        }
        return session
    }

    /// The session of a cookie value, if it is one and has not expired.
    func session(_ id: String?) -> Session? {
        guard let id, !id.isEmpty else { return nil }
        let now = clock.now
        return sessions.withLockedValue { sessions in
            guard let session = sessions[id] else { return nil }
            guard session.expires > now else {
                sessions[id] = nil
                return nil
            }
            return session
        }
    }

    func close(_ id: String?) {
        guard let id else { return }
        sessions.withLockedValue { $0[id] = nil }
    }

    /// 32 random bytes, hexadecimal.
    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}

/// An `application/x-www-form-urlencoded` body, at most ``OperatorPage/maxFormBytes``.
struct OperatorForm {
    private var fields: [String: String] = [:]

    init(_ request: Request) async throws {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: OperatorPage.maxFormBytes)
        } catch is NIOTooManyBytesError {
            throw HTTPError(.contentTooLarge, message: "a form of the operator page is at most \(OperatorPage.maxFormBytes) bytes")
        }
        self.init(String(buffer: buffer))
    }

    init(_ text: String) {
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ part: Substring) -> String? { part.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let name = parts.first.flatMap(decode), fields[name] == nil else { continue }
            fields[name] = parts.count > 1 ? decode(parts[1]) : ""
        }
    }

    subscript(name: String) -> String? { fields[name] }
}
