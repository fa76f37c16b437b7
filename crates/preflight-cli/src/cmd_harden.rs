//! `preflight harden`, `preflight firewall`, `preflight evidence`: remote hardening through the
//! controller, commit-confirmed firewall changes, and the evidence bundle an auditor keeps
//! (exported as JSON or a bilingual HTML page, verified offline).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use preflight_core::evidence::{self, EvidenceBundle, EvidenceStatus};
use preflight_core::net::Proto;
use preflight_proto::json;
use preflight_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::client::{status, Conn};
use crate::Output;
use preflight_args::LangArg;
use preflight_render::{Lang, Table};

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
    /// Language of the tables and messages: en or zh (中文).
    #[arg(long, value_enum, default_value_t = LangArg::En)]
    lang: LangArg,
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
        /// SHA-256 of the controller's evidence key you trust: the bundle must be signed with
        /// it, and the HTML page says so (without it, the page says its origin is unverified).
        #[arg(long, value_name = "HEX")]
        controller_key_sha256: Option<String>,
    },
    /// Verify an exported JSON bundle offline (no controller): signatures, Merkle root,
    /// checkpoints and their origins, inclusion in the controller's global log, and every
    /// agent certificate issued by the controller's CA.
    #[command(
        after_help = "Exit status:\n  0  everything verifies and the controller key is the one given with --controller-key-sha256\n  1  the bundle does not verify (tampered, incomplete, wrong key or CA): do not trust it\n  4  everything verifies, but no --controller-key-sha256 was given: the origin is unverified\n     (anyone can make a bundle that verifies with a key of their own)\n\nExamples:\n  preflight evidence verify web-01.evidence.json --controller-key-sha256 3f1c…\n  preflight evidence verify old.evidence.json --controller-key-sha256 3f1c… --ca ca.pem"
    )]
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// SHA-256 of the controller's evidence key you trust (printed by export; ask the
        /// controller's operator, not the bundle). Without it the exit status is 4.
        #[arg(long, value_name = "HEX")]
        controller_key_sha256: Option<String>,
        /// The controller's CA certificate (PEM, the controller's DATA/ca.pem or
        /// https://CONTROLLER/ca.pem): agent certificates must be issued by it. Needed for
        /// bundles exported before bundles carried the CA; otherwise it must match theirs.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
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
    let proto = pb::Protocol::from(
        proto
            .parse::<Proto>()
            .map_err(|e| anyhow::anyhow!("port {s:?}: {e}"))?,
    );
    Ok(pb::FirewallPort {
        port: port.into(),
        proto: proto as i32,
        ..Default::default()
    })
}

