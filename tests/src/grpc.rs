//! gRPC from the tests straight to the servers, without the CLI: channels with chosen client
//! certificates, bearer tokens, and calls to any method by path with any prost message (so a
//! test can walk every method of the service descriptors). Real TLS, real sockets.

use std::time::Duration;

use anyhow::Context;
use preflight_pki::{CertificateAuthority, Identity};
use tonic::transport::Channel;

use crate::cluster::Controller;

/// A runtime for one test thread; installs the TLS crypto provider first.
pub fn rt() -> tokio::runtime::Runtime {
    preflight_pki::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The controller's CA, read from its data directory (tests issue certificates with it).
pub fn ca_of(ctl: &Controller) -> CertificateAuthority {
    let d = ctl.data();
    CertificateAuthority::from_pem(
        &std::fs::read_to_string(d.join("ca.pem")).expect("ca.pem"),
        &std::fs::read_to_string(d.join("ca.key")).expect("ca.key"),
    )
    .expect("the controller's CA")
}

/// A channel to the agent `agent_id` at `addr`, trusting `ca_pem`, presenting `who`.
pub async fn agent_channel(
    addr: &str,
    ca_pem: &str,
    who: Option<&Identity>,
    agent_id: &str,
) -> anyhow::Result<Channel> {
    let tls = preflight_pki::client_config(ca_pem, who)?;
    let name = preflight_pki::agent_server_name(agent_id)?;
    Ok(preflight_pki::transport::connect(addr, tls, name, Duration::from_secs(5)).await?)
}

/// A channel to the controller, trusting its CA, presenting `who` (None: as the CLI does).
pub async fn controller_channel(
    ctl: &Controller,
    who: Option<&Identity>,
) -> anyhow::Result<Channel> {
    let ca_pem = std::fs::read_to_string(ctl.data().join("ca.pem")).context("ca.pem")?;
    let tls = preflight_pki::client_config(&ca_pem, who)?;
    Ok(preflight_pki::transport::connect(
        &ctl.addr.to_string(),
        tls,
        preflight_pki::controller_server_name(),
        Duration::from_secs(5),
    )
    .await?)
}

/// How a call ended: Ok, or the status (code and message).
pub type CallResult = Result<(), tonic::Status>;

/// Calls `path` (`/preflight.v1.Service/Method`) with `msg` and `token` as bearer token; for a
/// server-streaming method, reads the stream to its end (at most `limit` messages) so an error
/// sent after the first messages counts too. The reply's content is ignored.
pub async fn call<M: prost::Message + Send + Sync + 'static>(
    ch: &Channel,
    path: &str,
    server_streaming: bool,
    token: Option<&str>,
    msg: M,
) -> CallResult {
    let mut grpc = tonic::client::Grpc::new(ch.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii token"),
        );
    }
    let path: http::uri::PathAndQuery = path.parse().expect("a method path");
    let codec = tonic_prost::ProstCodec::<M, ()>::default();
    if server_streaming {
        let mut s = grpc.server_streaming(req, path, codec).await?.into_inner();
        for _ in 0..10_000 {
            if s.message().await?.is_none() {
                break;
            }
        }
        Ok(())
    } else {
        grpc.unary(req, path, codec).await.map(|_| ())
    }
}

/// Is `code` one that means the caller was turned away (not authenticated or not allowed)?
pub fn is_auth_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// One service method from the descriptors compiled from `proto/`.
#[derive(Debug, Clone)]
pub struct Method {
    /// Service name without the package, e.g. `Controller`.
    pub service: String,
    /// Method name, e.g. `WhoAmI`.
    pub name: String,
    /// `/preflight.v1.Controller/WhoAmI`.
    pub path: String,
    pub server_streaming: bool,
}

/// Every method of every service in `proto/`, compiled with protox from the same files the
/// generated code is built from: a new RPC shows up here without touching the tests.
pub fn methods() -> Vec<Method> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files: Vec<String> = std::fs::read_dir(root.join("preflight/v1"))
        .expect("proto/preflight/v1")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.ends_with(".proto").then(|| format!("preflight/v1/{n}"))
        })
        .collect();
    let fds = protox::compile(&files, [&root]).expect("the protos compile");
    let mut out = Vec::new();
    for f in &fds.file {
        let pkg = f.package();
        for s in &f.service {
            for m in &s.method {
                out.push(Method {
                    service: s.name().to_string(),
                    name: m.name().to_string(),
                    path: format!("/{pkg}.{}/{}", s.name(), m.name()),
                    server_streaming: m.server_streaming(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
