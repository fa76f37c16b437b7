//! The Hardening service: remote hardening through the agents, firewall commit-confirm, and
//! the export of evidence. The evidence log itself (acceptance of agents' records, appends,
//! bundles) is `engine::evidence`; the facts the gates read are `engine::hardening`.
//!
//! Firewall changes are confirmed over a fresh mTLS connection (not the pooled channel): a
//! confirmation that arrives proves the controller still reaches the agent through the new
//! rules. Without it the agent restores its snapshot by itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use preflight_core::evidence::EvidenceOperation;
use preflight_core::role::Role;
use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use ring::rand::SecureRandom;
use tonic::{Request, Response, Status};

use crate::agents::{agent_status, dial_addr};
use crate::auth::authorize;
use crate::engine::evidence::{check_evidence, real_now_ms, EvidenceError, Expected};
use crate::engine::hardening::{FirewallFact, HardeningError, PlannedPorts};
use crate::error::{enum_field, store_status, InvalidRequest};
use crate::wire::WireEnum;
use crate::Shared;

/// Most agents in one request.
const MAX_AGENTS: usize = 256;
/// Most check ids in one request.
const MAX_CHECK_IDS: usize = 256;
/// How long one agent may take for one hardening operation.
const AGENT_TIMEOUT: Duration = Duration::from_secs(600);

impl From<EvidenceError> for Status {
    fn from(e: EvidenceError) -> Status {
        match e {
            EvidenceError::NoEvidence(_) => Status::failed_precondition(e.to_string()),
            EvidenceError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
            EvidenceError::Signing(_) => Status::internal(e.to_string()),
            EvidenceError::Store(e) => store_status(e),
        }
    }
}

impl From<HardeningError> for Status {
    fn from(e: HardeningError) -> Status {
        match e {
            HardeningError::NoBatch(_) => Status::not_found(e.to_string()),
            HardeningError::NoPlan(_)
            | HardeningError::NoServers(_)
            | HardeningError::Unmapped { .. } => Status::failed_precondition(e.to_string()),
            HardeningError::Store(e) => store_status(e),
        }
    }
}

/// Who asked, for the evidence: the authorised user, their role, the request's id.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    user: String,
    role: Role,
    request_id: String,
}

impl Caller {
    fn wire(&self) -> pb::HardenCaller {
        pb::HardenCaller {
            user: self.user.clone(),
            role: self.role.to_i32(),
            request_id: self.request_id.clone(),
        }
    }
}

// What the controller asks of an agent, from the request (the wire types stop here).
impl Expected {
    /// For a Harden request (`check_ids` as sent; a firewall change adds its record).
    fn harden(req: &pb::HardenRequest, op: pb::HardenOperation, caller: &Caller) -> Self {
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
            role: caller.role,
            operations,
            check_ids,
            sent_ms: real_now_ms(),
        }
    }

    /// For the confirmation of a firewall change: one verify of `fw.allowlist_ports`.
    fn confirm(caller: &Caller) -> Self {
        Self {
            request_id: caller.request_id.clone(),
            user: caller.user.clone(),
            role: caller.role,
            operations: vec![EvidenceOperation::Verify],
            check_ids: Some(["fw.allowlist_ports".to_string()].into()),
            sent_ms: real_now_ms(),
        }
    }
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

/// Whose hardening a request concerns: agents named, or the servers of a batch's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Agent ids, checked and without duplicates.
    Agents(Vec<String>),
    /// A batch id: its servers come from the attached plan.
    Batch(String),
}

impl Targets {
    /// From a request's `agent_ids` and `batch` (one of them).
    fn of(agent_ids: Vec<String>, batch: String) -> Result<Self, InvalidRequest> {
        if batch.is_empty() {
            return agent_ids_of("agent_ids", agent_ids).map(Targets::Agents);
        }
        if !agent_ids.is_empty() {
            return Err(InvalidRequest::new(
                "batch",
                "give either --agent or --batch, not both",
            ));
        }
        if batch.len() > 128 || batch.chars().any(char::is_control) {
            return Err(InvalidRequest::new(
                "batch",
                "must be a batch id (1-128 characters); `preflight batch list` lists them",
            ));
        }
        Ok(Targets::Batch(batch))
    }

