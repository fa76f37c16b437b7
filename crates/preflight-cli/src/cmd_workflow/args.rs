//! The workflow subcommands' arguments (clap), and the parsing of the words and times given
//! on the command line.

use anyhow::bail;
use preflight_controller::wire::WireEnum;
use preflight_core::workflow::{Party, PauseReason};
use preflight_proto::v1 as pb;

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
    pub lang: Lang,
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
        #[arg(long, value_parser = preflight_core::units::parse_seconds)]
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
        #[arg(long, value_parser = preflight_core::units::parse_seconds)]
        ttl: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ApprovalArgs {
    /// Approved (立项) with this budget reference.
    #[arg(long, conflicts_with_all = ["exception_approver", "exception_ref"])]
    pub budget: Option<String>,
    /// Exception record instead of approval: who approved it.
    #[arg(long, requires = "exception_ref")]
    pub exception_approver: Option<String>,
    /// Exception record: its reference.
    #[arg(long, requires = "exception_approver")]
    pub exception_ref: Option<String>,
}

impl ApprovalArgs {
    /// The approval as sent.
    pub fn to_pb(&self) -> pb::ProjectApproval {
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

/// GD's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Decision {
    /// The pause reason is confirmed: back to problem_handling.
    Reason,
    /// Termination confirmed: final.
    Termination,
}

impl Decision {
    /// The decision as sent.
    pub fn to_pb(self) -> pb::GdDecision {
        match self {
            Decision::Reason => pb::GdDecision::Reason,
            Decision::Termination => pb::GdDecision::Termination,
        }
    }
}

/// What `dev record` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordKind {
    Readiness,
    Hardening,
    Perf,
}

impl RecordKind {
    /// The kind as sent.
    pub fn to_pb(self) -> pb::DevRecordKind {
        match self {
            RecordKind::Readiness => pb::DevRecordKind::Readiness,
            RecordKind::Hardening => pb::DevRecordKind::Hardening,
            RecordKind::Perf => pb::DevRecordKind::Perf,
        }
    }
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
        #[arg(long, value_enum)]
        decision: Decision,
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
        #[arg(value_enum)]
        kind: RecordKind,
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

/// Parses a time argument into Unix milliseconds: RFC 3339 with seconds and an offset
/// (`2026-06-18T08:30:00Z`, `2026-06-18T16:30:00+08:00`, fractions allowed), or a date
/// `YYYY-MM-DD` (midnight UTC). Parsed by `jiff` with an exact pattern, so impossible dates
/// (`2026-02-31`) and times without seconds (`08:30Z`) are refused, never adjusted. `what`
/// names the flag or argument in the error.
pub fn parse_time_arg(what: &str, s: &str) -> anyhow::Result<i64> {
    let t = s.trim();
    let parsed = if t.len() == 10 && t.is_ascii() {
        jiff::civil::Date::strptime("%Y-%m-%d", t)
            .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC))
            .map(|z| z.timestamp())
    } else {
        // RFC 3339 writes UTC as `Z`; the pattern's offset is numeric.
        let numeric = match t.strip_suffix(['Z', 'z']) {
            Some(rest) => format!("{rest}+00:00"),
            None => t.to_string(),
        };
        jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%:z", &numeric)
            .and_then(|tm| tm.to_timestamp())
    };
    match parsed {
        Ok(ts) => Ok(ts.as_millisecond()),
        Err(e) => anyhow::bail!(
            "{what}: {s:?} is not a valid time ({e}); expected RFC 3339 with seconds and an offset, e.g. 2026-06-18T08:30:00Z or 2026-06-18T16:30:00+08:00, or a date, e.g. 2026-06-18"
        ),
    }
}

/// A word of a closed set given on the command line; refused like the controller refuses.
pub(super) fn word<T: std::str::FromStr>(s: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid argument: {e}"))
}

pub(super) fn failure_arg(s: &str) -> anyhow::Result<pb::WorkflowCheckFailure> {
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

impl From<Lang> for preflight_render::Lang {
    fn from(l: Lang) -> Self {
        match l {
            Lang::En => preflight_render::Lang::En,
            Lang::Zh => preflight_render::Lang::Zh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::workflow::Timestamp;

    fn parse_time(s: &str) -> anyhow::Result<i64> {
        parse_time_arg("time", s)
    }

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
