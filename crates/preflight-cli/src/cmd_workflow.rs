//! The deployment workflow subcommands (WORKFLOW.md): users, projects, batches, GD, the
//! deployer queue, pause statistics and the dev clock. Every command is a call of the
//! controller's Workflow service; the controller checks roles and stages and says what is
//! allowed when it refuses.

use std::time::Duration;

use anyhow::{bail, Context};
use preflight_controller::wire::{self, WireEnum};
use preflight_core::role::Role;
use preflight_core::workflow::{
    BatchSummary, BatchView, Event, GateStatus, GdDecision, Holder, Party, PauseReason,
    PauseStatsRow, ProjectsView, QueueClass, QueueEntry, Stage, StatsKey, Timestamp,
};
use preflight_proto::v1 as pb;
use preflight_render::Table;

use crate::client::{status, Conn};
use crate::Output;

/// Display language of stage, reason and party names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lang {
    /// Stable ids (`deploy`, `package`).
    #[default]
    En,
    /// Chinese names (系统部署, 部署包不完整).
    Zh,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LangArg {
    /// Language of stage, reason and party names: en (ids) or zh (中文).
    #[arg(long, value_enum, default_value_t = Lang::En)]
    lang: Lang,
}

/// Workflow subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCmd {
    /// People and their roles: `user add NAME --role ROLE` prints the token once.
    #[command(subcommand)]
    User(UserCmd),
    /// Projects (立项): add, approve, list.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Deployment batches (部署批次): create, list, show, advance, pause, resolve, terminate...
    #[command(subcommand)]
    Batch(BatchCmd),
    /// GD's decision on a batch in gd_confirm (GD确认暂停原因).
    #[command(subcommand)]
    Gd(GdCmd),
    /// Assign a batch in stage assign to a deployer (default: the least loaded one).
    #[command(
        after_help = "Examples:\n  preflight assign B7 --deployer amy\n  preflight assign B7          # least loaded deployer"
    )]
    Assign {
        /// Batch id.
        batch: String,
        /// Deployer name; omitted: the least loaded deployer.
        #[arg(long)]
        deployer: Option<String>,
    },
    /// The deployer list (部署人员).
    #[command(subcommand)]
    Deployer(DeployerCmd),
    /// The deployer queues (部署排队): deploying, then queued, then paused.
    #[command(
        after_help = "Examples:\n  preflight queue\n  preflight queue --deployer amy --lang zh"
    )]
    Queue {
        /// Only this deployer's list.
        #[arg(long)]
        deployer: Option<String>,
        #[command(flatten)]
        lang: LangArg,
    },
    /// Queue jump (插队) with a delivery lead's approval (run as the delivery lead).
    #[command(
        after_help = "Example:\n  preflight jump B9 --position 2 --approval \"customer go-live on Friday, approved by lee\""
    )]
    Jump {
        /// Batch id (queued).
        batch: String,
        /// Target position in the deployer's list, from 1 (never ahead of a batch being deployed).
        #[arg(long)]
        position: u32,
        /// Why the jump is approved (recorded in the history).
        #[arg(long)]
        approval: String,
    },
    /// Statistics: `stats pauses` (who caused which pauses, for how long).
    #[command(subcommand)]
    Stats(StatsCmd),
    /// Tests and rehearsals only (controller started with --dev-clock).
    #[command(subcommand)]
    Dev(DevCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Add a user (admin only); prints the user's token once.
    #[command(
        after_help = "Example:\n  preflight user add amy --role deployer\nRoles: admin, dispatcher, project, integrator, deployer, perf_checker, reviewer, delivery_lead, gd, auditor"
    )]
    Add {
        /// User name (for a deployer: the name in the deployer list).
        name: String,
        /// Role.
        #[arg(long)]
        role: String,
        /// The token expires after this long (e.g. 8h, 30d; at most 400d); default: the
        /// controller's `serve --token-ttl` (90 days unless set).
        #[arg(long, value_parser = preflight_core::timefmt::parse_duration)]
        ttl: Option<u64>,
    },
    /// List users, roles, status and token expiry (warns about tokens expiring within 7 days).
    List,
    /// A user's token (admin only).
    #[command(subcommand)]
    Token(UserTokenCmd),
    /// Disable a user: their token is refused until `user enable` (admin only).
    Disable { name: String },
    /// Enable a disabled user again (admin only).
    Enable { name: String },
    /// Remove a user and their token (admin only); the history keeps the name.
    Remove { name: String },
    /// Who added, rotated, disabled, enabled or removed which user, and when.
    History,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserTokenCmd {
    /// A new token for user NAME, printed once; the old one is refused from now on.
    #[command(after_help = "Example:\n  preflight user token rotate amy --ttl 30d")]
    Rotate {
        name: String,
        /// The new token expires after this long (at most 400d); default: the controller's
        /// `serve --token-ttl`.
        #[arg(long, value_parser = preflight_core::timefmt::parse_duration)]
        ttl: Option<u64>,
    },
}

/// Tokens expiring sooner than this are flagged in `user list`.
const EXPIRY_WARNING_MS: i64 = 7 * preflight_core::workflow::DAY_MS;

/// The EXPIRES column and, for a token close to expiry, the warning printed under the table.
fn expiry_text(u: &pb::WorkflowUser, now: i64) -> (String, Option<String>) {
    if u.expires_at_ms == 0 {
        return (
            "never".into(),
            Some(format!(
                "warning: the token of {} never expires (made before tokens expired by default): `preflight user token rotate {}` gives it an expiry",
                u.name, u.name
            )),
        );
    }
    let at = at(Timestamp(u.expires_at_ms));
    let left = u.expires_at_ms - now;
    if left <= 0 {
        return (
            format!("{at} (expired)"),
            Some(format!(
                "warning: the token of {} has expired: `preflight user token rotate {}` makes a new one",
                u.name, u.name
            )),
        );
    }
    if left < EXPIRY_WARNING_MS {
        let hours = left / 3_600_000;
        let when = if hours < 48 {
            format!("{hours} h")
        } else {
            format!("{} days {} h", hours / 24, hours % 24)
        };
        return (
            format!("{at} (in {when})"),
            Some(format!(
                "warning: the token of {} expires in {when}: `preflight user token rotate {}` makes a new one",
                u.name, u.name
            )),
        );
    }
    (at, None)
}