/// What became of an agent's firewall change, in words: `confirmed`, or why not.
fn firewall_words(a: &pb::AgentHardenResult) -> String {
    match pb::FirewallOutcome::try_from(a.firewall) {
        Ok(pb::FirewallOutcome::Confirmed) => "confirmed".into(),
        Ok(pb::FirewallOutcome::NotConfirmed) => format!("not confirmed: {}", a.firewall_detail),
        Ok(pb::FirewallOutcome::EvidenceRefused) => {
            format!(
                "confirmed, but its evidence was refused: {}",
                a.firewall_detail
            )
        }
        Ok(pb::FirewallOutcome::Unspecified) => "not confirmed".into(),
        Err(_) => format!("outcome {} (unknown to this CLI)", a.firewall),
    }
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

use preflight_render::status_word;

fn print_results(r: &pb::HardenAgentsResponse, show_diffs: bool, lang: Lang) {
    print!("{}", results_text(r, show_diffs, lang));
}

/// The results of a hardening request as tables, one per agent, in `lang`.
fn results_text(r: &pb::HardenAgentsResponse, show_diffs: bool, lang: Lang) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    macro_rules! line {
        () => {
            o.push('\n')
        };
        ($($t:tt)*) => {{
            let _ = writeln!(o, $($t)*);
        }};
    }
    let zh = lang == Lang::Zh;
    for a in &r.results {
        if zh {
            line!("== 代理 {}（主机 {}）", a.agent_id, a.host);
        } else {
            line!("== agent {} ({})", a.agent_id, a.host);
        }
        if !a.error.is_empty() {
            line!("   {} {}", lang.pick("error:", "错误："), a.error);
            continue;
        }
        let mut t = Table::new(&[
            lang.pick("CHECK", "检查项"),
            lang.pick("STATUS", "状态"),
            lang.pick("OBSERVED", "实际值"),
            lang.pick("EXPECTED", "期望值"),
        ]);
        let mut errors = Vec::new();
        for c in &a.checks {
            let obs = if c.observed.is_empty() {
                &c.reason
            } else {
                &c.observed
            };
            t.row(vec![
                c.id.clone(),
                status_word(&json::name::<pb::CheckStatus>(c.status), lang),
                cell(obs, 50),
                cell(&c.expected, 50),
            ]);
            if !c.error.is_empty() {
                errors.push(format!(
                    "   {} {}: {}",
                    lang.pick("error:", "错误："),
                    c.id,
                    c.error
                ));
            }
        }
        o.push_str(&t.render());
        for e in errors {
            line!("{e}");
        }
        if show_diffs {
            for c in &a.checks {
                if !c.diff.is_empty() || !c.actions.is_empty() || !c.blocked.is_empty() {
                    let title = if zh && !c.title_zh.is_empty() {
                        &c.title_zh
                    } else {
                        &c.title_en
                    };
                    line!("-- {} ({title})", c.id);
                    if !c.blocked.is_empty() {
                        line!("   {} {}", lang.pick("not changed:", "未修改："), c.blocked);
                    }
                    o.push_str(&c.diff);
                    if !c.diff.is_empty() && !c.diff.ends_with('\n') {
                        line!();
                    }
                    for x in &c.actions {
                        line!("   {} {x}", lang.pick("action:", "操作："));
                    }
                }
            }
        }
        if !a.backup_id.is_empty() {
            if zh {
                line!(
                    "备份 {}（撤销：preflight harden rollback --agent {} --backup {}）",
                    a.backup_id,
                    a.agent_id,
                    a.backup_id
                );
            } else {
                line!(
                    "backup {} (undo: preflight harden rollback --agent {} --backup {})",
                    a.backup_id,
                    a.agent_id,
                    a.backup_id
                );
            }
        }
        if let Some(fw) = &a.firewall_change {
            if zh {
                line!(
                    "防火墙变更 {}（{}）：{}",
                    fw.change_id,
                    json::name::<pb::FirewallBackend>(fw.backend),
                    firewall_words(a)
                );
            } else {
                line!(
                    "firewall change {} ({}): {}",
                    fw.change_id,
                    json::name::<pb::FirewallBackend>(fw.backend),
                    firewall_words(a)
                );
            }
            for b in &fw.blocked_listeners {
                line!("   {} {b}", lang.pick("now blocked:", "现被拦截："));
            }
        }
        if a.evidence_appended > 0 {
            if zh {
                line!("已追加 {} 条证据记录", a.evidence_appended);
            } else {
                line!("{} evidence records appended", a.evidence_appended);
            }
        }
    }
    if zh {
        line!(
            "请求 {}；证据日志共 {} 条，根哈希 {}",
            r.request_id,
            r.log_size,
            r.log_root
        );
    } else {
        line!(
            "request {}; evidence log size {}, root {}",
            r.request_id,
            r.log_size,
            r.log_root
        );
    }
    o
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
                .filter(|c| c.status == pb::CheckStatus::NonCompliant as i32)
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
                    res.agent_id,
                    firewall_words(&res),
                    r.request_id
                );
            }
            if !res.error.is_empty() {
                bail!("{}: {}", res.agent_id, res.error);
            }
            if res.firewall != pb::FirewallOutcome::Confirmed as i32 {
                bail!("{}: {}", res.agent_id, firewall_words(&res));
            }
            Ok(())
        }
        HardenCmd::Evidence(EvidenceCmd::Export {
            target,
            format,
            out: file,
            controller_key_sha256,
        }) => {
            let pin = controller_key_sha256.as_deref().map(key_pin).transpose()?;
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
            let report = evidence::verify_bundle_with(
                &r.bundle,
                &evidence::TrustedKeys {
                    controller_key_sha256: pin.as_deref(),
                    ..Default::default()
                },
            )
            .map_err(|e| {
                anyhow::anyhow!("the controller sent a bundle that does not verify: {e}")
            })?;
            let bytes = match format {
                Format::Json => r.bundle.clone(),
                Format::Html => {
                    let b: EvidenceBundle = serde_json::from_slice(&r.bundle)?;
                    let facts = host_facts(conn, &b).await;
                    html(&b, &report, &facts, &preflight_render::tz::display_zone()).into_bytes()
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
            ca,
        }) => {
            let pin = controller_key_sha256.as_deref().map(key_pin).transpose()?;
            let ca_der = match &ca {
                None => None,
                Some(p) => {
                    let pem = std::fs::read_to_string(p)
                        .with_context(|| format!("--ca: cannot read {}", p.display()))?;
                    let certs = preflight_pki::certs(&pem, "CA certificate").map_err(|e| {
                        anyhow::anyhow!("--ca {}: {e}; give the controller's ca.pem", p.display())
                    })?;
                    let Some(first) = certs.first() else {
                        bail!(
                            "--ca {} holds no certificate; give the controller's ca.pem",
                            p.display()
                        );
                    };
                    Some(first.to_vec())
                }
            };
            let meta = std::fs::metadata(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            if meta.len() > evidence::MAX_BUNDLE_BYTES as u64 {
                bail!("{} is larger than a bundle can be", bundle.display());
            }
            let bytes = std::fs::read(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let report = evidence::verify_bundle_with(
                &bytes,
                &evidence::TrustedKeys {
                    controller_key_sha256: pin.as_deref(),
                    ca_certificate_der: ca_der.as_deref(),
                    ..Default::default()
                },
            )
            .map_err(|e| anyhow::anyhow!("{} does not verify: {e}", bundle.display()))?;
            if out == Output::Json {
                print_json(&report)?;
            } else {
                if report.controller_key_pinned {
                    println!(
                        "OK: {} records, signatures, Merkle root {} and checkpoint verify; controller key sha256 {} (the trusted key)",
                        report.records, report.root_hash, report.controller_key_sha256
                    );
                } else {
                    println!(
                        "UNVERIFIED ORIGIN: {} records, signatures, Merkle root {} and checkpoint verify, but controller key sha256 {} was not compared with a key you trust: anyone can make a bundle that verifies with a key of their own. Pass --controller-key-sha256 HEX with the key the controller's operator gives you (exit status {EXIT_UNPINNED})",
                        report.records, report.root_hash, report.controller_key_sha256
                    );
                }
                for (a, n) in &report.records_per_agent {
                    println!("  {a}: {n} records");
                }
                if let Some(g) = &report.global_log {
                    println!(
                        "  included in the controller's log {} (size {}, root {})",
                        g.origin, g.tree_size, g.root_hash
                    );
                }
                println!(
                    "  agent certificates issued by the CA sha256 {}{}",
                    report.ca_sha256,
                    if ca.is_some() {
                        " (the CA given)"
                    } else {
                        " (carried by the bundle)"
                    }
                );
            }
            if !report.controller_key_pinned {
                std::io::stdout().flush()?;
                std::process::exit(EXIT_UNPINNED);
            }
            Ok(())
        }
    }
}

/// Exit status of `evidence verify` when everything verifies but no controller key was pinned.
pub const EXIT_UNPINNED: i32 = 4;

/// A `--controller-key-sha256` value: 64 hex digits (any case, `:` separators allowed).
fn key_pin(s: &str) -> anyhow::Result<String> {
    let k: String = s.trim().chars().filter(|c| *c != ':').collect();
    if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--controller-key-sha256 must be the 64 hex digits of the controller's evidence key SHA-256 (printed by `preflight evidence export`), not {s:?}");
    }
    Ok(k.to_ascii_lowercase())
}

