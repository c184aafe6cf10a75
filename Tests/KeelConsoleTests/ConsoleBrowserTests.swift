import Foundation
import KeelTestSupport
import Testing

/// The console in a real headless Chromium, driven by Selenium (Tests/Support/console_e2e.py) against a
/// running `keel up`: sign-in, a job watched to the end, a dead job retried, a schedule with its preview,
/// an API key created and used, a viewer kept out, forged and stale forms refused. Screenshots of every
/// page go to `.build/console-screenshots`.
@Suite struct ConsoleBrowserTests {
    static let screenshots = KeelProcess.repositoryRoot.appendingPathComponent(".build/console-screenshots").path

    @Test func aUserOperatesThePlatformThroughTheConsoleInABrowser() async throws {
        let keel = try KeelProcess(["up", "--port", "0"], environment: [
            "KEEL_ADMIN_EMAIL": "admin@example.com", "KEEL_ADMIN_PASSWORD": "console-admin-passphrase-7", "KEEL_AUTH_BCRYPT_COST": "4",
        ])
        let url = "http://127.0.0.1:\(try await keel.waitUntilReady())"
        try? FileManager.default.removeItem(atPath: Self.screenshots)
        let browser = try PythonHelper("console_e2e.py", arguments: [url, "admin@example.com", "console-admin-passphrase-7", Self.screenshots])
        let status = try await browser.waitForExit(timeout: .seconds(240))
        #expect(status == 0, "\(browser.output)\n--- keel:\n\(keel.stderr.suffix(4000))")
        #expect(browser.output.hasSuffix("ok\n"))
        let saved = (try? FileManager.default.contentsOfDirectory(atPath: Self.screenshots)) ?? []
        #expect(saved.filter { $0.hasSuffix(".png") }.count == 16, "screenshots: \(saved.sorted())")
        withExtendedLifetime(keel) {}
    }
}