#[derive(Debug, clap::Args)]
pub struct ApprovalArgs {
    /// Approved (立项) with this budget reference.
    #[arg(long, conflicts_with_all = ["exception_approver", "exception_ref"])]
    budget: Option<String>,
    /// Exception record instead of approval: who approved it.
    #[arg(long, requires = "exception_ref")]
    exception_approver: Option<String>,
    /// Exception record: its reference.
    #[arg(long, requires = "exception_approver")]
    exception_ref: Option<String>,
}

impl ApprovalArgs {
    fn to_pb(&self) -> pb::ProjectApproval {
        match (&self.budget, &self.exception_approver, &self.exception_ref) {
            (Some(b), _, _) => pb::ProjectApproval {
                kind: pb::ApprovalKind::Approved.into(),
                budget: b.clone(),
                ..Default::default()
            },
            (None, Some(a), Some(r)) => pb::ProjectApproval {
                kind: pb::ApprovalKind::Exception.into(),
                approver: a.clone(),
                reference: r.clone(),
                ..Default::default()
            },
            _ => pb::ProjectApproval {
                kind: pb::ApprovalKind::Pending.into(),
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ProjectCmd {
    /// Create a project (admin, project, delivery_lead).
    #[command(
        after_help = "Examples:\n  preflight project add P1 --name \"Tax portal\" --line gov --budget B-2026-7\n  preflight project add P2 --name Exchange --line trading   # approval pending"
    )]
    Add {
        /// Project id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Business line.
        #[arg(long)]
        line: String,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// Record a project's approval or exception (admin, delivery_lead).
    #[command(
        after_help = "Examples:\n  preflight project approve P2 --budget B-2026-9\n  preflight project approve P2 --exception-approver lee --exception-ref EX-12"
    )]
    Approve {
        /// Project id.
        id: String,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// List projects (with any restriction) and deployers.
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum BatchCmd {
    /// Create a batch in stage apply (project role).
    #[command(
        after_help = "Example:\n  preflight batch create B7 --project P1 --title \"3 SOA nodes\""
    )]
    Create {
        /// Batch id.
        id: String,
        /// Project id.
        #[arg(long)]
        project: String,
        /// Title.
        #[arg(long)]
        title: String,
        /// Business line (default: the project's).
        #[arg(long)]
        line: Option<String>,
    },
    /// List batches.
    List {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        lang: LangArg,
    },
    /// Stage, holder, gates (what each still needs), queue line and history of a batch.
    #[command(after_help = "Example:\n  preflight batch show B7 --lang zh")]
    Show {
        /// Batch id.
        batch: String,
        #[command(flatten)]
        lang: LangArg,
    },
    /// Move to the next stage when its gates pass (role of the stage).
    #[command(after_help = "Example:\n  preflight batch advance B7 --lang zh")]
    Advance {
        /// Batch id.
        batch: String,
        /// Language of a refusal for unmet gates: en or zh (中文).
        #[command(flatten)]
        lang: LangArg,
    },
    /// Pause (部署暂停) a batch in stages 3-13: to problem_handling.
    #[command(
        after_help = "Example:\n  preflight batch pause B7 --reason package --text \"database backup files missing\" --party project\nReasons: package, network_ports, planning, history_info, site_busy, remote_access, disk_performance, vip_missing, jump_host_missing, other\nParties: project, integrator, deployer, dispatcher, perf_checker, customer, other"
    )]
    Pause {
        /// Batch id.
        batch: String,
        /// Reason category.
        #[arg(long)]
        reason: String,
        /// What happened.
        #[arg(long)]
        text: String,
        /// Responsible party (default: project).
        #[arg(long)]
        party: Option<String>,
    },
    /// The pause is handled (暂停问题处理完成): back to the pausing stage and person.
    Resolve {
        /// Batch id.
        batch: String,
        /// What was done.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Ask to terminate (中止部署流程): to gd_confirm; GD's confirmation makes it final.
    Terminate {
        /// Batch id.
        batch: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Restart deployment of a batch returned from a pause in deploy (its deployer or a dispatcher).
    Start {
        /// Batch id.
        batch: String,
    },
    /// Attach only the plan facts (integrator): such a plan is never complete, since the
    /// controller cannot check it; `preflight plan attach` sends the plan itself.
    #[command(
        after_help = "Example:\n  preflight batch plan B7 --digest sha256:ab12 --host 10.0.0.5 --host 10.0.0.6"
    )]
    Plan {
        /// Batch id.
        batch: String,
        /// Digest of the plan content.
        #[arg(long)]
        digest: String,
        /// Planned host, repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// The project confirms the attached plan.
    ConfirmPlan {
        /// Batch id.
        batch: String,
    },
    /// Record a risk of the batch.
    #[command(
        after_help = "Examples:\n  preflight batch risk B7 --text \"disk slower than planned, accepted\" --source disk:db-01:/data\n  preflight batch risk B7 --all-soft"
    )]
    Risk {
        /// Batch id.
        batch: String,
        /// What the risk is.
        #[arg(long, required_unless_present = "all_soft")]
        text: Option<String>,
        /// Check id it comes from (a soft failure or perf shortfall); it must name a recorded
        /// finding.
        #[arg(long)]
        source: Option<String>,
        /// List every soft failure of the recorded readiness report that is not a risk yet, one
        /// risk each (its check as the source).
        #[arg(long, conflicts_with_all = ["text", "source"])]
        all_soft: bool,
    },
    /// Upload the risk filing (风险备案) naming every recorded risk (project).
    FileRisks {
        /// Batch id.
        batch: String,
        /// Risk number, repeatable.
        #[arg(long = "risk")]
        risks: Vec<u32>,
        /// Reference of the uploaded document.
        #[arg(long)]
        document: String,
    },
    /// The reviewer's verdict on the risk filing.
    Review {
        /// Batch id.
        batch: String,
        /// Approve (to accept).
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        /// Reject (back to risk_upload).
        #[arg(long)]
        reject: bool,
        /// Note.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record acceptance and a rating 1-5 (project).
    Accept {
        /// Batch id.
        batch: String,
        /// Rating 1-5.
        #[arg(long)]
        rating: u32,
        /// Comment.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GdCmd {
    /// Confirm the pause reason (back to problem_handling) or the termination (final).
    #[command(
        after_help = "Examples:\n  preflight gd confirm B7 --decision reason --note \"customer site closed until July\"\n  preflight gd confirm B7 --decision termination"
    )]
    Confirm {
        /// Batch id.
        batch: String,
        /// reason or termination.
        #[arg(long, value_parser = ["reason", "termination"])]
        decision: String,
        /// Note.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeployerCmd {
    /// Add a deployer (admin, dispatcher); the name is the deployer's user name.
    Add {
        /// Name.
        name: String,
    },
    /// List deployers and their load.
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum StatsCmd {
    /// Pauses grouped by reason, party, project or business line: count, total and median days.
    #[command(
        after_help = "Examples:\n  preflight stats pauses --by party\n  preflight stats pauses --by reason --since 2026-06-01 --lang zh"
    )]
    Pauses {
        /// Grouping.
        #[arg(long, default_value = "reason", value_parser = ["reason", "party", "project", "line"])]
        by: String,
        /// Only pauses that began at or after this date or time (RFC 3339, e.g. 2026-06-01).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        lang: LangArg,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DevCmd {
    /// The controller's settable clock (admin; needs `preflight serve --dev-clock`).
    #[command(subcommand)]
    Clock(ClockCmd),
    /// Record a sweep result as the controller would (admin; needs --dev-clock).
    #[command(
        after_help = "Examples:\n  preflight dev record readiness B7\n  preflight dev record readiness B7 --fail ports.10.0.0.5:8080:network_ports:customer\n  preflight dev record hardening B7\n  preflight dev record perf B7"
    )]
    Record {
        /// readiness, hardening or perf.
        #[arg(value_parser = ["readiness", "hardening", "perf"])]
        kind: String,
        /// Batch id.
        batch: String,
        /// A hard failure (readiness) or shortfall (perf): CHECK:REASON[:PARTY], repeatable.
        #[arg(long = "fail")]
        fails: Vec<String>,
        /// A soft failure (readiness): CHECK:REASON[:PARTY], repeatable.
        #[arg(long = "soft")]
        softs: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClockCmd {
    /// Set the clock to a time (RFC 3339, e.g. 2026-06-18T08:00:00Z).
    Set {
        /// The time.
        time: String,
    },
    /// Move the clock forward, e.g. 15d, 1h, 1s; runs the escalation check right away.
    Advance {
        /// The duration.
        duration: String,
    },
    /// Show the controller's time.
    Show,
}

type Client = pb::workflow_client::WorkflowClient<crate::client::Authed>;

async fn client(conn: &Conn) -> anyhow::Result<Client> {
    Ok(conn
        .service(pb::workflow_client::WorkflowClient::with_interceptor)
        .await?
        .max_decoding_message_size(preflight_controller::MAX_MESSAGE_BYTES))
}

/// Attaches a plan to a batch, with its facts (digest and hosts) and its canonical TOML, which
/// the controller keeps: `preflight plan attach`.
pub(crate) async fn attach_plan(
    conn: &Conn,
    batch: String,
    digest: String,
    hosts: Vec<String>,
    plan_toml: String,
    out: Output,
) -> anyhow::Result<()> {
    let mut c = client(conn).await?;
    exec(
        &mut c,
        pb::workflow_command::Cmd::AttachPlan(pb::AttachPlanCmd {
            batch,
            digest,
            hosts,
            incomplete: vec![],
            plan_toml,
        }),
        out,
    )
    .await
}

/// Parses a time argument into Unix milliseconds: RFC 3339 with seconds and an offset
/// (`2026-06-18T08:30:00Z`, `2026-06-18T16:30:00+08:00`, fractions allowed), or a date
/// `YYYY-MM-DD` (midnight UTC). Parsed by the `time` crate, so impossible dates
/// (`2026-02-31`) and times without seconds (`08:30Z`) are refused, never adjusted. `what`
/// names the flag or argument in the error.
pub fn parse_time_arg(what: &str, s: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let t = s.trim();
    let full;
    let text = if t.len() == 10 && t.is_ascii() {
        full = format!("{t}T00:00:00Z");
        full.as_str()
    } else {
        t
    };
    match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(dt) => i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| anyhow::anyhow!("{what}: {s:?} is out of range")),
        Err(e) => anyhow::bail!(
            "{what}: {s:?} is not a valid time ({e}); expected RFC 3339 with seconds and an offset, e.g. 2026-06-18T08:30:00Z or 2026-06-18T16:30:00+08:00, or a date, e.g. 2026-06-18"
        ),
    }
}

