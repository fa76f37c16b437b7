//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf compiler, so a
//! fresh machine needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "preflight/v1/agent.proto",
        "preflight/v1/bench.proto",
        "preflight/v1/harden.proto",
        "preflight/v1/network.proto",
        "preflight/v1/role.proto",
        "preflight/v1/sweep.proto",
        "preflight/v1/controller.proto",
        "preflight/v1/workflow.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let mut config = tonic_prost_build::configure();
    // Enum fields are i32 in Rust; in JSON they keep their words (`crate::json`).
    for (path, attr) in enum_field_attributes(&fds) {
        config = config.field_attribute(path, attr);
    }
    config
        .build_client(true)
        .build_server(true)
        // Undecodable requests are INVALID_ARGUMENT, not tonic's INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        // Every message serialises to JSON for `--output json`, with the proto field names.
        .type_attribute(".preflight.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}

/// `(proto field path, serde attribute)` for every enum-typed field of every message, nested
/// ones included, so `--output json` shows `"hard"` rather than `3` without a list kept by hand.
fn enum_field_attributes(fds: &prost_types::FileDescriptorSet) -> Vec<(String, String)> {
    use prost_types::field_descriptor_proto::{Label, Type};
    fn rust_path(proto_name: &str) -> String {
        // ".preflight.v1.Outer.Inner" -> "crate::v1::outer::Inner"
        let rest = proto_name.trim_start_matches(".preflight.v1.");
        let parts: Vec<&str> = rest.split('.').collect();
        let mut path = String::from("crate::v1::");
        for p in &parts[..parts.len() - 1] {
            let mut snake = String::new();
            for (i, c) in p.chars().enumerate() {
                if c.is_ascii_uppercase() {
                    if i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            path.push_str(&snake);
            path.push_str("::");
        }
        path.push_str(parts[parts.len() - 1]);
        path
    }
    fn walk(prefix: &str, msg: &prost_types::DescriptorProto, out: &mut Vec<(String, String)>) {
        let here = format!("{prefix}.{}", msg.name());
        for f in &msg.field {
            if f.r#type() != Type::Enum {
                continue;
            }
            let ty = rust_path(f.type_name());
            let func = if f.label() == Label::Repeated {
                "enum_names"
            } else if f.proto3_optional() {
                "enum_name_opt"
            } else {
                "enum_name"
            };
            out.push((
                format!("{here}.{}", f.name()),
                format!("#[serde(serialize_with = \"crate::json::{func}::<{ty}, _>\")]"),
            ));
        }
        for nested in &msg.nested_type {
            walk(&here, nested, out);
        }
    }
    let mut out = Vec::new();
    for file in &fds.file {
        let prefix = format!(".{}", file.package());
        for msg in &file.message_type {
            walk(&prefix, msg, &mut out);
        }
    }
    out
}
