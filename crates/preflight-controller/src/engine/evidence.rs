//! The evidence log: the controller's evidence signing key, the Merkle log (in sled, and its
//! tree in memory), the acceptance of the signed records agents return, and the export of
//! bundles with their inclusion proofs.
//!
//! Every signed record an agent returns is checked before it is kept ([`check_evidence`]):
//! parsed, valid, signed by the key of the certificate the registry knows for that agent (the
//! certificate is kept in the evidence store so bundles can carry it), naming that agent and
//! this request, and matching what the controller asked for ([`Expected`]: operator, operation,
//! check ids, time within the request's window plus [`EVIDENCE_CLOCK_SKEW_MS`]). Accepted
//! records are appended to the Merkle log in sled with a new checkpoint signed by the
//! controller's evidence key (`DATA/evidence.key`, PKCS#8 P-256, mode 0600), in one
//! transaction, flushed before the caller hears of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use preflight_core::evidence::{
    self, AgentKey, EvidenceBundle, EvidenceLog, EvidenceOperation, SignedRecord,
};
use preflight_pki::fsutil;
use preflight_store::evidence::EvidenceStore;
use preflight_store::{AgentRecord, Store, StoreError};

/// File of the controller's evidence signing key in the data directory.
pub(crate) const EVIDENCE_KEY_FILE: &str = "evidence.key";
/// Most evidence records accepted from one agent answer.
const MAX_RECORDS_PER_ANSWER: usize = 4096;
/// Origin of the global log's checkpoints.
const LOG_ORIGIN: &str = evidence::GLOBAL_LOG_ORIGIN;
/// How far an agent's record time may lie outside the request's window (agent clocks drift).
pub(crate) const EVIDENCE_CLOCK_SKEW_MS: u64 = 120_000;