async fn harden(op: HardenOp, conn: &Conn, out: Output) -> anyhow::Result<()> {
    let lang: Lang = match &op {
        HardenOp::Status(t) => t.lang,
        HardenOp::Audit(c) | HardenOp::Plan(c) | HardenOp::Verify(c) => c.target.lang,
        HardenOp::Rollback(r) => r.target.lang,
        HardenOp::Apply(a) => a.checks.target.lang,
    }
    .into();
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
            let yes = |b: bool| -> String {
                match (b, lang) {
                    (true, Lang::Zh) => "是".into(),
                    (false, Lang::Zh) => "否".into(),
                    (b, Lang::En) => b.to_string(),
                }
            };
            let mut table = Table::new(&[
                lang.pick("AGENT", "代理"),
                lang.pick("BASELINE", "基线已加固"),
                lang.pick("ALL-COMPLIANT", "全部符合"),
                lang.pick("VERIFIED", "变更后已复核"),
                lang.pick("FIREWALL", "防火墙已确认"),
                lang.pick("NON-COMPLIANT", "不符合项"),
            ]);
            let mut notes = Vec::new();
            for f in &r.hosts {
                if !f.audited && f.firewall != pb::HostFirewall::Unspecified as i32 {
                    // No evidence at all: not `false` facts, none.
                    let dash = || "-".to_string();
                    table.row(vec![
                        f.agent_id.clone(),
                        lang.pick("never audited", "从未审计").to_string(),
                        dash(),
                        dash(),
                        dash(),
                        String::new(),
                    ]);
                    continue;
                }
                let firewall = match pb::HostFirewall::try_from(f.firewall) {
                    // An older controller: only the boolean.
                    Ok(pb::HostFirewall::Unspecified) => yes(f.firewall_confirmed),
                    Ok(pb::HostFirewall::Confirmed) => lang.pick("confirmed", "已确认").into(),
                    Ok(pb::HostFirewall::NotApplicable) => lang.pick("n/a", "不适用").into(),
                    Ok(pb::HostFirewall::NotConfirmed) => {
                        lang.pick("not confirmed", "未确认").into()
                    }
                    Ok(pb::HostFirewall::NeverAudited) => {
                        lang.pick("never audited", "从未审计").into()
                    }
                    // A newer controller's fact: its number, and the boolean.
                    Err(_) => format!("{} ({})", yes(f.firewall_confirmed), f.firewall),
                };
                table.row(vec![
                    f.agent_id.clone(),
                    yes(f.baseline_applied),
                    yes(f.all_compliant),
                    yes(f.verified_after_last_change),
                    firewall,
                    f.noncompliant.join(lang.pick(", ", "、")),
                ]);
                if !f.firewall_missing_ports.is_empty() {
                    notes.push(match lang {
                        Lang::En => format!(
                            "{}: the firewall allow-list lacks planned ports {}",
                            f.agent_id,
                            f.firewall_missing_ports.join(", ")
                        ),
                        Lang::Zh => format!(
                            "{}：防火墙放行列表缺少方案中的端口 {}",
                            f.agent_id,
                            f.firewall_missing_ports.join("、")
                        ),
                    });
                }
            }
            print!("{}", table.render());
            for n in notes {
                println!("{n}");
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
                print_results(&plan, true, lang);
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
                print_results(&applied, true, lang);
                println!("{}", lang.pick("-- verify after apply", "-- 加固后复核"));
                print_results(&verified, false, lang);
            }
            finish(&applied)?;
            for a in &applied.results {
                if a.firewall_change.is_some()
                    && a.firewall != pb::FirewallOutcome::Confirmed as i32
                {
                    bail!("{}: firewall {}", a.agent_id, firewall_words(a));
                }
            }
            return finish(&verified);
        }
    };
    let r = call(&mut h, req).await?;
    if out == Output::Json {
        print_json(&r)?;
    } else {
        print_results(&r, diffs, lang);
    }
    finish(&r)?;
    // Also with --output json (the document is printed first), as `sweep` does.
    if audit {
        exit_if_non_compliant(&r);
    }
    Ok(())
}

