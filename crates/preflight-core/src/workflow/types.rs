//! Data of the workflow: stages, pauses, parties, projects, batches, facts, events.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Milliseconds since the Unix epoch. Core never reads the clock: every time is passed in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// One second in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

impl Timestamp {
    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision when needed, e.g. `2026-06-19T09:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(t) = jiff::Timestamp::from_millisecond(self.0) else {
            // Outside the years -9999 to 9999: the number itself.
            return write!(f, "{} ms", self.0);
        };
        write!(f, "{}", t.strftime("%Y-%m-%dT%H:%M:%S"))?;
        let ms = self.0.rem_euclid(1_000);
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

/// Stable identifier of a batch (部署批次).
pub type BatchId = String;
/// Stable identifier of a project.
pub type ProjectId = String;

/// A stage of a batch. Ids (serde, [`Stage::id`]) are the stable identifiers of WORKFLOW.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// 1 项目组申请
    Apply,
    /// 2 集成开发预规划
    PrePlan,
    /// 3 部署申请
    DeployRequest,
    /// 4 集成开发规划
    Plan,
    /// 5 确认规划并下载
    ConfirmPlan,
    /// 6 部署人员安排
    Assign,
    /// 7 系统部署
    Deploy,
    /// 8 集成配置
    Integrate,
    /// 9 安全加固
    Harden,
    /// 10 性能检测人员安排/环境检测
    EnvCheck,
    /// 11 风险备案上传
    RiskUpload,
    /// 12 风险备案审核
    RiskReview,
    /// 13 项目验收与评价
    Accept,
    /// 14 归档
    Archive,
    /// 项目部署问题处理: a paused batch, owned by the project team.
    ProblemHandling,
    /// GD确认暂停原因: waiting for GD (termination requested or paused more than 15 days).
    GdConfirm,
    /// 已中止: final, nothing moves it.
    Terminated,
    /// 已完成: archived, final.
    Done,
}

impl Stage {
    /// Every stage in a stable order: the 14 numbered ones, then the others.
    pub const ALL: [Stage; 18] = [
        Stage::Apply,
        Stage::PrePlan,
        Stage::DeployRequest,
        Stage::Plan,
        Stage::ConfirmPlan,
        Stage::Assign,
        Stage::Deploy,
        Stage::Integrate,
        Stage::Harden,
        Stage::EnvCheck,
        Stage::RiskUpload,
        Stage::RiskReview,
        Stage::Accept,
        Stage::Archive,
        Stage::ProblemHandling,
        Stage::GdConfirm,
        Stage::Terminated,
        Stage::Done,
    ];

    /// The stable identifier (API, storage, CLI).
    pub fn id(self) -> &'static str {
        match self {
            Stage::Apply => "apply",
            Stage::PrePlan => "pre_plan",
            Stage::DeployRequest => "deploy_request",
            Stage::Plan => "plan",
            Stage::ConfirmPlan => "confirm_plan",
            Stage::Assign => "assign",
            Stage::Deploy => "deploy",
            Stage::Integrate => "integrate",
            Stage::Harden => "harden",
            Stage::EnvCheck => "env_check",
            Stage::RiskUpload => "risk_upload",
            Stage::RiskReview => "risk_review",
            Stage::Accept => "accept",
            Stage::Archive => "archive",
            Stage::ProblemHandling => "problem_handling",
            Stage::GdConfirm => "gd_confirm",
            Stage::Terminated => "terminated",
            Stage::Done => "done",
        }
    }

    /// The Chinese display name (reports, `--lang zh`).
    pub fn zh(&self) -> &'static str {
        match self {
            Stage::Apply => "项目组申请",
            Stage::PrePlan => "集成开发预规划",
            Stage::DeployRequest => "部署申请",
            Stage::Plan => "集成开发规划",
            Stage::ConfirmPlan => "确认规划并下载",
            Stage::Assign => "部署人员安排",
            Stage::Deploy => "系统部署",
            Stage::Integrate => "集成配置",
            Stage::Harden => "安全加固",
            Stage::EnvCheck => "性能检测人员安排/环境检测",
            Stage::RiskUpload => "风险备案上传",
            Stage::RiskReview => "风险备案审核",
            Stage::Accept => "项目验收与评价",
            Stage::Archive => "归档",
            Stage::ProblemHandling => "项目部署问题处理",
            Stage::GdConfirm => "GD确认暂停原因",
            Stage::Terminated => "已中止",
            Stage::Done => "已完成",
        }
    }

    /// The number 1..=14 of a numbered stage, `None` for the others.
    pub fn number(self) -> Option<u8> {
        Stage::ALL[..14]
            .iter()
            .position(|s| *s == self)
            .map(|i| i as u8 + 1)
    }

    /// The stage an `advance` leads to, `None` where advance is not the way out.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Apply => Some(Stage::PrePlan),
            Stage::PrePlan => Some(Stage::DeployRequest),
            Stage::DeployRequest => Some(Stage::Plan),
            Stage::Plan => Some(Stage::ConfirmPlan),
            Stage::ConfirmPlan => Some(Stage::Assign),
            Stage::Assign => Some(Stage::Deploy),
            Stage::Deploy => Some(Stage::Integrate),
            Stage::Integrate => Some(Stage::Harden),
            Stage::Harden => Some(Stage::EnvCheck),
            Stage::EnvCheck => Some(Stage::RiskUpload),
            Stage::RiskUpload => Some(Stage::RiskReview),
            // Leaving risk_review is the reviewer's verdict (approve or reject), not advance.
            Stage::RiskReview => None,
            Stage::Accept => Some(Stage::Archive),
            Stage::Archive => Some(Stage::Done),
            Stage::ProblemHandling | Stage::GdConfirm | Stage::Terminated | Stage::Done => None,
        }
    }

    /// The roles allowed to advance a batch out of this stage (who acts in it).
    pub fn advance_roles(self) -> &'static [Role] {
        match self {
            Stage::Apply => &[Role::Project],
            Stage::PrePlan => &[Role::Integrator],
            Stage::DeployRequest => &[Role::Project],
            Stage::Plan => &[Role::Integrator],
            Stage::ConfirmPlan => &[Role::Project],
            // The dispatcher or the assigned deployer starts the deployment.
            Stage::Assign => &[Role::Dispatcher, Role::Deployer],
            Stage::Deploy => &[Role::Deployer],
            Stage::Integrate => &[Role::Integrator],
            Stage::Harden => &[Role::Integrator, Role::Deployer],
            Stage::EnvCheck => &[Role::PerfChecker],
            Stage::RiskUpload => &[Role::Project],
            Stage::RiskReview => &[Role::Reviewer],
            Stage::Accept => &[Role::Project],
            Stage::Archive => &[Role::Admin],
            Stage::ProblemHandling => &[Role::Project],
            Stage::GdConfirm => &[Role::Gd],
            Stage::Terminated | Stage::Done => &[],
        }
    }

    /// Stages 3–13 may be paused.
    pub fn pausable(self) -> bool {
        matches!(self.number(), Some(3..=13))
    }

    /// Terminated and done batches never move again.
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Terminated | Stage::Done)
    }

    /// Stages that place an assigned batch in its deployer's queue.
    pub fn in_deployer_queue(self) -> bool {
        matches!(self, Stage::Assign | Stage::Deploy)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A stage id that is not one of [`Stage::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {0:?}: use one of apply, pre_plan, deploy_request, plan, confirm_plan, assign, deploy, integrate, harden, env_check, risk_upload, risk_review, accept, archive, problem_handling, gd_confirm, terminated, done")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|x| x.id() == s)
            .ok_or_else(|| UnknownStage(s.to_string()))
    }
}

