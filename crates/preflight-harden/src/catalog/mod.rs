//! The hardening check catalog of CHECKS.md: account, authentication, SSH, session, permission,
//! audit, logging and MAC checks, each with audit, plan, apply, verify and rollback against a
//! root prefix ([`Root`], default `/`).
//!
//! Firewall checks (`fw.*`) are listed here with their references; their audit is delegated to
//! the [`FirewallHook`] the caller passes in (the agent passes `firewall::LiveFirewall`; with
//! [`NoFirewall`] they report `unknown`), and which the checks find in their context.
//!
//! Invariants: nothing outside the root prefix is read or written; report-only checks never
//! change anything; every change is backed up before it is made ([`backup`]); a file a check
//! cannot parse makes the check `unknown` and is never written.

pub mod backup;
pub mod root;
pub mod text;

mod authselect;
mod checks;
mod host;
mod sshd;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use preflight_core::evidence::{EvidenceStatus, FirewallFacts};

pub use backup::{BackupError, BackupRef, DEFAULT_BACKUP_DIR};
pub use host::{Family, Host, PamLayout};
pub use root::{FileMeta, Root, RootError};

/// Version of this catalog, recorded in evidence.
pub const CATALOG_VERSION: &str = "1";

/// Static description of a check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckInfo {
    /// Stable id (`acct.pass_max_days`).
    pub id: &'static str,
    /// English title.
    pub title_en: &'static str,
    /// Chinese title.
    pub title_zh: &'static str,
    /// MLPS 2.0 item(s), common L3 numbering (`L3-CES1-01`).
    pub mlps: &'static str,
    /// CIS benchmark item (RHEL7 v2.2), empty when none.
    pub cis: &'static str,
    /// Never changed automatically (CHECKS.md safety rule 7).
    pub report_only: bool,
    /// Reads live state (processes, sockets, binaries) that a fixture tree cannot provide.
    pub live_state: bool,
    /// Implemented by the firewall module.
    pub firewall: bool,
}

/// A file read by a check and its SHA-256 (`None` when the file did not exist).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileHash {
    /// In-host path.
    pub path: String,
    /// Hex SHA-256 of the content.
    pub sha256: Option<String>,
}

/// The audit result of one check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// Check id.
    pub id: String,
    /// English title.
    pub title_en: String,
    /// Chinese title.
    pub title_zh: String,
    /// MLPS reference.
    pub mlps: String,
    /// CIS reference.
    pub cis: String,
    /// Report-only check.
    pub report_only: bool,
    /// Status.
    pub status: EvidenceStatus,
    /// Why the status is unknown or not applicable (or a remark).
    pub reason: Option<String>,
    /// Observed raw value.
    pub observed: String,
    /// Expected value.
    pub expected: String,
    /// Files read, with hashes.
    pub files: Vec<FileHash>,
    /// The typed firewall facts a `fw.*` check read (signed in the evidence record).
    pub firewall: Option<FirewallFacts>,
}

/// One file change in a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileChange {
    /// In-host path.
    pub path: String,
    /// Unified diff (content changes), empty for metadata-only changes.
    pub diff: String,
}

/// The plan of one check: what apply would do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanEntry {
    /// The audit it is based on.
    pub audit: CheckResult,
    /// Content changes with diffs.
    pub changes: Vec<FileChange>,
    /// Other actions (`chage --maxdays 90 alice`, `chmod 0000 /etc/shadow`, symlinks).
    pub actions: Vec<String>,
    /// Remarks: validation skipped, authconfig, safety rules applied.
    pub notes: Vec<String>,
    /// Why this check cannot be changed automatically, if so.
    pub blocked: Option<String>,
}

/// Which operation an evidence record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Read-only audit.
    Audit,
    /// A change.
    Apply,
    /// Audit after a change.
    Verify,
    /// Restore from backup.
    Rollback,
}

/// Raw material of one evidence record (signing and chaining happen elsewhere).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvidenceRecord {
    /// Operation.
    pub operation: Operation,
    /// Check id.
    pub check_id: String,
    /// Catalog version.
    pub catalog_version: String,
    /// MLPS reference.
    pub mlps: String,
    /// CIS reference.
    pub cis: String,
    /// Observed value (after the operation for apply and rollback).
    pub observed: String,
    /// Observed value before the operation (apply and rollback).
    pub observed_before: Option<String>,
    /// Expected value.
    pub expected: String,
    /// Status (after the operation).
    pub status: EvidenceStatus,
    /// Reason for unknown / not applicable / a refused change.
    pub reason: Option<String>,
    /// Files read, with hashes (after the operation).
    pub files: Vec<FileHash>,
    /// Unified diff of what was changed.
    pub diff: String,
    /// Other actions performed.
    pub actions: Vec<String>,
    /// Backup holding the previous state.
    pub backup: Option<BackupRef>,
    /// Error that stopped the change, if any.
    pub error: Option<String>,
    /// Remarks on the change (validation run or skipped, safety rules applied).
    pub notes: Vec<String>,
    /// The typed firewall facts a `fw.*` check read (after the operation).
    pub firewall: Option<FirewallFacts>,
}