/// The page's style sheet.
const EVIDENCE_CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%;margin-bottom:2em}th,td{border:1px solid #bbb;padding:4px 6px;vertical-align:top;font-size:13px}th{background:#eee}.ok{background:#e3f5e1}.bad{background:#fbe3e3}.na{background:#f0f0f0}.unk{background:#fff4d6}.t{white-space:nowrap}pre{white-space:pre-wrap;margin:0;font-size:12px}";

/// Issue 20 finding 6: one banner saying whether the controller key was pinned at export.
fn origin_banner(report: &evidence::BundleReport) -> Markup {
    let cmd = "preflight evidence verify BUNDLE --controller-key-sha256 KEY";
    if report.controller_key_pinned {
        html! {
            p.ok #origin {
                "来源已验证：控制器公钥与导出时给定的 --controller-key-sha256 一致。" br;
                "Origin verified: the controller key matches the --controller-key-sha256 given at export ("
                (report.controller_key_sha256) ")."
            }
        }
    } else {
        html! {
            p.bad #origin {
                strong { "来源未验证" }
                "：导出时未给定可信的控制器公钥，本页不能证明由谁签发。请用 " code { (cmd) } " 校验 JSON 证据包。" br;
                strong { "Origin unverified" }
                ": no trusted controller key was given at export, so this page does not show who signed the evidence. Verify the JSON bundle with "
                code { (cmd) } " (key " (report.controller_key_sha256) " as the bundle claims it)."
            }
        }
    }
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

