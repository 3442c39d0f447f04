import AsyncHTTPClient
import ConvergeServer
import ConvergeSQLite
import ConvergeSync
import Foundation
import GRDB
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The operator page (issue #21): `GET /admin`, its login, its protections (a session
/// cookie, a CSRF token, the page's own origin; never a device token), names escaped, and a
/// real browser that logs in and revokes a device.
@Suite(.timeLimit(.minutes(3))) struct OperatorPageTests {
    static let adminToken = AdminTests.adminToken
    /// A device name that would run markup if the page did not escape it.
    static let hostileName = #"<b id="evil">x</b><img src=x>&"'"#

    /// A server with an admin token and three devices that synced: `phone` pushed a note,
    /// `laptop` and the hostile one pulled.
    static func withServer(_ body: (TestServer, [String: Device]) async throws -> Void) async throws {
        let server = try await TestServer.start(configure: { $0.adminToken = adminToken })
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            var devices: [String: Device] = [:]
            for name in ["phone", "laptop"] {
                devices[name] = try await Device.make(name, server: server, in: directory)
            }
            // Its database file is named plainly; the server knows it by its token's name.
            devices[hostileName] = try await Device.make("hostile", server: server, in: directory, token: try await server.token(device: hostileName))
            try devices["phone"]!.execute("INSERT INTO notes(id, title) VALUES ('n1', 'hello')")
            for name in ["phone", "laptop", hostileName] { try await devices[name]!.sync() }
            try await body(server, devices)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// Whether the admin API lists `device` of `team` as revoked.
    static func isRevoked(_ device: String, _ server: TestServer) async throws -> Bool {
        let answer = await server.service.adminDevices(authorization: "Bearer \(adminToken)", namespace: "team")
        let json = try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any]
        let devices = json?["devices"] as? [[String: Any]] ?? []
        return devices.first { $0["device"] as? String == device }?["revokedAt"] != nil
    }

    // MARK: Over HTTP

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
    }

    /// One request, redirects not followed, cookies only as given.
    static func send(
        _ client: HTTPClient, _ server: TestServer, _ method: HTTPMethod, _ path: String, form: String? = nil, cookie: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: server.baseURL.absoluteString + path)
        request.method = method
        if let cookie { request.headers.add(name: "Cookie", value: cookie) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let form {
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: form))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 4 << 20)
        return Answer(status: Int(response.status.code), headers: response.headers, body: String(buffer: body))
    }

    static func formValue(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }

    @Test func theLoginAndEveryActionAreProtected() async throws {
        try await Self.withServer { server, devices in
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))
            do {
                // Without a session: the login form, and nothing of the namespaces.
                let anonymous = try await Self.send(client, server, .GET, "/admin")
                #expect(anonymous.status == 200 && anonymous.body.contains(#"<form id="login""#) && !anonymous.body.contains("phone"))
                #expect(anonymous.headers["Content-Security-Policy"].first?.contains("default-src 'none'") == true)
                // A wrong token, a device's JWT, or the admin token as a bearer header open nothing.
                let wrong = try await Self.send(client, server, .POST, "/admin/login", form: "token=" + Self.formValue(Self.adminToken + "x"))
                #expect(wrong.status == 401 && wrong.body.contains("Wrong admin token") && wrong.headers["Set-Cookie"].isEmpty)
                let jwt = try await server.token(device: "phone")
                #expect(try await Self.send(client, server, .POST, "/admin/login", form: "token=" + jwt).status == 401)
                let bearer = try await Self.send(client, server, .GET, "/admin", headers: [("Authorization", "Bearer \(Self.adminToken)")])
                #expect(bearer.body.contains(#"<form id="login""#) && !bearer.body.contains("phone"))
                #expect(try await Self.send(client, server, .POST, "/admin/devices", form: "namespace=team&device=phone&action=revoke",
                                            cookie: "converge_admin=\(jwt)").status == 401)
                // A login posted from another site is refused.
                let foreign = try await Self.send(
                    client, server, .POST, "/admin/login", form: "token=" + Self.formValue(Self.adminToken), headers: [("Origin", "http://evil.example")])
                #expect(foreign.status == 403 && foreign.headers["Set-Cookie"].isEmpty)

                // The right token: a session cookie that scripts cannot read and other sites cannot send.
                let login = try await Self.send(client, server, .POST, "/admin/login", form: "token=" + Self.formValue(Self.adminToken))
                #expect(login.status == 303 && login.headers["Location"].first == "/admin")
                let setCookie = try #require(login.headers["Set-Cookie"].first)
                #expect(setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict") && !setCookie.contains("Secure"))
                let cookie = String(setCookie.prefix { $0 != ";" })
                let page = try await Self.send(client, server, .GET, "/admin", cookie: cookie)
                #expect(page.status == 200 && page.body.contains(#"data-device="phone""#) && page.body.contains(#"data-namespace="team""#))
                // The hostile name is shown as text, never as markup.
                #expect(page.body.contains("&lt;b id=&quot;evil&quot;&gt;x&lt;/b&gt;&lt;img src=x&gt;&amp;&quot;&#39;"))
                #expect(!page.body.contains(#"<b id="evil">"#) && !page.body.contains("<img"))
                let csrf = try #require(page.body.firstMatch(of: /name="csrf" value="([0-9a-f]{64})"/)?.output.1).description

                // An action needs the session, its CSRF token and the page's origin.
                let revokePhone = "namespace=team&device=phone&action=revoke"
                #expect(try await Self.send(client, server, .POST, "/admin/devices", form: revokePhone, cookie: cookie).status == 403)
                #expect(try await Self.send(client, server, .POST, "/admin/devices", form: revokePhone + "&csrf=" + String(repeating: "0", count: 64), cookie: cookie).status == 403)
                #expect(try await Self.send(client, server, .POST, "/admin/devices", form: revokePhone + "&csrf=" + csrf).status == 401)
                #expect(try await Self.send(
                    client, server, .POST, "/admin/devices", form: revokePhone + "&csrf=" + csrf, cookie: cookie,
                    headers: [("Origin", "http://evil.example")]).status == 403)
                #expect(try await !Self.isRevoked("phone", server))
                let revoked = try await Self.send(
                    client, server, .POST, "/admin/devices", form: revokePhone + "&csrf=" + csrf, cookie: cookie,
                    headers: [("Origin", "http://127.0.0.1:\(server.port)")])
                #expect(revoked.status == 303)
                #expect(try await Self.isRevoked("phone", server))
                // The hostile device is revoked by its exact name through the form too.
                let hostile = "namespace=team&device=\(Self.formValue(Self.hostileName))&action=revoke&csrf=\(csrf)"
                #expect(try await Self.send(client, server, .POST, "/admin/devices", form: hostile, cookie: cookie).status == 303)
                #expect(try await Self.isRevoked(Self.hostileName, server))
                #expect(try await !Self.isRevoked("laptop", server))
                await #expect(throws: SyncError.self) { try await devices["phone"]!.sync() }

                // Activity is counted: the rounds above succeeded, the revoked one failed.
                let after = try await Self.send(client, server, .GET, "/admin", cookie: cookie)
                #expect(after.body.contains(#"data-device="phone" data-state="revoked""#))
                #expect(after.body.contains("<code>unauthorized</code>"))

                // Logging out ends the session.
                #expect(try await Self.send(client, server, .POST, "/admin/logout", form: "csrf=" + csrf, cookie: cookie).status == 303)
                let ended = try await Self.send(client, server, .GET, "/admin", cookie: cookie)
                #expect(ended.body.contains(#"<form id="login""#) && !ended.body.contains("phone"))
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()
        }
    }

    @Test func theCookieIsSecureOverTLS() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let authority = try TLSTests.Authority.make(in: directory)
        let server = try await TestServer.start(configure: {
            $0.adminToken = Self.adminToken
            $0.tls = authority.settings
        })
        let client = try TLSTests.client(trusting: authority.caPEM)
        do {
            var request = HTTPClientRequest(url: TLSTests.httpsURL(server) + "/admin/login")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: "token=" + Self.formValue(Self.adminToken)))
            let response = try await client.execute(request, timeout: .seconds(30))
            #expect(response.status.code == 303)
            #expect(response.headers["Set-Cookie"].first?.contains("; Secure") == true)
        } catch {
            try? await client.shutdown()
            await server.stop()
            throw error
        }
        try await client.shutdown()
        await server.stop()
    }

    // MARK: In a browser

    @Test(.enabled(if: Chromium.executable != nil, "chromium is not installed (apt-get install chromium; .ci/run installs it)"))
    func anOperatorLogsInAndRevokesADeviceInABrowser() async throws {
        try await Self.withServer { server, devices in
            let browser = try await Chromium.launch()
            do {
                try await browser.drive { page in
                    let admin = server.baseURL.absoluteString + "/admin"
                    try await page.navigate(admin)
                    try await page.waitFor("document.getElementById('login') !== null")
                    // A wrong token: the 401 page, still a login form.
                    try await page.evaluate("document.getElementById('token').value = 'not the token'; document.getElementById('login').submit()")
                    try await page.waitFor("document.getElementById('login-error') !== null")
                    #expect(try await page.evaluate("document.getElementById('login-error').textContent").contains("Wrong admin token"))

                    try await page.evaluate("document.getElementById('token').value = \(Chromium.quoted(Self.adminToken)); document.getElementById('login').submit()")
                    try await page.waitFor(#"document.querySelector('tr[data-device="phone"]') !== null"#)
                    // The cookie is out of reach of scripts.
                    #expect(try await page.evaluate("document.cookie") == "")
                    // The hostile name is text: no element it would have made.
                    #expect(try await page.evaluate("document.getElementById('evil') === null && document.images.length === 0") == "true")
                    #expect(try await page.evaluate("document.body.innerText").contains(Self.hostileName))

                    try await page.evaluate(#"document.querySelector('tr[data-device="phone"] button[value="revoke"]').click()"#)
                    try await page.waitFor(#"document.querySelector('tr[data-device="phone"]')?.dataset.state === 'revoked'"#)
                    #expect(try await page.evaluate(#"document.querySelector('tr[data-device="laptop"]').dataset.state"#) == "active")

                    let png = try await page.screenshot()
                    let folder = ProcessInfo.processInfo.environment["CONVERGE_TEST_ARTIFACTS"].map { URL(fileURLWithPath: $0) }
                        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                            .appendingPathComponent(".build/test-artifacts")
                    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                    let file = folder.appendingPathComponent("operator-page.png")
                    try png.write(to: file)
                    print("operator page screenshot: \(file.path)")
                    #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
                }
            } catch {
                await browser.quit()
                throw error
            }
            await browser.quit()
            // Revoked for real: the admin API says so, and the device's next sync is refused.
            #expect(try await Self.isRevoked("phone", server))
            #expect(try await !Self.isRevoked("laptop", server))
            try devices["phone"]!.execute("INSERT INTO notes(id, title) VALUES ('n2', 'after revocation')")
            await #expect(throws: SyncError.self) { try await devices["phone"]!.sync() }
            if case .unauthorized = await devices["phone"]!.engine.status.lastError {} else { Issue.record("expected unauthorized") }
            try await devices["laptop"]!.sync()
        }
    }
}

/// Headless Chromium driven over the DevTools protocol (a WebSocket of JSON commands):
/// `--screenshot` and `--dump-dom` load a page but cannot type or click.
final class Chromium: Sendable {
    static let executable: String? = {
        let candidates = [ProcessInfo.processInfo.environment["CHROMIUM"], "/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    let process: Process
    let profile: URL
    /// The DevTools WebSocket of the browser's first page.
    let pageURL: String

    private init(process: Process, profile: URL, pageURL: String) {
        self.process = process
        self.profile = profile
        self.pageURL = pageURL
    }

    /// Starts the browser on a port of its choosing and finds its page.
    static func launch() async throws -> Chromium {
        let profile = try Fixtures.temporaryDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable!)
        process.arguments = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,900",
            "--user-data-dir=\(profile.path)", "about:blank",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        do {
            // Chromium writes its port, then its browser endpoint, to this file once it listens.
            let portFile = profile.appendingPathComponent("DevToolsActivePort")
            var port: Int?
            for _ in 0..<300 where port == nil {
                if let text = try? String(contentsOf: portFile, encoding: .utf8), let line = text.split(separator: "\n").first { port = Int(line) }
                if port == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard let port else { throw ChromiumError("chromium did not open its DevTools port within 30 s") }
            var pageURL: String?
            for _ in 0..<100 where pageURL == nil {
                // AsyncHTTPClient: FoundationNetworking fails on the DevTools server's answers.
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/json/list"), timeout: .seconds(10))
                let body = try await response.body.collect(upTo: 1 << 20)
                let targets = (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [[String: Any]]) ?? []
                pageURL = targets.first { $0["type"] as? String == "page" }?["webSocketDebuggerUrl"] as? String
                if pageURL == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard let pageURL else { throw ChromiumError("chromium has no page target") }
            return Chromium(process: process, profile: profile, pageURL: pageURL)
        } catch {
            await Chromium(process: process, profile: profile, pageURL: "").quit()
            throw error
        }
    }

    /// Runs `body` with a DevTools session on the page, then closes the session.
    func drive(_ body: @escaping @Sendable (DevToolsPage) async throws -> Void) async throws {
        var logger = Logger(label: "converge-test-cdp")
        logger.logLevel = .critical
        let failure = Mutex<(any Error)?>(nil)
        let finished = Mutex(false)
        try await WebSocketClient.connect(url: pageURL, configuration: .init(maxFrameSize: 1 << 26), logger: logger) { inbound, outbound, _ in
            let page = DevToolsPage(outbound: outbound)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await message in inbound.messages(maxSize: 1 << 26) {
                        if case .text(let text) = message { await page.receive(text) }
                    }
                    await page.closed()
                }
                do {
                    try await body(page)
                    finished.withLock { $0 = true }
                } catch {
                    failure.withLock { $0 = error }
                }
                try await outbound.close(.normalClosure, reason: nil)
                group.cancelAll()
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        guard finished.withLock({ $0 }) else { throw ChromiumError("the DevTools session ended early") }
    }

    /// Ends the browser (and its helper processes, which leave with it), waiting off the
    /// test threads; a browser that does not leave within 5 s is killed.
    func quit() async {
        let process = self.process
        if process.isRunning { process.terminate() }
        _ = try? await offload {
            for _ in 0..<50 where process.isRunning { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: profile)
    }

    /// `text` as a JavaScript string literal.
    static func quoted(_ text: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [text])
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
}

struct ChromiumError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One page's DevTools session: commands answered by id (events are ignored; the test
/// polls the page instead of waiting for load events).
actor DevToolsPage {
    private let outbound: WebSocketOutboundWriter
    private var nextID = 0
    private var waiting: [Int: CheckedContinuation<String, any Error>] = [:]
    private var isClosed = false

    init(outbound: WebSocketOutboundWriter) {
        self.outbound = outbound
    }

    func receive(_ text: String) {
        guard let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], let id = json["id"] as? Int else { return }
        waiting.removeValue(forKey: id)?.resume(returning: text)
    }

    func closed() {
        isClosed = true
        for continuation in waiting.values { continuation.resume(throwing: ChromiumError("the DevTools connection closed")) }
        waiting = [:]
    }

    /// Sends a command and returns its `result` (as JSON text), or throws its `error`.
    func call(_ method: String, _ params: [String: any Sendable] = [:]) async throws -> String {
        guard !isClosed else { throw ChromiumError("the DevTools connection is closed") }
        nextID += 1
        let id = nextID
        let message = String(decoding: try JSONSerialization.data(withJSONObject: ["id": id, "method": method, "params": params] as [String: Any]), as: UTF8.self)
        let outbound = self.outbound
        let answer = try await withCheckedThrowingContinuation { continuation in
            waiting[id] = continuation
            Task {
                do {
                    try await outbound.write(.text(message))
                } catch {
                    self.fail(id, error)
                }
            }
        }
        let json = try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any] ?? [:]
        if let error = json["error"] as? [String: Any] { throw ChromiumError("\(method): \(error["message"] ?? error)") }
        let result = json["result"] ?? [String: Any]()
        return String(decoding: try JSONSerialization.data(withJSONObject: result), as: UTF8.self)
    }

    private func fail(_ id: Int, _ error: any Error) {
        waiting.removeValue(forKey: id)?.resume(throwing: error)
    }

    private static func object(_ json: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]) ?? [:]
    }

    func navigate(_ url: String) async throws {
        _ = try await call("Page.navigate", ["url": url])
    }

    /// Runs `expression` in the page (as the console would: the page's CSP forbids `eval`,
    /// not this) and returns its value as text: `true`/`false`, a string, or "" for none.
    @discardableResult
    func evaluate(_ expression: String) async throws -> String {
        let result = Self.object(try await call("Runtime.evaluate", ["expression": expression, "returnByValue": true]))
        if let exception = result["exceptionDetails"] { throw ChromiumError("\(expression): \(exception)") }
        switch (result["result"] as? [String: Any])?["value"] {
        case let value as String: return value
        case let value as Bool: return value ? "true" : "false"
        case let value?: return "\(value)"
        case nil: return ""
        }
    }

    /// Polls until `condition` is true in the page (a page still loading counts as false).
    func waitFor(_ condition: String, seconds: Int = 30) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if (try? await evaluate(condition)) == "true" { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        let shown = (try? await evaluate("location.href + ': ' + document.body.innerText.slice(0, 400)")) ?? "?"
        throw ChromiumError("timed out waiting for \(condition); the page: \(shown)")
    }

    /// A PNG of the whole page.
    func screenshot() async throws -> Data {
        let result = Self.object(try await call("Page.captureScreenshot", ["format": "png", "captureBeyondViewport": true]))
        guard let base64 = result["data"] as? String, let data = Data(base64Encoded: base64) else { throw ChromiumError("no screenshot data") }
        return data
    }
}
