import Foundation
import KeelTestSupport
import Testing

@Suite struct MetricsEndpointTests {
    @Test func exposesHTTPProcessStoreAndBuildMetrics() async throws {
        try await withLiveServer(.sqlite) { client, _ in
            _ = try await client.execute(uri: "/healthz", method: .get)
            _ = try await client.execute(uri: "/api/v1/nodes/node_unknown", method: .get)
            _ = try await client.execute(uri: "/does/not/exist/\(UUID())", method: .get)
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
            let text = String(buffer: response.body)
            #expect(text.contains(#"http_server_requests_total{route="/healthz",method="GET",status="200"}"#))
            // Route templates, never raw paths, label the series.
            #expect(text.contains(#"http_server_requests_total{route="/api/v1/nodes/{id}",method="GET",status="401"}"#))
            #expect(text.contains(#"http_server_requests_total{route="unmatched",method="GET",status="404"}"#))
            #expect(!text.contains("/does/not/exist"))
            #expect(text.contains(#"http_server_request_duration_seconds_bucket{route="/healthz",method="GET",status="200",le="0.001"}"#))
            #expect(text.contains(#"keel_build_info{version="0.1.0"} 1"#))
            #expect(text.contains(#"keel_role_enabled{role="api"} 1"#))
            #expect(text.contains(#"keel_store_query_duration_seconds_count{driver="sqlite",kind="write"}"#))
            #expect(text.contains(#"keel_store_connections_max{driver="sqlite"}"#))
            let resident = text.split(separator: "\n").first { $0.hasPrefix("process_resident_memory_bytes ") }
            #expect((resident?.split(separator: " ").last).flatMap { Double($0) } ?? 0 > 1_000_000)
            for name in ["process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
                #expect(text.contains("\n\(name) "), "\(name) missing")
            }
        }
    }
}