/// Category of a pause (WORKFLOW.md "Pauses"), ranked causes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Deployment package downloaded incompletely (e.g. database backups missing).
    Package,
    /// Network ports not open between servers.
    NetworkPorts,
    /// Server planning wrong (IPs, app placement).
    Planning,
    /// Wrong history for incremental/migration deployments.
    HistoryInfo,
    /// Site busy, nobody helps.
    SiteBusy,
    /// Wrong account/password, VPN not available.
    RemoteAccess,
    /// Disk too slow.
    DiskPerformance,
    /// Cluster without a virtual IP.
    VipMissing,
    /// No jump host to verify from.
    JumpHostMissing,
    /// Anything else (say what in the text).
    Other,
}

impl PauseReason {
    /// Every reason in a stable order.
    pub const ALL: [PauseReason; 10] = [
        PauseReason::Package,
        PauseReason::NetworkPorts,
        PauseReason::Planning,
        PauseReason::HistoryInfo,
        PauseReason::SiteBusy,
        PauseReason::RemoteAccess,
        PauseReason::DiskPerformance,
        PauseReason::VipMissing,
        PauseReason::JumpHostMissing,
        PauseReason::Other,
    ];

    /// The stable identifier.
    pub fn id(self) -> &'static str {
        match self {
            PauseReason::Package => "package",
            PauseReason::NetworkPorts => "network_ports",
            PauseReason::Planning => "planning",
            PauseReason::HistoryInfo => "history_info",
            PauseReason::SiteBusy => "site_busy",
            PauseReason::RemoteAccess => "remote_access",
            PauseReason::DiskPerformance => "disk_performance",
            PauseReason::VipMissing => "vip_missing",
            PauseReason::JumpHostMissing => "jump_host_missing",
            PauseReason::Other => "other",
        }
    }

    /// The Chinese display name.
    pub fn zh(&self) -> &'static str {
        match self {
            PauseReason::Package => "部署包下载不完整",
            PauseReason::NetworkPorts => "服务器间网络端口未开通",
            PauseReason::Planning => "服务器规划错误",
            PauseReason::HistoryInfo => "历史部署信息错误",
            PauseReason::SiteBusy => "现场繁忙无人配合",
            PauseReason::RemoteAccess => "服务器账号密码错误或VPN不可用",
            PauseReason::DiskPerformance => "磁盘性能不足",
            PauseReason::VipMissing => "集群缺少虚拟IP",
            PauseReason::JumpHostMissing => "缺少跳板机",
            PauseReason::Other => "其他",
        }
    }
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A pause reason id that is not one of [`PauseReason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pause reason {0:?}: use one of package, network_ports, planning, history_info, site_busy, remote_access, disk_performance, vip_missing, jump_host_missing, other")]
pub struct UnknownPauseReason(pub String);

impl FromStr for PauseReason {
    type Err = UnknownPauseReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PauseReason::ALL
            .into_iter()
            .find(|x| x.id() == s)
            .ok_or_else(|| UnknownPauseReason(s.to_string()))
    }
}

/// The party responsible for a pause (who must fix it). Default: the project team.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The project team (项目组).
    #[default]
    Project,
    /// Integration development (集成开发).
    Integrator,
    /// The deployer (部署人员).
    Deployer,
    /// Dispatching (调度).
    Dispatcher,
    /// Performance checking (性能检测).
    PerfChecker,
    /// The customer or the site (客户/现场).
    Customer,
    /// Anyone else.
    Other,
}

impl Party {
    /// Every party in a stable order.
    pub const ALL: [Party; 7] = [
        Party::Project,
        Party::Integrator,
        Party::Deployer,
        Party::Dispatcher,
        Party::PerfChecker,
        Party::Customer,
        Party::Other,
    ];

    /// The stable identifier.
    pub fn id(self) -> &'static str {
        match self {
            Party::Project => "project",
            Party::Integrator => "integrator",
            Party::Deployer => "deployer",
            Party::Dispatcher => "dispatcher",
            Party::PerfChecker => "perf_checker",
            Party::Customer => "customer",
            Party::Other => "other",
        }
    }

    /// The Chinese display name.
    pub fn zh(&self) -> &'static str {
        match self {
            Party::Project => "项目组",
            Party::Integrator => "集成开发",
            Party::Deployer => "部署人员",
            Party::Dispatcher => "调度",
            Party::PerfChecker => "性能检测人员",
            Party::Customer => "客户/现场",
            Party::Other => "其他",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A party id that is not one of [`Party::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown party {0:?}: use one of project, integrator, deployer, dispatcher, perf_checker, customer, other")]
pub struct UnknownParty(pub String);

impl FromStr for Party {
    type Err = UnknownParty;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Party::ALL
            .into_iter()
            .find(|x| x.id() == s)
            .ok_or_else(|| UnknownParty(s.to_string()))
    }
}

