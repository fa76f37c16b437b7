//! `preflight harden`, `preflight firewall`, `preflight evidence`: remote hardening through the
//! controller, commit-confirmed firewall changes, and the evidence bundle an auditor keeps
//! (exported as JSON or a bilingual HTML page, verified offline).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use preflight_core::evidence::{self, EvidenceBundle, EvidenceStatus};
use preflight_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{status, Conn};
use crate::Output;

/// Hardening and evidence subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum HardenCmd {
    /// Audit, plan, apply, verify or roll back the hardening checks on agents.
    #[command(
        subcommand,
        after_help = "Examples:\n  preflight harden audit --agent web-01\n  preflight harden plan --agent web-01 --check ssh.permit_root_login\n  preflight harden apply --agent web-01 --agent web-02 --yes\n  preflight harden apply --agent web-01 --firewall --mgmt-source 10.0.0.0/24 --port 8080/tcp\n  preflight harden rollback --agent web-01"
    )]
    Harden(HardenOp),
    /// Firewall changes after hardening, through commit-confirm.
    #[command(subcommand)]
    Firewall(FirewallCmd),
    /// Export or verify hardening evidence.
    #[command(subcommand)]
    Evidence(EvidenceCmd),
}

/// Which agents.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Agent id (repeatable).
    #[arg(long = "agent", value_name = "A", required_unless_present = "batch")]
    agents: Vec<String>,
    /// Batch: its servers come from the attached plan (`preflight plan attach`), each mapped to
    /// the enrolled agent with that id, address or hostname.
    #[arg(long, value_name = "B", conflicts_with = "agents")]
    batch: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Checks {
    #[command(flatten)]
    target: Target,
    /// Check id (repeatable); every check when absent.
    #[arg(long = "check", value_name = "ID")]
    checks: Vec<String>,
    /// Thresholds as a TOML file (e.g. `pass_max_days = 60`); CHECKS.md defaults otherwise.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// The thresholds a policy file may set (names as in CHECKS.md's policy).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    pass_max_days: Option<u32>,
    pass_min_days: Option<u32>,
    pass_warn_age: Option<u32>,
    inactive_days: Option<u32>,
    pw_minlen: Option<u32>,
    pw_min_classes: Option<u32>,
    pw_remember: Option<u32>,
    pw_hash: Option<String>,
    lockout_deny: Option<u32>,
    lockout_unlock_min: Option<u32>,
    lockout_unlock_max: Option<u32>,
    lockout_unlock_time: Option<u32>,
    tmout: Option<u32>,
    ssh_client_alive_interval: Option<u32>,
    ssh_client_alive_count_max: Option<u32>,
    ssh_max_auth_tries: Option<u32>,
    /// Octal, as a string: `umask = "027"`.
    umask: Option<String>,
    log_retention_days: Option<u32>,
    uid_min: Option<u32>,
}

fn load_policy(p: Option<&PathBuf>) -> anyhow::Result<Option<pb::HardenPolicy>> {
    let Some(p) = p else { return Ok(None) };
    let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    if meta.len() > 64 * 1024 {
        bail!("policy file {} is larger than 64 KiB", p.display());
    }
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    let f: PolicyFile =
        toml::from_str(&text).with_context(|| format!("invalid policy file {}", p.display()))?;
    Ok(Some(pb::HardenPolicy {
        pass_max_days: f.pass_max_days,
        pass_min_days: f.pass_min_days,
        pass_warn_age: f.pass_warn_age,
        inactive_days: f.inactive_days,
        pw_minlen: f.pw_minlen,
        pw_min_classes: f.pw_min_classes,
        pw_remember: f.pw_remember,
        pw_hash: f.pw_hash,
        lockout_deny: f.lockout_deny,
        lockout_unlock_min: f.lockout_unlock_min,
        lockout_unlock_max: f.lockout_unlock_max,
        lockout_unlock_time: f.lockout_unlock_time,
        tmout: f.tmout,
        ssh_client_alive_interval: f.ssh_client_alive_interval,
        ssh_client_alive_count_max: f.ssh_client_alive_count_max,
        ssh_max_auth_tries: f.ssh_max_auth_tries,
        umask: f
            .umask
            .map(|u| {
                u32::from_str_radix(u.trim_start_matches("0o"), 8)
                    .with_context(|| format!("policy umask {u:?} is not octal; write \"027\""))
            })
            .transpose()?,
        log_retention_days: f.log_retention_days,
        uid_min: f.uid_min,
    }))
}

