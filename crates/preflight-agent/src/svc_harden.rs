//! Agent hardening RPCs: the check catalog (audit, plan, apply, verify, rollback) and firewall
//! allow-lists through commit-confirm, each operation yielding evidence records signed with
//! this agent's key.
//!
//! The catalog's root prefix is `/` unless the local admin started the agent with
//! `--harden-root DIR` (tests, staging): a remote caller never picks which files are changed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use preflight_core::evidence::{
    self, EvidenceOperation, EvidenceRecord, EvidenceStatus, FirewallFacts, Operator, SignedRecord,
};
use preflight_core::net::Proto;
use preflight_core::role::Role;
use preflight_harden::catalog::{self, ApplyOptions, Policy, Root};
use preflight_harden::firewall::{
    self, AllowList, Backend, CommandRunner, FirewallError, FirewallManager, FirewallPlan,
    PendingChange, PlannedPort,
};
use preflight_proto::v1 as pb;
use tonic::{Request, Status};

/// Most check ids in one request.
const MAX_CHECK_IDS: usize = 256;
/// Most ports, sources or controller addresses in one firewall request.
const MAX_FW_ENTRIES: usize = 512;

/// Hardening state shared by requests: where the catalog reads and writes, where backups and
/// firewall state live, and the firewall manager (absent when the host has no backend).
pub struct HardenState {
    /// The agent's state directory (holds `identity.pem`, whose key signs the evidence).
    pub state_dir: PathBuf,
    /// Root prefix of the catalog (`/` in production).
    pub root: PathBuf,
    /// Backup directory of apply and rollback.
    pub backup_dir: PathBuf,
    /// The agent's own port, always allowed from the management sources.
    pub agent_port: u16,
    /// The firewall manager, or why there is none.
    pub firewall: Result<Arc<FirewallManager>, String>,
    /// The catalog's `fw.*` checks against the live firewall.
    pub firewall_hook: Arc<firewall::LiveFirewall>,
}

impl HardenState {
    /// Sets up hardening for an agent: backups under `STATE/backups`, firewall state under
    /// `STATE/firewall`; detects the firewall backend and rolls back a change an earlier run
    /// left unconfirmed.
    pub fn new(state_dir: &Path, root: Option<&Path>, agent_port: u16) -> Self {
        let firewall_hook = Arc::new(firewall_hook(state_dir));
        let firewall = detect_firewall(&state_dir.join("firewall"));
        if let Err(e) = &firewall {
            tracing::info!(reason = %e, "no firewall backend: firewall changes will be refused");
        }
        HardenState {
            state_dir: state_dir.to_path_buf(),
            root: root.map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            backup_dir: state_dir.join("backups"),
            agent_port,
            firewall,
            firewall_hook,
        }
    }
}

/// Backs the catalog's `fw.*` checks with the live firewall of this host, judged against the
/// allow-list last confirmed in `STATE/firewall`. With a root prefix other than `/`
/// (`--harden-root`, `--root`) they are `not_applicable`: see `preflight_harden::firewall::hook`.
pub(crate) fn firewall_hook(state_dir: &Path) -> firewall::LiveFirewall {
    firewall::LiveFirewall::new(
        CommandRunner::host(),
        &state_dir.join("firewall"),
        Box::new(listeners),
    )
}

fn detect_firewall(dir: &Path) -> Result<Arc<FirewallManager>, String> {
    let runner = CommandRunner::host();
    let states = firewall::detect_backends(&runner);
    let backend = firewall::choose_backend(&states).map_err(|e| e.to_string())?;
    let mgr = FirewallManager::new(backend, dir).map_err(|e| e.to_string())?;
    match mgr.recover_on_start() {
        Ok(Some((id, outcome))) => {
            tracing::warn!(change = %id, ?outcome, "firewall change left unconfirmed by an earlier run was rolled back")
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot roll back a firewall change left pending"),
    }
    Ok(Arc::new(mgr))
}

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Audit,
    Plan,
    Apply,
    Verify,
    Rollback,
}

/// Who asked, validated.
#[derive(Debug, Clone)]
struct Caller {
    operator: Operator,
    request_id: String,
}