/// Who makes a change: a person with a role, or the controller itself (sweeps, escalation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Actor {
    /// An authenticated user.
    User {
        /// User name (for a deployer, the name in the deployer list).
        name: String,
        /// The role bound to the user's token.
        role: Role,
    },
    /// The controller: escalation timer, readiness and hardening results.
    System,
}

impl Actor {
    /// A user actor.
    pub fn user(name: impl Into<String>, role: Role) -> Actor {
        Actor::User {
            name: name.into(),
            role,
        }
    }
    /// The user's role, `None` for the system.
    pub fn role(&self) -> Option<Role> {
        match self {
            Actor::User { role, .. } => Some(*role),
            Actor::System => None,
        }
    }
    /// The user's name, or `system`.
    pub fn name(&self) -> &str {
        match self {
            Actor::User { name, .. } => name,
            Actor::System => "system",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User { name, role } => write!(f, "{name} ({role})"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// How a project may request deployment (立项).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Approval {
    /// Not approved yet: deploy requests are refused until approval or an exception is recorded.
    Pending,
    /// Approved (立项) with a budget.
    Approved {
        /// Budget reference or amount, as written by the approver.
        budget: String,
    },
    /// An exception record instead of approval.
    Exception {
        /// Who approved the exception.
        approver: String,
        /// Reference of the exception record.
        reference: String,
    },
}

impl Approval {
    /// Whether this lets the project leave `deploy_request`.
    pub fn is_granted(&self) -> bool {
        !matches!(self, Approval::Pending)
    }
}

/// A customer project; batches belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Stable id.
    pub id: ProjectId,
    /// Display name.
    pub name: String,
    /// Business line (recorded for statistics; no assignment restriction).
    pub business_line: String,
    /// Approval or exception record.
    pub approval: Approval,
    /// When it was created.
    pub created_at: Timestamp,
}

/// One failing check of a readiness or performance sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    /// Stable check id, e.g. `ports.10.0.0.5->10.0.0.7:8080` or `disk.10.0.0.5:/data`.
    pub check: String,
    /// What was found, for people.
    pub detail: String,
    /// Pause category it falls in.
    pub reason: PauseReason,
    /// Who must fix it.
    pub party: Party,
}

/// Facts of the plan attached to a batch (the plan model lives in `crate::plan`; the controller
/// validates it and records this summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFacts {
    /// Digest identifying the plan content (readiness reports name it).
    pub digest: String,
    /// Hosts of the plan (IP or hostname), each must have hardening evidence.
    pub hosts: Vec<String>,
    /// What the plan still lacks (servers, paths, thresholds, VIPs, jump host, package manifest);
    /// empty when complete.
    pub incomplete: Vec<String>,
    /// `incomplete` in Chinese, entry by entry (`--lang zh`); set by the controller with
    /// `incomplete`, empty in plans recorded before it existed.
    #[serde(default)]
    pub incomplete_zh: Vec<String>,
}