/// Result of [`apply`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    /// The backup set (None when nothing changed).
    pub backup: Option<BackupRef>,
    /// One record per check.
    pub records: Vec<EvidenceRecord>,
}

/// Result of [`rollback`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    /// The backup restored.
    pub backup: BackupRef,
    /// Paths restored or removed.
    pub restored: Vec<String>,
    /// One record per check touched by the backup.
    pub records: Vec<EvidenceRecord>,
}

/// Thresholds, with CHECKS.md defaults; configurable per batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Maximum password age in days.
    pub pass_max_days: u32,
    /// Minimum days between password changes.
    pub pass_min_days: u32,
    /// Warning days before expiry.
    pub pass_warn_age: u32,
    /// Days after expiry before the account is disabled.
    pub inactive_days: u32,
    /// Minimum password length.
    pub pw_minlen: u32,
    /// Minimum character classes.
    pub pw_min_classes: u32,
    /// Remembered old passwords.
    pub pw_remember: u32,
    /// Password hash (`SHA512`).
    pub pw_hash: String,
    /// Failed attempts before lockout (maximum).
    pub lockout_deny: u32,
    /// Lockout duration lower bound, seconds.
    pub lockout_unlock_min: u32,
    /// Lockout duration upper bound, seconds.
    pub lockout_unlock_max: u32,
    /// Lockout duration written by apply, seconds.
    pub lockout_unlock_time: u32,
    /// Shell idle timeout maximum, seconds.
    pub tmout: u32,
    /// sshd ClientAliveInterval maximum, seconds.
    pub ssh_client_alive_interval: u32,
    /// sshd ClientAliveCountMax maximum.
    pub ssh_client_alive_count_max: u32,
    /// sshd MaxAuthTries maximum.
    pub ssh_max_auth_tries: u32,
    /// Oldest acceptable OpenSSH (major, minor).
    pub openssh_min: (u32, u32),
    /// Required umask: an octal string in files (`"027"`), or the number itself.
    #[serde(with = "octal")]
    pub umask: u32,
    /// Log retention, days.
    pub log_retention_days: u32,
    /// UID from which accounts are interactive users.
    pub uid_min: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            pass_max_days: 90,
            pass_min_days: 1,
            pass_warn_age: 7,
            inactive_days: 30,
            pw_minlen: 8,
            pw_min_classes: 3,
            pw_remember: 5,
            pw_hash: "SHA512".into(),
            lockout_deny: 5,
            lockout_unlock_min: 300,
            lockout_unlock_max: 900,
            lockout_unlock_time: 600,
            tmout: 600,
            ssh_client_alive_interval: 300,
            ssh_client_alive_count_max: 3,
            ssh_max_auth_tries: 4,
            openssh_min: (7, 4),
            umask: 0o027,
            log_retention_days: 180,
            uid_min: 1000,
        }
    }
}

/// Serde of a umask as an octal string, also accepting a plain number.
mod octal {
    /// Writes `"027"`.
    pub fn serialize<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:03o}"))
    }

    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        Num(u32),
        Str(String),
    }

    /// Reads `"027"` (octal) or `23`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        match <Either as serde::Deserialize>::deserialize(d)? {
            Either::Num(n) => Ok(n),
            Either::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
                serde::de::Error::custom(format!("umask {s:?} is not octal; write it like \"027\""))
            }),
        }
    }
}

/// A policy value out of range.
#[derive(Debug, thiserror::Error)]
#[error("policy field {field} = {value} is invalid: {fix}")]
pub struct InvalidPolicy {
    /// Field name.
    pub field: &'static str,
    /// Value given.
    pub value: String,
    /// What to do.
    pub fix: &'static str,
}