/// The checks [`harden`] makes on a request before acting, without acting (fuzz targets).
pub(crate) fn validate_request(r: &pb::HardenRequest) -> Result<(), Status> {
    let op = op(r.operation)?;
    check_ids(&r.check_ids)?;
    policy(r.policy.clone())?;
    caller(r.caller.clone())?;
    if let Some(fw) = &r.firewall {
        if op != Op::Apply {
            return Err(Status::invalid_argument(
                "firewall is only accepted with operation apply",
            ));
        }
        for p in &fw.ports {
            planned_port(p)?;
        }
        nets("firewall.mgmt_sources", &fw.mgmt_sources)?;
        nets("firewall.controller_addrs", &fw.controller_addrs)?;
    }
    Ok(())
}

fn caller(c: Option<pb::HardenCaller>) -> Result<Caller, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("caller is missing"))?;
    if c.user.is_empty() || c.user.len() > 128 {
        return Err(Status::invalid_argument("caller.user must be 1-128 bytes"));
    }
    let role = role_of(c.role).ok_or_else(|| match c.role {
        0 => Status::invalid_argument("caller.role is missing"),
        v => Status::invalid_argument(format!(
            "caller.role: value {v} is not a role this agent knows: upgrade the agent"
        )),
    })?;
    if c.request_id.is_empty() || c.request_id.len() > 128 {
        return Err(Status::invalid_argument(
            "caller.request_id must be 1-128 bytes",
        ));
    }
    Ok(Caller {
        operator: Operator { user: c.user, role },
        request_id: c.request_id,
    })
}

/// The role of a caller on the wire; `None` for the unset value and values this build does not
/// know.
fn role_of(v: i32) -> Option<Role> {
    Some(match pb::Role::try_from(v).ok()? {
        pb::Role::Unspecified => return None,
        pb::Role::Admin => Role::Admin,
        pb::Role::Dispatcher => Role::Dispatcher,
        pb::Role::Project => Role::Project,
        pb::Role::Integrator => Role::Integrator,
        pb::Role::Deployer => Role::Deployer,
        pb::Role::PerfChecker => Role::PerfChecker,
        pb::Role::Reviewer => Role::Reviewer,
        pb::Role::DeliveryLead => Role::DeliveryLead,
        pb::Role::Gd => Role::Gd,
        pb::Role::Auditor => Role::Auditor,
    })
}

fn policy(p: Option<pb::HardenPolicy>) -> Result<Policy, Status> {
    let mut out = Policy::default();
    if let Some(p) = p {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = p.$f { out.$f = v; } )* };
        }
        set!(
            pass_max_days,
            pass_min_days,
            pass_warn_age,
            inactive_days,
            pw_minlen,
            pw_min_classes,
            pw_remember,
            lockout_deny,
            lockout_unlock_min,
            lockout_unlock_max,
            lockout_unlock_time,
            tmout,
            ssh_client_alive_interval,
            ssh_client_alive_count_max,
            ssh_max_auth_tries,
            umask,
            log_retention_days,
            uid_min
        );
        if let Some(h) = p.pw_hash {
            out.pw_hash = h;
        }
    }
    out.validate()
        .map_err(|e| Status::invalid_argument(format!("policy: {e}")))?;
    Ok(out)
}

fn op(v: i32) -> Result<Op, Status> {
    match pb::HardenOperation::try_from(v) {
        Ok(pb::HardenOperation::Audit) => Ok(Op::Audit),
        Ok(pb::HardenOperation::Plan) => Ok(Op::Plan),
        Ok(pb::HardenOperation::Apply) => Ok(Op::Apply),
        Ok(pb::HardenOperation::Verify) => Ok(Op::Verify),
        Ok(pb::HardenOperation::Rollback) => Ok(Op::Rollback),
        _ => Err(Status::invalid_argument(
            "operation must be audit, plan, apply, verify or rollback",
        )),
    }
}

fn check_ids(ids: &[String]) -> Result<(), Status> {
    if ids.len() > MAX_CHECK_IDS {
        return Err(Status::invalid_argument(format!(
            "check_ids has {} entries, more than {MAX_CHECK_IDS}",
            ids.len()
        )));
    }
    let v: Vec<&str> = ids.iter().map(String::as_str).collect();
    catalog::select(&v).map_err(|e| Status::invalid_argument(format!("check_ids: {e}")))?;
    Ok(())
}

