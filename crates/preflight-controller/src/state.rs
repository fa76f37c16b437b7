//! The running controller's state: the one place that owns the store, the agent pool, every
//! engine and every lock. Services hold an `Arc<Shared>` and call engines with the narrow
//! parts they need; engines never reach back into a service.

use std::sync::Arc;

use preflight_pki::CertificateAuthority;
use preflight_store::Store;

use crate::{agents, engine, http, metrics, Clock, DevClock, ServeConfig};

/// Evidence bundles built at the same time at most.
pub(crate) const EVIDENCE_EXPORTS: usize = 2;

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
    pub evidence: engine::evidence::EvidenceState,
    /// Evidence bundles being built now (each whole in memory, up to `MAX_BUNDLE_BYTES`):
    /// [`EVIDENCE_EXPORTS`] permits.
    pub evidence_exports: tokio::sync::Semaphore,
    /// Serialises the recordings of hardening facts in the workflow (compute + execute), so the
    /// last one executed is the newest (`engine::hardening::record_hardening`).
    pub hardening_recording: tokio::sync::Mutex<()>,
    /// TLS for fresh connections to agents (firewall confirmation): the same check as the
    /// agent pool's (`agents::checked_agent_tls`), so only the certificate on record passes.
    pub confirm_tls: rustls::ClientConfig,
    /// Sweeps running now (bounded, one per batch).
    pub sweeps: crate::engine::sweep::SweepSlots,
}

impl Shared {
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The hardening engine over the parts of this state it needs.
    pub fn hardening(&self) -> engine::hardening::Hardening<'_> {
        engine::hardening::Hardening {
            store: &self.store,
            evidence: self.evidence.store(),
            workflow: &self.workflow,
            clock: &*self.clock,
            recording: &self.hardening_recording,
            reactions: self,
        }
    }
}
