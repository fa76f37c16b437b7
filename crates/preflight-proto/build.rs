//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf compiler, so a
//! fresh machine needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "preflight/v1/agent.proto",
        "preflight/v1/bench.proto",
        "preflight/v1/harden.proto",
        "preflight/v1/network.proto",
        "preflight/v1/sweep.proto",
        "preflight/v1/controller.proto",
        "preflight/v1/workflow.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        // Every message serialises to JSON for `--output json`, with the proto field names.
        .type_attribute(".preflight.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