/// Summary of a readiness sweep (issue 6 fills this in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessSummary {
    /// Sweep run id.
    pub run_id: String,
    /// When it finished.
    pub finished_at: Timestamp,
    /// Digest of the plan it checked.
    pub plan_digest: String,
    /// Failures that block (and pause the batch from `confirm_plan` on).
    pub hard_failures: Vec<CheckFailure>,
    /// Failures that must be listed as risks.
    pub soft_failures: Vec<CheckFailure>,
}

/// Hardening state of one host (issue 7 fills this in from signed evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHardening {
    /// Baseline (account policy, firewall) applied with evidence.
    pub baseline_applied: bool,
    /// Every catalog check compliant.
    pub all_compliant: bool,
    /// Verification ran after the last change on the host.
    pub verified_after_last_change: bool,
    /// The firewall allow-list covers every planned port of the host.
    pub firewall_covers_planned_ports: bool,
    /// Ids of non-compliant checks.
    pub noncompliant: Vec<String>,
    /// Planned ports (`8080/tcp`) the host's confirmed allow-list lacks, when known (the
    /// batch's plan is stored on the controller and the allow-list was read from evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewall_missing_ports: Vec<String>,
}

/// Hardening evidence summary of a batch, per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardeningSummary {
    /// When the summary was computed.
    pub recorded_at: Timestamp,
    /// Per host (same names as [`PlanFacts::hosts`]).
    pub hosts: BTreeMap<String, HostHardening>,
}

/// Summary of a performance sweep at `env_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerfSummary {
    /// Sweep run id.
    pub run_id: String,
    /// When it finished.
    pub finished_at: Timestamp,
    /// Thresholds missed; each must be a risk for the gate to pass.
    pub shortfalls: Vec<CheckFailure>,
}

/// A recorded risk of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    /// Number within the batch, from 1.
    pub id: u32,
    /// What the risk is.
    pub text: String,
    /// The check id it comes from (soft failure, perf shortfall), if any.
    pub source: Option<String>,
    /// Who recorded it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// State of a risk filing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilingStatus {
    /// Uploaded, not reviewed.
    Pending,
    /// Approved by a reviewer.
    Approved,
    /// Rejected: a new filing is needed.
    Rejected,
}

