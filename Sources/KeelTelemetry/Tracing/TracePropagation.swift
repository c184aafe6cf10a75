import Instrumentation
import ServiceContextModule

/// Headers that carry the current trace (W3C `traceparent`) to another service; clients that Keel
/// uses for outgoing calls add them to every request.
public enum TracePropagation {
    public static func headers(for context: ServiceContext? = .current) -> [(name: String, value: String)] {
        guard let context else { return [] }
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The context a caller's headers carry (a `traceparent` stored with a job, say), to continue its trace.
    public static func context(from headers: [String: String]) -> ServiceContext {
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(headers, into: &context, using: DictionaryExtractor())
        return context
    }

    private struct DictionaryExtractor: Extractor {
        func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    }

    private struct DictionaryInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
            carrier[key] = value
        }
    }
}
