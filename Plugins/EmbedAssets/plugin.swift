import Foundation
import PackagePlugin

/// Embeds a target's `Assets/` directory into its code (see `embed-assets`).
@main
struct EmbedAssets: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let assets = target.directoryURL.appending(path: "Assets")
        // The directory is excluded from the target's sources, so the plugin lists it itself: an edited file rebuilds.
        var inputs: [URL] = []
        let walker = FileManager.default.enumerator(at: assets, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = walker?.nextObject() as? URL {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true { inputs.append(url) }
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedAssets.swift")
        return [.buildCommand(
            displayName: "Embedding \(target.name)'s assets",
            executable: try context.tool(named: "embed-assets").url,
            arguments: [assets.path, output.path, "EmbeddedAssets"],
            inputFiles: inputs,
            outputFiles: [output])]
    }
}
