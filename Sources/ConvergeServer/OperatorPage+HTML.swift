import ConvergeCore
import Foundation

/// What the operator page shows, read from the storage and the metrics when it is loaded.
struct OperatorOverview: Sendable {
    struct Device: Sendable {
        var info: DeviceInfo
        var retired: Bool
        var state: String { info.revokedAt != nil ? "revoked" : retired ? "retired" : "active" }
    }

    struct NamespaceSummary: Sendable {
        var name: String
        var devices: [Device] = []
        var conflicts = 0
        var quarantined = 0
        var storedBytes: Int64?
        /// Why its details could not be read, if they could not.
        var error: String?
        var rejections: Int { devices.reduce(0) { $0 + $1.info.rejections } }
    }

    var namespaces: [NamespaceSummary] = []
    /// Namespaces that exist in all (`nil`: the storage cannot list them).
    var totalNamespaces: Int?
    /// The namespace asked for by name (`?namespace=`), shown first.
    var asked: String?
    var activity: RecentActivity.Summary
    var listingError: String?

    static func gather(service: SyncService, namespace asked: String?, limit: Int) async -> OperatorOverview {
        var overview = OperatorOverview(asked: asked, activity: service.metrics.activity())
        var names: [String] = []
        if let inventory = service.storage as? any NamespaceInventory {
            do {
                let listed = try await inventory.namespaces(limit: limit)
                names = listed.names
                overview.totalNamespaces = listed.total
            } catch {
                overview.listingError = "\(error)"
            }
        }
        if let asked, !names.contains(asked) { names.insert(asked, at: 0) }
        for name in names {
            overview.namespaces.append(await details(of: name, service: service))
        }
        return overview
    }

    private static func details(of name: String, service: SyncService) async -> NamespaceSummary {
        var namespace = NamespaceSummary(name: name)
        do {
            guard let store = try await service.storage.existingStore(for: name) else {
                namespace.error = "no such namespace"
                return namespace
            }
            for info in try await store.devices() {
                let standing = try await store.standing(of: info.device)
                namespace.devices.append(Device(info: info, retired: standing?.retiredMilliseconds != nil))
            }
            namespace.conflicts = try await store.conflicts().count
            namespace.quarantined = try await store.quarantinedCount()
            namespace.storedBytes = try await (service.storage as? any NamespaceInventory)?.storedBytes(of: name)
        } catch {
            namespace.error = "\(error)"
        }
        return namespace
    }
}