/// What the controller knows of an agent's host, for the evidence page's host heading.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Addresses the host reported (else the address the agent listens on).
    pub address: String,
    /// os-release PRETTY_NAME; empty when the agent did not answer.
    pub os: String,
}

/// Addresses (from the agent list) and OS (from each agent's inventory, best effort: an agent
/// that does not answer within 5 s shows no OS) of the agents whose records are in `b`.
async fn host_facts(
    conn: &Conn,
    b: &EvidenceBundle,
) -> std::collections::BTreeMap<String, HostFacts> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(mut api) = conn.api().await else {
        return out;
    };
    let agents = api
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map(|r| r.into_inner().agents)
        .unwrap_or_default();
    let mut ids: Vec<&str> = b
        .records
        .iter()
        .map(|r| r.record.agent_id.as_str())
        .collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let mut f = HostFacts::default();
        if let Some(a) = agents.iter().find(|a| a.id == id) {
            f.address = if a.addresses.is_empty() {
                a.listen_addr.clone()
            } else {
                a.addresses.join(", ")
            };
        }
        let mut req = tonic::Request::new(pb::GetAgentInventoryRequest {
            agent_id: id.into(),
        });
        req.set_timeout(std::time::Duration::from_secs(5));
        if let Ok(inv) = api.get_agent_inventory(req).await {
            f.os = inv
                .into_inner()
                .os
                .map(|o| o.pretty_name)
                .unwrap_or_default();
        }
        out.insert(id.to_string(), f);
    }
    out
}

/// A catalog check's Chinese title (empty for an id the catalog does not know).
fn title_zh(check: &str) -> &'static str {
    preflight_harden::catalog::catalog()
        .iter()
        .find(|c| c.id == check)
        .map(|c| c.title_zh)
        .unwrap_or("")
}

/// A self-contained page for auditors, in Chinese and English: per host, a heading with its
/// address and OS, the current compliance (each check's latest status, with its Chinese title
/// and MLPS/CIS items), then the chronological log (time, check, operation, status, before and
/// after). Times in the display zone. The JSON bundle stays the thing that is verified. The
/// markup is a maud template: every value is escaped by it.
fn html(
    b: &EvidenceBundle,
    report: &evidence::BundleReport,
    facts: &std::collections::BTreeMap<String, HostFacts>,
    zone: &preflight_render::Zone,
) -> String {
    use std::collections::BTreeMap;
    let when = |ms: u64| zone.show(ms.min(i64::MAX as u64) as i64);
    let dash = |v: &str| {
        if v.is_empty() {
            "—".to_string()
        } else {
            v.to_string()
        }
    };
    let mut hosts: BTreeMap<(String, String), Vec<&evidence::SignedRecord>> = BTreeMap::new();
    for r in &b.records {
        hosts
            .entry((r.record.host.clone(), r.record.agent_id.clone()))
            .or_default()
            .push(r);
    }
    let verify = "preflight evidence verify";
    let page = maud::html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                title { "安全加固证据 Hardening evidence" }
                style { (PreEscaped(EVIDENCE_CSS)) }
            }
            body {
                h1 { "安全加固证据报告" br; small { "Hardening evidence report" } }
                p {
                    "记录数 Records: " (report.records)
                    "　·　Merkle 根 root: " code { (report.root_hash) }
                    "　·　签发时间 Signed at: " span.t { (when(report.checkpoint_time_utc_ms)) }
                }
                p { "控制器公钥指纹 Controller key SHA-256: " code { (report.controller_key_sha256) } }
                p {
                    "本页为便于阅读的副本；具有证明力的是同批导出的 JSON 证据包，可用 " code { (verify) } " 离线校验。" br;
                    "This page is a readable copy; the JSON bundle exported with it is what proves the evidence, verifiable offline with " code { (verify) } "."
                }
                // issue 20 finding 6: origin pinned or not (keep this line)
                (origin_banner(report))
                @for ((host, agent), recs) in &hosts {
                    (host_section(host, agent, recs, &facts.get(agent).cloned().unwrap_or_default(), &when, &dash))
                }
            }
        }
    };
    let mut s = page.into_string();
    s.push('\n');
    s
}