#[derive(Debug, clap::Subcommand)]
pub enum HardenOp {
    /// Read-only audit: observed and expected value and status of every check (signed evidence).
    Audit(Checks),
    /// What apply would change (unified diffs and actions); nothing is written.
    Plan(Checks),
    /// Back up, validate and fix non-compliant checks, then verify; shows the plan and asks
    /// unless --yes.
    Apply(ApplyArgs),
    /// Audit again (after a change), for the evidence.
    Verify(Checks),
    /// Restore the files of a backup made by apply, byte for byte.
    Rollback(RollbackArgs),
    /// What the evidence log says per agent: baseline applied, all compliant, verified after
    /// the last change, firewall allow-list confirmed or not applicable (the facts the
    /// workflow gates use).
    Status(Target),
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    checks: Checks,
    /// Apply without asking.
    #[arg(long)]
    yes: bool,
    /// Also apply a firewall allow-list (commit-confirm): SSH and the agent port from the
    /// management sources, the --port list from anywhere, everything else dropped.
    #[arg(long)]
    firewall: bool,
    /// Management network (CIDR), repeatable; required with --firewall.
    #[arg(long = "mgmt-source", value_name = "CIDR")]
    mgmt_sources: Vec<String>,
    /// Port the deployment needs, PORT/PROTO (repeatable).
    #[arg(long = "port", value_name = "PORT/PROTO")]
    ports: Vec<String>,
    /// SSH port kept open from the management sources.
    #[arg(long, default_value_t = 22)]
    ssh_port: u16,
    /// Seconds the agent waits for the controller's confirmation before it restores its rules.
    #[arg(long, default_value_t = 60)]
    confirm_timeout: u32,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: Target,
    /// Backup id printed by apply; the newest when absent.
    #[arg(long, value_name = "ID")]
    backup: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum FirewallCmd {
    /// Open one port on an agent (on top of its confirmed allow-list) through commit-confirm.
    #[command(
        after_help = "Example:\n  preflight firewall allow web-01 8080/tcp --reason \"billing API (ticket 4711)\""
    )]
    Allow {
        /// Agent id.
        agent: String,
        /// PORT/PROTO, e.g. 8080/tcp.
        port: String,
        /// Why (kept in the evidence).
        #[arg(long)]
        reason: String,
        /// Only from these sources (CIDR, repeatable); from anywhere when absent.
        #[arg(long = "source", value_name = "CIDR")]
        sources: Vec<String>,
        /// Seconds before the agent restores its rules unless confirmed.
        #[arg(long, default_value_t = 60)]
        confirm_timeout: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Html,
}

#[derive(Debug, clap::Subcommand)]
pub enum EvidenceCmd {
    /// Export the signed evidence of agents as one bundle (JSON) or a bilingual page (HTML).
    #[command(
        after_help = "Examples:\n  preflight evidence export --agent web-01 --format json -o web-01.evidence.json\n  preflight evidence export --agent web-01 --format html -o web-01.html\n  preflight evidence export --batch B7 --format html -o B7.html"
    )]
    Export {
        #[command(flatten)]
        target: Target,
        /// Bundle format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Write here instead of stdout.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an exported JSON bundle offline (no controller): signatures, Merkle root,
    /// checkpoint and inclusion proofs.
    #[command(
        after_help = "Example:\n  preflight evidence verify web-01.evidence.json --controller-key-sha256 3f1c…"
    )]
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// SHA-256 of the controller's evidence key you trust (printed by export).
        #[arg(long, value_name = "HEX")]
        controller_key_sha256: Option<String>,
    },
}

/// Adds the bearer token to every Hardening request.
#[derive(Clone)]
pub struct Token(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Hardening = pb::hardening_client::HardeningClient<InterceptedService<Channel, Token>>;

async fn hardening(conn: &Conn) -> anyhow::Result<Hardening> {
    let (url, token, pin) = conn.resolve()?;
    let Some(token) = token else {
        bail!("no token: pass --token, set PREFLIGHT_TOKEN, or run `preflight login`");
    };
    let channel = crate::client::connect(&url, pin.as_deref()).await?;
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| anyhow::anyhow!("--token contains characters that cannot be sent"))?;
    Ok(
        pb::hardening_client::HardeningClient::with_interceptor(channel, Token(header))
            .max_decoding_message_size(preflight_controller::MAX_BUNDLE_BYTES + 4096),
    )
}

