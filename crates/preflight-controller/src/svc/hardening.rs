//! The Hardening service: remote hardening through the agents, firewall commit-confirm, and
//! the evidence log.
//!
//! Every signed record an agent returns is checked before it is kept: parsed, valid, signed by
//! the key of the certificate the registry knows for that agent (the certificate is kept in
//! the evidence store so bundles can carry it), naming that agent and this request, and
//! matching what the controller asked for (`Expected`: operator, operation, check ids, time
//! within the request's window plus [`EVIDENCE_CLOCK_SKEW_MS`]). Accepted
//! records are appended to the Merkle log in sled with a new checkpoint signed by the
//! controller's evidence key (`DATA/evidence.key`, PKCS#8 P-256, mode 0600), in one
//! transaction, flushed before the caller hears of it.
//!
//! Firewall changes are confirmed over a fresh mTLS connection (not the pooled channel): a
//! confirmation that arrives proves the controller still reaches the agent through the new
//! rules. Without it the agent restores its snapshot by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preflight_core::evidence::{
    self, AgentKey, EvidenceBundle, EvidenceLog, EvidenceOperation, SignedRecord,
};
use preflight_core::role::Role;
use preflight_pki::fsutil;
use preflight_proto::v1 as pb;
use preflight_store::evidence::EvidenceStore;
use preflight_store::{AgentRecord, Store};
use ring::rand::SecureRandom;
use tonic::{Request, Response, Status};

use crate::agents::{agent_status, dial_addr};
use crate::auth::authorize;
use crate::Shared;

/// File of the controller's evidence signing key in the data directory.
pub(crate) const EVIDENCE_KEY_FILE: &str = "evidence.key";
/// Most agents in one request.
const MAX_AGENTS: usize = 256;
/// Most evidence records accepted from one agent answer.
const MAX_RECORDS_PER_ANSWER: usize = 4096;
/// How long one agent may take for one hardening operation.
const AGENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Origin of the global log's checkpoints.
const LOG_ORIGIN: &str = evidence::GLOBAL_LOG_ORIGIN;
/// How far an agent's record time may lie outside the request's window (agent clocks drift).
pub(crate) const EVIDENCE_CLOCK_SKEW_MS: u64 = 120_000;
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
    /// TLS for fresh connections to agents (firewall confirmation): the same check as the
    /// agent pool's (`agents::checked_agent_tls`), so only the certificate on record passes.
    tls: rustls::ClientConfig,
}

