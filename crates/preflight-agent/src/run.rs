//! `preflight-agent run`: serve the Agent service over mutual TLS and heartbeat to the
//! controller, renewing the certificate when the controller says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use preflight_pki::{Identity, ReloadableCert};
use preflight_proto::v1 as pb;
use tonic::transport::Channel;

use crate::service::{require_controller, AgentSvc};
use crate::state::{AgentState, DEFAULT_STATE_DIR};

/// Arguments of `preflight-agent run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory made by `preflight-agent enroll`.
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "PREFLIGHT_AGENT_STATE")]
    pub state_dir: PathBuf,
    /// Serve on this address instead of the one chosen at enrollment.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Root prefix of the hardening catalog instead of `/` (fixture trees in tests, a mounted
    /// image in staging). Only the local admin sets it; the controller cannot.
    #[arg(long, value_name = "DIR")]
    pub harden_root: Option<PathBuf>,
    /// Requests handled at once before shedding with RESOURCE_EXHAUSTED (tests, benchmarks).
    #[arg(long, hide = true, env = "PREFLIGHT_MAX_INFLIGHT", default_value_t = MAX_INFLIGHT)]
    pub max_inflight: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Connection limits of the agent's listener (hidden; tests and benchmarks).
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Close established connections with no request in flight for this many milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Close connections that sent nothing within this many milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub first_byte_timeout_ms: Option<u64>,
    /// TLS handshakes in progress at once.
    #[arg(long, hide = true)]
    pub max_pending_handshakes: Option<usize>,
    /// Connections open at once.
    #[arg(long, hide = true)]
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (the controller's addresses are exempt).
    #[arg(long, hide = true)]
    pub max_connections_per_source: Option<usize>,
}

impl LimitArgs {
    /// `base` with the flags given applied.
    pub fn apply(
        &self,
        mut base: preflight_pki::transport::Limits,
    ) -> preflight_pki::transport::Limits {
        if let Some(ms) = self.idle_timeout_ms {
            base.idle_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = self.first_byte_timeout_ms {
            base.first_byte_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.max_pending_handshakes {
            base.max_pending = n.max(1);
            base.reserved = base.reserved.min(n / 2);
        }
        if let Some(n) = self.max_connections {
            base.max_connections = n.max(1);
            base.reserved = base.reserved.min(n / 2);
        }
        if let Some(n) = self.max_connections_per_source {
            base.max_connections_per_source = n.max(1);
        }
        base
    }
}

/// The controller's addresses from `agent.toml` (HOST:PORT, resolved once at start): the
/// sources for which the listener keeps its reserve.
async fn controller_addresses(controller: &str) -> Vec<std::net::IpAddr> {
    let hostport = controller
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match tokio::net::lookup_host(hostport).await {
        Ok(addrs) => {
            let mut ips: Vec<_> = addrs.map(|a| a.ip().to_canonical()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        Err(e) => {
            tracing::warn!(controller = hostport, error = %e, "cannot resolve the controller's address: no reserved connection slots for it");
            Vec::new()
        }
    }
}

/// Largest message the agent accepts or sends.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Requests handled at once; beyond it a request gets RESOURCE_EXHAUSTED at once
/// (`preflight_pki::shed`). The hidden `run --max-inflight` changes it.
const MAX_INFLIGHT: usize = 64;

pub async fn run(a: Args) -> anyhow::Result<()> {
    let state = AgentState::load(&a.state_dir)?;
    let listen = a.listen.unwrap_or(state.config.listen);
    let cert = ReloadableCert::new(&state.identity)?;
    let tls = preflight_pki::agent_server_config(&state.ca_pem, cert.clone())?;
    let limits = a.limits.apply(preflight_pki::transport::Limits::agent(
        controller_addresses(&state.config.controller).await,
    ));
    tracing::debug!(?limits, "connection limits");
    let incoming = preflight_pki::transport::tls_incoming(listen, tls, limits)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = incoming.local_addr;
    let idle = incoming.idle_layer();
    tracing::info!(agent = %state.config.agent_id, %local, controller = %state.config.controller, version = crate::VERSION, "agent serving");

    let svc = tonic::service::interceptor::InterceptedService::new(
        pb::agent_server::AgentServer::new(AgentSvc {
            bench: Default::default(),
            net: crate::svc_net::NetState {
                own_port: local.port(),
                ..Default::default()
            },
            harden: crate::svc_harden::HardenState::new(
                &state.dir,
                a.harden_root.as_deref(),
                local.port(),
            ),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        require_controller,
    );
    let server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(900))
        .concurrency_limit_per_connection(32)
        .max_concurrent_streams(64)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(idle)
        .layer(preflight_pki::shed::LoadShedLayer::new(a.max_inflight))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming.stream, shutdown_signal());

    let hb = tokio::spawn(heartbeat_loop(state, cert, local));
    let r = server.await.context("agent server");
    hb.abort();
    tracing::info!("agent stopped");
    r
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn registry(state: &AgentState) -> anyhow::Result<pb::registry_client::RegistryClient<Channel>> {
    let tls = preflight_pki::client_config(&state.ca_pem, Some(&state.identity))?;
    let ch = preflight_pki::transport::connect_lazy(
        &state.config.controller,
        tls,
        preflight_pki::controller_server_name(),
        Duration::from_secs(10),
    )?;
    Ok(pb::registry_client::RegistryClient::new(ch))
}

async fn heartbeat_loop(mut state: AgentState, cert: Arc<ReloadableCert>, local: SocketAddr) {
    let mut interval = Duration::from_secs(10);
    let mut failures = 0u32;
    'connection: loop {
        let mut client = match registry(&state) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the controller connection");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        loop {
            let req = pb::HeartbeatRequest {
                agent_version: crate::VERSION.into(),
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                addresses: crate::host_addresses(),
                listen_addr: local.to_string(),
            };
            let delay;
            match client.heartbeat(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if failures > 0 {
                        tracing::info!("controller reachable again");
                    }
                    failures = 0;
                    interval = Duration::from_secs(u64::from(r.interval_s.clamp(1, 3600)));
                    delay = interval;
                    if r.renew {
                        match renew(&mut client, &state).await {
                            Ok(id) => {
                                if let Err(e) = AgentState::save_identity(&state.dir, &id)
                                    .and_then(|_| Ok(cert.replace(&id)?))
                                {
                                    tracing::error!(error = %e, "cannot store the renewed certificate");
                                } else {
                                    tracing::info!(
                                        not_after = id.not_after_unix().unwrap_or(0),
                                        "certificate renewed"
                                    );
                                    state.identity = id;
                                    continue 'connection;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "certificate renewal failed; will retry")
                            }
                        }
                    }
                }
                Err(s) => {
                    failures += 1;
                    // Back off up to a minute while the controller is away.
                    delay = (interval * failures.min(6)).min(Duration::from_secs(60));
                    if s.code() == tonic::Code::PermissionDenied {
                        tracing::error!(reason = s.message(), "the controller refuses this agent");
                    } else {
                        tracing::warn!(reason = s.message(), code = ?s.code(), "heartbeat failed");
                    }
                }
            }
            tokio::time::sleep(delay).await;
        }
    }
}

async fn renew(
    client: &mut pb::registry_client::RegistryClient<Channel>,
    state: &AgentState,
) -> anyhow::Result<Identity> {
    let (csr_pem, key_pem) = preflight_pki::make_csr(&state.config.agent_id)?;
    let r = client
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let id = Identity {
        cert_pem: r.cert_pem,
        key_pem,
    };
    id.certified_key()?;
    Ok(id)
}