/// [`parse_time_arg`] for an unnamed argument.
#[allow(dead_code)] // kept for callers without a flag name
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    parse_time_arg("time", s)
}

fn stage_name(s: Stage, lang: Lang) -> String {
    match lang {
        Lang::En => s.id().to_string(),
        Lang::Zh => s.zh().to_string(),
    }
}

fn reason_name(r: PauseReason, lang: Lang) -> String {
    match lang {
        Lang::En => r.id().to_string(),
        Lang::Zh => r.zh().to_string(),
    }
}

fn party_name(p: Party, lang: Lang) -> String {
    match lang {
        Lang::En => p.id().to_string(),
        Lang::Zh => p.zh().to_string(),
    }
}

fn holder(h: &Holder) -> String {
    match h {
        Holder::Person(p) => p.clone(),
        Holder::Roles(r) => format!(
            "role {}",
            r.iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Holder::Nobody => "nobody".into(),
    }
}

/// Who holds the batch, in the output language.
fn holder_in(hd: &Holder, lang: Lang) -> String {
    match (hd, lang) {
        (Holder::Roles(r), Lang::Zh) => format!(
            "角色 {}",
            r.iter()
                .map(|r| preflight_render::role_word(r.as_str(), preflight_render::Lang::Zh))
                .collect::<Vec<_>>()
                .join(" 或 ")
        ),
        (Holder::Nobody, Lang::Zh) => "无".into(),
        _ => holder(hd),
    }
}

fn class_name(c: QueueClass, lang: Lang) -> &'static str {
    match (c, lang) {
        (QueueClass::Deploying, Lang::En) => "deploying",
        (QueueClass::Queued, Lang::En) => "queued",
        (QueueClass::Paused, Lang::En) => "paused",
        (QueueClass::Deploying, Lang::Zh) => "部署中",
        (QueueClass::Queued, Lang::Zh) => "排队",
        (QueueClass::Paused, Lang::Zh) => "暂停",
    }
}

/// A value of the controller's reply, in this build's terms.
fn reply<T>(r: Result<T, wire::WireError>) -> anyhow::Result<T> {
    r.context("the controller's reply")
}