impl Policy {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let bad = |field, value: &dyn std::fmt::Display, fix| InvalidPolicy {
            field,
            value: value.to_string(),
            fix,
        };
        if !(1..=9999).contains(&self.pass_max_days) {
            return Err(bad("pass_max_days", &self.pass_max_days, "use 1..=9999"));
        }
        if self.pass_min_days > self.pass_max_days {
            return Err(bad(
                "pass_min_days",
                &self.pass_min_days,
                "must not exceed pass_max_days",
            ));
        }
        if self.pass_warn_age > self.pass_max_days {
            return Err(bad(
                "pass_warn_age",
                &self.pass_warn_age,
                "must not exceed pass_max_days",
            ));
        }
        if self.inactive_days > 9999 {
            return Err(bad("inactive_days", &self.inactive_days, "use 0..=9999"));
        }
        if !(6..=128).contains(&self.pw_minlen) {
            return Err(bad("pw_minlen", &self.pw_minlen, "use 6..=128"));
        }
        if !(1..=4).contains(&self.pw_min_classes) {
            return Err(bad("pw_min_classes", &self.pw_min_classes, "use 1..=4"));
        }
        if !(1..=400).contains(&self.pw_remember) {
            return Err(bad("pw_remember", &self.pw_remember, "use 1..=400"));
        }
        if !["SHA512", "SHA256", "YESCRYPT"].contains(&self.pw_hash.as_str()) {
            return Err(bad(
                "pw_hash",
                &self.pw_hash,
                "use SHA512, SHA256 or YESCRYPT",
            ));
        }
        if !(1..=100).contains(&self.lockout_deny) {
            return Err(bad("lockout_deny", &self.lockout_deny, "use 1..=100"));
        }
        if self.lockout_unlock_min > self.lockout_unlock_max
            || !(self.lockout_unlock_min..=self.lockout_unlock_max)
                .contains(&self.lockout_unlock_time)
        {
            return Err(bad(
                "lockout_unlock_time",
                &self.lockout_unlock_time,
                "must lie within lockout_unlock_min..=lockout_unlock_max",
            ));
        }
        if !(1..=86400).contains(&self.tmout) {
            return Err(bad("tmout", &self.tmout, "use 1..=86400"));
        }
        if !(1..=3600).contains(&self.ssh_client_alive_interval) {
            return Err(bad(
                "ssh_client_alive_interval",
                &self.ssh_client_alive_interval,
                "use 1..=3600",
            ));
        }
        if !(1..=10).contains(&self.ssh_client_alive_count_max) {
            return Err(bad(
                "ssh_client_alive_count_max",
                &self.ssh_client_alive_count_max,
                "use 1..=10",
            ));
        }
        if !(1..=10).contains(&self.ssh_max_auth_tries) {
            return Err(bad(
                "ssh_max_auth_tries",
                &self.ssh_max_auth_tries,
                "use 1..=10",
            ));
        }
        if self.umask > 0o777 || self.umask & 0o022 != 0o022 {
            return Err(bad(
                "umask",
                &format!("{:o}", self.umask),
                "use an octal umask that masks at least 022",
            ));
        }
        if !(1..=3650).contains(&self.log_retention_days) {
            return Err(bad(
                "log_retention_days",
                &self.log_retention_days,
                "use 1..=3650",
            ));
        }
        if !(100..=60000).contains(&self.uid_min) {
            return Err(bad("uid_min", &self.uid_min, "use 100..=60000"));
        }
        Ok(())
    }
}

/// A failure of plan, apply, verify or rollback as a whole.
#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    /// An id not in the catalog.
    #[error("unknown check id {0:?}; `preflight-agent harden audit` lists the valid ids")]
    UnknownCheck(String),
    /// The policy is out of range.
    #[error(transparent)]
    Policy(#[from] InvalidPolicy),
    /// Backup or restore failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Root prefix access failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// Another apply or rollback holds the backup directory's lock.
    #[error(
        "another harden apply or rollback is running (lock {0} is held); wait for it to finish"
    )]
    Busy(String),
}

/// Holds an exclusive lock on `<backup dir>/.lock` for one apply or rollback.
fn lock(backup_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, HardenError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(backup_dir)
        .map_err(|source| BackupError::Io {
            op: "create",
            path: backup_dir.display().to_string(),
            source,
        })?;
    let p = backup_dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&p)
        .map_err(|source| BackupError::Io {
            op: "open",
            path: p.display().to_string(),
            source,
        })?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| HardenError::Busy(p.display().to_string()))
}

/// Where apply keeps backups.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Backup directory (outside the root prefix in tests).
    pub backup_dir: PathBuf,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            backup_dir: PathBuf::from(DEFAULT_BACKUP_DIR),
        }
    }
}