/// The risk filing (风险备案) uploaded at `risk_upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFiling {
    /// Risk ids it names.
    pub risks: Vec<u32>,
    /// Reference of the uploaded document.
    pub document: String,
    /// Who filed it.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Review state.
    pub status: FilingStatus,
    /// Reviewer's note, if reviewed.
    pub review_note: Option<String>,
}

/// Acceptance (验收) and rating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// Rating 1..=5.
    pub rating: u8,
    /// Free text.
    pub comment: String,
    /// Who accepted.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// An approved queue jump (插队).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueJump {
    /// Target position in the deployer's list, from 1 (kept behind batches being deployed).
    pub position: u32,
    /// The delivery lead who approved it.
    pub approver: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// The current pause of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    /// Stage it was paused in (where resolve returns).
    pub stage: Stage,
    /// Who paused it (resolve returns the batch to this person).
    pub by: Actor,
    /// When it was paused.
    pub at: Timestamp,
    /// Category.
    pub reason: PauseReason,
    /// Free text.
    pub text: String,
    /// Responsible party.
    pub party: Party,
    /// Individual failing checks when readiness paused it.
    pub items: Vec<CheckFailure>,
    /// Start of the 15-day escalation clock: the pause time, restarted when GD confirms the
    /// reason.
    pub clock_start: Timestamp,
    /// When it was escalated to GD automatically, if it was.
    pub escalated_at: Option<Timestamp>,
    /// The project team asked to terminate (the batch waits in `gd_confirm`).
    pub termination_requested: bool,
    /// When GD last confirmed the reason.
    pub gd_confirmed_at: Option<Timestamp>,
}

/// A deployment batch (部署批次).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Stable id.
    pub id: BatchId,
    /// Project it belongs to.
    pub project: ProjectId,
    /// Business line (from the project unless given).
    pub business_line: String,
    /// Title.
    pub title: String,
    /// Current stage.
    pub stage: Stage,
    /// The person holding it, when a specific person does (after resolve: the one who paused).
    pub holder: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When the stage last changed.
    pub stage_since: Timestamp,
    /// Current pause, while in `problem_handling`/`gd_confirm` (kept after termination).
    pub pause: Option<PauseRecord>,
    /// Assigned deployer.
    pub deployer: Option<String>,
    /// When it entered its deployer's queue (assignment or return from a pause).
    pub queued_at: Option<Timestamp>,
    /// When deployment (re)started; `None` while queued.
    pub deploy_started_at: Option<Timestamp>,
    /// Approved queue jump, while queued.
    pub jump: Option<QueueJump>,
    /// Attached plan.
    pub plan: Option<PlanFacts>,
    /// Digest of the plan the project confirmed.
    pub plan_confirmed: Option<String>,
    /// Latest readiness summary.
    pub readiness: Option<ReadinessSummary>,
    /// Latest hardening summary.
    pub hardening: Option<HardeningSummary>,
    /// Latest performance summary.
    pub perf: Option<PerfSummary>,
    /// Recorded risks.
    pub risks: Vec<Risk>,
    /// Latest risk filing.
    pub filing: Option<RiskFiling>,
    /// Acceptance and rating.
    pub acceptance: Option<Acceptance>,
}

/// Who holds a batch now (for `batch show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Holder {
    /// A named person: the one who paused it (after resolve) or the deployer deploying it.
    Person(String),
    /// Whoever has one of these roles (the roles acting in the stage).
    Roles(Vec<Role>),
    /// Nobody: terminated or done.
    Nobody,
}

impl Batch {
    /// Who holds the batch now.
    pub fn held_by(&self) -> Holder {
        if let Some(h) = &self.holder {
            return Holder::Person(h.clone());
        }
        match (self.stage, &self.deployer) {
            (Stage::Deploy, Some(d)) => Holder::Person(d.clone()),
            (s, _) if s.is_final() => Holder::Nobody,
            (s, _) => Holder::Roles(s.advance_roles().to_vec()),
        }
    }
}

