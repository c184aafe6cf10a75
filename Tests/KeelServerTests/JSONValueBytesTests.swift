import Foundation
import KeelServer
import NIOCore
import Testing

@Suite struct JSONValueBytesTests {
    @Test func parsesWhatFoundationParses() throws {
        let text = #"{"a": [1, -2.5, 3e2, true, false, null], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00x", "o": {"nested": {"k": []}}, "e": {}}"#
        let fast = try JSONValue.parse(Array(text.utf8))
        let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(fast == foundation)
    }

    @Test func writesJSONThatReadsBackTheSame() throws {
        let value: JSONValue = .object(["text": .string("line\nbreak \"quoted\" \u{1} é 😀"), "n": .number(16), "f": .number(0.25),
                                        "big": .number(1e20), "list": .array([.null, .bool(true), .object([:])])])
        let written = value.bytes
        #expect(try JSONValue.parse(written) == value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(buffer: written)) == value)
        #expect(String(buffer: JSONValue.number(16).bytes) == "16")
    }

    @Test func refusesWhatIsNotJSON() {
        for text in ["", "{", #"{"a" 1}"#, "[1,]", "01", "1.", "-", "tru", #""\x""#, "\"\u{1}\"", #""\ud800""#, "{} x", "[" + String(repeating: "[", count: 600)] {
            #expect(throws: JSONValue.ParseError.self, "\(text)") { try JSONValue.parse(Array(text.utf8)) }
        }
    }
}