/// The implementation of the `fw.*` checks, passed in by the caller of [`audit`], [`plan`],
/// [`apply`], [`verify`] and [`rollback`] (the firewall module's `LiveFirewall` on an agent).
pub trait FirewallHook: Send + Sync {
    /// Audits one `fw.*` check: status, observed, expected, reason, and the typed facts read.
    fn audit(&self, root: &Root, check_id: &str) -> FirewallAudit;
}

/// What a [`FirewallHook`] audit found: status, observed, expected, reason, typed facts.
pub type FirewallAudit = (
    EvidenceStatus,
    String,
    String,
    Option<String>,
    Option<FirewallFacts>,
);

/// No firewall backend wired: every `fw.*` check is `unknown`, saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFirewall;

impl FirewallHook for NoFirewall {
    fn audit(&self, _: &Root, _: &str) -> FirewallAudit {
        let o = Outcome::unknown("firewall backend not wired", "see CHECKS.md");
        (o.status, o.observed, o.expected, o.reason, None)
    }
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// The catalog, in CHECKS.md order.
pub fn catalog() -> &'static [CheckInfo] {
    static CAT: OnceLock<Vec<CheckInfo>> = OnceLock::new();
    CAT.get_or_init(|| checks::all().iter().map(|c| c.info.clone()).collect())
}