/// Parses a firewall port given on the wire.
pub(crate) fn planned_port(p: &pb::FirewallPort) -> Result<PlannedPort, Status> {
    let port = u16::try_from(p.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("firewall.ports.port {} is not 1-65535", p.port))
        })?;
    let proto = match pb::Protocol::try_from(p.proto) {
        // Unspecified: TCP, the default of a firewall port.
        Ok(p) => Proto::try_from(p).unwrap_or_default(),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "firewall.ports.proto: value {} is not one this agent knows: use tcp or udp",
                p.proto
            )))
        }
    };
    Ok(PlannedPort {
        port,
        proto,
        sources: nets("firewall.ports.sources", &p.sources)?,
        reason: p.reason.clone(),
    })
}

fn nets(field: &str, v: &[String]) -> Result<Vec<IpNet>, Status> {
    if v.len() > MAX_FW_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{field} has more than {MAX_FW_ENTRIES} entries"
        )));
    }
    v.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Status::invalid_argument(format!("{field}: {s:?} is not an address or CIDR"))
                })
        })
        .collect()
}

fn fw_status(e: FirewallError) -> Status {
    match e {
        FirewallError::InvalidAllowList(_) | FirewallError::InvalidInput(_) => {
            Status::invalid_argument(e.to_string())
        }
        FirewallError::ChangePending(_)
        | FirewallError::NoSuchChange(_)
        | FirewallError::Expired(_)
        | FirewallError::ToolMissing(_)
        | FirewallError::Unsupported { .. }
        | FirewallError::Validation(_) => Status::failed_precondition(e.to_string()),
        FirewallError::Tool { .. } | FirewallError::State { .. } => Status::internal(e.to_string()),
    }
}

/// The signing material, read per request so a renewed certificate is used at once.
struct Signer {
    agent_id: String,
    cert_der: Vec<u8>,
    cert_sha256: String,
    pkcs8: Vec<u8>,
    host: String,
}

impl Signer {
    fn load(state_dir: &Path) -> Result<Self, Status> {
        let st = crate::state::AgentState::load(state_dir)
            .map_err(|e| Status::internal(format!("agent state: {e:#}")))?;
        let chain = st
            .identity
            .chain()
            .map_err(|e| Status::internal(format!("agent certificate: {e}")))?;
        let cert_der = chain
            .first()
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| Status::internal("identity.pem holds no certificate"))?;
        let pkcs8 = match st
            .identity
            .key()
            .map_err(|e| Status::internal(format!("agent key: {e}")))?
        {
            rustls_pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => {
                return Err(Status::internal(
                    "identity.pem key is not PKCS#8; enroll again",
                ))
            }
        };
        Ok(Signer {
            agent_id: st.config.agent_id,
            cert_sha256: evidence::sha256_hex(&cert_der),
            cert_der,
            pkcs8,
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".into()),
        })
    }

    fn sign(&self, raw: Raw, caller: &Caller) -> Result<String, Status> {
        let refs = |s: &str| -> Vec<String> {
            s.split([',', ';', ' '])
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let status = raw.status;
        let reason = match (raw.reason, status) {
            (Some(r), _) if !r.is_empty() => Some(r),
            (_, EvidenceStatus::Unknown | EvidenceStatus::NotApplicable) => {
                Some("no reason given by the check".into())
            }
            _ => None,
        };
        let rec = EvidenceRecord {
            format_version: evidence::RECORD_FORMAT_VERSION,
            agent_id: self.agent_id.clone(),
            agent_cert_sha256: self.cert_sha256.clone(),
            host: self.host.clone(),
            check_id: raw.check_id,
            catalog_version: catalog::CATALOG_VERSION.into(),
            mlps_refs: refs(&raw.mlps),
            cis_refs: refs(&raw.cis),
            operation: raw.operation,
            observed: cap(raw.observed),
            files_read: raw.files,
            expected: cap(raw.expected),
            status,
            reason: reason.map(cap),
            diff_applied: raw.diff.filter(|d| !d.is_empty()).map(cap),
            backup_ref: raw.backup.filter(|b| !b.is_empty()),
            operator: caller.operator.clone(),
            time_utc_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            agent_version: crate::VERSION.into(),
            controller_request_id: caller.request_id.clone(),
            firewall: raw.firewall,
        };
        let signed: SignedRecord = evidence::sign(rec, &self.pkcs8)
            .map_err(|e| Status::internal(format!("signing evidence: {e}")))?;
        serde_json::to_string(&signed)
            .map_err(|e| Status::internal(format!("encoding evidence: {e}")))
    }
}