/// What the evidence log could not do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EvidenceError {
    /// The agents named have no evidence to export.
    #[error("no evidence for {0}: run `preflight harden audit --agent ...` first")]
    NoEvidence(String),
    /// The bundle would be larger than a reply may be.
    #[error("the bundle is {0} bytes, more than {max} MiB; export fewer agents at a time (--agent)", max = crate::MAX_BUNDLE_BYTES >> 20)]
    TooLarge(usize),
    /// Signing or proving failed (the key or the log is broken).
    #[error("signing {0}")]
    Signing(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes the evidence key in `data_dir` if it is missing; returns its PKCS#8 DER.
pub(crate) fn ensure_evidence_key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let p = data_dir.join(EVIDENCE_KEY_FILE);
    match std::fs::read(&p) {
        Ok(k) => return Ok(k),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let rng = ring::rand::SystemRandom::new();
    let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .map_err(|_| std::io::Error::other("cannot generate the evidence key"))?;
    fsutil::write_atomic(&p, doc.as_ref(), 0o600)?;
    tracing::info!(path = %p.display(), "evidence signing key created");
    Ok(doc.as_ref().to_vec())
}

/// The evidence log: key, store, and the Merkle tree in memory (one writer at a time).
pub(crate) struct EvidenceState {
    key_pkcs8: Vec<u8>,
    spki: Vec<u8>,
    store: EvidenceStore,
    log: Mutex<EvidenceLog>,
    /// The CA certificate (DER) bundles carry, so auditors chain agent certificates to it.
    ca_der: Vec<u8>,
}

impl EvidenceState {
    /// Opens the log in `store`, loading (or making) the key in `data_dir`; bundles carry the
    /// CA of `ca_pem`.
    pub(crate) fn open(data_dir: &Path, store: &Store, ca_pem: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let key_pkcs8 = ensure_evidence_key(data_dir).with_context(|| {
            format!(
                "cannot read or create {}",
                data_dir.join(EVIDENCE_KEY_FILE).display()
            )
        })?;
        let spki = evidence::p256_spki_from_pkcs8(&key_pkcs8).with_context(|| {
            format!(
                "{} is not a P-256 key",
                data_dir.join(EVIDENCE_KEY_FILE).display()
            )
        })?;
        let store = EvidenceStore::open(store)?;
        let log = EvidenceLog::from_leaves(store.leaf_hashes()?);
        let ca_der = preflight_pki::certs(ca_pem, "CA certificate")?
            .first()
            .map(|c| c.to_vec())
            .context("the CA file holds no certificate")?;
        Ok(Self {
            key_pkcs8,
            spki,
            store,
            log: Mutex::new(log),
            ca_der,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EvidenceLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The evidence store (per-agent records, for the gate facts).
    pub(crate) fn store(&self) -> &EvidenceStore {
        &self.store
    }

    /// SHA-256 of the controller's evidence public key (SPKI DER), hex.
    pub(crate) fn key_sha256(&self) -> String {
        evidence::sha256_hex(&self.spki)
    }

    /// Appends verified records and signs a new checkpoint; returns (size, root hex).
    pub(crate) fn append(
        &self,
        records: Vec<SignedRecord>,
        certs: Vec<(String, AgentKey)>,
        now_ms: i64,
    ) -> Result<(u64, String), EvidenceError> {
        let mut log = self.lock();
        let first = log.len();
        let mut next = log.clone();
        for r in &records {
            next.append(r);
        }
        let cp = next
            .checkpoint(LOG_ORIGIN, now_ms.max(0) as u64, |c| {
                evidence::sign_checkpoint(c, &self.key_pkcs8)
            })
            .map_err(|e| EvidenceError::Signing(format!("the checkpoint: {e}")))?;
        self.store.append(first, &records, &certs, &cp)?;
        *log = next;
        Ok((log.len(), hex::encode(log.root())))
    }

    /// Size and root of the log.
    pub(crate) fn head(&self) -> (u64, String) {
        let log = self.lock();
        (log.len(), hex::encode(log.root()))
    }

    /// Builds the bundle of `ids`' records with inclusion proofs in the global log; returns
    /// its bytes, its record count and the controller key's SHA-256.
    pub(crate) fn export(
        &self,
        ids: &[String],
        now_ms: u64,
    ) -> Result<(Vec<u8>, u64, String), EvidenceError> {
        let ev = self;
        let mut all: Vec<(u64, SignedRecord)> = Vec::new();
        for id in ids {
            all.extend(ev.store.records_of(id)?);
        }
        if all.is_empty() {
            return Err(EvidenceError::NoEvidence(ids.join(", ")));
        }
        all.sort_by_key(|(i, _)| *i);
        let mut keys = BTreeMap::new();
        for (_, r) in &all {
            let sha = &r.record.agent_cert_sha256;
            if keys.contains_key(sha) {
                continue;
            }
            let k = ev.store.cert(sha)?.ok_or_else(|| {
                EvidenceError::Signing(format!("certificate {sha} of a logged record is missing"))
            })?;
            keys.insert(sha.clone(), k);
        }
        let indexes: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
        let records: Vec<SignedRecord> = all.into_iter().map(|(_, r)| r).collect();
        let n = records.len() as u64;
        let origin = format!("{}{}", evidence::AGENTS_ORIGIN_PREFIX, ids.join(","));
        let bundle = EvidenceBundle::build_with_ca(
            records,
            keys,
            &origin,
            now_ms,
            &ev.ca_der,
            &ev.key_pkcs8,
        )
        .map_err(|e| EvidenceError::Signing(format!("the bundle: {e}")))?;
        let log = ev.lock().clone();
        let global = log
            .checkpoint(LOG_ORIGIN, now_ms, |c| {
                evidence::sign_checkpoint(c, &ev.key_pkcs8)
            })
            .map_err(|e| EvidenceError::Signing(format!("the checkpoint: {e}")))?;
        let bundle = bundle
            .with_log_inclusion(&log, &indexes, global)
            .map_err(|e| EvidenceError::Signing(format!("the inclusion proofs: {e}")))?;
        let bytes = bundle.to_bytes();
        if bytes.len() > crate::MAX_BUNDLE_BYTES {
            return Err(EvidenceError::TooLarge(bytes.len()));
        }
        Ok((bytes, n, ev.key_sha256()))
    }
}

/// What the controller asked one agent for; the records it returns must match it (they are
/// signed by the agent, but the controller must not keep a signed claim it never asked for).
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// The controller's request id.
    pub request_id: String,
    /// The user and role that asked.
    pub user: String,
    pub role: preflight_core::role::Role,
    /// Operations the records may document.
    pub operations: Vec<EvidenceOperation>,
    /// Check ids the records may name; None: any check of the catalog.
    pub check_ids: Option<BTreeSet<String>>,
    /// Real time (ms) the request was sent; records may not be older (minus the skew).
    pub sent_ms: u64,
}

/// Real time in ms (records carry the agents' real clocks, never the dev clock).
pub(crate) fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Expected {
    /// Why record `i` is not what was asked for, if it is not; `now_ms` is when the answer
    /// arrived.
    pub(crate) fn mismatch(
        &self,
        i: usize,
        r: &evidence::EvidenceRecord,
        now_ms: u64,
    ) -> Option<String> {
        if r.operator.user != self.user || r.operator.role != self.role {
            return Some(format!(
                "evidence record {i} names operator {} ({}), but the request was made by {} ({})",
                r.operator.user, r.operator.role, self.user, self.role
            ));
        }
        if !self.operations.contains(&r.operation) {
            return Some(format!(
                "evidence record {i} documents operation {}, which this request did not ask for",
                r.operation
            ));
        }
        let known = match &self.check_ids {
            Some(ids) => ids.contains(&r.check_id),
            // All checks were asked for: the agent's catalog decides which (an agent may be
            // newer than the controller), so only the shape of the id is checked here (the
            // controller never links the hardening code, DESIGN.md).
            None => valid_check_id(&r.check_id),
        };
        if !known {
            return Some(format!(
                "evidence record {i} names check {:?}, which was not requested or is not in the catalog",
                r.check_id
            ));
        }
        let lo = self.sent_ms.saturating_sub(EVIDENCE_CLOCK_SKEW_MS);
        let hi = now_ms.saturating_add(EVIDENCE_CLOCK_SKEW_MS);
        if r.time_utc_ms < lo || r.time_utc_ms > hi {
            return Some(format!(
                "evidence record {i} is dated {} but the request ran from {} to {} (UTC, {} s allowed either side): check the agent's clock (NTP)",
                preflight_core::timefmt::utc((r.time_utc_ms / 1000) as i64),
                preflight_core::timefmt::utc((self.sent_ms / 1000) as i64),
                preflight_core::timefmt::utc((now_ms / 1000) as i64),
                EVIDENCE_CLOCK_SKEW_MS / 1000
            ));
        }
        None
    }
}

/// A catalog check id as the agent's catalog writes them (`perm.critical_files`).
fn valid_check_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// Checks an agent's answer: certificate known for this agent, every record valid, signed by
/// it, naming it and this request, and matching what was asked (`expected`, the answer
/// arriving at `now_ms`). Returns the records and the certificate entry.
pub(crate) fn check_evidence(
    rec: &AgentRecord,
    cert_der: &[u8],
    evidence_json: &[String],
    expected: &Expected,
    now_ms: u64,
) -> Result<(Vec<SignedRecord>, (String, AgentKey)), String> {
    let request_id = expected.request_id.as_str();
    if evidence_json.len() > MAX_RECORDS_PER_ANSWER {
        return Err(format!(
            "agent sent {} evidence records, more than {MAX_RECORDS_PER_ANSWER}",
            evidence_json.len()
        ));
    }
    let sha = evidence::sha256_hex(cert_der);
    if sha != rec.cert_sha256 {
        return Err(format!(
            "agent signed with certificate {sha}, but the registry knows {} for it; evidence refused",
            rec.cert_sha256
        ));
    }
    let spki = preflight_pki::p256_spki(cert_der)
        .map_err(|e| format!("agent certificate: {e}; evidence refused"))?;
    let mut out = Vec::with_capacity(evidence_json.len());
    for (i, j) in evidence_json.iter().enumerate() {
        let s: SignedRecord = serde_json::from_str(j)
            .map_err(|e| format!("evidence record {i} is malformed: {e}"))?;
        s.record
            .validate()
            .map_err(|e| format!("evidence record {i}: {e}"))?;
        if s.record.agent_id != rec.id
            || s.record.agent_cert_sha256 != sha
            || s.record.controller_request_id != request_id
        {
            return Err(format!(
                "evidence record {i} names agent {} / request {}, not {} / {request_id}",
                s.record.agent_id, s.record.controller_request_id, rec.id
            ));
        }
        if let Some(why) = expected.mismatch(i, &s.record, now_ms) {
            return Err(format!("{why}; evidence refused"));
        }
        evidence::verify_signature(&s, &spki)
            .map_err(|e| format!("evidence record {i} signature: {e}"))?;
        out.push(s);
    }
    Ok((out, AgentKey::new(&rec.id, cert_der, &spki)))
}