/// Validates check ids; empty means all.
pub fn select(ids: &[&str]) -> Result<Vec<&'static CheckInfo>, HardenError> {
    if ids.is_empty() {
        return Ok(catalog().iter().collect());
    }
    ids.iter()
        .map(|id| {
            catalog()
                .iter()
                .find(|c| c.id == *id)
                .ok_or_else(|| HardenError::UnknownCheck((*id).to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------- internal model

/// Why a check could not be decided or changed.
#[derive(Debug, Clone)]
pub(crate) struct Unk(pub String);

impl From<text::ParseError> for Unk {
    fn from(e: text::ParseError) -> Self {
        Unk(e.to_string())
    }
}
impl From<RootError> for Unk {
    fn from(e: RootError) -> Self {
        Unk(e.to_string())
    }
}

/// What an audit found.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: EvidenceStatus,
    pub observed: String,
    pub expected: String,
    pub reason: Option<String>,
}

impl Outcome {
    pub fn new(ok: bool, observed: impl Into<String>, expected: impl Into<String>) -> Outcome {
        Outcome {
            status: if ok {
                EvidenceStatus::Compliant
            } else {
                EvidenceStatus::NonCompliant
            },
            observed: observed.into(),
            expected: expected.into(),
            reason: None,
        }
    }
    pub fn unknown(reason: impl Into<String>, expected: impl Into<String>) -> Outcome {
        Outcome {
            status: EvidenceStatus::Unknown,
            observed: String::new(),
            expected: expected.into(),
            reason: Some(reason.into()),
        }
    }
    /// The rest of the check is live state of the host (processes, binaries) and the catalog
    /// runs on another root prefix (a fixture tree, a mounted image): not applicable there,
    /// like the fw.* checks, rather than `unknown`, which blocks the `harden` gate.
    pub fn live_only(
        observed: impl Into<String>,
        reason: impl Into<String>,
        expected: impl Into<String>,
    ) -> Outcome {
        Outcome {
            status: EvidenceStatus::NotApplicable,
            observed: observed.into(),
            expected: expected.into(),
            reason: Some(reason.into()),
        }
    }
}

/// A fixed validation or management command, run only when the root prefix is `/`.
#[derive(Debug, Clone)]
pub(crate) struct FixedCommand {
    pub program: &'static str,
    pub args: Vec<String>,
    pub touches: Vec<String>,
}

/// The changes a check wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fix {
    /// New content by path, with the metadata for files that do not exist yet.
    pub writes: BTreeMap<String, (String, FileMeta)>,
    /// Metadata changes.
    pub metas: Vec<(String, FileMeta)>,
    /// Symlinks to create (path, target).
    pub links: Vec<(String, String)>,
    /// Symlinks to remove.
    pub unlinks: Vec<String>,
    /// Management commands (authselect on a live host).
    pub commands: Vec<FixedCommand>,
    /// Descriptions of account-level actions.
    pub actions: Vec<String>,
    /// Remarks for the plan.
    pub notes: Vec<String>,
    /// Run `sshd -t` on the resulting configuration.
    pub validate_sshd: bool,
}

pub(crate) const NEW_FILE: FileMeta = FileMeta {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

impl Fix {
    pub fn write(&mut self, path: &str, content: String) {
        self.writes.insert(path.to_string(), (content, NEW_FILE));
    }
}

/// Context of one check run: the prefix, the policy, the firewall hook, the host, and the
/// files read.
pub(crate) struct Ctx<'a> {
    pub root: &'a Root,
    pub policy: &'a Policy,
    /// Audits the `fw.*` checks.
    pub firewall: &'a dyn FirewallHook,
    pub host: Host,
    reads: RefCell<BTreeMap<String, Option<String>>>,
}

impl<'a> Ctx<'a> {
    pub fn new(root: &'a Root, policy: &'a Policy, firewall: &'a dyn FirewallHook) -> Ctx<'a> {
        let mut c = Ctx {
            root,
            policy,
            firewall,
            host: Host::default(),
            reads: RefCell::new(BTreeMap::new()),
        };
        c.host = host::detect(&c);
        c.reads.borrow_mut().clear();
        c
    }

    /// Reads a file, recording its hash.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RootError> {
        let data = self.root.read(path)?;
        self.reads
            .borrow_mut()
            .insert(path.to_string(), data.as_deref().map(sha256_hex));
        Ok(data)
    }

    /// Reads a UTF-8 file, recording its hash.
    pub fn read_text(&self, path: &str) -> Result<Option<String>, text::ParseError> {
        match self.read(path) {
            Ok(None) => Ok(None),
            Ok(Some(d)) => text::utf8(path, &d).map(Some),
            Err(e) => Err(text::ParseError {
                path: path.to_string(),
                line: 0,
                what: e.to_string(),
            }),
        }
    }

    fn take_reads(&self) -> Vec<FileHash> {
        self.reads
            .borrow()
            .iter()
            .map(|(p, h)| FileHash {
                path: p.clone(),
                sha256: h.clone(),
            })
            .collect()
    }
}

fn result_of(info: &CheckInfo, o: Outcome, files: Vec<FileHash>) -> CheckResult {
    CheckResult {
        id: info.id.to_string(),
        title_en: info.title_en.to_string(),
        title_zh: info.title_zh.to_string(),
        mlps: info.mlps.to_string(),
        cis: info.cis.to_string(),
        report_only: info.report_only,
        status: o.status,
        reason: o.reason,
        observed: o.observed,
        expected: o.expected,
        files,
        firewall: None,
    }
}

fn run_audit(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    c: &checks::Check,
) -> CheckResult {
    let ctx = Ctx::new(root, policy, firewall);
    let mut facts = None;
    let o = if c.info.firewall {
        let (status, observed, expected, reason, read) = ctx.firewall.audit(root, c.info.id);
        facts = read;
        Outcome {
            status,
            observed,
            expected,
            reason,
        }
    } else if let Some(missing) = c.requires.iter().find(|p| !root.exists(p)) {
        Outcome {
            status: EvidenceStatus::NotApplicable,
            observed: format!("{missing} missing"),
            expected: (c.expected)(policy),
            reason: Some(format!(
                "{missing} does not exist: the service is not installed"
            )),
        }
    } else {
        match (c.audit)(&ctx) {
            Ok(o) => o,
            Err(Unk(why)) => Outcome::unknown(why, (c.expected)(policy)),
        }
    };
    tracing::debug!(check = c.info.id, status = o.status.as_str(), "audited");
    CheckResult {
        firewall: facts,
        ..result_of(&c.info, o, ctx.take_reads())
    }
}

fn chosen(ids: &[&str]) -> Result<Vec<&'static checks::Check>, HardenError> {
    let sel = select(ids)?;
    Ok(checks::all()
        .iter()
        .filter(|c| sel.iter().any(|s| s.id == c.info.id))
        .collect())
}

/// Audits the given checks (all when `ids` is empty). An unknown id yields an `unknown` result.
pub fn audit(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    ids: &[&str],
) -> Vec<CheckResult> {
    if ids.is_empty() {
        return checks::all()
            .iter()
            .map(|c| run_audit(root, policy, firewall, c))
            .collect();
    }
    ids.iter()
        .map(|id| match checks::all().iter().find(|c| c.info.id == *id) {
            Some(c) => run_audit(root, policy, firewall, c),
            None => CheckResult {
                id: id.to_string(),
                title_en: String::new(),
                title_zh: String::new(),
                mlps: String::new(),
                cis: String::new(),
                report_only: true,
                status: EvidenceStatus::Unknown,
                reason: Some(format!("unknown check id {id:?}")),
                observed: String::new(),
                expected: String::new(),
                files: vec![],
                firewall: None,
            },
        })
        .collect()
}

/// Computes the wanted changes of one check, dropping those that change nothing.
fn compute_fix(ctx: &Ctx, c: &checks::Check) -> Result<Option<Fix>, Unk> {
    if c.info.report_only || c.info.firewall {
        return Ok(None);
    }
    let Some(f) = c.fix else { return Ok(None) };
    let mut fix = f(ctx)?;
    let mut writes = BTreeMap::new();
    for (p, (content, meta)) in std::mem::take(&mut fix.writes) {
        let cur = ctx.root.read(&p)?;
        if cur.as_deref() != Some(content.as_bytes()) {
            writes.insert(p, (content, meta));
        }
    }
    fix.writes = writes;
    let mut metas = Vec::new();
    for (p, m) in std::mem::take(&mut fix.metas) {
        if ctx.root.meta(&p)? != Some(m) {
            metas.push((p, m));
        }
    }
    fix.metas = metas;
    Ok(Some(fix))
}

fn diff_of(root: &Root, fix: &Fix) -> Result<Vec<FileChange>, Unk> {
    let mut out = Vec::new();
    for (p, (content, _)) in &fix.writes {
        let cur = match root.read(p)? {
            Some(d) => String::from_utf8_lossy(&d).into_owned(),
            None => String::new(),
        };
        out.push(FileChange {
            path: p.clone(),
            diff: text::unified_diff(p, &cur, content),
        });
    }
    Ok(out)
}

fn fix_actions(fix: &Fix) -> Vec<String> {
    let mut a = fix.actions.clone();
    for (p, m) in &fix.metas {
        a.push(format!(
            "chown {}:{} {p}; chmod {:04o} {p}",
            m.uid, m.gid, m.mode
        ));
    }
    for (p, t) in &fix.links {
        a.push(format!("ln -s {t} {p}"));
    }
    for p in &fix.unlinks {
        a.push(format!("rm {p}"));
    }
    for c in &fix.commands {
        a.push(format!("{} {}", c.program, c.args.join(" ")));
    }
    a
}

/// Plans the given checks: diffs and actions, nothing written.
pub fn plan(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    ids: &[&str],
) -> Result<Vec<PlanEntry>, HardenError> {
    policy.validate()?;
    let mut out = Vec::new();
    for c in chosen(ids)? {
        let audit = run_audit(root, policy, firewall, c);
        let ctx = Ctx::new(root, policy, firewall);
        let mut entry = PlanEntry {
            audit,
            changes: vec![],
            actions: vec![],
            notes: vec![],
            blocked: None,
        };
        if c.info.report_only {
            entry
                .notes
                .push("report-only check: never changed automatically".into());
        } else if c.info.firewall {
            entry
                .notes
                .push("changed by the firewall module with commit-confirm".into());
        } else if entry.audit.status == EvidenceStatus::Unknown {
            entry.blocked = entry.audit.reason.clone();
        } else if entry.audit.status != EvidenceStatus::NonCompliant {
            // Compliant or not applicable: nothing to change.
        } else {
            match compute_fix(&ctx, c).and_then(|f| {
                let f = f.unwrap_or_default();
                Ok((diff_of(root, &f)?, f))
            }) {
                Ok((changes, f)) => {
                    entry.actions = fix_actions(&f);
                    entry.notes = f.notes.clone();
                    if f.validate_sshd && !f.writes.is_empty() {
                        entry.notes.push(sshd_validation_note(root));
                    }
                    entry.changes = changes;
                }
                Err(Unk(why)) => entry.blocked = Some(why),
            }
        }
        out.push(entry);
    }
    Ok(out)
}

const SSHD: &str = "/usr/sbin/sshd";

fn sshd_validation_note(root: &Root) -> String {
    if !root.is_host() {
        "validation `sshd -t` skipped: it runs only when the root prefix is /".into()
    } else if !Path::new(SSHD).exists() {
        "validation `sshd -t` skipped: /usr/sbin/sshd not found".into()
    } else {
        "validated with `sshd -t -f` on the resulting configuration before writing".into()
    }
}

/// Runs a fixed program with fixed arguments, capped at 30 s; returns (success, output).
pub(crate) fn run_fixed(program: &str, args: &[&str]) -> Result<(bool, String), String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} did not finish within 30 s"));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading output of {program}: {e}"))?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s.truncate(4096);
    Ok((out.status.success(), s))
}