fn parse_port(s: &str) -> anyhow::Result<pb::FirewallPort> {
    let (p, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("port {s:?}: expected PORT/PROTO like 8080/tcp"))?;
    if proto != "tcp" && proto != "udp" {
        bail!("port {s:?}: protocol must be tcp or udp");
    }
    Ok(pb::FirewallPort {
        port: port.into(),
        proto: proto.into(),
        ..Default::default()
    })
}

fn request(op: pb::HardenOperation, c: &Checks) -> anyhow::Result<pb::HardenAgentsRequest> {
    Ok(pb::HardenAgentsRequest {
        operation: op as i32,
        agent_ids: c.target.agents.clone(),
        batch: c.target.batch.clone().unwrap_or_default(),
        check_ids: c.checks.clone(),
        policy: load_policy(c.policy.as_ref())?,
        ..Default::default()
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn cell(s: &str, n: usize) -> String {
    let one = s.replace('\n', " ");
    if one.chars().count() <= n {
        one
    } else {
        let mut t: String = one.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn print_results(r: &pb::HardenAgentsResponse, show_diffs: bool) {
    for a in &r.results {
        println!("== agent {} ({})", a.agent_id, a.host);
        if !a.error.is_empty() {
            println!("   error: {}", a.error);
            continue;
        }
        println!(
            "{:<26} {:<14} {:<50} EXPECTED",
            "CHECK", "STATUS", "OBSERVED"
        );
        for c in &a.checks {
            let obs = if c.observed.is_empty() {
                &c.reason
            } else {
                &c.observed
            };
            println!(
                "{:<26} {:<14} {:<50} {}",
                c.id,
                c.status,
                cell(obs, 50),
                cell(&c.expected, 50)
            );
            if !c.error.is_empty() {
                println!("   error: {}", c.error);
            }
        }
        if show_diffs {
            for c in &a.checks {
                if !c.diff.is_empty() || !c.actions.is_empty() || !c.blocked.is_empty() {
                    println!("-- {} ({})", c.id, c.title_en);
                    if !c.blocked.is_empty() {
                        println!("   not changed: {}", c.blocked);
                    }
                    print!("{}", c.diff);
                    if !c.diff.is_empty() && !c.diff.ends_with('\n') {
                        println!();
                    }
                    for x in &c.actions {
                        println!("   action: {x}");
                    }
                }
            }
        }
        if !a.backup_id.is_empty() {
            println!(
                "backup {} (undo: preflight harden rollback --agent {} --backup {})",
                a.backup_id, a.agent_id, a.backup_id
            );
        }
        if let Some(fw) = &a.firewall_change {
            println!(
                "firewall change {} ({}): {}",
                fw.change_id, fw.backend, a.firewall
            );
            for b in &fw.blocked_listeners {
                println!("   now blocked: {b}");
            }
        }
        if a.evidence_appended > 0 {
            println!("{} evidence records appended", a.evidence_appended);
        }
    }
    println!(
        "request {}; evidence log size {}, root {}",
        r.request_id, r.log_size, r.log_root
    );
}

fn failed(r: &pb::HardenAgentsResponse) -> Vec<String> {
    r.results
        .iter()
        .filter(|a| !a.error.is_empty())
        .map(|a| format!("{}: {}", a.agent_id, a.error))
        .collect()
}

fn confirm_prompt() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("apply changes hosts and needs confirmation: pass --yes (stdin is not a terminal)");
    }
    eprint!("apply these changes? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::Read::take(std::io::stdin().lock(), 64).read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

async fn call(
    h: &mut Hardening,
    req: pb::HardenAgentsRequest,
) -> anyhow::Result<pb::HardenAgentsResponse> {
    Ok(h.harden(req).await.map_err(status)?.into_inner())
}

/// Exit status 3 (as `sweep` with hard failures) when an audit or verify found a check
/// non_compliant, so a person or a shell script sees it.
fn exit_if_non_compliant(r: &pb::HardenAgentsResponse) {
    let bad: Vec<String> = r
        .results
        .iter()
        .flat_map(|a| {
            a.checks
                .iter()
                .filter(|c| c.status == "non_compliant")
                .map(move |c| format!("{} {}", a.agent_id, c.id))
        })
        .collect();
    if !bad.is_empty() {
        eprintln!(
            "error: {} check(s) non_compliant: {}; `preflight harden plan` shows the changes, `preflight harden apply` makes them",
            bad.len(),
            bad.join(", ")
        );
        std::process::exit(3);
    }
}

fn finish(r: &pb::HardenAgentsResponse) -> anyhow::Result<()> {
    let f = failed(r);
    if !f.is_empty() {
        bail!("failed on {} agent(s): {}", f.len(), f.join("; "));
    }
    Ok(())
}

pub async fn run(c: HardenCmd, conn: &Conn, out: Output) -> anyhow::Result<()> {
    match c {
        HardenCmd::Harden(op) => harden(op, conn, out).await,
        HardenCmd::Firewall(FirewallCmd::Allow {
            agent,
            port,
            reason,
            sources,
            confirm_timeout,
        }) => {
            let mut p = parse_port(&port)?;
            p.reason = reason;
            p.sources = sources;
            let mut h = hardening(conn).await?;
            let r = h
                .firewall_allow(pb::FirewallAllowRequest {
                    agent_id: agent,
                    port: Some(p),
                    confirm_timeout_s: confirm_timeout,
                })
                .await
                .map_err(status)?
                .into_inner();
            let res = r.result.clone().unwrap_or_default();
            if out == Output::Json {
                print_json(&r)?;
            } else if res.error.is_empty() {
                println!(
                    "{port} on {}: {} (request {})",
                    res.agent_id, res.firewall, r.request_id
                );
            }
            if !res.error.is_empty() {
                bail!("{}: {}", res.agent_id, res.error);
            }
            if res.firewall != "confirmed" {
                bail!("{}: {}", res.agent_id, res.firewall);
            }
            Ok(())
        }
        HardenCmd::Evidence(EvidenceCmd::Export {
            target,
            format,
            out: file,
        }) => {
            let mut h = hardening(conn).await?;
            let r = h
                .export_evidence(pb::ExportEvidenceRequest {
                    agent_ids: target.agents,
                    batch: target.batch.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            // Check what arrived before handing it to anyone.
            let report = evidence::verify_bundle(&r.bundle).map_err(|e| {
                anyhow::anyhow!("the controller sent a bundle that does not verify: {e}")
            })?;
            let bytes = match format {
                Format::Json => r.bundle.clone(),
                Format::Html => {
                    let b: EvidenceBundle = serde_json::from_slice(&r.bundle)?;
                    html(&b, &report).into_bytes()
                }
            };
            match &file {
                Some(p) => {
                    std::fs::write(p, &bytes)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    if out == Output::Json {
                        print_json(&report)?;
                    } else {
                        println!(
                            "{} records written to {}; controller key sha256 {}",
                            r.records,
                            p.display(),
                            r.controller_key_sha256
                        );
                    }
                }
                None => {
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
        HardenCmd::Evidence(EvidenceCmd::Verify {
            bundle,
            controller_key_sha256,
        }) => {
            let meta = std::fs::metadata(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            if meta.len() > evidence::MAX_BUNDLE_BYTES as u64 {
                bail!("{} is larger than a bundle can be", bundle.display());
            }
            let bytes = std::fs::read(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let report = evidence::verify_bundle(&bytes)
                .map_err(|e| anyhow::anyhow!("{} does not verify: {e}", bundle.display()))?;
            if let Some(k) = controller_key_sha256 {
                if !k.trim().eq_ignore_ascii_case(&report.controller_key_sha256) {
                    bail!(
                        "{} is signed by controller key {}, not the trusted {}",
                        bundle.display(),
                        report.controller_key_sha256,
                        k.trim()
                    );
                }
            }
            if out == Output::Json {
                print_json(&report)?;
            } else {
                println!(
                    "OK: {} records, signatures, Merkle root {} and checkpoint verify; controller key sha256 {}",
                    report.records, report.root_hash, report.controller_key_sha256
                );
                for (a, n) in &report.records_per_agent {
                    println!("  {a}: {n} records");
                }
                if let Some(g) = &report.global_log {
                    println!(
                        "  included in the controller's log {} (size {}, root {})",
                        g.origin, g.tree_size, g.root_hash
                    );
                }
            }
            Ok(())
        }
    }
}

async fn harden(op: HardenOp, conn: &Conn, out: Output) -> anyhow::Result<()> {
    let mut h = hardening(conn).await?;
    let mut audit = false;
    let (req, diffs) = match &op {
        HardenOp::Status(t) => {
            let r = h
                .status(pb::HardeningStatusRequest {
                    agent_ids: t.agents.clone(),
                    batch: t.batch.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return print_json(&r);
            }
            println!(
                "{:<20} {:<9} {:<14} {:<9} {:<9} NON-COMPLIANT",
                "AGENT", "BASELINE", "ALL-COMPLIANT", "VERIFIED", "FIREWALL"
            );
            for f in &r.hosts {
                println!(
                    "{:<20} {:<9} {:<14} {:<9} {:<9} {}",
                    f.agent_id,
                    f.baseline_applied,
                    f.all_compliant,
                    f.verified_after_last_change,
                    f.firewall_confirmed,
                    f.noncompliant.join(", ")
                );
                if !f.firewall_missing_ports.is_empty() {
                    println!(
                        "{:<20} firewall allow-list lacks planned ports {}",
                        "",
                        f.firewall_missing_ports.join(", ")
                    );
                }
            }
            return Ok(());
        }
        HardenOp::Audit(c) => {
            audit = true;
            (request(pb::HardenOperation::Audit, c)?, false)
        }
        HardenOp::Plan(c) => (request(pb::HardenOperation::Plan, c)?, true),
        HardenOp::Verify(c) => {
            audit = true;
            (request(pb::HardenOperation::Verify, c)?, false)
        }
        HardenOp::Rollback(r) => (
            pb::HardenAgentsRequest {
                operation: pb::HardenOperation::Rollback as i32,
                agent_ids: r.target.agents.clone(),
                batch: r.target.batch.clone().unwrap_or_default(),
                backup_id: r.backup.clone().unwrap_or_default(),
                ..Default::default()
            },
            true,
        ),
        HardenOp::Apply(a) => {
            let mut req = request(pb::HardenOperation::Apply, &a.checks)?;
            if a.firewall {
                if a.mgmt_sources.is_empty() {
                    bail!("--firewall needs --mgmt-source CIDR (the networks SSH and the agent port stay open to)");
                }
                req.firewall = Some(pb::FirewallChange {
                    ports: a
                        .ports
                        .iter()
                        .map(|p| {
                            parse_port(p).map(|mut x| {
                                x.reason = "planned port".into();
                                x
                            })
                        })
                        .collect::<anyhow::Result<_>>()?,
                    mgmt_sources: a.mgmt_sources.clone(),
                    ssh_port: a.ssh_port.into(),
                    confirm_timeout_s: a.confirm_timeout,
                    ..Default::default()
                });
            } else if !a.ports.is_empty() || !a.mgmt_sources.is_empty() {
                bail!("--port and --mgmt-source need --firewall");
            }
            if !a.yes {
                let plan = call(&mut h, request(pb::HardenOperation::Plan, &a.checks)?).await?;
                print_results(&plan, true);
                finish(&plan)?;
                if let Some(fw) = &req.firewall {
                    println!(
                        "firewall: allow ssh {}/tcp and the agent port from {}, ports [{}] from anywhere, drop the rest; rolled back unless confirmed within {} s",
                        fw.ssh_port,
                        fw.mgmt_sources.join(", "),
                        a.ports.join(", "),
                        fw.confirm_timeout_s
                    );
                }
                if !confirm_prompt()? {
                    bail!("not applied");
                }
            }
            let applied = call(&mut h, req).await?;
            let verified = call(&mut h, request(pb::HardenOperation::Verify, &a.checks)?).await?;
            if out == Output::Json {
                print_json(&serde_json::json!({ "apply": applied, "verify": verified }))?;
            } else {
                print_results(&applied, true);
                println!("-- verify after apply");
                print_results(&verified, false);
            }
            finish(&applied)?;
            for a in &applied.results {
                if a.firewall_change.is_some() && a.firewall != "confirmed" {
                    bail!("{}: firewall {}", a.agent_id, a.firewall);
                }
            }
            return finish(&verified);
        }
    };
    let r = call(&mut h, req).await?;
    if out == Output::Json {
        print_json(&r)?;
    } else {
        print_results(&r, diffs);
    }
    finish(&r)?;
    // Text only: with --output json the statuses are in the document (scripts read them) and
    // the exit stays 0, as the existing JSON consumers expect.
    if audit && out == Output::Text {
        exit_if_non_compliant(&r);
    }
    Ok(())
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn status_label(s: EvidenceStatus) -> (&'static str, &'static str, &'static str) {
    match s {
        EvidenceStatus::Compliant => ("符合", "compliant", "ok"),
        EvidenceStatus::NonCompliant => ("不符合", "non-compliant", "bad"),
        EvidenceStatus::NotApplicable => ("不适用", "not applicable", "na"),
        EvidenceStatus::Unknown => ("无法判定", "unknown", "unk"),
    }
}

fn op_label(o: evidence::EvidenceOperation) -> &'static str {
    match o {
        evidence::EvidenceOperation::Audit => "检查 audit",
        evidence::EvidenceOperation::Apply => "加固 apply",
        evidence::EvidenceOperation::Verify => "复核 verify",
        evidence::EvidenceOperation::Rollback => "回退 rollback",
    }
}

/// A self-contained page for auditors: per host, per check, MLPS item, status, before and
/// after, in Chinese and English. The JSON bundle stays the thing that is verified.
fn html(b: &EvidenceBundle, report: &evidence::BundleReport) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let mut hosts: BTreeMap<(String, String), Vec<&evidence::SignedRecord>> = BTreeMap::new();
    for r in &b.records {
        hosts
            .entry((r.record.host.clone(), r.record.agent_id.clone()))
            .or_default()
            .push(r);
    }
    let mut s = String::new();
    s.push_str("<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>安全加固证据 Hardening evidence</title><style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%;margin-bottom:2em}th,td{border:1px solid #bbb;padding:4px 6px;vertical-align:top;font-size:13px}th{background:#eee}.ok{background:#e3f5e1}.bad{background:#fbe3e3}.na{background:#f0f0f0}.unk{background:#fff4d6}pre{white-space:pre-wrap;margin:0;font-size:12px}</style></head><body>");
    let _ = write!(
        s,
        "<h1>安全加固证据报告<br><small>Hardening evidence report</small></h1>\
<p>记录数 Records: {}　·　Merkle 根 root: <code>{}</code>　·　签发时间 Signed at (UTC): {}</p>\
<p>控制器公钥指纹 Controller key SHA-256: <code>{}</code></p>\
<p>本页为便于阅读的副本；具有证明力的是同批导出的 JSON 证据包，可用 <code>preflight evidence verify</code> 离线校验。<br>\
This page is a readable copy; the JSON bundle exported with it is what proves the evidence, verifiable offline with <code>preflight evidence verify</code>.</p>",
        report.records,
        esc(&report.root_hash),
        esc(&preflight_core::timefmt::utc((report.checkpoint_time_utc_ms / 1000) as i64)),
        esc(&report.controller_key_sha256),
    );
    for ((host, agent), recs) in &hosts {
        let _ = write!(
            s,
            "<h2>主机 Host: {} <small>(agent {})</small></h2><table><tr><th>时间 Time (UTC)</th><th>检查项 Check</th><th>等保条款 MLPS</th><th>CIS</th><th>操作 Operation</th><th>状态 Status</th><th>实际值（前/后） Observed (before/after)</th><th>期望值 Expected</th><th>变更 Change</th><th>操作人 Operator</th></tr>",
            esc(host),
            esc(agent)
        );
        for r in recs {
            let r = &r.record;
            let (zh, en, class) = status_label(r.status);
            let change = r.diff_applied.as_deref().unwrap_or("");
            let _ = write!(
                s,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{zh}<br>{en}</td><td><pre>{}</pre>{}</td><td><pre>{}</pre></td><td>{}</td><td>{} ({})</td></tr>",
                esc(&preflight_core::timefmt::utc((r.time_utc_ms / 1000) as i64)),
                esc(&r.check_id),
                esc(&r.mlps_refs.join(", ")),
                esc(&r.cis_refs.join(", ")),
                op_label(r.operation),
                esc(&r.observed),
                r.reason
                    .as_deref()
                    .map(|x| format!("<br><em>{}</em>", esc(x)))
                    .unwrap_or_default(),
                esc(&r.expected),
                if change.is_empty() {
                    String::new()
                } else {
                    format!("<details><summary>差异 diff</summary><pre>{}</pre></details>", esc(change))
                },
                esc(&r.operator.user),
                esc(r.operator.role.as_str()),
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}
