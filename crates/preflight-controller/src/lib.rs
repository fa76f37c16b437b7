//! The preflight controller: agent registry and enrollment, the Controller API for people,
//! and (as later work lands) sweeps, workflow and evidence. gRPC and HTTPS share one TLS
//! listener.
//!
//! Data directory layout (mode 0700):
//! - `db/`: the sled database (only the controller writes it);
//! - `ca.pem`, `ca.key`: the internal CA (key mode 0600);
//! - `controller.pem`, `controller.key`: the controller's identity (key mode 0600);
//! - `evidence.key`: the key signing evidence-log checkpoints (PKCS#8 P-256, mode 0600).

mod agents;
mod auth;
mod engine;
mod error;
mod http;
mod metrics;
mod state;
mod svc;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use preflight_pki::{fsutil, CertificateAuthority, Identity, ReloadableCert};
use preflight_proto::v1 as pb;
use preflight_store::{Store, UserRecord};

pub(crate) use state::Shared;

pub use auth::{hash_token, new_secret};
pub use engine::users::{rotate_offline, DEFAULT_TOKEN_TTL_S, MAX_USER_TTL_S};

/// The controller's version, reported to people and agents.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest gRPC message accepted (either direction).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest evidence bundle `ExportEvidence` answers with (the one reply allowed beyond
/// [`MAX_MESSAGE_BYTES`]: an auditor's bundle of a batch grows with every audit).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;
/// Requests handled at once over all connections; beyond it a request gets RESOURCE_EXHAUSTED
/// at once (`preflight_pki::shed`). The hidden `serve --max-inflight` changes it.
pub const MAX_INFLIGHT: usize = 1024;

/// Where "now" comes from. Tests and rehearsals use a settable clock; everything time-based in
/// the controller reads this, never the system clock directly.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A settable clock for tests and rehearsals (`preflight serve --dev-clock`): the base clock
/// plus an offset, which the controller persists so a restart keeps the rehearsal's time.
pub struct DevClock {
    base: Arc<dyn Clock>,
    offset_ms: std::sync::atomic::AtomicI64,
}

impl DevClock {
    /// `base` moved by `offset_ms`.
    pub fn new(base: Arc<dyn Clock>, offset_ms: i64) -> Self {
        Self {
            base,
            offset_ms: std::sync::atomic::AtomicI64::new(offset_ms),
        }
    }
    /// The current offset over the base clock.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Sets the offset over the base clock.
    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms
            .store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    /// The base clock's time.
    pub fn base_ms(&self) -> i64 {
        self.base.now_ms()
    }
}

impl Clock for DevClock {
    fn now_ms(&self) -> i64 {
        self.base.now_ms().saturating_add(self.offset_ms())
    }
}

/// How often the escalation timer checks for pauses older than 15 days.
pub const ESCALATION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How often agents are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// Lifetime of agent certificates; agents renew once less than a third is left.
    pub agent_cert_ttl: Duration,
    /// Use a settable clock (`preflight dev clock`), for tests and rehearsals.
    pub dev_clock: bool,
    /// Requests handled at once over all connections before shedding ([`MAX_INFLIGHT`]).
    pub max_inflight: usize,
    /// Where the agent binaries served at `/agent/linux-ARCH` are: `preflight-agent-linux-ARCH`,
    /// or `preflight-agent` for the controller's own architecture.
    pub agent_dir: PathBuf,
    /// Lifetime of people's tokens made without one (`serve --token-ttl`, default 90 days).
    pub user_token_ttl: Duration,
    /// Connection limits of the listener (hidden `serve` flags change them for tests).
    pub limits: preflight_pki::transport::Limits,
}

impl ServeConfig {
    /// Defaults for a data directory: listen on 0.0.0.0:7443, heartbeat every 10 s, agent
    /// certificates valid for 30 days, agent binaries next to the running executable (where
    /// `cargo build` puts `preflight-agent`).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            heartbeat_interval: Duration::from_secs(10),
            agent_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            dev_clock: false,
            max_inflight: MAX_INFLIGHT,
            limits: preflight_pki::transport::Limits::controller(),
            agent_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
            user_token_ttl: Duration::from_secs(u64::from(engine::users::DEFAULT_TOKEN_TTL_S)),
        }
    }
}

/// What `init` made; the admin token exists nowhere else.
#[derive(Debug)]
pub struct InitOutput {
    pub admin_token: String,
    pub ca_pin: String,
    /// When the admin token expires (Unix ms).
    pub admin_token_expires_at_ms: i64,
}