/// One host of the evidence page: heading, current compliance, chronological log.
fn host_section(
    host: &str,
    agent: &str,
    recs: &[&evidence::SignedRecord],
    f: &HostFacts,
    when: &dyn Fn(u64) -> String,
    dash: &dyn Fn(&str) -> String,
) -> Markup {
    // Current compliance: each check's latest record, in catalog order of first sight.
    let mut latest: Vec<&evidence::EvidenceRecord> = Vec::new();
    for r in recs.iter().map(|r| &r.record) {
        match latest.iter_mut().find(|x| x.check_id == r.check_id) {
            Some(x) if x.time_utc_ms <= r.time_utc_ms => *x = r,
            Some(_) => {}
            None => latest.push(r),
        }
    }
    let bad = latest
        .iter()
        .filter(|r| {
            r.status != EvidenceStatus::Compliant && r.status != EvidenceStatus::NotApplicable
        })
        .count();
    let mut log: Vec<&evidence::EvidenceRecord> = recs.iter().map(|r| &r.record).collect();
    log.sort_by_key(|r| r.time_utc_ms);
    html! {
        h2 { "主机 Host: " (host) " " small { "(agent " (agent) ")" } }
        p { "地址 Address: " (dash(&f.address)) "　·　操作系统 OS: " (dash(&f.os)) }
        h3 {
            "当前合规状态 Current compliance "
            small { "(" (latest.len()) " 项检查，" (bad) " 项不符合或无法判定 · " (latest.len()) " checks, " (bad) " not compliant or unknown)" }
        }
        table {
            tr {
                th { "检查项 Check" } th { "名称" } th { "状态 Status" } th { "等保条款 MLPS" } th { "CIS" } th { "最近记录 Latest" }
            }
            @for r in &latest {
                @let (zh, en, class) = status_label(r.status);
                tr class=(class) {
                    td { (r.check_id) }
                    td { (title_zh(&r.check_id)) }
                    td { (zh) br; (en) }
                    td { (r.mlps_refs.join(", ")) }
                    td { (r.cis_refs.join(", ")) }
                    td.t { (when(r.time_utc_ms)) br; (op_label(r.operation)) }
                }
            }
        }
        h3 { "操作记录 Log " small { "(按时间 chronological)" } }
        table {
            tr {
                th { "时间 Time" } th { "检查项 Check" } th { "等保条款 MLPS" } th { "CIS" } th { "操作 Operation" } th { "状态 Status" } th { "实际值（前/后） Observed (before/after)" } th { "期望值 Expected" } th { "变更 Change" } th { "操作人 Operator" }
            }
            @for r in log {
                @let (zh, en, class) = status_label(r.status);
                @let change = r.diff_applied.as_deref().unwrap_or("");
                tr class=(class) {
                    td.t { (when(r.time_utc_ms)) }
                    td { (r.check_id) br; (title_zh(&r.check_id)) }
                    td { (r.mlps_refs.join(", ")) }
                    td { (r.cis_refs.join(", ")) }
                    td { (op_label(r.operation)) }
                    td { (zh) br; (en) }
                    td {
                        pre { (r.observed) }
                        @if let Some(reason) = &r.reason { br; em { (reason) } }
                    }
                    td { pre { (r.expected) } }
                    td {
                        @if !change.is_empty() {
                            details { summary { "差异 diff" } pre { (change) } }
                        }
                    }
                    td { (r.operator.user) " (" (r.operator.role.as_str()) ")" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::evidence::{
        Checkpoint, EvidenceOperation, EvidenceRecord, Operator, SignedCheckpoint, SignedRecord,
    };

    /// `--output json` keeps the words of the fields that were strings: `"firewall":
    /// "confirmed"`, a port's `"proto": "udp"`; the text shows why a change was not confirmed.
    #[test]
    fn firewall_outcome_and_protocol_keep_their_words() {
        let mut res = pb::AgentHardenResult {
            agent_id: "web-01".into(),
            firewall: pb::FirewallOutcome::Confirmed as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&res).expect("json");
        assert_eq!(v["firewall"], "confirmed");
        assert_eq!(firewall_words(&res), "confirmed");
        res.firewall = pb::FirewallOutcome::NotConfirmed as i32;
        res.firewall_detail = "cannot open a new connection".into();
        assert_eq!(
            serde_json::to_value(&res).expect("json")["firewall"],
            "not_confirmed"
        );
        assert_eq!(
            firewall_words(&res),
            "not confirmed: cannot open a new connection"
        );
        let p = parse_port("514/udp").expect("port");
        assert_eq!(serde_json::to_value(&p).expect("json")["proto"], "udp");
        assert_eq!(
            parse_port("8080").expect("port").proto,
            pb::Protocol::Tcp as i32
        );
        assert!(parse_port("8080/sctp").is_err());
    }

    fn rec(check: &str, op: EvidenceOperation, st: EvidenceStatus, t: u64) -> SignedRecord {
        SignedRecord {
            record: EvidenceRecord {
                format_version: 1,
                agent_id: "web-01".into(),
                agent_cert_sha256: "00".repeat(32),
                host: "web-01".into(),
                check_id: check.into(),
                catalog_version: "1".into(),
                mlps_refs: vec!["L3-CES1-06".into()],
                cis_refs: vec!["5.2.8".into()],
                operation: op,
                observed: "yes".into(),
                files_read: Default::default(),
                expected: "no".into(),
                status: st,
                reason: None,
                diff_applied: None,
                backup_ref: None,
                operator: Operator {
                    user: "amy".into(),
                    role: preflight_core::role::Role::Deployer,
                },
                time_utc_ms: t,
                agent_version: "0".into(),
                controller_request_id: "hr-1".into(),
                firewall: None,
            },
            signature: String::new(),
        }
    }

    #[test]
    fn evidence_page_opens_each_host_with_its_current_compliance() {
        let t0 = 1_796_348_755_000;
        let b = EvidenceBundle {
            format_version: 1,
            // Log order need not be time order; the log section sorts by time.
            records: vec![
                rec(
                    "ssh.permit_root_login",
                    EvidenceOperation::Verify,
                    EvidenceStatus::Compliant,
                    t0 + 60_000,
                ),
                rec(
                    "ssh.permit_root_login",
                    EvidenceOperation::Audit,
                    EvidenceStatus::NonCompliant,
                    t0,
                ),
                rec(
                    "acct.pass_max_days",
                    EvidenceOperation::Audit,
                    EvidenceStatus::NonCompliant,
                    t0 + 1000,
                ),
            ],
            agent_keys: Default::default(),
            checkpoint: SignedCheckpoint {
                checkpoint: Checkpoint {
                    origin: "o".into(),
                    tree_size: 3,
                    root_hash: "ab".into(),
                    time_utc_ms: t0 + 120_000,
                    ca_sha256: None,
                },
                signature: String::new(),
            },
            controller_spki_der: String::new(),
            log_inclusion: None,
            ca_certificate_der: None,
        };
        let report = evidence::BundleReport {
            records: 3,
            origin: "o".into(),
            root_hash: "ab".into(),
            checkpoint_time_utc_ms: t0 + 120_000,
            controller_key_sha256: "cd".into(),
            records_per_agent: Default::default(),
            global_log: None,
            ca_sha256: String::new(),
            controller_key_pinned: true,
        };
        let facts = [(
            "web-01".to_string(),
            HostFacts {
                address: "10.0.0.5".into(),
                os: "Rocky Linux 9.4 (Blue Onyx)".into(),
            },
        )]
        .into_iter()
        .collect();
        let zone = preflight_render::Zone::named("Asia/Shanghai").unwrap();
        let h = html(&b, &report, &facts, &zone);
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("{s} missing: {h}"));
        // Heading with address and OS, then the summary, then the log.
        assert!(at("主机 Host: web-01") < at("地址 Address: 10.0.0.5"));
        assert!(h.contains("操作系统 OS: Rocky Linux 9.4 (Blue Onyx)"));
        assert!(at("地址 Address") < at("当前合规状态") && at("当前合规状态") < at("操作记录 Log"));
        let summary = &h[at("当前合规状态")..at("操作记录 Log")];
        // The latest status per check: root login verified compliant after the audit.
        assert!(summary.contains("2 项检查，1 项不符合"), "{summary}");
        assert!(summary.contains("<td>ssh.permit_root_login</td><td>SSH禁止root远程登录</td><td>符合<br>compliant</td><td>L3-CES1-06</td><td>5.2.8</td>"), "{summary}");
        assert!(
            summary.contains("密码最长使用期限") && summary.contains("不符合<br>non-compliant")
        );
        // The log is chronological, with the time on one line, in the display zone.
        let log = &h[at("操作记录 Log")..];
        let first = log.find("09:45:55 +08:00").unwrap();
        let second = log.find("09:45:56 +08:00").unwrap();
        let third = log.find("09:46:55 +08:00").unwrap();
        assert!(first < second && second < third, "{log}");
        assert!(
            log.contains("<td class=\"t\">2026-12-04 09:45:55 +08:00 Asia/Shanghai</td>"),
            "{log}"
        );
        assert!(h.contains(".t{white-space:nowrap}"));
    }

    /// Every value on the evidence page is escaped by the template: a record's text cannot
    /// add markup to the page an auditor opens.
    #[test]
    fn evidence_page_escapes_what_records_say() {
        let mut r = rec(
            "ssh.permit_root_login",
            EvidenceOperation::Audit,
            EvidenceStatus::Unknown,
            1_796_348_755_000,
        );
        r.record.observed = "<script>alert(1)</script>".into();
        r.record.reason = Some("a \"quoted\" & <b>bold</b> reason".into());
        r.record.host = "<h1>x</h1>".into();
        let b = EvidenceBundle {
            format_version: 1,
            records: vec![r],
            agent_keys: Default::default(),
            checkpoint: SignedCheckpoint {
                checkpoint: Checkpoint {
                    origin: "o".into(),
                    tree_size: 1,
                    root_hash: "<root>".into(),
                    time_utc_ms: 0,
                    ca_sha256: None,
                },
                signature: String::new(),
            },
            controller_spki_der: String::new(),
            log_inclusion: None,
            ca_certificate_der: None,
        };
        let report = evidence::BundleReport {
            records: 1,
            origin: "o".into(),
            root_hash: "<root>".into(),
            checkpoint_time_utc_ms: 0,
            controller_key_sha256: "k".into(),
            records_per_agent: Default::default(),
            global_log: None,
            ca_sha256: String::new(),
            controller_key_pinned: false,
        };
        let zone = preflight_render::Zone::named("Asia/Shanghai").unwrap();
        let h = html(&b, &report, &Default::default(), &zone);
        assert!(
            !h.contains("<script>") && !h.contains("<b>") && !h.contains("<h1>x"),
            "{h}"
        );
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{h}");
        assert!(
            h.contains("a &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt; reason"),
            "{h}"
        );
        assert!(h.contains("<code>&lt;root&gt;</code>"), "{h}");
        assert!(h.contains("Origin unverified") && h.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn harden_tables_in_chinese_align_by_display_width() {
        let check = |id: &str, st: pb::CheckStatus, obs: &str| pb::CheckOutcome {
            id: id.into(),
            status: st as i32,
            observed: obs.into(),
            expected: "no".into(),
            ..Default::default()
        };
        let r = pb::HardenAgentsResponse {
            request_id: "hr-1".into(),
            log_size: 2,
            log_root: "ab".into(),
            results: vec![pb::AgentHardenResult {
                agent_id: "web-01".into(),
                host: "web-01".into(),
                checks: vec![
                    check(
                        "ssh.permit_root_login",
                        pb::CheckStatus::NonCompliant,
                        "yes",
                    ),
                    check("ssh.misc", pb::CheckStatus::Compliant, "无"),
                ],
                evidence_appended: 2,
                ..Default::default()
            }],
        };
        let zh = results_text(&r, false, Lang::Zh);
        let lines: Vec<&str> = zh.lines().collect();
        assert_eq!(lines[0], "== 代理 web-01（主机 web-01）");
        assert_eq!(lines[1], "检查项                 状态    实际值  期望值");
        assert_eq!(lines[2], "ssh.permit_root_login  不符合  yes     no");
        assert_eq!(lines[3], "ssh.misc               符合    无      no");
        assert!(zh.contains("已追加 2 条证据记录"), "{zh}");
        let en = results_text(&r, false, Lang::En);
        assert!(
            en.contains("CHECK                  STATUS         OBSERVED  EXPECTED"),
            "{en}"
        );
    }

    #[test]
    fn status_words_in_chinese() {
        assert_eq!(status_word("non_compliant", Lang::Zh), "不符合");
        assert_eq!(status_word("non_compliant", Lang::En), "non_compliant");
    }
}
