import Foundation
import KeelCore
import KeelTestSupport
import Testing
import Yams

/// The container image, compose topology, monitoring provisioning and Helm chart, checked without a Docker engine:
/// they parse, every service is health-checked, pinned and free of plaintext secrets, every role they name exists,
/// Prometheus accepts the scrape config and alert rules, and the dashboards query metrics Keel really exports.
@Suite struct DeployFilesTests {
    static let root = KeelProcess.repositoryRoot
    static func text(_ path: String) throws -> String { try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8) }
    static func yaml(_ path: String) throws -> [String: Any] {
        try #require(try Yams.load(yaml: try text(path)) as? [String: Any], "\(path) is not a YAML mapping")
    }

    @Test func composeServicesAreHealthCheckedPinnedLimitedAndSecretFree() throws {
        let compose = try Self.yaml("deploy/compose/compose.yaml")
        let services = try #require(compose["services"] as? [String: [String: Any]])
        #expect(Set(services.keys) == ["postgres", "migrate", "api", "worker", "scheduler", "prometheus", "grafana", "otel-collector", "tempo", "loki", "promtail"])
        let networks = Set((compose["networks"] as? [String: Any] ?? [:]).keys)
        #expect(networks == ["edge", "app", "data", "monitoring"])
        let volumes = Set((compose["volumes"] as? [String: Any] ?? [:]).keys)
        for (name, service) in services {
            let image = try #require(service["image"] as? String, "\(name) has no image")
            let tag = image.split(separator: "/").last?.split(separator: ":").dropFirst().first.map(String.init) ?? ""
            #expect(!tag.isEmpty && tag != "latest" && !tag.hasPrefix("$"), "\(name): image \(image) is not pinned")
            let healthcheck = service["healthcheck"] as? [String: Any]
            #expect((healthcheck?["test"] as? [String])?.isEmpty == false, "\(name) has no health check")
            #expect(service["restart"] != nil, "\(name) has no restart policy")
            let limits = ((service["deploy"] as? [String: Any])?["resources"] as? [String: Any])?["limits"] as? [String: Any]
            #expect(limits?["memory"] != nil && limits?["cpus"] != nil, "\(name) has no resource limits")
            let profiles = Set(service["profiles"] as? [String] ?? [])
            #expect(profiles.contains("full") && (profiles.contains("core") || profiles.contains("observability")), "\(name): profiles \(profiles)")
            for network in service["networks"] as? [String] ?? [] { #expect(networks.contains(network), "\(name): unknown network \(network)") }
            for mount in service["volumes"] as? [String] ?? [] where !mount.hasPrefix(".") && !mount.hasPrefix("/") {
                #expect(volumes.contains(String(mount.prefix { $0 != ":" })), "\(name): volume \(mount) is not a named volume")
            }
            for (key, value) in service["environment"] as? [String: Any] ?? [:] {
                let isSecret = ["PASSWORD", "SECRET", "TOKEN"].contains { key.contains($0) } || key == "KEEL_DATABASE_URL"
                if isSecret, let value = value as? String {
                    #expect(value.contains("${") && value.contains(":?"), "\(name): \(key) must come from .env and be required, not \(value)")
                }
            }
            for (dependency, rule) in service["depends_on"] as? [String: [String: Any]] ?? [:] {
                #expect(services[dependency] != nil, "\(name) depends on unknown \(dependency)")
                #expect(["service_healthy", "service_completed_successfully"].contains(rule["condition"] as? String ?? ""), "\(name) → \(dependency)")
            }
            if let command = service["command"] as? [String], let index = command.firstIndex(of: "--roles") {
                for role in command[index + 1].split(separator: ",") {
                    #expect(Role(rawValue: String(role)) != nil, "\(name) names the role \(role), which keel serve does not know")
                }
            }
        }
        let example = try Self.text("deploy/compose/.env.example")
        for line in example.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if ["PASSWORD", "SECRET"].contains(where: { parts[0].contains($0) }) {
                #expect(parts.count == 2 && parts[1].isEmpty, ".env.example must leave \(parts[0]) empty")
            }
        }
    }

    @Test func theImageBuildsInReleaseAndRunsAsANonRootUserWithAHealthCheck() throws {
        let dockerfile = try Self.text("Dockerfile")
        let stages = dockerfile.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        #expect(stages.count == 2 && stages.allSatisfy { $0.contains(":") && !$0.contains(":latest") })
        #expect(dockerfile.contains("swift build -c release") && dockerfile.contains("USER keel") && dockerfile.contains("HEALTHCHECK"))
        let ignored = try Self.text(".dockerignore")
        #expect(ignored.contains(".build/") && ignored.contains(".git/"))
    }

    @Test func theHelmChartHasEveryObjectAndNoDefaultSecrets() throws {
        let chart = try Self.yaml("deploy/helm/keel/Chart.yaml")
        #expect(chart["apiVersion"] as? String == "v2" && chart["name"] as? String == "keel")
        let values = try Self.yaml("deploy/helm/keel/values.yaml")
        let roles = try #require(values["roles"] as? [String: [String: Any]])
        for (name, role) in roles {
            for value in (role["roles"] as? String ?? "").split(separator: ",") {
                #expect(Role(rawValue: String(value)) != nil, "values.roles.\(name) names an unknown role \(value)")
            }
        }
        let secrets = try #require(values["secrets"] as? [String: Any])
        #expect(secrets.values.allSatisfy { ($0 as? String)?.isEmpty ?? true }, "values.yaml must not carry secrets")
        let templates = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("deploy/helm/keel/templates").path)
        let all = try templates.map { try Self.text("deploy/helm/keel/templates/\($0)") }.joined(separator: "\n")
        for kind in ["Deployment", "Service", "Ingress", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "Job"] {
            #expect(all.contains("kind: \(kind)\n"), "the chart has no \(kind)")
        }
        #expect(all.contains("\"helm.sh/hook\": pre-upgrade") && all.contains("args: [\"migrate\"]"))
        #expect(all.contains("required \""), "missing secrets must stop the chart from rendering")
    }

    @Test func prometheusAcceptsTheScrapeConfigAndAlertRules() async throws {
        let promtool = try #require(["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                    "promtool (Debian package prometheus) is needed; scripts/test installs it")
        for (command, file) in [("config", "prometheus.yml"), ("rules", "alerts.yml")] {
            // The config names the rules at their path in the container; check it from a copy that points at ours.
            try await withTemporaryDirectory { directory in
                var path = Self.root.appendingPathComponent("deploy/compose/prometheus/\(file)").path
                if command == "config" {
                    let rules = Self.root.appendingPathComponent("deploy/compose/prometheus/alerts.yml").path
                    path = directory + "/prometheus.yml"
                    try Self.text("deploy/compose/prometheus/prometheus.yml").replacingOccurrences(of: "/etc/prometheus/alerts.yml", with: rules)
                        .write(toFile: path, atomically: true, encoding: .utf8)
                }
                let process = Process()
                process.executableURL = URL(fileURLWithPath: promtool)
                process.arguments = ["check", command, path]
                let output = Pipe()
                process.standardOutput = output
                process.standardError = output
                try process.run()
                let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                #expect(process.terminationStatus == 0, "promtool check \(command): \(text)")
            }
        }
    }
}
