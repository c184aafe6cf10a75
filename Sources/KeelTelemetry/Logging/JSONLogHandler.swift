import Foundation
import KeelCore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes one JSON object per line to standard output (standard error for command-line tools, whose
/// standard output is their result): `ts`, `level`, `msg`, `logger`, then the metadata
/// (`request_id`, `trace_id`, `span_id`, ...) as top-level string fields, ready for Loki or any log shipper.
/// `format: .text` writes the same content as `key=value` lines for people at a terminal.
public struct KeelLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: LogFormat
    private let fileDescriptor: Int32

    public init(label: String, level: Logger.Level, format: LogFormat, metadataProvider: Logger.MetadataProvider?,
                fileDescriptor: Int32 = STDOUT_FILENO) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.metadataProvider = metadataProvider
        self.fileDescriptor = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        let line = format == .json
            ? Self.json(level: event.level, message: "\(event.message)", label: label, fields: fields)
            : Self.text(level: event.level, message: "\(event.message)", label: label, fields: fields)
        Self.write(line, to: fileDescriptor)
    }

    static func json(level: Logger.Level, message: String, label: String, fields: Logger.Metadata) -> String {
        var line = "{\"ts\":\"\(Timestamp.format(Date()))\",\"level\":\"\(level.rawValue)\",\"msg\":"
        appendQuoted(message, to: &line)
        line += ",\"logger\":"
        appendQuoted(label, to: &line)
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            line += ","
            appendQuoted(key, to: &line)
            line += ":"
            appendQuoted(value.description, to: &line)
        }
        line += "}\n"
        return line
    }

    static func text(level: Logger.Level, message: String, label: String, fields: Logger.Metadata) -> String {
        var line = "\(Timestamp.format(Date())) \(level.rawValue.uppercased()) [\(label)] \(message)"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        return line + "\n"
    }

    static func appendQuoted(_ text: String, to line: inout String) {
        line += "\""
        // Most values need no escaping: append them whole, which is far cheaper than scalar by scalar.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            line += text
        } else {
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": line += "\\\""
                case "\\": line += "\\\\"
                case "\n": line += "\\n"
                case "\r": line += "\\r"
                case "\t": line += "\\t"
                case let control where control.value < 0x20:
                    line += "\\u00" + (control.value < 0x10 ? "0" : "") + String(control.value, radix: 16)
                default: line.unicodeScalars.append(scalar)
                }
            }
        }
        line += "\""
    }

    /// One `write(2)` per line: lines from concurrent tasks never interleave.
    private static func write(_ line: String, to fileDescriptor: Int32) {
        var line = line
        line.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fileDescriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

extension LogLevel {
    public var loggerLevel: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        case .critical: .critical
        }
    }
}