    /// The agent ids: named, or those serving the batch's servers.
    async fn resolve(&self, sh: &Shared) -> Result<Vec<String>, Status> {
        match self {
            Targets::Agents(ids) => Ok(ids.clone()),
            Targets::Batch(b) => Ok(sh.hardening().batch_agents(b).await?),
        }
    }
}

fn agent_ids_of(field: &str, ids: Vec<String>) -> Result<Vec<String>, InvalidRequest> {
    if ids.is_empty() {
        return Err(InvalidRequest::new(
            field,
            "is empty: name at least one agent (`preflight agents` lists them)",
        ));
    }
    if ids.len() > MAX_AGENTS {
        return Err(InvalidRequest::new(
            field,
            format!("has {} entries, more than {MAX_AGENTS}", ids.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for id in &ids {
        preflight_pki::validate_agent_id(id).map_err(|e| InvalidRequest::new(field, e))?;
        if !seen.insert(id) {
            return Err(InvalidRequest::new(field, format!("names {id} twice")));
        }
    }
    Ok(ids)
}

/// A Harden request, checked.
#[derive(Debug, Clone)]
pub(crate) struct HardenAgents {
    operation: pb::HardenOperation,
    targets: Targets,
    check_ids: Vec<String>,
    policy: Option<pb::HardenPolicy>,
    backup_id: String,
    firewall: Option<pb::FirewallChange>,
}

impl TryFrom<pb::HardenAgentsRequest> for HardenAgents {
    type Error = InvalidRequest;

    fn try_from(r: pb::HardenAgentsRequest) -> Result<Self, InvalidRequest> {
        let operation: pb::HardenOperation = enum_field("operation", r.operation)?;
        if operation == pb::HardenOperation::Unspecified {
            return Err(InvalidRequest::new(
                "operation",
                "must be audit, plan, apply, verify or rollback",
            ));
        }
        if r.check_ids.len() > MAX_CHECK_IDS {
            return Err(InvalidRequest::new(
                "check_ids",
                format!("has more than {MAX_CHECK_IDS} entries"),
            ));
        }
        if let Some(fw) = &r.firewall {
            if operation != pb::HardenOperation::Apply {
                return Err(InvalidRequest::new(
                    "firewall",
                    "is only accepted with operation apply",
                ));
            }
            for p in &fw.ports {
                enum_field::<pb::Protocol>("firewall.ports.proto", p.proto)?;
            }
            if !fw.allow_port && fw.mgmt_sources.is_empty() {
                return Err(InvalidRequest::new(
                    "firewall.mgmt_sources",
                    "is empty: name the management networks SSH and the agent port stay open to",
                ));
            }
        }
        Ok(Self {
            operation,
            targets: Targets::of(r.agent_ids, r.batch)?,
            check_ids: r.check_ids,
            policy: r.policy,
            backup_id: r.backup_id,
            firewall: r.firewall,
        })
    }
}

/// A FirewallAllow request, checked.
#[derive(Debug, Clone)]
pub(crate) struct FirewallAllow {
    agent_id: String,
    port: pb::FirewallPort,
    confirm_timeout_s: u32,
}

impl TryFrom<pb::FirewallAllowRequest> for FirewallAllow {
    type Error = InvalidRequest;

    fn try_from(r: pb::FirewallAllowRequest) -> Result<Self, InvalidRequest> {
        let mut ids = agent_ids_of("agent_id", vec![r.agent_id])?;
        let port = r
            .port
            .ok_or_else(|| InvalidRequest::new("port", "is missing"))?;
        if port.port == 0 || port.port > 65535 {
            return Err(InvalidRequest::new(
                "port.port",
                format!("{} is not 1-65535", port.port),
            ));
        }
        enum_field::<pb::Protocol>("port.proto", port.proto)?;
        if port.reason.trim().is_empty() || port.reason.len() > 512 {
            return Err(InvalidRequest::new(
                "port.reason",
                "must be 1-512 bytes: say which application needs the port",
            ));
        }
        Ok(Self {
            agent_id: ids.remove(0),
            port,
            confirm_timeout_s: r.confirm_timeout_s,
        })
    }
}

/// An ExportEvidence request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportEvidence {
    targets: Targets,
}

impl TryFrom<pb::ExportEvidenceRequest> for ExportEvidence {
    type Error = InvalidRequest;

    fn try_from(r: pb::ExportEvidenceRequest) -> Result<Self, InvalidRequest> {
        Ok(Self {
            targets: Targets::of(r.agent_ids, r.batch)?,
        })
    }
}

/// A Status request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HardeningStatus {
    targets: Targets,
}

impl TryFrom<pb::HardeningStatusRequest> for HardeningStatus {
    type Error = InvalidRequest;

    fn try_from(r: pb::HardeningStatusRequest) -> Result<Self, InvalidRequest> {
        Ok(Self {
            targets: Targets::of(r.agent_ids, r.batch)?,
        })
    }
}

fn agent_record(shared: &Shared, id: &str) -> Result<AgentRecord, Status> {
    shared
        .store
        .agent(id)
        .map_err(store_status)?
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
            self.0
                .hardening()
                .record_hardening(Some(&touched), None)
                .await;
        }
    }

    /// Runs one request on one agent: call, verify and append evidence, confirm a firewall
    /// change over a fresh connection.
    async fn run_one(
        &self,
        id: &str,
        mut req: pb::HardenRequest,
        caller: &Caller,
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
        caller: &Caller,
        out: &mut pb::AgentHardenResult,
    ) -> Result<(), Status> {
        let sh = &self.0;
        let rec = agent_record(sh, id)?;
        let mut client = sh.agents.client(&rec)?;
        req.caller = Some(caller.wire());
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
            let (outcome, detail) = self.confirm(&rec, &fw, caller).await;
            out.firewall = outcome as i32;
            out.firewall_detail = detail;
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

    /// Confirms a pending firewall change over a fresh mTLS connection; returns the outcome
    /// and, unless confirmed, why not in words (then the agent rolls back at the deadline by
    /// itself).
    async fn confirm(
        &self,
        rec: &AgentRecord,
        fw: &pb::FirewallPending,
        caller: &Caller,
    ) -> (pb::FirewallOutcome, String) {
        let sh = &self.0;
        let not = |why: String| (pb::FirewallOutcome::NotConfirmed, why);
        let Some(addr) = dial_addr(rec) else {
            return not("the agent's address is unknown".into());
        };
        let name = match preflight_pki::agent_server_name(&rec.id) {
            Ok(n) => n,
            Err(e) => return not(e.to_string()),
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
                sh.confirm_tls.clone(),
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
                caller: Some(caller.wire()),
            });
            r.set_timeout(Duration::from_secs(10));
            match client.confirm_firewall(r).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Err(s) = self
                        .accept(rec, &resp.agent_cert_der, &resp.evidence, &expected)
                        .await
                    {
                        return (
                            pb::FirewallOutcome::EvidenceRefused,
                            s.message().to_string(),
                        );
                    }
                    return match pb::FirewallOutcome::try_from(resp.outcome) {
                        Ok(pb::FirewallOutcome::Confirmed) => {
                            (pb::FirewallOutcome::Confirmed, String::new())
                        }
                        _ => not(format!(
                            "the agent answered the confirmation with outcome {}",
                            preflight_proto::json::name::<pb::FirewallOutcome>(resp.outcome)
                        )),
                    };
                }
                Err(s) => {
                    last = format!("confirmation refused: {}", s.message());
                    if s.code() == tonic::Code::FailedPrecondition {
                        break;
                    }
                }
            }
        }
        not(format!(
            "{last}; the agent restores its previous rules by itself at the deadline"
        ))
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
        let r = HardenAgents::try_from(req.into_inner())?;
        let op = r.operation;
        let ids = r.targets.resolve(&self.0).await?;
        known_agents(&self.0, &ids)?;
        let request_id = new_request_id();
        let caller = Caller {
            user: user.name.clone(),
            role,
            request_id: request_id.clone(),
        };
        tracing::info!(request = %request_id, user = %user.name, operation = ?op, agents = ids.len(), "harden");
        let agent_req = pb::HardenRequest {
            operation: op as i32,
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
        let r = FirewallAllow::try_from(req.into_inner())?;
        known_agents(&self.0, std::slice::from_ref(&r.agent_id))?;
        let request_id = new_request_id();
        let caller = Caller {
            user: user.name.clone(),
            role,
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
                ports: vec![r.port],
                confirm_timeout_s: r.confirm_timeout_s,
                allow_port: true,
                ..Default::default()
            }),
        };
        let result = self.run_one(&r.agent_id, agent_req, &caller).await;
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
        let _permit = self.0.evidence_exports.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} evidence exports are being built already: retry in a moment",
                crate::state::EVIDENCE_EXPORTS
            ))
        })?;
        let r = ExportEvidence::try_from(req.into_inner())?;
        let ids = r.targets.resolve(&self.0).await?;
        let sh = self.0.clone();
        let now = sh.now_ms().max(0) as u64;
        let (bytes, n, key) = tokio::task::spawn_blocking(move || sh.evidence.export(&ids, now))
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
        let r = HardeningStatus::try_from(req.into_inner())?;
        // With a batch, the facts its gates see: each server's planned ports included.
        let targets: Vec<(String, Option<PlannedPorts>)> = match &r.targets {
            Targets::Agents(ids) => ids.iter().map(|id| (id.clone(), None)).collect(),
            Targets::Batch(b) => self.0.hardening().batch_agents_planned(b).await?,
        };
        let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
        known_agents(&self.0, &ids)?;
        let mut hosts = Vec::new();
        for (id, planned) in targets {
            let recs = self
                .0
                .evidence
                .store()
                .records_of(&id)
                .map_err(store_status)?;
            let (f, firewall) =
                crate::engine::hardening::facts_and_firewall(&recs, planned.as_ref());
            hosts.push(pb::HostHardeningFacts {
                firewall: host_firewall_pb(firewall) as i32,
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

/// A host's firewall fact on the wire.
fn host_firewall_pb(f: FirewallFact) -> pb::HostFirewall {
    match f {
        FirewallFact::Confirmed => pb::HostFirewall::Confirmed,
        FirewallFact::NotApplicable => pb::HostFirewall::NotApplicable,
        FirewallFact::NotConfirmed => pb::HostFirewall::NotConfirmed,
        FirewallFact::NeverAudited => pb::HostFirewall::NeverAudited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::evidence::EVIDENCE_CLOCK_SKEW_MS;
    use crate::engine::hardening::tests::rec;
    use preflight_core::evidence;

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
        let caller = Caller {
            user: "amy".into(),
            role: Role::Deployer,
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
        let e = check(r, &expected).expect_err("apply on an audit request");
        assert!(e.contains("documents operation apply,"), "{e}");
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

    use preflight_core::evidence::EvidenceStatus::Compliant;
    use EvidenceOperation::{Apply, Audit, Verify};

    /// The engine's errors keep their codes; a store error goes through `store_status`, so a
    /// refusal keeps its own code rather than becoming UNAVAILABLE.
    #[test]
    fn hardening_errors_map_to_their_codes() {
        use preflight_store::StoreRefusal;
        use tonic::Code;
        let code = |e: HardeningError| Status::from(e).code();
        assert_eq!(code(HardeningError::NoBatch("B1".into())), Code::NotFound);
        assert_eq!(
            code(HardeningError::NoPlan("B1".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(HardeningError::Store(
                StoreRefusal::NoAgent("a".into()).into()
            )),
            Code::NotFound
        );
        let s = Status::from(HardeningError::Unmapped {
            batch: "B1".into(),
            problems: vec!["app-01: no enrolled agent".into(), "db-01: x".into()],
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message()
                .starts_with("batch B1: app-01: no enrolled agent; db-01: x; enroll"),
            "{}",
            s.message()
        );
    }

    /// Each refusal of a request names the field the caller must fix.
    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let good = || pb::HardenAgentsRequest {
            operation: pb::HardenOperation::Audit as i32,
            agent_ids: vec!["web-01".into()],
            ..Default::default()
        };
        assert!(HardenAgents::try_from(good()).is_ok());
        let field = |f: &dyn Fn(&mut pb::HardenAgentsRequest)| {
            let mut r = good();
            f(&mut r);
            HardenAgents::try_from(r).expect_err("refused").field
        };
        assert_eq!(field(&|r| r.operation = 99), "operation");
        let e = HardenAgents::try_from(pb::HardenAgentsRequest {
            operation: 99,
            ..good()
        })
        .expect_err("unknown operation");
        assert!(
            Status::from(e).message().starts_with("operation: value 99"),
            "an unknown value is refused by enum_field"
        );
        assert_eq!(
            field(&|r| r.operation = pb::HardenOperation::Unspecified as i32),
            "operation"
        );
        assert_eq!(field(&|r| r.agent_ids.clear()), "agent_ids");
        assert_eq!(
            field(&|r| r.agent_ids = vec!["a".into(), "a".into()]),
            "agent_ids"
        );
        assert_eq!(field(&|r| r.agent_ids = vec!["../etc".into()]), "agent_ids");
        assert_eq!(field(&|r| r.batch = "B1".into()), "batch");
        assert_eq!(
            field(&|r| r.check_ids = vec!["ssh.misc".into(); MAX_CHECK_IDS + 1]),
            "check_ids"
        );
        assert_eq!(
            field(&|r| r.firewall = Some(pb::FirewallChange::default())),
            "firewall"
        );
        assert_eq!(
            field(&|r| {
                r.operation = pb::HardenOperation::Apply as i32;
                r.firewall = Some(pb::FirewallChange::default());
            }),
            "firewall.mgmt_sources"
        );
        let batch = HardenAgents::try_from(pb::HardenAgentsRequest {
            agent_ids: vec![],
            batch: "B1".into(),
            ..good()
        })
        .expect("a batch alone");
        assert_eq!(batch.targets, Targets::Batch("B1".into()));

        let allow = |port: Option<pb::FirewallPort>| {
            FirewallAllow::try_from(pb::FirewallAllowRequest {
                agent_id: "web-01".into(),
                port,
                confirm_timeout_s: 30,
            })
        };
        let port = |p: u32, reason: &str| pb::FirewallPort {
            port: p,
            proto: pb::Protocol::Tcp as i32,
            sources: vec![],
            reason: reason.into(),
        };
        assert!(allow(Some(port(8080, "gateway"))).is_ok());
        assert_eq!(allow(None).expect_err("no port").field, "port");
        assert_eq!(
            allow(Some(port(70000, "gateway"))).expect_err("port").field,
            "port.port"
        );
        assert_eq!(
            allow(Some(port(8080, "  "))).expect_err("reason").field,
            "port.reason"
        );
        let udp = pb::FirewallPort {
            proto: pb::Protocol::Udp as i32,
            ..port(514, "syslog")
        };
        assert!(allow(Some(udp.clone())).is_ok());
        let unknown = pb::FirewallPort { proto: 7, ..udp };
        assert_eq!(
            allow(Some(unknown.clone())).expect_err("proto").field,
            "port.proto"
        );
        assert_eq!(
            field(&|r| {
                r.operation = pb::HardenOperation::Apply as i32;
                r.firewall = Some(pb::FirewallChange {
                    ports: vec![unknown.clone()],
                    mgmt_sources: vec!["10.0.0.0/8".into()],
                    ..Default::default()
                });
            }),
            "firewall.ports.proto"
        );
        assert_eq!(
            FirewallAllow::try_from(pb::FirewallAllowRequest {
                agent_id: "a b".into(),
                port: Some(port(8080, "gateway")),
                confirm_timeout_s: 30,
            })
            .expect_err("agent id")
            .field,
            "agent_id"
        );
        assert_eq!(
            ExportEvidence::try_from(pb::ExportEvidenceRequest::default())
                .expect_err("nothing named")
                .field,
            "agent_ids"
        );
        assert_eq!(
            HardeningStatus::try_from(pb::HardeningStatusRequest {
                agent_ids: vec!["web-01".into()],
                batch: "B1".into(),
            })
            .expect_err("both")
            .field,
            "batch"
        );
        let both = HardeningStatus::try_from(pb::HardeningStatusRequest {
            agent_ids: vec!["web-01".into()],
            batch: "B1".into(),
        })
        .expect_err("both");
        assert_eq!(both.problem, "give either --agent or --batch, not both");
    }
}