/// The operator page's HTML: every value from outside (device and namespace names, error
/// messages) goes through ``escape(_:)``; no script at all.
enum OperatorHTML {
    /// `text` safe inside an element or a quoted attribute.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static let style = """
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
        header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;align-items:center;gap:16px}
        header h1{font-size:17px;margin:0;flex:1}header a{color:#cfd6e4}
        main{max-width:1100px;margin:0 auto;padding:16px 24px}
        section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 16px;margin:0 0 16px}
        h2{font-size:15px;margin:4px 0 10px}h2 small{font-weight:normal;color:#5d6675}
        table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
        th{font-weight:600;color:#5d6675;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
        td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}
        .stats{display:flex;flex-wrap:wrap;gap:12px}.stat{border:1px solid #eceef2;border-radius:6px;padding:8px 12px;min-width:140px}
        .stat b{display:block;font-size:20px}.stat span{color:#5d6675;font-size:12px}
        .state-active{color:#17733a}.state-revoked{color:#b3261e;font-weight:600}.state-retired{color:#8a5a00}
        button{font:inherit;padding:3px 10px;border-radius:4px;border:1px solid #b9c0cc;background:#fff;cursor:pointer}
        button.danger{border-color:#b3261e;color:#b3261e}form.inline{display:inline}
        .error{color:#b3261e}.login{max-width:360px;margin:80px auto}
        input[type=password],input[type=text]{font:inherit;padding:5px 8px;border:1px solid #b9c0cc;border-radius:4px;width:100%;box-sizing:border-box;margin:6px 0 10px}
        """

    static func document(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title><style>\(style)</style></head>
        <body>\(body)</body></html>
        """
    }

    static func login(error: String?) -> String {
        document(title: "Converge operator: log in", body: """
            <main><section class="login"><h2>Converge operator page</h2>
            \(error.map { "<p class=\"error\" id=\"login-error\">\(escape($0))</p>" } ?? "")
            <form id="login" method="post" action="/admin/login">
            <label for="token">Admin token</label>
            <input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
            <button type="submit">Log in</button></form></section></main>
            """)
    }

    static func message(_ title: String, _ text: String) -> String {
        document(title: title, body: """
            <main><section><h2>\(escape(title))</h2><p class="error">\(escape(text))</p><p><a href="/admin">Back to the operator page</a></p></section></main>
            """)
    }

    static func dashboard(_ overview: OperatorOverview, csrf: String) -> String {
        let activity = overview.activity
        var body = """
            <header><h1>Converge operator page</h1><a href="/admin">Refresh</a>
            <form class="inline" method="post" action="/admin/logout"><input type="hidden" name="csrf" value="\(escape(csrf))"><button type="submit">Log out</button></form></header>
            <main><section><h2>Activity <small>since the server started; rounds are sync requests</small></h2><div class="stats">
            \(stat("\(activity.thisMinute.succeeded + activity.thisMinute.failed)", "rounds this minute", id: "rounds-this-minute"))
            \(stat("\(activity.lastMinute.succeeded + activity.lastMinute.failed)", "rounds last minute"))
            \(stat("\(activity.lastHour.succeeded)", "rounds, last hour", id: "rounds-last-hour"))
            \(stat("\(activity.lastHour.failed)", "failed rounds, last hour", id: "errors-last-hour"))
            \(stat("\(activity.rejections)", "changes rejected"))
            \(stat("\(activity.resetsRequired)", "resets required"))
            \(stat(overview.totalNamespaces.map(String.init) ?? "?", "namespaces"))
            \(stat(bytes(overview.namespaces.compactMap(\.storedBytes).reduce(0, +)), "storage of those listed"))
            </div>
            """
        let failures = activity.byResult.filter { $0.key != "ok" }.sorted { $0.key < $1.key }
        if !failures.isEmpty {
            body += "<h2>Failed rounds by reason</h2><table><tr><th>Reason</th><th>Rounds</th></tr>"
            for (reason, count) in failures { body += "<tr><td><code>\(escape(reason))</code></td><td class=\"n\">\(count)</td></tr>" }
            body += "</table>"
        }
        body += "</section>"
        body += """
            <section><form method="get" action="/admin"><label for="namespace">Show a namespace by name</label>
            <input type="text" id="namespace" name="namespace" value="\(escape(overview.asked ?? ""))"><button type="submit">Show</button></form>
            """
        if let error = overview.listingError { body += "<p class=\"error\">Namespaces could not be listed: \(escape(error))</p>" }
        if overview.totalNamespaces == nil {
            body += "<p>This storage does not list its namespaces: show one by name.</p>"
        } else if let total = overview.totalNamespaces, total > overview.namespaces.count {
            body += "<p>\(overview.namespaces.count) of \(total) namespaces shown (the first by name).</p>"
        }
        body += "</section>"
        for namespace in overview.namespaces { body += section(namespace, csrf: csrf) }
        body += "</main>"
        return document(title: "Converge operator page", body: body)
    }

    private static func section(_ namespace: OperatorOverview.NamespaceSummary, csrf: String) -> String {
        let name = escape(namespace.name)
        var html = """
            <section class="namespace" data-namespace="\(name)"><h2>Namespace <code>\(name)</code>
            <small>\(namespace.devices.count) devices · \(namespace.conflicts) open conflicts · \(namespace.quarantined) quarantined · \(namespace.rejections) rejections · \(namespace.storedBytes.map(bytes) ?? "size unknown")</small></h2>
            """
        if let error = namespace.error { return html + "<p class=\"error\">\(escape(error))</p></section>" }
        guard !namespace.devices.isEmpty else { return html + "<p>No devices yet.</p></section>" }
        html += "<table><tr><th>Device</th><th>State</th><th>Replica</th><th>Last seen</th><th>Last push</th><th>Last pull</th><th>Rejections</th><th></th></tr>"
        for device in namespace.devices {
            let info = device.info
            let deviceName = escape(info.device)
            html += """
                <tr data-device="\(deviceName)" data-state="\(device.state)"><td><code>\(deviceName)</code></td>
                <td class="state-\(device.state)">\(device.state)</td><td><code>\(info.replica.map { escape(String($0.uuidString().prefix(8))) } ?? "–")</code></td>
                <td>\(date(info.lastSeen))</td><td>\(date(info.lastPush))</td><td>\(date(info.lastPull))</td><td class="n">\(info.rejections)</td><td>
                """
            if device.state == "active" || device.state == "retired" {
                html += """
                    <form class="inline" method="post" action="/admin/devices"><input type="hidden" name="csrf" value="\(escape(csrf))">\
                    <input type="hidden" name="namespace" value="\(name)"><input type="hidden" name="device" value="\(deviceName)">\
                    \(device.state == "active" ? "<button type=\"submit\" name=\"action\" value=\"retire\" title=\"It resets and resyncs, keeping its user's writes\">Retire</button> " : "")\
                    <button class="danger" type="submit" name="action" value="revoke" title="Its tokens are refused from now on">Revoke</button></form>
                    """
            }
            html += "</td></tr>"
        }
        return html + "</table></section>"
    }

    private static func stat(_ value: String, _ label: String, id: String? = nil) -> String {
        "<div class=\"stat\"\(id.map { " id=\"\($0)\"" } ?? "")><b>\(escape(value))</b><span>\(escape(label))</span></div>"
    }

    private static func date(_ date: Date?) -> String {
        guard let date else { return "–" }
        let seconds = Int(Date().timeIntervalSince(date))
        let ago = seconds < 60 ? "\(max(0, seconds)) s ago" : seconds < 3_600 ? "\(seconds / 60) min ago" : seconds < 86_400 ? "\(seconds / 3_600) h ago" : "\(seconds / 86_400) d ago"
        return "<time datetime=\"\(ISO8601DateFormatter().string(from: date))\">\(ago)</time>"
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), unit = 0
        while value >= 1_024, unit < units.count - 1 {
            value /= 1_024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f", value) + " " + units[unit]
    }
}
