import Foundation
import Logging
import Testing
@testable import KeelTelemetry

@Suite struct LogFormatTests {
    @Test func jsonLinesAreValidJSONWithMetadataAsFields() throws {
        let line = KeelLogHandler.json(level: .warning, message: "quote \" backslash \\ newline \n tab \t bell \u{07}", label: "keel.test",
                                       fields: ["request_id": "abc", "trace_id": "0af7651916cd43dd8448eb211c80319c"])
        #expect(line.hasSuffix("}\n"))
        #expect(line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["level"] == "warning")
        #expect(object["msg"] == "quote \" backslash \\ newline \n tab \t bell \u{07}")
        #expect(object["logger"] == "keel.test")
        #expect(object["request_id"] == "abc")
        #expect(object["trace_id"] == "0af7651916cd43dd8448eb211c80319c")
        #expect(object["ts"]?.hasSuffix("Z") == true)
    }

    @Test func textLinesReadAsKeyValuePairs() {
        let line = KeelLogHandler.text(level: .info, message: "listening", label: "keel", fields: ["port": "8080"])
        #expect(line.contains("INFO [keel] listening port=8080"))
    }
}
