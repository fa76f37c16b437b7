//! Plain HTTPS routes on the controller's listener, for curl, browsers and Prometheus:
//! `/healthz`, `/ca.pem`, `/install.sh` (deploy/install.sh, built in), `/agent/linux-ARCH` and
//! `/agent/linux-ARCH.sha256` (agent binaries from [`crate::ServeConfig::agent_dir`]) and
//! `/metrics`. None needs a token: the installer runs before anything is enrolled, and the
//! metrics hold counts only, no names. Clients trust these routes by pinning the controller's
//! public key (`--pinnedpubkey`), which `preflight token create --install-command` prints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::AsyncReadExt;

use crate::Shared;

/// The installer the one-liner fetches.
pub(crate) const INSTALL_SH: &str = include_str!("../../../deploy/install.sh");
/// Largest agent binary served (a debug build is large; a release build is a few MiB).
const MAX_AGENT_BYTES: u64 = 512 * 1024 * 1024;
/// Architectures an agent binary may be asked for, as `uname -m` names them.
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// SHA-256 of agent binaries, by path, valid while size and mtime stay the same.
#[derive(Default)]
pub(crate) struct ShaCache(Mutex<HashMap<PathBuf, (SystemTime, u64, String)>>);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let ca = shared.ca.cert_pem().to_string();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ca.pem", get(move || async move { ca }))
        .route(
            "/install.sh",
            get(|| async { ([(header::CONTENT_TYPE, "text/x-shellscript")], INSTALL_SH) }),
        )
        .route("/agent/{file}", get(agent_file))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

fn text(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match crate::metrics::fleet(&shared) {
        Ok(fleet) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            shared.metrics.render(&fleet, crate::VERSION),
        )
            .into_response(),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}

/// Where the binary for `linux-ARCH` is: `preflight-agent-linux-ARCH` in the agent directory,
/// or plain `preflight-agent` (what `cargo build` makes) for the controller's own architecture.
fn agent_binary(dir: &Path, arch: &str) -> Option<PathBuf> {
    let named = dir.join(format!("preflight-agent-linux-{arch}"));
    if named.is_file() {
        return Some(named);
    }
    let plain = dir.join("preflight-agent");
    (arch == std::env::consts::ARCH && plain.is_file()).then_some(plain)
}

async fn agent_file(State(shared): State<Arc<Shared>>, UrlPath(file): UrlPath<String>) -> Response {
    let (target, want_sha) = match file.strip_suffix(".sha256") {
        Some(t) => (t, true),
        None => (file.as_str(), false),
    };
    let Some(arch) = target.strip_prefix("linux-").filter(|a| ARCHES.contains(a)) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "unknown agent target {target:?}: use linux-{}\n",
                ARCHES.join(" or linux-")
            ),
        );
    };
    let dir = &shared.cfg.agent_dir;
    let Some(path) = agent_binary(dir, arch) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("this controller has no agent binary for linux-{arch}: put preflight-agent-linux-{arch} in its agent directory (--agent-dir)\n"),
        );
    };
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        Err(e) => return unavailable(&path, e),
    };
    if meta.len() > MAX_AGENT_BYTES {
        tracing::warn!(path = %path.display(), size = meta.len(), "agent binary too large to serve");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the agent binary is larger than {MAX_AGENT_BYTES} bytes\n"),
        );
    }
    if want_sha {
        return match sha256_file(&shared.sha_cache, &path, &meta).await {
            Ok(hex) => text(StatusCode::OK, format!("{hex}  preflight-agent-{target}\n")),
            Err(e) => unavailable(&path, e),
        };
    }
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return unavailable(&path, e),
    };
    tracing::debug!(path = %path.display(), size = meta.len(), "serving agent binary");
    let len = meta.len();
    // Read in 64 KiB chunks, never more than the size announced in Content-Length.
    let stream = futures_util::stream::unfold(Some((f, 0u64)), move |st| async move {
        let (mut f, sent) = st?;
        if sent >= len {
            return None;
        }
        let want = (len - sent).min(64 * 1024) as usize;
        let mut buf = vec![0u8; want];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some((f, sent + n as u64))))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))
}

fn unavailable(path: &Path, e: std::io::Error) -> Response {
    tracing::warn!(path = %path.display(), error = %e, "cannot read agent binary");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot read the agent binary; see the controller's log\n".into(),
    )
}

async fn sha256_file(
    cache: &ShaCache,
    path: &Path,
    meta: &std::fs::Metadata,
) -> std::io::Result<String> {
    let mtime = meta.modified()?;
    let key = (mtime, meta.len());
    if let Some((t, l, hex)) = cache.0.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        if (*t, *l) == key {
            return Ok(hex.clone());
        }
    }
    let p = path.to_path_buf();
    let hex = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?.take(MAX_AGENT_BYTES);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(hex::encode(ctx.finish()))
    })
    .await
    .map_err(std::io::Error::other)??;
    cache
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), (key.0, key.1, hex.clone()));
    Ok(hex)
}

/// curl's `--pinnedpubkey` value for a certificate: `sha256//` and the base64 of the SHA-256
/// of its SubjectPublicKeyInfo.
pub(crate) fn pubkey_pin(cert_pem: &str) -> Result<String, preflight_pki::PkiError> {
    let chain = preflight_pki::certs(cert_pem, "controller certificate")?;
    let leaf = chain.first().ok_or_else(|| {
        preflight_pki::PkiError::Parse("controller.pem holds no certificate".into())
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| preflight_pki::PkiError::Parse(format!("controller certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    // Standard base64 with padding (RFC 4648 §4), as curl expects in pins.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    Ok(format!("sha256//{b64}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_is_built_in() {
        assert!(INSTALL_SH.starts_with("#!/bin/sh"));
    }
}