impl EvidenceState {
    /// Opens the log in `store`, loading (or making) the key in `data_dir`. `tls` is the
    /// configuration for the fresh connection that confirms a firewall change: build it with
    /// `agents::checked_agent_tls` so the agent must serve the certificate on record.
    pub(crate) fn open(
        data_dir: &Path,
        store: &Store,
        ca_pem: &str,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
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
            tls,
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
    fn append(
        &self,
        records: Vec<SignedRecord>,
        certs: Vec<(String, AgentKey)>,
        now_ms: i64,
    ) -> Result<(u64, String), Status> {
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
            .map_err(|e| Status::internal(format!("signing the checkpoint: {e}")))?;
        self.store
            .append(first, &records, &certs, &cp)
            .map_err(|e| Status::unavailable(format!("evidence store: {e}")))?;
        *log = next;
        Ok((log.len(), hex::encode(log.root())))
    }

    /// Size and root of the log.
    fn head(&self) -> (u64, String) {
        let log = self.lock();
        (log.len(), hex::encode(log.root()))
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
    pub role: String,
    /// Operations the records may document.
    pub operations: Vec<EvidenceOperation>,
    /// Check ids the records may name; None: any check of the catalog.
    pub check_ids: Option<BTreeSet<String>>,
    /// Real time (ms) the request was sent; records may not be older (minus the skew).
    pub sent_ms: u64,
}

/// Real time in ms (records carry the agents' real clocks, never the dev clock).
fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Expected {
    /// For a Harden request (`check_ids` as sent; a firewall change adds its record).
    fn harden(req: &pb::HardenRequest, op: pb::HardenOperation, caller: &pb::HardenCaller) -> Self {
        let operations = match op {
            pb::HardenOperation::Audit => vec![EvidenceOperation::Audit],
            pb::HardenOperation::Apply => vec![EvidenceOperation::Apply],
            pb::HardenOperation::Verify => vec![EvidenceOperation::Verify],
            pb::HardenOperation::Rollback => vec![EvidenceOperation::Rollback],
            pb::HardenOperation::Plan | pb::HardenOperation::Unspecified => Vec::new(),
        };
        // A rollback restores what its backup holds, whatever was named.
        let check_ids =
            (!req.check_ids.is_empty() && op != pb::HardenOperation::Rollback).then(|| {
                let mut ids: BTreeSet<String> = req.check_ids.iter().cloned().collect();
                if req.firewall.is_some() {
                    ids.insert("fw.allowlist_ports".into());
                }
                ids
            });
        Self {
            request_id: caller.request_id.clone(),
            user: caller.user.clone(),
            role: caller.role.clone(),
            operations,
            check_ids,
            sent_ms: real_now_ms(),
        }
    }

    /// For the confirmation of a firewall change: one verify of `fw.allowlist_ports`.
    fn confirm(caller: &pb::HardenCaller) -> Self {
        Self {
            request_id: caller.request_id.clone(),
            user: caller.user.clone(),
            role: caller.role.clone(),
            operations: vec![EvidenceOperation::Verify],
            check_ids: Some(["fw.allowlist_ports".to_string()].into()),
            sent_ms: real_now_ms(),
        }
    }

    /// Why record `i` is not what was asked for, if it is not; `now_ms` is when the answer
    /// arrived.
    fn mismatch(&self, i: usize, r: &evidence::EvidenceRecord, now_ms: u64) -> Option<String> {
        if r.operator.user != self.user || r.operator.role.as_str() != self.role {
            return Some(format!(
                "evidence record {i} names operator {} ({}), but the request was made by {} ({})",
                r.operator.user, r.operator.role, self.user, self.role
            ));
        }
        if !self.operations.contains(&r.operation) {
            return Some(format!(
                "evidence record {i} documents operation {:?}, which this request did not ask for",
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
fn check_evidence(
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

pub(crate) struct HardeningSvc(pub Arc<Shared>);

/// Roles allowed to call each RPC of the Hardening service.
pub fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Hardening", rpc).unwrap_or(&[])
}

fn new_request_id() -> String {
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random generator works");
    format!("hr-{}", hex::encode(b))
}

/// The agents of a request: named, or the servers of a batch's attached plan.
async fn targets(sh: &Shared, ids: &[String], batch: &str) -> Result<Vec<String>, Status> {
    if batch.is_empty() {
        return agent_ids(ids);
    }
    if !ids.is_empty() {
        return Err(Status::invalid_argument(
            "give either agent_ids or batch, not both",
        ));
    }
    crate::engine::hardening::batch_agents(sh, batch).await
}

fn agent_ids(ids: &[String]) -> Result<Vec<String>, Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(
            "agent_ids is empty: name at least one agent (`preflight agents` lists them)",
        ));
    }
    if ids.len() > MAX_AGENTS {
        return Err(Status::invalid_argument(format!(
            "agent_ids has {} entries, more than {MAX_AGENTS}",
            ids.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for id in ids {
        preflight_pki::validate_agent_id(id)
            .map_err(|e| Status::invalid_argument(format!("agent_ids: {e}")))?;
        if !seen.insert(id) {
            return Err(Status::invalid_argument(format!(
                "agent_ids names {id} twice"
            )));
        }
    }
    Ok(ids.to_vec())
}

fn agent_record(shared: &Shared, id: &str) -> Result<AgentRecord, Status> {
    shared
        .store
        .agent(id)
        .map_err(|e| Status::unavailable(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("no agent {id:?}: `preflight agents` lists them")))
}

/// NOT_FOUND for the first of `ids` that is not enrolled, before anything is sent anywhere.
fn known_agents(shared: &Shared, ids: &[String]) -> Result<(), Status> {
    ids.iter()
        .try_for_each(|id| agent_record(shared, id).map(drop))
}

impl HardeningSvc {
    /// Feeds the new facts of the agents that appended evidence to the workflow gates of the
    /// batches whose plans cover them.
    async fn record_in_workflow(&self, results: &[pb::AgentHardenResult]) {
        let touched: BTreeSet<String> = results
            .iter()
            .filter(|r| r.evidence_appended > 0)
            .map(|r| r.agent_id.clone())
            .collect();
        if !touched.is_empty() {
            crate::engine::hardening::record_hardening(&self.0, Some(&touched), None).await;
        }
    }

    /// Runs one request on one agent: call, verify and append evidence, confirm a firewall
    /// change over a fresh connection.
    async fn run_one(
        &self,
        id: &str,
        mut req: pb::HardenRequest,
        caller: &pb::HardenCaller,
    ) -> pb::AgentHardenResult {
        let mut out = pb::AgentHardenResult {
            agent_id: id.to_string(),
            ..Default::default()
        };
        match self.run_one_inner(id, &mut req, caller, &mut out).await {
            Ok(()) => {}
            Err(s) => {
                tracing::warn!(agent = %id, error = %s.message(), "hardening failed on agent");
                out.error = s.message().to_string();
            }
        }
        out
    }

    async fn run_one_inner(
        &self,
        id: &str,
        req: &mut pb::HardenRequest,
        caller: &pb::HardenCaller,
        out: &mut pb::AgentHardenResult,
    ) -> Result<(), Status> {
        let sh = &self.0;
        let rec = agent_record(sh, id)?;
        let mut client = sh.agents.client(&rec)?;
        req.caller = Some(caller.clone());
        let op = pb::HardenOperation::try_from(req.operation)
            .unwrap_or(pb::HardenOperation::Unspecified);
        let expected = Expected::harden(req, op, caller);
        let mut r = Request::new(req.clone());
        r.set_timeout(AGENT_TIMEOUT);
        let resp = client
            .harden(r)
            .await
            .map_err(|s| agent_status(id, s))?
            .into_inner();
        out.host = resp.host.clone();
        out.checks = resp.checks;
        out.backup_id = resp.backup_id;
        out.firewall_change = resp.firewall.clone();
        let appended = self
            .accept(&rec, &resp.agent_cert_der, &resp.evidence, &expected)
            .await?;
        out.evidence_appended = appended;
        if let Some(fw) = resp.firewall {
            out.firewall = self.confirm(&rec, &fw, caller).await;
        }
        Ok(())
    }

    /// Verifies and appends an agent's evidence; returns how many records were appended.
    async fn accept(
        &self,
        rec: &AgentRecord,
        cert_der: &[u8],
        evidence_json: &[String],
        expected: &Expected,
    ) -> Result<u32, Status> {
        if evidence_json.is_empty() {
            return Ok(0);
        }
        let (records, cert) = check_evidence(rec, cert_der, evidence_json, expected, real_now_ms())
            .map_err(|e| {
                tracing::error!(agent = %rec.id, error = %e, "evidence refused");
                Status::failed_precondition(format!("agent {}: {e}", rec.id))
            })?;
        let n = records.len() as u32;
        let sh = self.0.clone();
        let now = sh.now_ms();
        let (size, root) =
            tokio::task::spawn_blocking(move || sh.evidence.append(records, vec![cert], now))
                .await
                .map_err(|e| Status::internal(format!("evidence task failed: {e}")))??;
        tracing::info!(agent = %rec.id, records = n, log_size = size, root = %root, "evidence appended");
        Ok(n)
    }

    /// Confirms a pending firewall change over a fresh mTLS connection; returns "confirmed" or
    /// why not (then the agent rolls back at the deadline by itself).
    async fn confirm(
        &self,
        rec: &AgentRecord,
        fw: &pb::FirewallPending,
        caller: &pb::HardenCaller,
    ) -> String {
        let sh = &self.0;
        let Some(addr) = dial_addr(rec) else {
            return "not confirmed: the agent's address is unknown".into();
        };
        let name = match preflight_pki::agent_server_name(&rec.id) {
            Ok(n) => n,
            Err(e) => return format!("not confirmed: {e}"),
        };
        let mut last = String::new();
        for attempt in 0..3 {
            if sh.now_ms() + 1000 >= fw.deadline_unix_ms {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let ch = match preflight_pki::transport::connect(
                &addr,
                sh.evidence.tls.clone(),
                name.clone(),
                Duration::from_secs(5),
            )
            .await
            {
                Ok(ch) => ch,
                Err(e) => {
                    last = format!("cannot open a new connection to {addr}: {e}");
                    tracing::warn!(agent = %rec.id, attempt, error = %last, "firewall confirmation");
                    continue;
                }
            };
            let mut client = pb::agent_client::AgentClient::new(ch);
            let expected = Expected::confirm(caller);
            let mut r = Request::new(pb::ConfirmFirewallRequest {
                change_id: fw.change_id.clone(),
                caller: Some(caller.clone()),
            });
            r.set_timeout(Duration::from_secs(10));
            match client.confirm_firewall(r).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Err(s) = self
                        .accept(rec, &resp.agent_cert_der, &resp.evidence, &expected)
                        .await
                    {
                        return format!("confirmed, but its evidence was refused: {}", s.message());
                    }
                    return resp.outcome;
                }
                Err(s) => {
                    last = format!("confirmation refused: {}", s.message());
                    if s.code() == tonic::Code::FailedPrecondition {
                        break;
                    }
                }
            }
        }
        format!(
            "not confirmed ({last}); the agent restores its previous rules by itself at the deadline"
        )
    }
}

fn op_name(v: i32) -> Result<pb::HardenOperation, Status> {
    match pb::HardenOperation::try_from(v) {
        Ok(pb::HardenOperation::Unspecified) | Err(_) => Err(Status::invalid_argument(
            "operation must be audit, plan, apply, verify or rollback",
        )),
        Ok(o) => Ok(o),
    }
}

#[tonic::async_trait]
impl pb::hardening_server::Hardening for HardeningSvc {
    async fn harden(
        &self,
        req: Request<pb::HardenAgentsRequest>,
    ) -> Result<Response<pb::HardenAgentsResponse>, Status> {
        // Authenticate before judging the request; an unknown operation needs the read roles.
        let rpc = match pb::HardenOperation::try_from(req.get_ref().operation) {
            Ok(pb::HardenOperation::Apply | pb::HardenOperation::Rollback) => "HardenChange",
            _ => "Harden",
        };
        let (user, role) = authorize(&self.0, &req, allowed(rpc))?;
        let op = op_name(req.get_ref().operation)?;
        let r = req.into_inner();
        let ids = targets(&self.0, &r.agent_ids, &r.batch).await?;
        known_agents(&self.0, &ids)?;
        if r.check_ids.len() > 256 {
            return Err(Status::invalid_argument(
                "check_ids has more than 256 entries",
            ));
        }
        if r.firewall.is_some() && op != pb::HardenOperation::Apply {
            return Err(Status::invalid_argument(
                "firewall is only accepted with operation apply",
            ));
        }
        if let Some(fw) = &r.firewall {
            if !fw.allow_port && fw.mgmt_sources.is_empty() {
                return Err(Status::invalid_argument(
                    "firewall.mgmt_sources is empty: name the management networks SSH and the agent port stay open to",
                ));
            }
        }
        let request_id = new_request_id();
        let caller = pb::HardenCaller {
            user: user.name.clone(),
            role: role.to_string(),
            request_id: request_id.clone(),
        };
        tracing::info!(request = %request_id, user = %user.name, operation = ?op, agents = ids.len(), "harden");
        let agent_req = pb::HardenRequest {
            operation: r.operation,
            check_ids: r.check_ids,
            policy: r.policy,
            backup_id: r.backup_id,
            caller: None,
            firewall: r.firewall,
        };
        let futs = ids
            .iter()
            .map(|id| self.run_one(id, agent_req.clone(), &caller));
        let results = futures_util::future::join_all(futs).await;
        if op != pb::HardenOperation::Plan {
            self.record_in_workflow(&results).await;
        }
        let (log_size, log_root) = self.0.evidence.head();
        Ok(Response::new(pb::HardenAgentsResponse {
            request_id,
            results,
            log_size,
            log_root,
        }))
    }

    async fn firewall_allow(
        &self,
        req: Request<pb::FirewallAllowRequest>,
    ) -> Result<Response<pb::FirewallAllowResponse>, Status> {
        let (user, role) = authorize(&self.0, &req, allowed("FirewallAllow"))?;
        let r = req.into_inner();
        let ids = agent_ids(std::slice::from_ref(&r.agent_id))?;
        known_agents(&self.0, &ids)?;
        let port = r
            .port
            .ok_or_else(|| Status::invalid_argument("port is missing"))?;
        if port.port == 0 || port.port > 65535 {
            return Err(Status::invalid_argument(format!(
                "port.port {} is not 1-65535",
                port.port
            )));
        }
        if port.reason.trim().is_empty() || port.reason.len() > 512 {
            return Err(Status::invalid_argument(
                "port.reason must be 1-512 bytes: say which application needs the port",
            ));
        }
        let request_id = new_request_id();
        let caller = pb::HardenCaller {
            user: user.name.clone(),
            role: role.to_string(),
            request_id: request_id.clone(),
        };
        let agent_req = pb::HardenRequest {
            operation: pb::HardenOperation::Apply as i32,
            // Only the firewall: the catalog apply of a check id that changes nothing.
            check_ids: vec!["fw.allowlist_ports".into()],
            policy: None,
            backup_id: String::new(),
            caller: None,
            firewall: Some(pb::FirewallChange {
                ports: vec![port],
                confirm_timeout_s: r.confirm_timeout_s,
                allow_port: true,
                ..Default::default()
            }),
        };
        let result = self.run_one(&ids[0], agent_req, &caller).await;
        self.record_in_workflow(std::slice::from_ref(&result)).await;
        Ok(Response::new(pb::FirewallAllowResponse {
            result: Some(result),
            request_id,
        }))
    }

    async fn export_evidence(
        &self,
        req: Request<pb::ExportEvidenceRequest>,
    ) -> Result<Response<pb::ExportEvidenceResponse>, Status> {
        authorize(&self.0, &req, allowed("ExportEvidence"))?;
        // A bundle is built whole in memory (up to MAX_BUNDLE_BYTES): a few at a time.
        static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _permit = EXPORTS.try_acquire().map_err(|_| {
            Status::resource_exhausted(
                "2 evidence exports are being built already: retry in a moment",
            )
        })?;
        let r = req.into_inner();
        let ids = targets(&self.0, &r.agent_ids, &r.batch).await?;
        let sh = self.0.clone();
        let now = sh.now_ms().max(0) as u64;
        let (bytes, n, key) = tokio::task::spawn_blocking(move || export(&sh, &ids, now))
            .await
            .map_err(|e| Status::internal(format!("export task failed: {e}")))??;
        Ok(Response::new(pb::ExportEvidenceResponse {
            bundle: bytes,
            records: n,
            controller_key_sha256: key,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::HardeningStatusRequest>,
    ) -> Result<Response<pb::HardeningStatusResponse>, Status> {
        authorize(&self.0, &req, allowed("Status"))?;
        let r = req.get_ref();
        // With a batch, the facts its gates see: each server's planned ports included.
        let targets: Vec<(String, Option<crate::engine::hardening::PlannedPorts>)> =
            if r.batch.is_empty() {
                targets(&self.0, &r.agent_ids, "")
                    .await?
                    .into_iter()
                    .map(|id| (id, None))
                    .collect()
            } else if r.agent_ids.is_empty() {
                crate::engine::hardening::batch_agents_planned(&self.0, &r.batch).await?
            } else {
                return Err(Status::invalid_argument(
                    "give either agent_ids or batch, not both",
                ));
            };
        let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
        known_agents(&self.0, &ids)?;
        let mut hosts = Vec::new();
        for (id, planned) in targets {
            let recs = self
                .0
                .evidence
                .store
                .records_of(&id)
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let (f, firewall) =
                crate::engine::hardening::facts_and_firewall(&recs, planned.as_ref());
            hosts.push(pb::HostHardeningFacts {
                firewall: firewall.to_string(),
                audited: !recs.is_empty(),
                agent_id: id,
                baseline_applied: f.baseline_applied,
                all_compliant: f.all_compliant,
                verified_after_last_change: f.verified_after_last_change,
                firewall_confirmed: f.firewall_covers_planned_ports,
                noncompliant: f.noncompliant,
                firewall_missing_ports: f.firewall_missing_ports,
            });
        }
        Ok(Response::new(pb::HardeningStatusResponse { hosts }))
    }
}

/// Builds the bundle of `ids`' records with inclusion proofs in the global log.
fn export(sh: &Shared, ids: &[String], now_ms: u64) -> Result<(Vec<u8>, u64, String), Status> {
    let ev = &sh.evidence;
    let mut all: Vec<(u64, SignedRecord)> = Vec::new();
    for id in ids {
        all.extend(
            ev.store
                .records_of(id)
                .map_err(|e| Status::unavailable(e.to_string()))?,
        );
    }
    if all.is_empty() {
        return Err(Status::failed_precondition(format!(
            "no evidence for {}: run `preflight harden audit --agent ...` first",
            ids.join(", ")
        )));
    }
    all.sort_by_key(|(i, _)| *i);
    let mut keys = BTreeMap::new();
    for (_, r) in &all {
        let sha = &r.record.agent_cert_sha256;
        if keys.contains_key(sha) {
            continue;
        }
        let k = ev
            .store
            .cert(sha)
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| {
                Status::internal(format!("certificate {sha} of a logged record is missing"))
            })?;
        keys.insert(sha.clone(), k);
    }
    let indexes: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
    let records: Vec<SignedRecord> = all.into_iter().map(|(_, r)| r).collect();
    let n = records.len() as u64;
    let origin = format!("{}{}", evidence::AGENTS_ORIGIN_PREFIX, ids.join(","));
    let bundle =
        EvidenceBundle::build_with_ca(records, keys, &origin, now_ms, &ev.ca_der, &ev.key_pkcs8)
            .map_err(|e| Status::internal(format!("signing the bundle: {e}")))?;
    let log = ev.lock().clone();
    let global = log
        .checkpoint(LOG_ORIGIN, now_ms, |c| {
            evidence::sign_checkpoint(c, &ev.key_pkcs8)
        })
        .map_err(|e| Status::internal(format!("signing the checkpoint: {e}")))?;
    let bundle = bundle
        .with_log_inclusion(&log, &indexes, global)
        .map_err(|e| Status::internal(format!("inclusion proofs: {e}")))?;
    let bytes = bundle.to_bytes();
    if bytes.len() > crate::MAX_BUNDLE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the bundle is {} bytes, more than {} MiB; export fewer agents at a time (--agent)",
            bytes.len(),
            crate::MAX_BUNDLE_BYTES >> 20
        )));
    }
    Ok((bytes, n, ev.key_sha256()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        idx: u64,
        check: &str,
        op: EvidenceOperation,
        st: EvidenceStatus,
        diff: bool,
    ) -> (u64, SignedRecord) {
        let record = evidence::EvidenceRecord {
            format_version: evidence::RECORD_FORMAT_VERSION,
            agent_id: "web-01".into(),
            agent_cert_sha256: "00".repeat(32),
            host: "web-01".into(),
            check_id: check.into(),
            catalog_version: "1".into(),
            mlps_refs: vec![],
            cis_refs: vec![],
            operation: op,
            observed: String::new(),
            files_read: BTreeMap::new(),
            expected: String::new(),
            status: st,
            reason: None,
            diff_applied: diff.then(|| "-a\n+b\n".to_string()),
            backup_ref: None,
            operator: evidence::Operator {
                user: "amy".into(),
                role: Role::Deployer,
            },
            time_utc_ms: idx,
            agent_version: "0".into(),
            controller_request_id: format!("hr-{idx}"),
            firewall: None,
        };
        (
            idx,
            SignedRecord {
                record,
                signature: String::new(),
            },
        )
    }

    /// Issue 20 finding 10: the agent signs operator, operation, check id and time; the
    /// controller keeps a record only when they are what it asked for.
    #[test]
    fn agent_records_must_match_the_request() {
        let ca = preflight_pki::CertificateAuthority::generate("test CA").expect("CA");
        let (csr, key_pem) = preflight_pki::make_csr("web-01").expect("CSR");
        let chain = ca
            .sign_agent_csr(&csr, "web-01", Duration::from_secs(86400))
            .expect("issue");
        let cert = preflight_pki::certs(&chain, "cert").expect("PEM")[0].to_vec();
        let id = preflight_pki::Identity {
            cert_pem: chain,
            key_pem,
        };
        let pkcs8 = match id.key().expect("key") {
            rustls_pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => panic!("PKCS#8"),
        };
        let agent = AgentRecord {
            id: "web-01".into(),
            hostname: "web-01".into(),
            addresses: vec![],
            listen_addr: String::new(),
            observed_ip: String::new(),
            version: "0".into(),
            enrolled_at_ms: 0,
            last_heartbeat_ms: 0,
            cert_sha256: evidence::sha256_hex(&cert),
            cert_not_after_unix: 0,
            revoked: false,
            ..Default::default()
        };
        let caller = pb::HardenCaller {
            user: "amy".into(),
            role: "deployer".into(),
            request_id: "hr-1".into(),
        };
        let req = pb::HardenRequest {
            operation: pb::HardenOperation::Audit as i32,
            check_ids: vec!["ssh.permit_root_login".into()],
            ..Default::default()
        };
        let expected = Expected::harden(&req, pb::HardenOperation::Audit, &caller);
        let now = expected.sent_ms + 1_000;
        let good = || {
            let mut r = rec(0, "ssh.permit_root_login", Audit, Compliant, false)
                .1
                .record;
            r.agent_cert_sha256 = agent.cert_sha256.clone();
            r.controller_request_id = "hr-1".into();
            r.time_utc_ms = expected.sent_ms + 500;
            r
        };
        let check = |r: evidence::EvidenceRecord, exp: &Expected| {
            let s = evidence::sign(r, &pkcs8).expect("sign");
            let json = serde_json::to_string(&s).expect("json");
            check_evidence(&agent, &cert, &[json], exp, now).map(|(v, _)| v.len())
        };
        assert_eq!(check(good(), &expected), Ok(1));

        let mut r = good();
        r.operator.user = "bob".into();
        let e = check(r, &expected).expect_err("other user");
        assert!(e.contains("operator bob") && e.contains("amy"), "{e}");
        let mut r = good();
        r.operator.role = Role::Admin;
        assert!(check(r, &expected)
            .expect_err("other role")
            .contains("operator"));
        let mut r = good();
        r.operation = Apply;
        assert!(check(r, &expected)
            .expect_err("apply on an audit request")
            .contains("operation"));
        let mut r = good();
        r.check_id = "auth.lockout".into();
        assert!(check(r, &expected)
            .expect_err("check not requested")
            .contains("auth.lockout"));
        let mut r = good();
        r.time_utc_ms = expected.sent_ms - EVIDENCE_CLOCK_SKEW_MS - 1;
        assert!(check(r, &expected).expect_err("too old").contains("clock"));
        let mut r = good();
        r.time_utc_ms = now + EVIDENCE_CLOCK_SKEW_MS + 1;
        assert!(check(r, &expected)
            .expect_err("from the future")
            .contains("clock"));
        // Within the allowance either side.
        let mut r = good();
        r.time_utc_ms = expected.sent_ms - EVIDENCE_CLOCK_SKEW_MS + 1;
        assert_eq!(check(r, &expected), Ok(1));

        // All checks: the agent's catalog decides which; an id of another shape is refused.
        let all = pb::HardenRequest {
            operation: pb::HardenOperation::Audit as i32,
            ..Default::default()
        };
        let exp_all = Expected::harden(&all, pb::HardenOperation::Audit, &caller);
        let mut r = good();
        r.check_id = "auth.lockout".into();
        assert_eq!(check(r, &exp_all), Ok(1));
        let mut r = good();
        r.check_id = "made up; rm -rf".into();
        assert!(check(r, &exp_all)
            .expect_err("malformed check id")
            .contains("made up"));
        // A plan asks for no evidence at all.
        let plan = Expected::harden(&all, pb::HardenOperation::Plan, &caller);
        assert!(check(good(), &plan).is_err());
        // A confirmation yields a verify of the firewall check only.
        let conf = Expected::confirm(&caller);
        let mut r = good();
        r.check_id = "fw.allowlist_ports".into();
        r.operation = Verify;
        assert_eq!(check(r.clone(), &conf), Ok(1));
        r.operation = Apply;
        assert!(check(r, &conf).is_err());
    }

    use preflight_core::evidence::EvidenceStatus::{self, Compliant};
    use EvidenceOperation::{Apply, Audit, Verify};
}