/// Caps a free-text field to the evidence limit (on a character boundary).
fn cap(mut s: String) -> String {
    let max = evidence::MAX_TEXT_BYTES - 64;
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push_str("\n[truncated]");
    }
    s
}

/// Raw material of one record.
struct Raw {
    operation: EvidenceOperation,
    check_id: String,
    mlps: String,
    cis: String,
    observed: String,
    files: BTreeMap<String, String>,
    expected: String,
    status: EvidenceStatus,
    reason: Option<String>,
    diff: Option<String>,
    backup: Option<String>,
    /// The typed firewall facts the record signs (format version 2).
    firewall: Option<FirewallFacts>,
}

fn files(f: &[catalog::FileHash]) -> BTreeMap<String, String> {
    f.iter()
        .filter_map(|h| Some((h.path.clone(), h.sha256.clone()?)))
        .filter(|(p, _)| p.starts_with('/'))
        .collect()
}

/// A check's status on the wire.
fn check_status(s: EvidenceStatus) -> pb::CheckStatus {
    match s {
        EvidenceStatus::Compliant => pb::CheckStatus::Compliant,
        EvidenceStatus::NonCompliant => pb::CheckStatus::NonCompliant,
        EvidenceStatus::NotApplicable => pb::CheckStatus::NotApplicable,
        EvidenceStatus::Unknown => pb::CheckStatus::Unknown,
    }
}

fn outcome_of_audit(a: &catalog::CheckResult) -> pb::CheckOutcome {
    pb::CheckOutcome {
        id: a.id.clone(),
        title_en: a.title_en.clone(),
        title_zh: a.title_zh.clone(),
        mlps: a.mlps.clone(),
        cis: a.cis.clone(),
        status: check_status(a.status) as i32,
        observed: a.observed.clone(),
        expected: a.expected.clone(),
        reason: a.reason.clone().unwrap_or_default(),
        report_only: a.report_only,
        ..Default::default()
    }
}

fn raw_of_audit(a: &catalog::CheckResult) -> Raw {
    Raw {
        operation: EvidenceOperation::Audit,
        check_id: a.id.clone(),
        mlps: a.mlps.clone(),
        cis: a.cis.clone(),
        observed: a.observed.clone(),
        files: files(&a.files),
        expected: a.expected.clone(),
        status: a.status,
        reason: a.reason.clone(),
        diff: None,
        backup: None,
        firewall: a.firewall.clone(),
    }
}

fn titles(id: &str) -> (String, String, bool) {
    catalog::catalog()
        .iter()
        .find(|c| c.id == id)
        .map(|c| (c.title_en.into(), c.title_zh.into(), c.report_only))
        .unwrap_or_default()
}

fn record_pair(r: &catalog::EvidenceRecord) -> (pb::CheckOutcome, Raw) {
    let operation = match r.operation {
        catalog::Operation::Audit => EvidenceOperation::Audit,
        catalog::Operation::Apply => EvidenceOperation::Apply,
        catalog::Operation::Verify => EvidenceOperation::Verify,
        catalog::Operation::Rollback => EvidenceOperation::Rollback,
    };
    let mut diff = r.diff.clone();
    for a in &r.actions {
        diff.push_str(&format!("# action: {a}\n"));
    }
    let observed = match &r.observed_before {
        Some(b) if *b != r.observed => format!("before: {b}\nafter: {}", r.observed),
        _ => r.observed.clone(),
    };
    let reason = match (&r.reason, &r.error) {
        (Some(a), Some(e)) => Some(format!("{a}; error: {e}")),
        (None, Some(e)) => Some(format!("error: {e}")),
        (a, None) => a.clone(),
    };
    let backup = r.backup.as_ref().map(|b| b.id.clone());
    let (title_en, title_zh, report_only) = titles(&r.check_id);
    let o = pb::CheckOutcome {
        id: r.check_id.clone(),
        title_en,
        title_zh,
        mlps: r.mlps.clone(),
        cis: r.cis.clone(),
        status: check_status(r.status) as i32,
        observed: r.observed.clone(),
        observed_before: r.observed_before.clone().unwrap_or_default(),
        expected: r.expected.clone(),
        reason: r.reason.clone().unwrap_or_default(),
        diff: r.diff.clone(),
        actions: r.actions.clone(),
        notes: r.notes.clone(),
        backup_id: backup.clone().unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        blocked: String::new(),
        report_only,
    };
    let raw = Raw {
        operation,
        check_id: r.check_id.clone(),
        mlps: r.mlps.clone(),
        cis: r.cis.clone(),
        observed,
        files: files(&r.files),
        expected: r.expected.clone(),
        status: r.status,
        reason,
        diff: Some(diff),
        backup,
        firewall: r.firewall.clone(),
    };
    (o, raw)
}

