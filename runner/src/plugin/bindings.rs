//! Host bindings generated from `wit/` (the `stowage:plugin` package).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "database-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "stowage:plugin/artifact-sink.artifact-writer": super::host::ArtifactWriter,
        "stowage:plugin/artifact-source.artifact-reader": crate::archive::ArtifactDownload,
    },
});
