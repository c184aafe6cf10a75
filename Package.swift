// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "keel",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keel", targets: ["keel"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        .target(name: "CKeelSystem"),
        .target(name: "KeelCore", dependencies: [
            "CKeelSystem",
            .product(name: "Yams", package: "Yams"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .target(name: "KeelTelemetry", dependencies: [
            "KeelCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "OTel", package: "swift-otel"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .target(name: "KeelStore", dependencies: [
            "KeelCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "SQLiteNIO", package: "sqlite-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .target(name: "KeelServer", dependencies: [
            "KeelCore", "KeelStore", "KeelTelemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], resources: [.copy("Resources/openapi.json")]),
        .target(name: "KeelIdentity", dependencies: [
            "KeelCore", "KeelStore", "KeelServer", "KeelTelemetry",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "HummingbirdOTP", package: "hummingbird-auth"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
        ], resources: [.copy("Resources/common-passwords.txt")]),
        // SMTP submission for the email.send task: no SMTP library is available, so a small one on SwiftNIO.
        .target(name: "KeelMail", dependencies: [
            "KeelCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOExtras", package: "swift-nio-extras"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "KeelJobs", dependencies: [
            "KeelCore", "KeelStore", "KeelServer", "KeelTelemetry", "KeelMail",
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Composes the capability modules into one server; the executable and the whole-API tests use it.
        .target(name: "KeelPlatform", dependencies: [
            "KeelCore", "KeelStore", "KeelServer", "KeelTelemetry", "KeelIdentity", "KeelJobs",
        ]),
        .executableTarget(name: "keel", dependencies: [
            "KeelCore", "KeelStore", "KeelServer", "KeelTelemetry", "KeelIdentity", "KeelJobs", "KeelPlatform",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Helpers the test targets share: scratch stores on SQLite and PostgreSQL, the keel binary as a
        // child process, and the Python peers (OTLP receiver, TCP proxy) in Tests/Support.
        .target(name: "KeelTestSupport", dependencies: [
            "KeelCore", "KeelStore", "KeelTelemetry",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ], path: "Tests/KeelTestSupport"),
        .testTarget(name: "KeelCoreTests", dependencies: ["KeelCore"]),
        .testTarget(name: "KeelStoreTests", dependencies: ["KeelStore", "KeelTestSupport"]),
        .testTarget(name: "KeelTelemetryTests", dependencies: ["KeelTelemetry", "KeelTestSupport"]),
        .testTarget(name: "KeelServerTests", dependencies: [
            "KeelServer", "KeelTestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "KeelIdentityTests", dependencies: [
            "KeelIdentity", "KeelServer", "KeelTestSupport", "KeelPlatform", "KeelJobs",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "HummingbirdOTP", package: "hummingbird-auth"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        .testTarget(name: "KeelJobsTests", dependencies: [
            "KeelJobs", "KeelServer", "KeelPlatform", "KeelTestSupport", "KeelTelemetry",
            .product(name: "Tracing", package: "swift-distributed-tracing"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "KeelMailTests", dependencies: ["KeelMail", "KeelCore", "KeelTestSupport"]),
        .testTarget(name: "KeelCLITests", dependencies: ["KeelCore", "KeelTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