/// What happened, with the data needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EventKind {
    /// A deployer joined the deployer list.
    DeployerAdded {
        /// Name.
        name: String,
    },
    /// A project was created.
    ProjectCreated {
        /// The project as created.
        project: Project,
    },
    /// A project's approval changed.
    ApprovalSet {
        /// New approval.
        approval: Approval,
    },
    /// A batch was created in `apply`.
    BatchCreated {
        /// Business line.
        business_line: String,
        /// Title.
        title: String,
    },
    /// Moved to the next stage (from/to in the event).
    Advanced,
    /// A plan was attached (clears the plan confirmation).
    PlanAttached {
        /// Plan facts.
        plan: PlanFacts,
    },
    /// The project confirmed the plan with this digest.
    PlanConfirmed {
        /// Digest.
        digest: String,
    },
    /// A readiness summary was recorded.
    ReadinessRecorded {
        /// Summary.
        summary: ReadinessSummary,
    },
    /// A hardening summary was recorded.
    HardeningRecorded {
        /// Summary.
        summary: HardeningSummary,
    },
    /// A performance summary was recorded.
    PerfRecorded {
        /// Summary.
        summary: PerfSummary,
    },
    /// A risk was recorded.
    RiskAdded {
        /// The risk.
        risk: Risk,
    },
    /// A risk filing was uploaded.
    RisksFiled {
        /// The filing.
        filing: RiskFiling,
    },
    /// The reviewer approved (to `accept`) or rejected (to `risk_upload`) the filing.
    FilingReviewed {
        /// Verdict.
        approved: bool,
        /// Note.
        note: String,
    },
    /// Acceptance and rating recorded.
    AcceptanceRecorded {
        /// The acceptance.
        acceptance: Acceptance,
    },
    /// Assigned to a deployer; enters that deployer's queue now.
    Assigned {
        /// Deployer.
        deployer: String,
        /// Chosen by load balancing rather than named.
        balanced: bool,
    },
    /// Deployment (re)started.
    DeployStarted,
    /// Queue jump approved and applied.
    QueueJumped {
        /// The jump.
        jump: QueueJump,
    },
    /// Paused: to `problem_handling`.
    Paused {
        /// The pause.
        pause: PauseRecord,
    },
    /// Pause resolved: back to the pausing stage (re-queued now if that stage is queued).
    Resolved {
        /// Whether it re-entered its deployer's queue.
        requeued: bool,
    },
    /// The project asked to terminate: to `gd_confirm`.
    TerminationRequested,
    /// Paused more than 15 days: to `gd_confirm` automatically.
    Escalated,
    /// GD confirmed the pause reason: back to `problem_handling`, escalation clock restarts.
    GdConfirmedReason,
    /// GD confirmed termination: `terminated`, irreversible.
    Terminated,
}

impl EventKind {
    /// Short stable name of the kind (for listings).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::DeployerAdded { .. } => "deployer_added",
            EventKind::ProjectCreated { .. } => "project_created",
            EventKind::ApprovalSet { .. } => "approval_set",
            EventKind::BatchCreated { .. } => "batch_created",
            EventKind::Advanced => "advanced",
            EventKind::PlanAttached { .. } => "plan_attached",
            EventKind::PlanConfirmed { .. } => "plan_confirmed",
            EventKind::ReadinessRecorded { .. } => "readiness_recorded",
            EventKind::HardeningRecorded { .. } => "hardening_recorded",
            EventKind::PerfRecorded { .. } => "perf_recorded",
            EventKind::RiskAdded { .. } => "risk_added",
            EventKind::RisksFiled { .. } => "risks_filed",
            EventKind::FilingReviewed { .. } => "filing_reviewed",
            EventKind::AcceptanceRecorded { .. } => "acceptance_recorded",
            EventKind::Assigned { .. } => "assigned",
            EventKind::DeployStarted => "deploy_started",
            EventKind::QueueJumped { .. } => "queue_jumped",
            EventKind::Paused { .. } => "paused",
            EventKind::Resolved { .. } => "resolved",
            EventKind::TerminationRequested => "termination_requested",
            EventKind::Escalated => "escalated",
            EventKind::GdConfirmedReason => "gd_confirmed_reason",
            EventKind::Terminated => "terminated",
        }
    }
}

/// One append-only history entry: who, in which role, when, from, to, why, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the whole history, from 0, without gaps.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who (the role is inside).
    pub by: Actor,
    /// The batch it concerns.
    pub batch: Option<BatchId>,
    /// The project it concerns.
    pub project: Option<ProjectId>,
    /// Stage before (batch events).
    pub from: Option<Stage>,
    /// Stage after (batch events).
    pub to: Option<Stage>,
    /// Why, in words.
    pub why: String,
    /// What happened, with its data.
    pub kind: EventKind,
}