fn harden_status(e: catalog::HardenError) -> Status {
    match e {
        catalog::HardenError::UnknownCheck(_) | catalog::HardenError::Policy(_) => {
            Status::invalid_argument(e.to_string())
        }
        catalog::HardenError::Busy(_) => Status::failed_precondition(e.to_string()),
        catalog::HardenError::Backup(catalog::BackupError::NotFound(_)) => {
            Status::failed_precondition(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// The newest backup id in `dir` (ids sort by time), if any.
fn newest_backup(dir: &Path) -> Option<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // Ids start with the Unix time, zero-padded nanoseconds follow.
    ids.sort_by_key(|id| {
        let mut it = id.split('-');
        (
            it.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            it.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
        )
    });
    ids.pop()
}

pub async fn harden(
    st: &HardenState,
    r: Request<pb::HardenRequest>,
) -> Result<pb::HardenResponse, Status> {
    let r = r.into_inner();
    let op = op(r.operation)?;
    check_ids(&r.check_ids)?;
    let policy = policy(r.policy)?;
    let caller = caller(r.caller)?;
    if r.firewall.is_some() && op != Op::Apply {
        return Err(Status::invalid_argument(
            "firewall is only accepted with operation apply",
        ));
    }
    if r.backup_id.len() > 128
        || r.backup_id.contains('/')
        || r.backup_id.contains("..")
        || r.backup_id.chars().any(char::is_control)
    {
        return Err(Status::invalid_argument(
            "backup_id must be an id printed by apply (no path)",
        ));
    }
    let signer = Signer::load(&st.state_dir)?;
    let root = st.root.clone();
    let backup_dir = st.backup_dir.clone();
    let ids = r.check_ids.clone();
    let backup_id = r.backup_id.clone();
    let fw_hook = st.firewall_hook.clone();
    tracing::info!(operation = ?op, checks = ids.len(), request = %caller.request_id, user = %caller.operator.user, "harden request");

    let (checks, raws, backup) = tokio::task::spawn_blocking(move || {
        run_catalog(op, &root, &policy, &*fw_hook, &ids, &backup_dir, &backup_id)
    })
    .await
    .map_err(|e| Status::internal(format!("harden task failed: {e}")))??;

    let mut evidence = Vec::with_capacity(raws.len() + 1);
    for raw in raws {
        evidence.push(signer.sign(raw, &caller)?);
    }

    let mut fw_pending = None;
    if let Some(fw) = r.firewall {
        let (pending, plan, raw) = firewall_apply(st, fw).await?;
        evidence.push(signer.sign(raw, &caller)?);
        fw_pending = Some(pending_pb(&pending, &plan));
    }

    Ok(pb::HardenResponse {
        agent_id: signer.agent_id.clone(),
        host: signer.host.clone(),
        checks,
        evidence,
        agent_cert_der: signer.cert_der,
        backup_id: backup.unwrap_or_default(),
        firewall: fw_pending,
    })
}

type CatalogOut = (Vec<pb::CheckOutcome>, Vec<Raw>, Option<String>);

fn run_catalog(
    op: Op,
    root: &Path,
    policy: &Policy,
    firewall: &dyn catalog::FirewallHook,
    ids: &[String],
    backup_dir: &Path,
    backup_id: &str,
) -> Result<CatalogOut, Status> {
    let root =
        Root::new(root).map_err(|e| Status::failed_precondition(format!("harden root: {e}")))?;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    match op {
        Op::Audit => {
            let res = catalog::audit(&root, policy, firewall, &ids);
            Ok((
                res.iter().map(outcome_of_audit).collect(),
                res.iter().map(raw_of_audit).collect(),
                None,
            ))
        }
        Op::Plan => {
            let plan = catalog::plan(&root, policy, firewall, &ids).map_err(harden_status)?;
            let checks = plan
                .iter()
                .map(|e| {
                    let mut o = outcome_of_audit(&e.audit);
                    o.diff = e
                        .changes
                        .iter()
                        .map(|c| c.diff.clone())
                        .collect::<Vec<_>>()
                        .join("");
                    o.actions = e.actions.clone();
                    o.notes = e.notes.clone();
                    o.blocked = e.blocked.clone().unwrap_or_default();
                    o
                })
                .collect();
            Ok((checks, Vec::new(), None))
        }
        Op::Apply => {
            let rep = catalog::apply(
                &root,
                policy,
                firewall,
                &ids,
                &ApplyOptions {
                    backup_dir: backup_dir.to_path_buf(),
                },
            )
            .map_err(harden_status)?;
            let (checks, raws) = rep.records.iter().map(record_pair).unzip();
            Ok((checks, raws, rep.backup.map(|b| b.id)))
        }
        Op::Verify => {
            let recs = catalog::verify(&root, policy, firewall, &ids).map_err(harden_status)?;
            let (checks, raws) = recs.iter().map(record_pair).unzip();
            Ok((checks, raws, None))
        }
        Op::Rollback => {
            let id = if backup_id.is_empty() {
                newest_backup(backup_dir).ok_or_else(|| {
                    Status::failed_precondition("no backup on this agent: nothing to roll back")
                })?
            } else {
                backup_id.to_string()
            };
            let rep = catalog::rollback(&root, policy, firewall, backup_dir, &id)
                .map_err(harden_status)?;
            let (checks, raws) = rep.records.iter().map(record_pair).unzip();
            Ok((checks, raws, Some(rep.backup.id)))
        }
    }
}

/// The host's listening sockets for the firewall checks and plans; `Err` with why when they
/// cannot be listed (never an empty list in place of an unread one).
pub(crate) fn listeners() -> Result<Vec<firewall::Listener>, String> {
    use preflight_probe::ports;
    let opts = ports::ListOptions {
        tcp: true,
        udp: true,
        processes: true,
    };
    Ok(ports::list_listening(&opts)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|l| firewall::Listener {
            proto: match l.proto {
                ports::Proto::Tcp => Proto::Tcp,
                ports::Proto::Udp => Proto::Udp,
            },
            addr: l.address,
            port: l.port,
            process: l.process,
        })
        .collect())
}

fn timeout(s: u32) -> Duration {
    if s == 0 {
        firewall::DEFAULT_CONFIRM_TIMEOUT
    } else {
        Duration::from_secs(u64::from(s))
    }
}

async fn firewall_apply(
    st: &HardenState,
    fw: pb::FirewallChange,
) -> Result<(PendingChange, FirewallPlan, Raw), Status> {
    let mgr = st
        .firewall
        .clone()
        .map_err(|e| Status::failed_precondition(format!("firewall: {e}")))?;
    if fw.ports.len() > MAX_FW_ENTRIES {
        return Err(Status::invalid_argument(
            "firewall.ports has too many entries",
        ));
    }
    let planned = fw
        .ports
        .iter()
        .map(planned_port)
        .collect::<Result<Vec<_>, _>>()?;
    let t = timeout(fw.confirm_timeout_s);
    let agent_port = st.agent_port;
    let (pending, plan) = if fw.allow_port {
        let [p] = planned.as_slice() else {
            return Err(Status::invalid_argument(
                "firewall.ports must hold exactly one port with allow_port",
            ));
        };
        let p = p.clone();
        tokio::task::spawn_blocking(move || {
            mgr.allow_port(p.port, p.proto, p.sources, &p.reason, t)
                .map(|(plan, pending)| (pending, plan))
        })
        .await
        .map_err(|e| Status::internal(format!("firewall task failed: {e}")))?
        .map_err(fw_status)?
    } else {
        let list = AllowList {
            mgmt_sources: nets("firewall.mgmt_sources", &fw.mgmt_sources)?,
            ssh_port: match fw.ssh_port {
                0 => 22,
                p => u16::try_from(p).map_err(|_| {
                    Status::invalid_argument(format!("firewall.ssh_port {p} is not 1-65535"))
                })?,
            },
            agent_port,
            controller_addrs: nets("firewall.controller_addrs", &fw.controller_addrs)?
                .into_iter()
                .map(|n| n.addr())
                .collect(),
            planned,
            current_listeners: Vec::new(),
        };
        // A plan made without the listeners would not say which of them it blocks.
        let current = tokio::task::spawn_blocking(listeners)
            .await
            .map_err(|e| Status::internal(format!("listener task failed: {e}")))?
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "cannot list the listening sockets, so no firewall change is made (it could not say which listeners it blocks): {e}"
                ))
            })?;
        tokio::task::spawn_blocking(move || {
            let mut list = list;
            list.current_listeners = current;
            let plan = mgr.plan(&list)?;
            let pending = mgr.apply_with_confirm(&plan, t)?;
            Ok::<_, FirewallError>((pending, plan))
        })
        .await
        .map_err(|e| Status::internal(format!("firewall task failed: {e}")))?
        .map_err(fw_status)?
    };
    let deadline_ms = deadline_ms(&pending);
    tracing::info!(change = %pending.id, backend = %pending.backend, deadline_ms, "firewall change applied; waiting for confirmation");
    let raw = Raw {
        operation: EvidenceOperation::Apply,
        check_id: "fw.allowlist_ports".into(),
        mlps: fw_refs().0,
        cis: fw_refs().1,
        observed: format!(
            "applied change {} ({}), rolled back unless confirmed by {}",
            pending.id,
            pending.backend,
            preflight_core::timefmt::utc(deadline_ms / 1000)
        ),
        files: BTreeMap::new(),
        expected: allow_summary(&plan.allow_list),
        status: EvidenceStatus::Unknown,
        reason: Some("waiting for the controller's confirmation over a new connection".into()),
        diff: Some(plan.diff_vs_current.clone()),
        backup: Some(format!("firewall-snapshot:{}", pending.id)),
        // A pending change states no firewall yet: its confirmation does.
        firewall: None,
    };
    Ok((pending, plan, raw))
}