/// Why the controller could not initialise or start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("data directory {0} is already initialised (it has ca.pem); the admin token was printed when it was made")]
    AlreadyInitialized(String),
    #[error("data directory {0} is not initialised: run `preflight serve --init --data {0}` once")]
    NotInitialized(String),
    #[error("cannot use data directory {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] preflight_store::StoreError),
    #[error(transparent)]
    Pki(#[from] preflight_pki::PkiError),
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Is `data_dir` initialised?
pub fn is_initialized(data_dir: &Path) -> bool {
    file(data_dir, "ca.pem").exists()
}

/// [`init_with_ttl`] with the default token lifetime ([`DEFAULT_TOKEN_TTL_S`]).
pub fn init(data_dir: &Path, extra_names: &[String]) -> Result<InitOutput, InitError> {
    init_with_ttl(
        data_dir,
        extra_names,
        Duration::from_secs(u64::from(DEFAULT_TOKEN_TTL_S)),
    )
}

/// Creates the CA, the controller identity, the database and the first admin user, whose
/// token expires after `token_ttl` (like every people token). `ca.pem` is written last: it
/// marks a finished initialisation, so a crash half-way can be re-run.
pub fn init_with_ttl(
    data_dir: &Path,
    extra_names: &[String],
    token_ttl: Duration,
) -> Result<InitOutput, InitError> {
    let d = data_dir.display().to_string();
    if is_initialized(data_dir) {
        return Err(InitError::AlreadyInitialized(d));
    }
    let dir_err = |source| InitError::Dir {
        dir: d.clone(),
        source,
    };
    fsutil::ensure_private_dir(data_dir, 0o700).map_err(dir_err)?;
    // Leftovers of an interrupted init are discarded: nothing in them was ever handed out.
    let db_dir = file(data_dir, "db");
    if db_dir.exists() {
        std::fs::remove_dir_all(&db_dir).map_err(dir_err)?;
    }
    let ca = CertificateAuthority::generate("preflight internal CA")?;
    let ident = controller_identity(&ca, extra_names)?;
    let token = new_secret("pfa");
    let now = SystemClock.now_ms();
    let expires = now.saturating_add(token_ttl.as_millis() as i64);
    {
        let store = Store::open(&db_dir)?;
        store.add_user(
            &UserRecord {
                name: "admin".into(),
                role: "admin".into(),
                token_sha256: hash_token(&token),
                created_at_ms: now,
                expires_at_ms: Some(expires),
                disabled: false,
                token_issued_at_ms: now,
            },
            &preflight_store::UserAuditRecord {
                at_ms: now,
                by: "serve --init".into(),
                action: "add".into(),
                user: "admin".into(),
                detail: format!(
                    "role admin, token expires {}",
                    preflight_core::timefmt::utc(expires / 1000)
                ),
            },
        )?;
        store.set_meta("extra_names", &extra_names.join(","))?;
    }
    let w = |name: &str, bytes: &str, mode| {
        fsutil::write_atomic(&file(data_dir, name), bytes.as_bytes(), mode).map_err(dir_err)
    };
    w("controller.key", &ident.key_pem, 0o600)?;
    w("controller.pem", &ident.cert_pem, 0o644)?;
    engine::evidence::ensure_evidence_key(data_dir).map_err(dir_err)?;
    w("ca.key", &ca.key_pem(), 0o600)?;
    w("ca.pem", ca.cert_pem(), 0o644)?;
    Ok(InitOutput {
        admin_token: token,
        ca_pin: ca.pin(),
        admin_token_expires_at_ms: expires,
    })
}

fn controller_identity(
    ca: &CertificateAuthority,
    extra_names: &[String],
) -> Result<Identity, preflight_pki::PkiError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(extra_names.iter().cloned());
    names.dedup();
    ca.issue_controller(&names, Duration::from_secs(825 * 24 * 3600))
}

/// A controller serving in the background.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// The CA pin clients need.
    pub ca_pin: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops serving and waits for the server to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.context("controller task")?
    }

    /// Waits until the server ends by itself (an error) or `signal` fires.
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            r = &mut self.task => r.context("controller task")?,
            _ = signal => self.stop().await,
        }
    }
}

/// The data directory holds the CA key and every record: it must be the owner's alone. A
/// directory or key readable by group or others is narrowed (0700, keys 0600) with a loud
/// warning rather than refused, so an operator who copied it carelessly is never locked out.
fn secure_data_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let narrow = |p: &Path, mode: u32, what: &str| {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        let old = meta.permissions().mode() & 0o777;
        if old & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => tracing::warn!(
                path = %p.display(),
                was = format!("{old:04o}"),
                now = format!("{mode:04o}"),
                "{what} was readable by group or others; narrowed it: check who copied or read it"
            ),
            Err(e) => tracing::error!(
                path = %p.display(),
                was = format!("{old:04o}"),
                error = %e,
                "{what} is readable by group or others and cannot be narrowed: fix it with chmod {mode:o}"
            ),
        }
    };
    narrow(dir, 0o700, "the data directory");
    for key in [
        "ca.key",
        "controller.key",
        engine::evidence::EVIDENCE_KEY_FILE,
    ] {
        narrow(&file(dir, key), 0o600, "a private key");
    }
}