/// A word of a closed set given on the command line; refused like the controller refuses.
fn word<T: std::str::FromStr>(s: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid argument: {e}"))
}

fn print_events(r: pb::WorkflowExecuteReply, out: Output) -> anyhow::Result<()> {
    let events: Vec<Event> = reply(wire::dec_all(r.events))?;
    if out == Output::Json {
        return crate::json(&events);
    }
    for e in &events {
        let what = match (&e.batch, &e.project, &e.kind) {
            (Some(b), _, _) => format!("batch {b}"),
            (None, Some(p), _) => format!("project {p}"),
            (_, _, preflight_core::workflow::EventKind::DeployerAdded { name }) => {
                format!("deployer {name}")
            }
            _ => String::new(),
        };
        let moved = match (e.from, e.to) {
            (Some(f), Some(t)) if f != t => format!(": {} -> {} ({})", f.id(), t.id(), t.zh()),
            (None, Some(t)) => format!(": now in {} ({})", t.id(), t.zh()),
            _ => String::new(),
        };
        println!(
            "{} {what}{moved} [event {} at {}]",
            e.kind.name(),
            e.seq,
            at(e.at)
        );
        if let preflight_core::workflow::EventKind::Assigned { .. } = &e.kind {
            // Whom it went to, and why (the least loaded deployer when none was named).
            println!("  {}", e.why);
        }
    }
    Ok(())
}

fn failure_arg(s: &str) -> anyhow::Result<pb::WorkflowCheckFailure> {
    // CHECK may itself contain ':' (addresses); REASON and PARTY are the last parts.
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let known_party = |p: &str| p.parse::<Party>().is_ok();
    let (check, reason, party) = match parts.as_slice() {
        [p, r, c] if known_party(p) && r.parse::<PauseReason>().is_ok() => (*c, *r, *p),
        [r, c, rest] if r.parse::<PauseReason>().is_ok() => {
            (&s[..rest.len() + 1 + c.len()], *r, "project")
        }
        [r, c] => (*c, *r, "project"),
        _ => bail!("invalid failure {s:?}: use CHECK:REASON[:PARTY], e.g. ports.10.0.0.5:8080:network_ports:customer"),
    };
    Ok(pb::WorkflowCheckFailure {
        check: check.into(),
        detail: format!("{check} failed"),
        reason: word::<PauseReason>(reason)?.to_i32(),
        party: word::<Party>(party)?.to_i32(),
    })
}

/// A role as the controller sent it, in its word.
fn role_word(v: i32) -> String {
    preflight_proto::json::name::<pb::UserRole>(v)
}

/// A header or label in the output language.
fn h(lang: Lang, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}

/// A workflow time as shown: in the display zone (`--tz`); JSON keeps UTC.
fn at(t: Timestamp) -> String {
    preflight_render::time(t.0)
}

fn gate_line(g: &GateStatus, lang: Lang) -> String {
    // Chinese when the controller sent it (one that predates the Chinese texts sends none).
    let zh = lang == Lang::Zh && !g.needs_zh.is_empty() && g.missing_zh.len() == g.missing.len();
    if zh {
        let mark = if g.met { "[已满足]" } else { "[未满足]" };
        let mut l = format!("  {mark} {}：{}", g.gate.id(), g.needs_zh);
        if !g.missing_zh.is_empty() {
            l.push_str("\n             缺少：");
            for m in &g.missing_zh {
                l.push_str(&format!("\n               - {m}"));
            }
        }
        return l;
    }
    let mark = if g.met { "[met]    " } else { "[not met]" };
    let mut l = format!("  {mark} {}: {}", g.gate.id(), g.needs);
    if !g.missing.is_empty() {
        l.push_str("\n             missing:");
        for m in &g.missing {
            l.push_str(&format!("\n               - {m}"));
        }
    }
    l
}

fn show_batch(v: &BatchView, lang: Lang, now: i64) {
    let b = &v.batch;
    let zh = lang == Lang::Zh;
    if zh {
        println!("批次 {}：{}", b.id, b.title);
        println!("项目：      {}（业务线 {}）", b.project, b.business_line);
    } else {
        println!("batch {}: {}", b.id, b.title);
        println!("project:   {} (line {})", b.project, b.business_line);
    }
    let stage = match lang {
        Lang::En => format!("{} ({})", b.stage.id(), b.stage.zh()),
        Lang::Zh => format!("{}（{}）", b.stage.zh(), b.stage.id()),
    };
    if zh {
        println!("阶段：      {stage}，自 {} 起", at(b.stage_since));
        println!("当前处理人：{}", holder_in(&v.held_by, lang));
    } else {
        println!("stage:     {stage} since {}", at(b.stage_since));
        println!("held by:   {}", holder(&v.held_by));
    }
    if let Some(d) = &b.deployer {
        match (&v.queue, zh) {
            (Some(q), false) => println!(
                "deployer:  {d}, position {} in the queue ({} since {})",
                q.position,
                class_name(q.class, lang),
                at(q.since)
            ),
            (Some(q), true) => println!(
                "部署人员：  {d}，队列第 {} 位（{}，自 {} 起）",
                q.position,
                class_name(q.class, lang),
                at(q.since)
            ),
            (None, false) => println!("deployer:  {d}"),
            (None, true) => println!("部署人员：  {d}"),
        }
    }
    if let Some(p) = &b.pause {
        if zh {
            println!(
                "暂停：      {}（{}），由 {} 于 {} 暂停，责任方 {}：{}",
                reason_name(p.reason, lang),
                p.reason.id(),
                p.by,
                at(p.at),
                party_name(p.party, lang),
                p.text
            );
        } else {
            println!(
                "pause:     {} ({}) by {} at {}, party {}: {}",
                reason_name(p.reason, lang),
                p.reason.zh(),
                p.by,
                at(p.at),
                party_name(p.party, lang),
                p.text
            );
        }
        for i in &p.items {
            if zh {
                println!(
                    "           - {}：{}（{}）",
                    i.check,
                    i.detail,
                    party_name(i.party, lang)
                );
            } else {
                println!(
                    "           - {}: {} ({})",
                    i.check,
                    i.detail,
                    party_name(i.party, lang)
                );
            }
        }
    }
    if let Some(t) = v.escalates_after {
        if zh {
            println!(
                "升级：      {} 后转 GD 确认（现在 {}）",
                at(t),
                at(Timestamp(now))
            );
        } else {
            println!(
                "escalates: to GD after {} (now {})",
                at(t),
                at(Timestamp(now))
            );
        }
    }
    if let Some(r) = &v.restricted_by {
        if zh {
            println!(
                "受限：      批次 {r} 等待 GD 确认期间，项目 {} 不能提交部署申请",
                b.project
            );
        } else {
            println!(
                "restricted: project {} may not request deployment while batch {r} awaits GD",
                b.project
            );
        }
    }
    if v.gates.is_empty() {
        println!(
            "{}",
            h(
                lang,
                "gates:     none to leave this stage",
                "关口：      离开本阶段无需关口"
            )
        );
    } else {
        if zh {
            println!("离开{}阶段的关口：", stage_name(b.stage, lang));
        } else {
            println!("gates to leave {}:", stage_name(b.stage, lang));
        }
        for g in &v.gates {
            println!("{}", gate_line(g, lang));
        }
    }
    println!("{}", h(lang, "history:", "历史记录："));
    let mut t = Table::new(&[
        h(lang, "SEQ", "序号"),
        h(lang, "AT", "时间"),
        h(lang, "BY", "操作人"),
        h(lang, "EVENT", "事件"),
        h(lang, "FROM", "原阶段"),
        h(lang, "TO", "新阶段"),
        h(lang, "WHY", "原因"),
    ]);
    for e in &v.history {
        t.row(vec![
            e.seq.to_string(),
            at(e.at),
            e.by.to_string(),
            e.kind.name().to_string(),
            e.from.map(|s| stage_name(s, lang)).unwrap_or_default(),
            e.to.map(|s| stage_name(s, lang)).unwrap_or_default(),
            e.why.clone(),
        ]);
    }
    print!("{}", t.render());
}