fn fw_refs() -> (String, String) {
    catalog::catalog()
        .iter()
        .find(|c| c.id == "fw.allowlist_ports")
        .map(|c| (c.mlps.to_string(), c.cis.to_string()))
        .unwrap_or_default()
}

fn allow_summary(l: &AllowList) -> String {
    let mut parts = vec![format!(
        "ssh {}/tcp and agent {}/tcp from {}",
        l.ssh_port,
        l.agent_port,
        l.admin_sources()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )];
    for p in &l.planned {
        let from = if p.sources.is_empty() {
            "anywhere".to_string()
        } else {
            p.sources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(format!("{}/{} from {from} ({})", p.port, p.proto, p.reason));
    }
    parts.push("everything else dropped".into());
    parts.join("; ")
}

/// The evidence of a confirmed change: the allow-list it made live, as text for people and as
/// typed facts for the controller's gates.
fn confirmation_raw(
    change_id: &str,
    persisted: &str,
    backend: Backend,
    list: Option<&AllowList>,
) -> Raw {
    let (mlps, cis) = fw_refs();
    Raw {
        operation: EvidenceOperation::Verify,
        check_id: "fw.allowlist_ports".into(),
        mlps,
        cis,
        observed: format!(
            "change {change_id} confirmed by the controller over a new connection; {persisted}"
        ),
        files: BTreeMap::new(),
        expected: list.map(allow_summary).unwrap_or_default(),
        status: EvidenceStatus::Compliant,
        reason: None,
        diff: None,
        backup: None,
        firewall: list.map(|l| firewall::audit::allow_list_facts(backend, l)),
    }
}

fn deadline_ms(p: &PendingChange) -> i64 {
    p.deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn backend_pb(b: Backend) -> pb::FirewallBackend {
    match b {
        Backend::Nftables => pb::FirewallBackend::Nftables,
        Backend::Iptables => pb::FirewallBackend::Iptables,
        Backend::Firewalld => pb::FirewallBackend::Firewalld,
    }
}

fn pending_pb(p: &PendingChange, plan: &FirewallPlan) -> pb::FirewallPending {
    pb::FirewallPending {
        change_id: p.id.clone(),
        deadline_unix_ms: deadline_ms(p),
        backend: backend_pb(p.backend) as i32,
        rendered: plan.rendered.clone(),
        diff: plan.diff_vs_current.clone(),
        blocked_listeners: plan
            .blocked_listeners
            .iter()
            .map(|l| {
                format!(
                    "{}/{}:{} ({})",
                    l.proto,
                    l.addr,
                    l.port,
                    l.process.as_deref().unwrap_or("?")
                )
            })
            .collect(),
    }
}

pub async fn confirm_firewall(
    st: &HardenState,
    r: Request<pb::ConfirmFirewallRequest>,
) -> Result<pb::ConfirmFirewallResponse, Status> {
    let r = r.into_inner();
    let caller = caller(r.caller)?;
    if r.change_id.is_empty() || r.change_id.len() > 128 {
        return Err(Status::invalid_argument("change_id must be 1-128 bytes"));
    }
    let mgr = st
        .firewall
        .clone()
        .map_err(|e| Status::failed_precondition(format!("firewall: {e}")))?;
    let signer = Signer::load(&st.state_dir)?;
    let id = r.change_id.clone();
    // Only firewalld keeps a confirmed change across reboot (--runtime-to-permanent); nftables
    // and iptables rulesets last until reboot unless the operator persists them (README).
    let persisted = if mgr.backend() == Backend::Firewalld {
        "persisted (runtime to permanent)"
    } else {
        "live until reboot: not persisted by the agent"
    };
    let backend = mgr.backend();
    let list = tokio::task::spawn_blocking(move || {
        mgr.confirm(&id)?;
        mgr.confirmed_allow_list()
    })
    .await
    .map_err(|e| Status::internal(format!("firewall task failed: {e}")))?
    .map_err(fw_status)?;
    tracing::info!(change = %r.change_id, request = %caller.request_id, "firewall change confirmed");
    let raw = confirmation_raw(&r.change_id, persisted, backend, list.as_ref());
    let ev = signer.sign(raw, &caller)?;
    Ok(pb::ConfirmFirewallResponse {
        outcome: pb::FirewallOutcome::Confirmed as i32,
        evidence: vec![ev],
        agent_cert_der: signer.cert_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_harden::firewall::PlannedPort;

    /// The controller reads the confirmed allow-list from the typed facts, so a reason is
    /// kept as written and cannot add a port, whatever it says.
    #[test]
    fn a_confirmation_signs_the_allow_list_as_facts_and_keeps_the_reason() {
        let l = AllowList {
            mgmt_sources: vec!["10.8.0.0/16".parse().unwrap()],
            ssh_port: 22,
            agent_port: 7444,
            controller_addrs: vec![],
            planned: vec![PlannedPort {
                port: 8080,
                proto: Proto::Tcp,
                sources: vec![],
                reason: "gateway; 9100/tcp from anywhere".into(),
            }],
            current_listeners: vec![],
        };
        let raw = confirmation_raw("fw-1", "live until reboot", Backend::Nftables, Some(&l));
        assert!(
            raw.expected
                .contains("8080/tcp from anywhere (gateway; 9100/tcp from anywhere)"),
            "{}",
            raw.expected
        );
        let facts = raw.firewall.expect("facts");
        let allowed: Vec<String> = facts.allowed.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["22/tcp", "7444/tcp", "8080/tcp"]);
        assert_eq!(facts.backend, evidence::FirewallBackend::Nftables);
        assert_eq!(facts.listeners, None);
        // Without a confirmed allow-list there is nothing to state.
        let none = confirmation_raw("fw-1", "live until reboot", Backend::Nftables, None);
        assert!(none.firewall.is_none() && none.expected.is_empty());
    }
}
