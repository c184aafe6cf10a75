import Foundation
import Hummingbird
import KeelCore
import Mustache
import NIOCore

/// Renders the console's templates (embedded in the binary by the EmbedAssets plugin) and serves its
/// static files. Mustache escapes every `{{value}}`, so whatever users typed is shown, never run.
struct Renderer: Sendable {
    let library: MustacheLibrary
    /// Static files by name (`console.css`), with their content type and an ETag.
    let assets: [String: (body: ByteBuffer, contentType: String, etag: String)]

    init() throws {
        var library = MustacheLibrary()
        var assets: [String: (ByteBuffer, String, String)] = [:]
        for (name, text) in EmbeddedAssets.files {
            if name.hasPrefix("templates/"), name.hasSuffix(".mustache") {
                try library.register(text, named: String(name.dropFirst("templates/".count).dropLast(".mustache".count)))
            } else {
                let type = name.hasSuffix(".css") ? "text/css; charset=utf-8"
                    : name.hasSuffix(".js") ? "text/javascript; charset=utf-8"
                    : name.hasSuffix(".svg") ? "image/svg+xml" : "application/octet-stream"
                assets[name] = (ByteBuffer(string: text), type, "\"\(Credential.digest(text).prefix(16))\"")
            }
        }
        self.library = library
        self.assets = assets
    }

    func render(_ template: String, _ data: [String: Any]) -> String {
        library.render(Self.withoutEmptyText(data), withTemplate: template) ?? "template \(template) is missing"
    }

    /// Mustache sections treat an empty string as present; leaving it out makes `{{#notice}}` mean "if any".
    static func withoutEmptyText(_ value: Any) -> Any {
        switch value {
        case let dictionary as [String: Any]:
            return dictionary.filter { !(($0.value as? String)?.isEmpty ?? false) }.mapValues(withoutEmptyText)
        case let dictionary as [String: String]:
            return dictionary.filter { !$0.value.isEmpty }
        case let array as [[String: Any]]:
            return array.map(withoutEmptyText)
        default:
            return value
        }
    }
}
