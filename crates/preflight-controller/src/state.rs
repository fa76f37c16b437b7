//! The running controller's state: the one place that owns the store, the agent pool, every
//! engine and every lock. Services hold an `Arc<Shared>` and call engines with the narrow
//! parts they need; engines never reach back into a service.

use std::sync::Arc;

use preflight_pki::CertificateAuthority;
use preflight_store::Store;

use crate::{agents, http, metrics, svc, Clock, DevClock, ServeConfig};

/// Shared state of the running controller.
pub(crate) struct Shared {
    pub store: Store,
    pub ca: CertificateAuthority,
    pub cfg: ServeConfig,
    pub clock: Arc<dyn Clock>,
    pub agents: agents::AgentPool,
    /// The deployment workflow (its state is owned here; commands are serialised by its lock).
    pub workflow: crate::engine::workflow::Engine,
    /// The settable clock, when serving with `--dev-clock` (then also `clock`).
    pub dev_clock: Option<Arc<DevClock>>,
    pub metrics: Arc<metrics::Metrics>,
    pub sha_cache: http::ShaCache,
    /// curl's `--pinnedpubkey` value for the controller certificate.
    pub pubkey_pin: String,
    /// The evidence log and the controller's evidence signing key.
    pub evidence: svc::hardening::EvidenceState,
    /// Sweeps running now (bounded, one per batch).
    pub sweeps: svc::readiness::SweepSlots,
}

impl Shared {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
