/// The version of this Keel build, reported by `keel version`, `/api/v1/status` and the `keel_build_info` metric.
public enum KeelVersion {
    public static let current = "0.1.0"
}