fn validate_sshd(ctx: &Ctx, fix: &Fix) -> Result<(), String> {
    if !fix.validate_sshd || !ctx.root.is_host() || !Path::new(SSHD).exists() {
        return Ok(());
    }
    let overrides: BTreeMap<String, String> = fix
        .writes
        .iter()
        .map(|(p, (c, _))| (p.clone(), c.clone()))
        .collect();
    let flat = sshd::flattened(ctx, &overrides).map_err(|e| e.to_string())?;
    // O_EXCL with mode 0600: a name planted in /tmp by another user is never followed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tmp = std::env::temp_dir().join(format!(
        "preflight-sshd-check-{}-{nanos}.conf",
        std::process::id()
    ));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(flat.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    let path = tmp.display().to_string();
    let r = run_fixed(SSHD, &["-t", "-f", &path]);
    let _ = std::fs::remove_file(&tmp);
    match r? {
        (true, _) => Ok(()),
        (false, out) => Err(format!(
            "sshd -t rejected the new configuration: {}",
            out.trim()
        )),
    }
}

fn record(
    op: Operation,
    info: &CheckInfo,
    after: &CheckResult,
    before: Option<&CheckResult>,
) -> EvidenceRecord {
    EvidenceRecord {
        operation: op,
        check_id: info.id.to_string(),
        catalog_version: CATALOG_VERSION.into(),
        mlps: info.mlps.to_string(),
        cis: info.cis.to_string(),
        observed: after.observed.clone(),
        observed_before: before.map(|b| b.observed.clone()),
        expected: after.expected.clone(),
        status: after.status,
        reason: after.reason.clone(),
        files: after.files.clone(),
        diff: String::new(),
        actions: vec![],
        backup: None,
        error: None,
        notes: vec![],
        firewall: after.firewall.clone(),
    }
}