async fn exec(c: &mut Client, cmd: pb::workflow_command::Cmd, out: Output) -> anyhow::Result<()> {
    let r = c
        .execute(pb::WorkflowCommand { cmd: Some(cmd) })
        .await
        .map_err(status)?
        .into_inner();
    print_events(r, out)
}

/// The refusal of `batch advance --lang zh` for unmet gates, in Chinese, from the gates the
/// controller evaluates now (`None` when it sends no Chinese texts or every gate is met).
async fn unmet_gates_zh(c: &mut Client, batch: &str) -> Option<String> {
    let r = c
        .get_batch(pb::GetBatchRequest {
            batch: batch.to_string(),
        })
        .await
        .ok()?
        .into_inner();
    let v: BatchView = wire::dec_need("view", r.view).ok()?;
    let unmet: Vec<&GateStatus> = v.gates.iter().filter(|g| !g.met).collect();
    if unmet.is_empty()
        || unmet
            .iter()
            .any(|g| g.needs_zh.is_empty() || g.missing_zh.len() != g.missing.len())
    {
        return None;
    }
    let parts: Vec<String> = unmet
        .iter()
        .map(|g| {
            if g.missing_zh.is_empty() {
                format!("`{}` 未满足，要求：{}", g.gate.id(), g.needs_zh)
            } else {
                format!(
                    "`{}` 未满足，缺少：{}",
                    g.gate.id(),
                    g.missing_zh.join("；")
                )
            }
        })
        .collect();
    Some(format!(
        "批次 `{}` 不能离开{}阶段：{}",
        v.batch.id,
        v.batch.stage.zh(),
        parts.join("；")
    ))
}

