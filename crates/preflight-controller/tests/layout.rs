//! The controller's layout rule (ARCHITECTURE.md): services are thin, engines take narrow
//! inputs, and no module outside `src/svc/` imports a service module. Only `lib.rs`, which
//! builds the services and serves them, names them.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line, without its `//` comment (strings holding `//` do not occur in the
/// lines this looks for).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// Does this line name the service modules (`svc` as a whole word: `crate::svc::…`,
/// `use crate::{svc, …}`, `svc::workflow::…`)?
fn names_a_service(line: &str) -> bool {
    let c = code(line).as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    c.windows(3).enumerate().any(|(i, w)| {
        w == b"svc" && (i == 0 || !word(c[i - 1])) && c.get(i + 3).is_none_or(|&b| !word(b))
    })
}

#[test]
fn no_module_outside_svc_imports_a_service() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let mut offenders = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("svc") || rel == Path::new("lib.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if names_a_service(line) {
                offenders.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "modules outside svc/ import services (move the piece into an engine):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_sees_an_import() {
    assert!(names_a_service("use crate::svc::registry::check_cert;"));
    assert!(names_a_service(
        "    match crate::svc::registry::check_cert(&rec) {"
    ));
    assert!(!names_a_service(
        "//! never imports a service module (`crate::svc`)"
    ));
    assert!(names_a_service(
        "use crate::{agents, http, metrics, svc, Clock};"
    ));
    assert!(names_a_service("    pub workflow: svc::workflow::Engine,"));
    assert!(!names_a_service("use crate::engine::sweep;"));
    assert!(!names_a_service("pub(crate) struct MetricsSvc<S> {"));
}
