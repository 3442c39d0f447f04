import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import ServiceLifecycle

/// Where the server's certificate and key are, for HTTPS (``ServerConfiguration/tls``).
///
/// The server terminates TLS itself, so that a small deployment needs no proxy in front of
/// it to keep tokens and data off the wire in clear. It speaks TLS 1.2 and 1.3 (1.3 when the
/// client can), nothing older. Certificates are short-lived nowadays (ACME renews them every
/// few weeks): the files are checked every `reloadCheckSeconds`, and a renewed pair is taken
/// for new connections without a restart (connections open already keep theirs).
public struct TLSSettings: Sendable, Hashable {
    /// A PEM file with the server's certificate, then any intermediate certificates.
    public var certificateFile: URL
    /// A PEM file with the certificate's private key.
    public var privateKeyFile: URL
    /// How often the two files' modification dates are checked for a renewal; `nil`: never
    /// (the pair read at start serves until the process ends).
    public var reloadCheckSeconds: Double?

    /// The pair in `certificateFile` and `privateKeyFile`, checked for a renewal every
    /// `reloadCheckSeconds` (at least every 50 ms: a check is two `stat` calls).
    public init(certificateFile: URL, privateKeyFile: URL, reloadCheckSeconds: Double? = 60) {
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.reloadCheckSeconds = reloadCheckSeconds.map { max(0.05, $0) }
    }
}

/// A TLS certificate or key file the server cannot use: which file, and what is wrong
/// with it, so that an operator can fix it without reading a stack trace.
public struct TLSFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file at fault (both, for a key that does not match its certificate).
    public let path: String
    /// What is wrong with it.
    public let reason: String

    /// An error about the file at `path`, saying what is wrong in `reason`.
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "TLS: \(path): \(reason)" }
}

/// The TLS context new connections are served with: loaded at start (a bad pair stops the
/// server there), and replaced when the files change. A renewed pair that cannot be loaded
/// (a half-written file, a key that does not match yet) is logged and the previous context
/// kept, so that a botched renewal never takes HTTPS down.
final class TLSContextStore: Sendable {
    let settings: TLSSettings
    private struct Loaded {
        var context: NIOSSLContext
        var stamp: FileStamp
    }
    private let loaded: NIOLockedValueBox<Loaded>

    /// The files' modification dates, sizes and inodes: a renewal changes at least one (a
    /// renewed file has the size of the old one, and an atomic replace a new inode).
    struct FileStamp: Equatable {
        var certificate: [String]
        var key: [String]
    }

    init(settings: TLSSettings) throws(TLSFileError) {
        self.settings = settings
        let stamp = Self.stamp(settings)
        loaded = NIOLockedValueBox(Loaded(context: try Self.load(settings), stamp: stamp))
    }

    /// The context for a connection that opens now.
    var context: NIOSSLContext { loaded.withLockedValue { $0.context } }

    /// Loads the files again if they changed since the last load; returns whether a new
    /// context is now used. Throws, keeping the previous context, when the changed files
    /// cannot be used.
    @discardableResult
    func reloadIfChanged() throws(TLSFileError) -> Bool {
        let stamp = Self.stamp(settings)
        guard stamp != loaded.withLockedValue({ $0.stamp }) else { return false }
        do {
            let context = try Self.load(settings)
            loaded.withLockedValue { $0 = Loaded(context: context, stamp: stamp) }
            return true
        } catch {
            // Not tried again until the files change once more (no error every check).
            loaded.withLockedValue { $0.stamp = stamp }
            throw error
        }
    }

    private static func stamp(_ settings: TLSSettings) -> FileStamp {
        func of(_ url: URL) -> [String] {
            let attributes = (try? FileManager.default.attributesOfItem(atPath: url.path)) ?? [:]
            return ([.modificationDate, .size, .systemFileNumber] as [FileAttributeKey]).map { key in "\(attributes[key] ?? "none")" }
        }
        return FileStamp(certificate: of(settings.certificateFile), key: of(settings.privateKeyFile))
    }

    /// A server context for the pair: TLS 1.2 at least (BoringSSL then negotiates 1.3 with
    /// clients that speak it), with errors that name the file and the problem.
    static func load(_ settings: TLSSettings) throws(TLSFileError) -> NIOSSLContext {
        let certificatePath = settings.certificateFile.path
        let keyPath = settings.privateKeyFile.path
        let certificateBytes = try read(certificatePath, what: "certificate")
        let keyBytes = try read(keyPath, what: "private key")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(certificateBytes)
        } catch {
            throw TLSFileError(path: certificatePath, reason: "not a PEM certificate (\(error))")
        }
        guard !chain.isEmpty else {
            throw TLSFileError(path: certificatePath, reason: "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
        } catch {
            throw TLSFileError(path: keyPath, reason: "not a PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFileError(
                path: "\(certificatePath), \(keyPath)",
                reason: "the private key does not match the certificate, or the pair is unusable (\(error))")
        }
    }

    private static func read(_ path: String, what: String) throws(TLSFileError) -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw TLSFileError(path: path, reason: "no such \(what) file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TLSFileError(path: path, reason: "the \(what) file cannot be read (permissions?)")
        }
        guard !data.isEmpty else { throw TLSFileError(path: path, reason: "the \(what) file is empty") }
        return [UInt8](data)
    }
}

/// Checks the certificate files every `reloadCheckSeconds` while the server runs, and
/// logs each reload and each renewal it cannot use. Runs until the server shuts down (a
/// service that returns would stop the whole group).
struct TLSReloadService: Service {
    let store: TLSContextStore
    let seconds: Double
    let logger: Logger

    func run() async {
        let store = self.store, seconds = self.seconds, logger = self.logger
        await cancelWhenGracefulShutdown {
            while true {
                do {
                    try await Task.sleep(for: .seconds(seconds))
                } catch {
                    return
                }
                do {
                    if try store.reloadIfChanged() {
                        logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(store.settings.certificateFile.path)"])
                    }
                } catch {
                    logger.error(
                        "TLS certificate files changed but cannot be used; still serving the previous certificate",
                        metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
