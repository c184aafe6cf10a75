import HummingbirdCore
import KeelCore
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// The server's certificate and key, swapped as a whole on reload: connections already open keep the
/// context they started with, new ones get the new certificate, nothing is dropped.
public final class ServerTLS: Sendable {
    let certificateFile: String
    let keyFile: String
    private let context: Mutex<NIOSSLContext>

    /// - Throws: ``FatalStartupError`` naming the file that cannot be used.
    public init(certificateFile: String, keyFile: String) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        context = Mutex(try Self.load(certificateFile: certificateFile, keyFile: keyFile))
    }

    /// Both files or neither; `nil` without TLS.
    public static func from(_ config: KeelConfig) throws -> ServerTLS? {
        switch (config.tlsCertFile, config.tlsKeyFile) {
        case (nil, nil): return nil
        case (let certificate?, let key?): return try ServerTLS(certificateFile: certificate, keyFile: key)
        default: throw FatalStartupError("tls_cert_file and tls_key_file go together: set both to serve HTTPS, or neither")
        }
    }

    var current: NIOSSLContext { context.withLock { $0 } }

    /// Reads both files again; on any mistake the running certificate stays.
    public func reload() throws {
        let fresh = try Self.load(certificateFile: certificateFile, keyFile: keyFile)
        context.withLock { $0 = fresh }
    }

    private static func load(certificateFile: String, keyFile: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw FatalStartupError("tls_cert_file \(certificateFile) is not a PEM certificate chain: \(error)")
        }
        guard !chain.isEmpty else { throw FatalStartupError("tls_cert_file \(certificateFile) holds no certificate") }
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw FatalStartupError("tls_key_file \(keyFile) is not a PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["http/1.1"]
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw FatalStartupError("tls_key_file \(keyFile) does not match tls_cert_file \(certificateFile): \(error)")
        }
    }
}

/// A server channel that starts every connection with TLS, from the context current when it was accepted.
struct TLSTerminatingChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let tls: ServerTLS

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