/// `batch risk B --all-soft`: one risk per soft failure of the recorded readiness report that
/// no risk names yet, with the failure's check as its source.
async fn all_soft_risks(c: &mut Client, batch: String, out: Output) -> anyhow::Result<()> {
    let r = c
        .get_batch(pb::GetBatchRequest {
            batch: batch.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let v: BatchView = reply(wire::dec_need("view", r.view))?;
    let Some(readiness) = &v.batch.readiness else {
        bail!(
            "batch {batch} has no recorded readiness report, so no soft failure to list: run `preflight sweep {batch}` first"
        );
    };
    let listed: Vec<&str> = v
        .batch
        .risks
        .iter()
        .filter_map(|r| r.source.as_deref())
        .collect();
    let mut events: Vec<Event> = Vec::new();
    let mut added = 0;
    for f in &readiness.soft_failures {
        if listed.contains(&f.check.as_str()) {
            continue;
        }
        let mut text = format!("soft failure {}: {}", f.check, f.detail);
        if text.len() > preflight_core::workflow::MAX_TEXT_LEN {
            let mut end = preflight_core::workflow::MAX_TEXT_LEN - 3;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let reply = c
            .execute(pb::WorkflowCommand {
                cmd: Some(pb::workflow_command::Cmd::AddRisk(pb::AddRiskCmd {
                    batch: batch.clone(),
                    text,
                    source: f.check.clone(),
                })),
            })
            .await
            .map_err(status)?
            .into_inner();
        added += 1;
        if out == Output::Json {
            events.extend(self::reply(wire::dec_all(reply.events))?);
        } else {
            print_events(reply, out)?;
        }
    }
    if out == Output::Json {
        return crate::json(&events);
    }
    if added == 0 {
        println!(
            "batch {batch}: every soft failure of readiness run {} is already listed as a risk ({} in all)",
            readiness.run_id,
            readiness.soft_failures.len()
        );
    } else {
        println!(
            "batch {batch}: {added} soft failure(s) of readiness run {} listed as risks",
            readiness.run_id
        );
    }
    Ok(())
}

fn batch_ref(batch: String) -> pb::BatchRefCmd {
    pb::BatchRefCmd { batch }
}

/// Runs one workflow subcommand.
pub async fn run(cmd: WorkflowCmd, conn: &Conn, out: Output) -> anyhow::Result<()> {
    use pb::workflow_command::Cmd as C;
    let mut c = client(conn).await?;
    match cmd {
        WorkflowCmd::User(UserCmd::Add { name, role, ttl }) => {
            let ttl_s = ttl.map_or(0, |t| t.clamp(1, u64::from(u32::MAX)) as u32);
            let role = word::<Role>(&role)?.to_i32();
            let r = c
                .add_user(pb::AddUserRequest { name, role, ttl_s })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r);
            }
            println!(
                "user {} ({}) added; token (shown only this once, expires {}):\n  {}",
                r.name,
                role_word(r.role),
                at(Timestamp(r.expires_at_ms)),
                r.token
            );
            if r.deployer_added {
                println!("{} is also in the deployer list now", r.name);
            }
            Ok(())
        }
        WorkflowCmd::User(UserCmd::Token(UserTokenCmd::Rotate { name, ttl })) => {
            let ttl_s = ttl.map_or(0, |t| t.clamp(1, u64::from(u32::MAX)) as u32);
            let r = c
                .rotate_user_token(pb::UserNameRequest { name, ttl_s })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r);
            }
            println!(
                "new token for {} ({}) (shown only this once, expires {}); the old one is refused from now on:\n  {}",
                r.name,
                role_word(r.role),
                at(Timestamp(r.expires_at_ms)),
                r.token
            );
            Ok(())
        }
        WorkflowCmd::User(cmd @ (UserCmd::Disable { .. } | UserCmd::Enable { .. })) => {
            let (name, disabled) = match cmd {
                UserCmd::Disable { name } => (name, true),
                UserCmd::Enable { name } => (name, false),
                _ => unreachable!("matched above"),
            };
            let u = c
                .set_user_disabled(pb::SetUserDisabledRequest { name, disabled })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&u);
            }
            if u.disabled {
                println!(
                    "user {} disabled: their token is refused until `preflight user enable {}`",
                    u.name, u.name
                );
            } else {
                println!("user {} enabled: their token works again", u.name);
            }
            Ok(())
        }
        WorkflowCmd::User(UserCmd::Remove { name }) => {
            c.remove_user(pb::UserNameRequest {
                name: name.clone(),
                ttl_s: 0,
            })
            .await
            .map_err(status)?;
            if out == Output::Json {
                return crate::json(&serde_json::json!({ "removed": name }));
            }
            println!("user {name} removed: their token is refused; the history keeps the name");
            Ok(())
        }
        WorkflowCmd::User(UserCmd::History) => {
            let r = c
                .user_history(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r.entries);
            }
            let mut t = Table::new(&["AT", "BY", "ACTION", "USER", "DETAIL"]);
            for e in &r.entries {
                t.row(vec![
                    at(Timestamp(e.at_ms)),
                    e.by.clone(),
                    preflight_proto::json::name::<pb::UserAuditAction>(e.action),
                    e.user.clone(),
                    e.detail.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        WorkflowCmd::User(UserCmd::List) => {
            let r = c
                .list_users(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r.users);
            }
            let mut t = Table::new(&["NAME", "ROLE", "STATUS", "CREATED", "TOKEN EXPIRES"]);
            let mut warnings = Vec::new();
            for u in &r.users {
                let (expires, warning) = expiry_text(u, r.now_ms);
                if !u.disabled {
                    warnings.extend(warning);
                }
                t.row(vec![
                    u.name.clone(),
                    role_word(u.role),
                    if u.disabled { "disabled" } else { "active" }.into(),
                    at(Timestamp(u.created_at_ms)),
                    expires,
                ]);
            }
            print!("{}", t.render());
            for w in warnings {
                println!("{w}");
            }
            Ok(())
        }
        WorkflowCmd::Project(ProjectCmd::Add {
            id,
            name,
            line,
            approval,
        }) => {
            exec(
                &mut c,
                C::CreateProject(pb::CreateProjectCmd {
                    id,
                    name,
                    business_line: line,
                    approval: Some(approval.to_pb()),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Project(ProjectCmd::Approve { id, approval }) => {
            if approval.budget.is_none() && approval.exception_approver.is_none() {
                bail!("give --budget, or --exception-approver with --exception-ref");
            }
            exec(
                &mut c,
                C::SetApproval(pb::SetApprovalCmd {
                    project: id,
                    approval: Some(approval.to_pb()),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Project(ProjectCmd::List) | WorkflowCmd::Deployer(DeployerCmd::List) => {
            let r = c
                .list_projects(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            let v: ProjectsView = reply(wire::projects_view(r))?;
            if out == Output::Json {
                return crate::json(&v);
            }
            let mut t = Table::new(&["PROJECT", "NAME", "LINE", "APPROVAL", "RESTRICTED BY"]);
            for row in &v.projects {
                let p = &row.project;
                let approval = match p.approval {
                    preflight_core::workflow::Approval::Pending => "pending",
                    preflight_core::workflow::Approval::Approved { .. } => "approved",
                    preflight_core::workflow::Approval::Exception { .. } => "exception",
                };
                t.row(vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.business_line.clone(),
                    approval.into(),
                    row.restricted_by.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", t.render());
            let mut t = Table::new(&["DEPLOYER", "LOAD"]);
            for d in &v.deployers {
                t.row(vec![d.name.clone(), d.load.to_string()]);
            }
            print!("{}", t.render());
            Ok(())
        }
        WorkflowCmd::Batch(b) => batch(&mut c, b, out).await,
        WorkflowCmd::Gd(GdCmd::Confirm {
            batch,
            decision,
            note,
        }) => {
            exec(
                &mut c,
                C::GdConfirm(pb::GdConfirmCmd {
                    batch,
                    decision: match decision.as_str() {
                        "termination" => GdDecision::ConfirmTermination,
                        _ => GdDecision::ConfirmReason,
                    }
                    .to_i32(),
                    note,
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Assign { batch, deployer } => {
            exec(
                &mut c,
                C::Assign(pb::AssignCmd {
                    batch,
                    deployer: deployer.unwrap_or_default(),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Deployer(DeployerCmd::Add { name }) => {
            let r = c
                .execute(pb::WorkflowCommand {
                    cmd: Some(C::AddDeployer(pb::AddDeployerCmd { name: name.clone() })),
                })
                .await;
            match r {
                // Already there (e.g. added with `user add NAME --role deployer`): nothing to do.
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    if out == Output::Json {
                        return crate::json(&serde_json::json!([]));
                    }
                    println!("deployer {name} is already in the deployer list: nothing to do");
                    Ok(())
                }
                r => print_events(r.map_err(status)?.into_inner(), out),
            }
        }
        WorkflowCmd::Queue { deployer, lang } => {
            let r = c
                .get_queue(pb::GetQueueRequest {
                    deployer: deployer.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let queues: std::collections::BTreeMap<String, Vec<QueueEntry>> =
                reply(wire::queues(r))?;
            if out == Output::Json {
                return crate::json(&queues);
            }
            for (d, list) in &queues {
                let order: Vec<&str> = list.iter().map(|e| e.batch.as_str()).collect();
                println!(
                    "{} {d}: {}",
                    h(lang.lang, "deployer", "部署人员"),
                    if order.is_empty() {
                        h(lang.lang, "(empty)", "（空）").to_string()
                    } else {
                        order.join("-")
                    }
                );
                if list.is_empty() {
                    continue;
                }
                let l = lang.lang;
                let mut t = Table::new(&[
                    h(l, "POS", "位置"),
                    h(l, "BATCH", "批次"),
                    h(l, "CLASS", "类别"),
                    h(l, "SINCE", "起始时间"),
                    h(l, "JUMP", "插队"),
                ]);
                for e in list {
                    t.row(vec![
                        e.position.to_string(),
                        e.batch.clone(),
                        class_name(e.class, lang.lang).into(),
                        at(e.since),
                        e.jump
                            .as_ref()
                            .map(|j| {
                                format!(
                                    "to {} approved by {}: {}",
                                    j.position, j.approver, j.reason
                                )
                            })
                            .unwrap_or_default(),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(())
        }
        WorkflowCmd::Jump {
            batch,
            position,
            approval,
        } => {
            if approval.trim().is_empty() {
                anyhow::bail!(
                    "--approval is empty: say who approved the jump and why, e.g. --approval \"customer go-live on Friday, approved by lee\""
                );
            }
            exec(
                &mut c,
                C::JumpQueue(pb::JumpCmd {
                    batch,
                    position,
                    reason: approval,
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Stats(StatsCmd::Pauses { by, since, lang }) => {
            let since_ms = since
                .as_deref()
                .map(|t| parse_time_arg("--since", t))
                .transpose()?
                .unwrap_or(0);
            let key = word::<StatsKey>(&by)?;
            let r = c
                .pause_stats(pb::PauseStatsRequest {
                    by: key.to_i32(),
                    since_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<PauseStatsRow> = reply(wire::dec_all(r.rows))?;
            if out == Output::Json {
                return crate::json(&rows);
            }
            let l = lang.lang;
            let by_head = match (by.as_str(), l) {
                ("reason", Lang::Zh) => "暂停原因".to_string(),
                ("party", Lang::Zh) => "责任方".to_string(),
                (b, _) => b.to_uppercase(),
            };
            let mut t = Table::new(&[
                &by_head,
                h(l, "PAUSES", "暂停次数"),
                h(l, "TOTAL DAYS", "累计天数"),
                h(l, "MEDIAN DAYS", "中位天数"),
            ]);
            for row in &rows {
                let key = match by.as_str() {
                    "reason" => row
                        .key
                        .parse::<PauseReason>()
                        .map(|r| reason_name(r, lang.lang))
                        .unwrap_or_else(|_| row.key.clone()),
                    "party" => row
                        .key
                        .parse::<Party>()
                        .map(|p| party_name(p, lang.lang))
                        .unwrap_or_else(|_| row.key.clone()),
                    _ => row.key.clone(),
                };
                t.row(vec![
                    key,
                    row.count.to_string(),
                    format!("{:.1}", row.total_days),
                    format!("{:.1}", row.median_days),
                ]);
            }
            if rows.is_empty() {
                println!("no pauses recorded");
            } else {
                print!("{}", t.render());
            }
            Ok(())
        }
        WorkflowCmd::Dev(DevCmd::Clock(cc)) => {
            use pb::dev_clock_request::Op;
            let op = match cc {
                ClockCmd::Set { time } => Op::SetMs(parse_time_arg("dev clock set TIME", &time)?),
                ClockCmd::Advance { duration } => {
                    let secs = preflight_core::timefmt::parse_duration(&duration)
                        .map_err(anyhow::Error::msg)?;
                    let d = Duration::from_secs(secs);
                    Op::AdvanceMs(i64::try_from(d.as_millis()).context("duration too long")?)
                }
                ClockCmd::Show => Op::Show(true),
            };
            let r = c
                .dev_clock(pb::DevClockRequest { op: Some(op) })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&serde_json::json!({
                    "now": Timestamp(r.now_ms).to_string(),
                    "now_ms": r.now_ms,
                    "offset_ms": r.offset_ms,
                    "escalated": r.escalated,
                }));
            }
            println!(
                "controller time {} (offset {} s)",
                at(Timestamp(r.now_ms)),
                r.offset_ms / 1000
            );
            if !r.escalated.is_empty() {
                println!("escalated to GD: {}", r.escalated.join(", "));
            }
            Ok(())
        }
        WorkflowCmd::Dev(DevCmd::Record {
            kind,
            batch,
            fails,
            softs,
        }) => {
            let r = c
                .dev_record(pb::DevRecordRequest {
                    batch,
                    kind: match kind.as_str() {
                        "readiness" => pb::DevRecordKind::Readiness,
                        "hardening" => pb::DevRecordKind::Hardening,
                        _ => pb::DevRecordKind::Perf,
                    }
                    .into(),
                    failures: fails
                        .iter()
                        .map(|s| failure_arg(s))
                        .collect::<Result<_, _>>()?,
                    soft_failures: softs
                        .iter()
                        .map(|s| failure_arg(s))
                        .collect::<Result<_, _>>()?,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_events(r, out)
        }
    }
}

async fn batch(c: &mut Client, cmd: BatchCmd, out: Output) -> anyhow::Result<()> {
    use pb::workflow_command::Cmd as C;
    match cmd {
        BatchCmd::Create {
            id,
            project,
            title,
            line,
        } => {
            exec(
                c,
                C::CreateBatch(pb::CreateBatchCmd {
                    id,
                    project,
                    business_line: line.unwrap_or_default(),
                    title,
                }),
                out,
            )
            .await
        }
        BatchCmd::List { project, lang } => {
            let r = c
                .list_batches(pb::ListBatchesRequest {
                    project: project.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let list: Vec<BatchSummary> = reply(wire::dec_all(r.batches))?;
            if out == Output::Json {
                return crate::json(&list);
            }
            if list.is_empty() {
                println!("no batches yet: `preflight batch create` makes one");
                return Ok(());
            }
            let l = lang.lang;
            let mut t = Table::new(&[
                h(l, "BATCH", "批次"),
                h(l, "PROJECT", "项目"),
                h(l, "STAGE", "阶段"),
                h(l, "SINCE", "进入时间"),
                h(l, "HELD BY", "当前处理人"),
                h(l, "DEPLOYER", "部署人员"),
                h(l, "TITLE", "标题"),
            ]);
            for b in &list {
                t.row(vec![
                    b.id.clone(),
                    b.project.clone(),
                    stage_name(b.stage, lang.lang),
                    at(b.stage_since),
                    holder(&b.held_by),
                    b.deployer.clone().unwrap_or_else(|| "-".into()),
                    b.title.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        BatchCmd::Show { batch, lang } => {
            let r = c
                .get_batch(pb::GetBatchRequest { batch })
                .await
                .map_err(status)?
                .into_inner();
            let v: BatchView = reply(wire::dec_need("view", r.view))?;
            if out == Output::Json {
                return crate::json(&v);
            }
            show_batch(&v, lang.lang, r.now_ms);
            Ok(())
        }
        BatchCmd::Advance { batch, lang } => {
            let id = batch.clone();
            let r = c
                .execute(pb::WorkflowCommand {
                    cmd: Some(C::Advance(batch_ref(batch))),
                })
                .await;
            match r {
                Ok(r) => print_events(r.into_inner(), out),
                Err(s)
                    if lang.lang == Lang::Zh
                        && s.code() == tonic::Code::FailedPrecondition
                        && s.message().contains(" cannot leave ") =>
                {
                    match unmet_gates_zh(c, &id).await {
                        Some(msg) => bail!("不允许：{msg}"),
                        None => Err(status(s)),
                    }
                }
                Err(s) => Err(status(s)),
            }
        }
        BatchCmd::Pause {
            batch,
            reason,
            text,
            party,
        } => {
            exec(
                c,
                C::Pause(pb::PauseCmd {
                    batch,
                    reason: word::<PauseReason>(&reason)?.to_i32(),
                    text,
                    party: party
                        .as_deref()
                        .map(word::<Party>)
                        .transpose()?
                        .map_or(0, Party::to_i32),
                }),
                out,
            )
            .await
        }
        BatchCmd::Resolve { batch, note } => {
            exec(c, C::Resolve(pb::NoteCmd { batch, note }), out).await
        }
        BatchCmd::Terminate { batch, reason } => {
            exec(
                c,
                C::Terminate(pb::NoteCmd {
                    batch,
                    note: reason,
                }),
                out,
            )
            .await
        }
        BatchCmd::Start { batch } => exec(c, C::StartDeploy(batch_ref(batch)), out).await,
        BatchCmd::Plan {
            batch,
            digest,
            hosts,
        } => {
            exec(
                c,
                C::AttachPlan(pb::AttachPlanCmd {
                    batch,
                    digest,
                    hosts,
                    incomplete: vec![],
                    plan_toml: String::new(),
                }),
                out,
            )
            .await
        }
        BatchCmd::ConfirmPlan { batch } => exec(c, C::ConfirmPlan(batch_ref(batch)), out).await,
        BatchCmd::Risk {
            batch,
            text,
            source,
            all_soft,
        } => {
            if all_soft {
                return all_soft_risks(c, batch, out).await;
            }
            exec(
                c,
                C::AddRisk(pb::AddRiskCmd {
                    batch,
                    text: text.unwrap_or_default(),
                    source: source.unwrap_or_default(),
                }),
                out,
            )
            .await
        }
        BatchCmd::FileRisks {
            batch,
            risks,
            document,
        } => {
            exec(
                c,
                C::FileRisks(pb::FileRisksCmd {
                    batch,
                    risks,
                    document,
                }),
                out,
            )
            .await
        }
        BatchCmd::Review {
            batch,
            approve,
            reject: _,
            note,
        } => {
            exec(
                c,
                C::ReviewFiling(pb::ReviewFilingCmd {
                    batch,
                    approve,
                    note,
                }),
                out,
            )
            .await
        }
        BatchCmd::Accept {
            batch,
            rating,
            comment,
        } => {
            exec(
                c,
                C::RecordAcceptance(pb::AcceptanceCmd {
                    batch,
                    rating,
                    comment,
                }),
                out,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_dates() {
        // 2026-06-01T00:00:00Z, as in the core's tests.
        assert_eq!(parse_time("2026-06-01").ok(), Some(1_780_272_000_000));
        assert_eq!(
            parse_time("2026-06-01T00:00:00Z").ok(),
            Some(1_780_272_000_000)
        );
        assert_eq!(
            parse_time("2026-06-19T09:00:00+08:00").ok(),
            Some(1_780_272_000_000 + 18 * 86_400_000 + 3_600_000)
        );
        assert_eq!(
            parse_time("2026-06-01T00:00:01.5Z").ok(),
            Some(1_780_272_001_500)
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-06-01T25:00:00Z",
            "June 1",
            "2026-06-01T00:00:00",
            "2026-06-01T08:30Z",
            "2026-02-31",
            "2026-02-31T00:00:00Z",
            "２０２６-06-01",
            "2026-06-01T08:30:00Zé",
            "é",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        let t = 1_780_272_000_000 + 18 * 86_400_000 + 9 * 3_600_000;
        assert_eq!(parse_time(&Timestamp(t).to_string()).ok(), Some(t));
    }

    #[test]
    fn bad_times_name_the_flag_and_the_format() {
        for bad in ["2026-02-31", "2026-06-01T08:30Z", "2026-0６-01", "日期"] {
            let e = parse_time_arg("--since", bad).unwrap_err().to_string();
            assert!(e.starts_with("--since: "), "{e}");
            assert!(e.contains("2026-06-18T08:30:00Z"), "{e}");
            assert!(e.contains("a date, e.g. 2026-06-18"), "{e}");
        }
        assert_eq!(parse_time("2026-02-28").ok(), Some(1_772_236_800_000));
    }

    #[test]
    fn failure_args_split_from_the_right() {
        let f = failure_arg("ports.10.0.0.5:8080:network_ports:customer").expect("parses");
        assert_eq!(
            (f.check.as_str(), f.reason, f.party),
            (
                "ports.10.0.0.5:8080",
                pb::WorkflowPauseReason::NetworkPorts as i32,
                pb::WorkflowParty::Customer as i32
            )
        );
        let f = failure_arg("disk.data:disk_performance").expect("parses");
        assert_eq!(
            (f.check.as_str(), f.party),
            ("disk.data", pb::WorkflowParty::Project as i32)
        );
        assert!(failure_arg("nothing").is_err());
    }
}