fn apply_one(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    c: &checks::Check,
    set: &mut backup::BackupSet,
) -> Result<(String, Vec<String>, Vec<String>), String> {
    let ctx = Ctx::new(root, policy, firewall);
    let fix = match compute_fix(&ctx, c) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok((String::new(), vec![], vec![])),
        Err(Unk(why)) => return Err(why),
    };
    if !fix.commands.is_empty() && !root.is_host() {
        return Err("management commands run only when the root prefix is /".into());
    }
    validate_sshd(&ctx, &fix)?;
    let diff: String = diff_of(root, &fix)
        .map_err(|u| u.0)?
        .iter()
        .map(|c| c.diff.clone())
        .collect();
    let actions = fix_actions(&fix);
    let id = c.info.id;
    let e = |x: BackupError| x.to_string();
    for p in fix.writes.keys() {
        set.save(root, p, id).map_err(e)?;
    }
    for (p, _) in &fix.metas {
        set.save(root, p, id).map_err(e)?;
    }
    for (p, _) in &fix.links {
        set.save_link(root, p, id).map_err(e)?;
    }
    for p in &fix.unlinks {
        set.save_link(root, p, id).map_err(e)?;
    }
    for cmd in &fix.commands {
        for p in &cmd.touches {
            set.save(root, p, id).map_err(e)?;
        }
    }
    let re = |x: RootError| x.to_string();
    for (p, (content, meta)) in &fix.writes {
        root.write_atomic(p, content.as_bytes(), *meta)
            .map_err(re)?;
    }
    for (p, m) in &fix.metas {
        root.set_meta(p, *m).map_err(re)?;
    }
    for (p, t) in &fix.links {
        if root.entry(p).map_err(re)? == root::Entry::Missing {
            root.symlink(p, t).map_err(re)?;
        }
    }
    for p in &fix.unlinks {
        root.remove(p).map_err(re)?;
    }
    for cmd in &fix.commands {
        let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
        let (ok, out) = run_fixed(cmd.program, &args)?;
        if !ok {
            return Err(format!("{} failed: {}", cmd.program, out.trim()));
        }
    }
    let mut notes = fix.notes.clone();
    if fix.validate_sshd && !fix.writes.is_empty() {
        notes.push(sshd_validation_note(root));
    }
    Ok((diff, actions, notes))
}