fn read(dir: &Path, name: &str) -> Result<String, InitError> {
    std::fs::read_to_string(file(dir, name)).map_err(|source| InitError::Dir {
        dir: file(dir, name).display().to_string(),
        source,
    })
}

/// Opens the data directory and starts serving.
pub async fn start(cfg: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let dir = cfg.data_dir.clone();
    if !is_initialized(&dir) {
        return Err(InitError::NotInitialized(dir.display().to_string()).into());
    }
    secure_data_dir(&dir);
    let ca = CertificateAuthority::from_pem(&read(&dir, "ca.pem")?, &read(&dir, "ca.key")?)?;
    let identity = Identity {
        cert_pem: read(&dir, "controller.pem")?,
        key_pem: read(&dir, "controller.key")?,
    };
    let store = Store::open(&file(&dir, "db"))?;
    let interrupted = store.interrupt_running_sweeps(clock.now_ms())?;
    if !interrupted.is_empty() {
        tracing::warn!(runs = ?interrupted, "sweeps that were running when the controller stopped are marked interrupted");
    }
    let resolver = ReloadableCert::new(&identity)?;
    let tls = preflight_pki::controller_server_config(ca.cert_pem(), resolver)?;
    let incoming = preflight_pki::transport::tls_incoming(cfg.listen, tls, cfg.limits.clone())
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let local_addr = incoming.local_addr;
    let idle = incoming.idle_layer();
    let ca_pin = ca.pin();
    let workflow = engine::workflow::Engine::load(&store)?;
    let (clock, dev_clock) = if cfg.dev_clock {
        let offset = workflow.dev_clock_offset()?;
        let dev = Arc::new(DevClock::new(clock, offset));
        tracing::warn!(
            offset_ms = offset,
            "serving with a settable dev clock (--dev-clock)"
        );
        (dev.clone() as Arc<dyn Clock>, Some(dev))
    } else {
        (clock, None)
    };
    let agents = agents::AgentPool::new(ca.cert_pem(), &identity, store.clone(), clock.clone())?;
    let pubkey_pin = http::pubkey_pin(&identity.cert_pem)?;
    let metrics = Arc::new(metrics::Metrics::new(clock.now_ms()));
    // Data directories made before evidence existed get their key here.
    // The firewall confirmation's fresh connection checks the agent's certificate as the pool does.
    let confirm_tls =
        agents::checked_agent_tls(ca.cert_pem(), &identity, store.clone(), clock.clone())?;
    let evidence = engine::evidence::EvidenceState::open(&dir, &store, ca.cert_pem())?;
    let shared = Arc::new(Shared {
        evidence,
        evidence_exports: tokio::sync::Semaphore::new(state::EVIDENCE_EXPORTS),
        hardening_recording: tokio::sync::Mutex::new(()),
        confirm_tls,
        store,
        ca,
        cfg,
        clock,
        agents,
        workflow,
        dev_clock,
        metrics: metrics.clone(),
        sha_cache: http::ShaCache::default(),
        pubkey_pin,
        sweeps: Default::default(),
    });
    // A controller that was down for weeks escalates before it serves anything.
    shared.workflow.escalate(&shared, shared.now_ms()).await;
    let timer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ESCALATION_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                shared.workflow.escalate(&shared, shared.now_ms()).await;
            }
        })
    };
    let routes = tonic::service::Routes::from(http::router(shared.clone()))
        .add_service(
            pb::registry_server::RegistryServer::new(svc::registry::RegistrySvc(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::controller_server::ControllerServer::new(svc::ApiSvc(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::readiness_server::ReadinessServer::new(svc::readiness::ReadinessSvc(
                shared.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::hardening_server::HardeningServer::new(svc::hardening::HardeningSvc(
                shared.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_BUNDLE_BYTES + 4096),
        )
        .add_service(
            pb::workflow_server::WorkflowServer::new(svc::workflow::WorkflowSvc(shared.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let shed_limit = shared.cfg.max_inflight;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .accept_http1(true)
            .timeout(Duration::from_secs(120))
            .concurrency_limit_per_connection(64)
            .max_concurrent_streams(128)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(idle)
            .layer(metrics::MetricsLayer(metrics))
            .layer(preflight_pki::shed::LoadShedLayer::new(shed_limit))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming.stream, async {
                let _ = rx.await;
            })
            .await
            .context("controller server");
        timer.abort();
        served?;
        shared.store.flush()?;
        Ok(())
    });
    tracing::info!(%local_addr, version = VERSION, "controller listening");
    Ok(Running {
        local_addr,
        ca_pin,
        shutdown: Some(tx),
        task,
    })
}