/// Applies the given checks (all when empty) in catalog order: backup, validate, atomic write.
/// Report-only, firewall and unknown checks are left alone. A second apply changes nothing.
pub fn apply(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    ids: &[&str],
    opts: &ApplyOptions,
) -> Result<ApplyReport, HardenError> {
    policy.validate()?;
    let checks = chosen(ids)?;
    let _lock = lock(&opts.backup_dir)?;
    let mut set = backup::BackupSet::create(&opts.backup_dir, root)?;
    let bref = set.reference();
    let mut records = Vec::new();
    for c in checks {
        let before = run_audit(root, policy, firewall, c);
        let mut rec;
        if before.status != EvidenceStatus::NonCompliant || c.info.report_only || c.info.firewall {
            rec = record(Operation::Apply, &c.info, &before, Some(&before));
            // A live-state check that cannot be read here is no error; a file that cannot be
            // parsed or reached is: the operator must look at it.
            if before.status == EvidenceStatus::Unknown
                && c.fix.is_some()
                && !c.info.live_state
                && !c.info.report_only
                && !c.info.firewall
            {
                rec.error = Some(format!(
                    "not changed: {}",
                    before.reason.clone().unwrap_or_default()
                ));
            }
        } else {
            let r = apply_one(root, policy, firewall, c, &mut set);
            let after = run_audit(root, policy, firewall, c);
            rec = record(Operation::Apply, &c.info, &after, Some(&before));
            match r {
                Ok((diff, actions, notes)) => {
                    rec.notes = notes;
                    if !diff.is_empty() || !actions.is_empty() {
                        rec.backup = Some(bref.clone());
                    }
                    rec.diff = diff;
                    rec.actions = actions;
                }
                Err(e) => {
                    tracing::warn!(check = c.info.id, error = %e, "change not applied");
                    rec.error = Some(e);
                    rec.backup = Some(bref.clone());
                }
            }
        }
        records.push(rec);
    }
    let backup = set.discard_if_empty();
    if backup.is_none() {
        for r in &mut records {
            r.backup = None;
        }
    }
    Ok(ApplyReport { backup, records })
}

/// Audits again (after apply) and returns verify records.
pub fn verify(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    ids: &[&str],
) -> Result<Vec<EvidenceRecord>, HardenError> {
    let checks = chosen(ids)?;
    Ok(checks
        .iter()
        .map(|c| {
            record(
                Operation::Verify,
                &c.info,
                &run_audit(root, policy, firewall, c),
                None,
            )
        })
        .collect())
}

/// Restores a backup set byte for byte (files that did not exist are removed) and audits the
/// checks it touched.
pub fn rollback(
    root: &Root,
    policy: &Policy,
    firewall: &dyn FirewallHook,
    backup_dir: &Path,
    backup_id: &str,
) -> Result<RollbackReport, HardenError> {
    let _lock = lock(backup_dir)?;
    let (_, manifest) = backup::load(backup_dir, backup_id)?;
    let mut ids: Vec<String> = manifest.entries.iter().map(|e| e.check.clone()).collect();
    ids.dedup();
    ids.sort();
    ids.dedup();
    let befores: Vec<(String, CheckResult)> = ids
        .iter()
        .filter_map(|id| checks::all().iter().find(|c| c.info.id == id))
        .map(|c| (c.info.id.to_string(), run_audit(root, policy, firewall, c)))
        .collect();
    let restored = backup::restore(root, backup_dir, backup_id)?;
    let bref = BackupRef {
        id: backup_id.to_string(),
        dir: backup_dir.display().to_string(),
    };
    let records = befores
        .iter()
        .filter_map(|(id, b)| {
            let c = checks::all().iter().find(|c| c.info.id == id)?;
            let after = run_audit(root, policy, firewall, c);
            let mut r = record(Operation::Rollback, &c.info, &after, Some(b));
            r.backup = Some(bref.clone());
            r.actions = manifest
                .entries
                .iter()
                .filter(|e| &e.check == id)
                .map(|e| format!("restore {}", e.path))
                .collect();
            Some(r)
        })
        .collect();
    Ok(RollbackReport {
        backup: bref,
        restored,
        records,
    })
}

/// The effective sshd configuration under a root prefix as one text, `Include`s inlined in
/// the order sshd reads them (what `sshd -t -f` is given before a change is committed).
pub fn sshd_flattened(root: &Root) -> Result<String, String> {
    let p = Policy::default();
    let ctx = Ctx::new(root, &p, &NoFirewall);
    sshd::flattened(&ctx, &BTreeMap::new()).map_err(|e| e.to_string())
}

/// Detects the host behind a root prefix (distribution, PAM layout, modules).
pub fn detect_host(root: &Root) -> Host {
    let p = Policy::default();
    Ctx::new(root, &p, &NoFirewall).host
}
