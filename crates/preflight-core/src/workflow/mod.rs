//! The deployment workflow of WORKFLOW.md as a pure state machine.
//!
//! [`World`] holds projects, batches, deployers and the append-only history. [`World::apply`]
//! checks a [`Command`] from an [`Actor`] at a given time and returns an [`Outcome`]: the new
//! [`Event`]s plus the batches/projects they changed, as data. The caller persists
//! `state + events` in one transaction and then calls [`World::commit`]. Every event carries the
//! data needed to replay it, and the same fold builds the outcome and [`World::replay`], so the
//! state can always be rebuilt from (and checked against) the history.
//!
//! Decisions beyond the specification, written down so the integrator can rely on them:
//! - Roles: every command names its allowed roles ([`Command::allowed_roles`]). `auditor` may
//!   change nothing. `admin` is not a universal override, so that history stays accountable:
//!   admin creates projects, records approvals, manages deployers and archives; for any other
//!   step the admin must hold the acting role. Sweep facts (readiness, hardening, performance)
//!   and escalation come only from [`Actor::System`], the controller, so nobody can type them in.
//! - "Any participant may pause" means every role but `auditor` and `admin`, plus the
//!   controller (readiness pauses).
//! - A deployer may only start or advance a batch assigned to them.
//! - Reassigning a queued batch (stage `assign`) to another deployer puts it at the end of the
//!   new deployer's queue (entry time = reassignment); assigning to the same deployer is
//!   refused so nobody loses their place by accident.
//! - The deployer list holds a batch while it is in `assign` or `deploy`, and while paused from
//!   those stages. A batch paused in `deploy` returns to `deploy` on resolve but queued (with the
//!   return time, no priority, no jump): the deployer restarts it with [`Command::StartDeploy`].
//! - Queue jumps are recorded by a delivery lead in person (the approver is the actor).
//!   The target position counts in the whole list but never passes a batch being deployed.
//! - Escalation: strictly more than 15 days after the pause, or after GD last confirmed the
//!   reason (the clock restarts then, so a forgotten pause comes back to GD every 15 days).
//! - Restriction: a project is restricted while one of its batches sits in `problem_handling`
//!   or `gd_confirm` with its escalation clock past 15 days, whether or not the timer already
//!   ran; GD confirming the reason or the termination lifts it.
//! - Going live unhardened is a security incident, so the reviewer's approval (the only way
//!   into `accept`) also re-checks the hardening gate.

mod gate;
mod queue;
mod refusal;
mod stats;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::role::Role;

pub use gate::{check_zh_text, gates_of, GateId, GateStatus, ZH_ALLOWED_ACRONYMS};
pub use queue::{queue_class, satisfies_three_class_rule, QueueClass, QueueEntry};
pub use refusal::{Refusal, RefusalKind};
pub use stats::{pause_stats, PauseStatsRow, StatsKey, UnknownStatsKey};
pub use types::*;

/// A pause is escalated to GD strictly after this long (15 days).
pub const ESCALATE_AFTER_MS: i64 = 15 * DAY_MS;
/// Longest id (project, batch, deployer, user name), in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest free text, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;
/// Most entries in a list inside a command (failures, hosts, risks named in a filing).
pub const MAX_LIST_LEN: usize = 10_000;
/// Most risks per batch.
pub const MAX_RISKS: usize = 1_000;
/// Highest queue position a jump may name.
pub const MAX_POSITION: u32 = 10_000;

/// Tunables of the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowConfig {
    /// A readiness report older than this does not pass `confirm_plan`.
    pub readiness_max_age_ms: i64,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            readiness_max_age_ms: DAY_MS,
        }
    }
}

/// GD's decision on a batch in `gd_confirm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdDecision {
    /// The pause reason is confirmed: back to `problem_handling`.
    ConfirmReason,
    /// Termination confirmed: `terminated`, irreversible.
    ConfirmTermination,
}

/// Everything that can be asked of the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Add a deployer (a user name) to the deployer list.
    AddDeployer {
        /// Name.
        name: String,
    },
    /// Create a project.
    CreateProject {
        /// Id.
        id: ProjectId,
        /// Display name.
        name: String,
        /// Business line.
        business_line: String,
        /// Approval or exception (or pending).
        approval: Approval,
    },
    /// Record a project's approval or exception.
    SetApproval {
        /// Project.
        project: ProjectId,
        /// New approval.
        approval: Approval,
    },
    /// Create a batch in `apply`.
    CreateBatch {
        /// Id.
        id: BatchId,
        /// Project.
        project: ProjectId,
        /// Business line; the project's when `None`.
        business_line: Option<String>,
        /// Title.
        title: String,
    },
    /// Move to the next stage when its gates pass.
    Advance {
        /// Batch.
        batch: BatchId,
    },
    /// Attach (or replace) the plan.
    AttachPlan {
        /// Batch.
        batch: BatchId,
        /// Plan facts.
        plan: PlanFacts,
    },
    /// The project confirms the current plan.
    ConfirmPlan {
        /// Batch.
        batch: BatchId,
    },
    /// Record a readiness sweep; a hard failure from `confirm_plan` on pauses the batch.
    RecordReadiness {
        /// Batch.
        batch: BatchId,
        /// Summary.
        summary: ReadinessSummary,
    },
    /// Record hardening evidence.
    RecordHardening {
        /// Batch.
        batch: BatchId,
        /// Summary.
        summary: HardeningSummary,
    },
    /// Record a performance sweep.
    RecordPerf {
        /// Batch.
        batch: BatchId,
        /// Summary.
        summary: PerfSummary,
    },
    /// Record a risk.
    AddRisk {
        /// Batch.
        batch: BatchId,
        /// What.
        text: String,
        /// Check id it comes from (soft failure, perf shortfall).
        source: Option<String>,
    },
    /// Upload the risk filing.
    FileRisks {
        /// Batch.
        batch: BatchId,
        /// Risk ids named.
        risks: Vec<u32>,
        /// Document reference.
        document: String,
    },
    /// The reviewer's verdict on the filing.
    ReviewFiling {
        /// Batch.
        batch: BatchId,
        /// Approve (to `accept`) or reject (to `risk_upload`).
        approve: bool,
        /// Note.
        note: String,
    },
    /// Record acceptance and rating.
    RecordAcceptance {
        /// Batch.
        batch: BatchId,
        /// 1..=5.
        rating: u8,
        /// Comment.
        comment: String,
    },
    /// Assign to a deployer, or to the least loaded one when `None`.
    Assign {
        /// Batch.
        batch: BatchId,
        /// Deployer.
        deployer: Option<String>,
    },
    /// Restart deployment of a batch returned from a pause in `deploy`.
    StartDeploy {
        /// Batch.
        batch: BatchId,
    },
    /// Jump the queue with a delivery lead's approval (the actor).
    JumpQueue {
        /// Batch.
        batch: BatchId,
        /// Target position from 1.
        position: u32,
        /// Why.
        reason: String,
    },
    /// Pause (stages 3–13).
    Pause {
        /// Batch.
        batch: BatchId,
        /// Category.
        reason: PauseReason,
        /// Text.
        text: String,
        /// Responsible party (project when `None`).
        party: Option<Party>,
    },
    /// The pause is handled: back to the pausing stage and person.
    Resolve {
        /// Batch.
        batch: BatchId,
        /// Note.
        note: String,
    },
    /// Ask to terminate: to `gd_confirm`.
    Terminate {
        /// Batch.
        batch: BatchId,
        /// Why.
        reason: String,
    },
    /// GD's decision in `gd_confirm`.
    GdConfirm {
        /// Batch.
        batch: BatchId,
        /// Decision.
        decision: GdDecision,
        /// Note.
        note: String,
    },
    /// Escalate a pause older than 15 days (the controller's timer).
    Escalate {
        /// Batch.
        batch: BatchId,
    },
}

const PARTICIPANTS: &[Role] = &[
    Role::Dispatcher,
    Role::Project,
    Role::Integrator,
    Role::Deployer,
    Role::PerfChecker,
    Role::Reviewer,
    Role::DeliveryLead,
    Role::Gd,
];

impl Command {
    /// The batch the command concerns, if any.
    pub fn batch(&self) -> Option<&str> {
        match self {
            Command::AddDeployer { .. }
            | Command::CreateProject { .. }
            | Command::SetApproval { .. } => None,
            Command::CreateBatch { id, .. } => Some(id),
            Command::Advance { batch }
            | Command::AttachPlan { batch, .. }
            | Command::ConfirmPlan { batch }
            | Command::RecordReadiness { batch, .. }
            | Command::RecordHardening { batch, .. }
            | Command::RecordPerf { batch, .. }
            | Command::AddRisk { batch, .. }
            | Command::FileRisks { batch, .. }
            | Command::ReviewFiling { batch, .. }
            | Command::RecordAcceptance { batch, .. }
            | Command::Assign { batch, .. }
            | Command::StartDeploy { batch }
            | Command::JumpQueue { batch, .. }
            | Command::Pause { batch, .. }
            | Command::Resolve { batch, .. }
            | Command::Terminate { batch, .. }
            | Command::GdConfirm { batch, .. }
            | Command::Escalate { batch } => Some(batch),
        }
    }

    /// Short description for messages, e.g. `advance from plan`.
    pub fn action(&self, stage: Option<Stage>) -> String {
        match self {
            Command::AddDeployer { .. } => "add a deployer".into(),
            Command::CreateProject { .. } => "create a project".into(),
            Command::SetApproval { .. } => "record a project approval".into(),
            Command::CreateBatch { .. } => "create a batch".into(),
            Command::Advance { .. } => match stage {
                Some(s) => format!("advance from {s}"),
                None => "advance".into(),
            },
            Command::AttachPlan { .. } => "attach a plan".into(),
            Command::ConfirmPlan { .. } => "confirm the plan".into(),
            Command::RecordReadiness { .. } => "record a readiness sweep".into(),
            Command::RecordHardening { .. } => "record hardening evidence".into(),
            Command::RecordPerf { .. } => "record a performance sweep".into(),
            Command::AddRisk { .. } => "record a risk".into(),
            Command::FileRisks { .. } => "upload a risk filing".into(),
            Command::ReviewFiling { .. } => "review the risk filing".into(),
            Command::RecordAcceptance { .. } => "record acceptance".into(),
            Command::Assign { .. } => "assign a deployer".into(),
            Command::StartDeploy { .. } => "start deployment".into(),
            Command::JumpQueue { .. } => "approve a queue jump".into(),
            Command::Pause { .. } => "pause".into(),
            Command::Resolve { .. } => "resolve the pause".into(),
            Command::Terminate { .. } => "terminate".into(),
            Command::GdConfirm { .. } => "record the GD decision".into(),
            Command::Escalate { .. } => "escalate to GD".into(),
        }
    }

    /// Roles allowed to issue the command (for `Advance`, those of the batch's stage).
    /// Sweep facts and escalation are the controller's alone and list no role.
    pub fn allowed_roles(&self, stage: Option<Stage>) -> &'static [Role] {
        match self {
            Command::AddDeployer { .. } => &[Role::Admin, Role::Dispatcher],
            Command::CreateProject { .. } => &[Role::Admin, Role::Project, Role::DeliveryLead],
            Command::SetApproval { .. } => &[Role::Admin, Role::DeliveryLead],
            Command::CreateBatch { .. } => &[Role::Project],
            Command::Advance { .. } => stage.map_or(&[], Stage::advance_roles),
            Command::AttachPlan { .. } => &[Role::Integrator],
            Command::ConfirmPlan { .. } => &[Role::Project],
            Command::RecordReadiness { .. }
            | Command::RecordHardening { .. }
            | Command::RecordPerf { .. }
            | Command::Escalate { .. } => &[],
            Command::AddRisk { .. } => &[
                Role::Dispatcher,
                Role::Project,
                Role::Integrator,
                Role::Deployer,
                Role::PerfChecker,
                Role::Reviewer,
                Role::DeliveryLead,
            ],
            Command::FileRisks { .. } => &[Role::Project],
            Command::ReviewFiling { .. } => &[Role::Reviewer],
            Command::RecordAcceptance { .. } => &[Role::Project],
            Command::Assign { .. } => &[Role::Dispatcher],
            Command::StartDeploy { .. } => &[Role::Dispatcher, Role::Deployer],
            Command::JumpQueue { .. } => &[Role::DeliveryLead],
            Command::Pause { .. } => PARTICIPANTS,
            Command::Resolve { .. } | Command::Terminate { .. } => &[Role::Project],
            Command::GdConfirm { .. } => &[Role::Gd],
        }
    }

    /// Whether the controller itself ([`Actor::System`]) may issue it.
    pub fn system_allowed(&self) -> bool {
        matches!(
            self,
            Command::RecordReadiness { .. }
                | Command::RecordHardening { .. }
                | Command::RecordPerf { .. }
                | Command::Escalate { .. }
                | Command::Pause { .. }
        )
    }

    /// Check sizes and formats of every field.
    pub fn validate(&self) -> Result<(), Refusal> {
        match self {
            Command::AddDeployer { name } => check_id("name", name),
            Command::CreateProject {
                id,
                name,
                business_line,
                approval,
            } => {
                check_id("id", id)?;
                check_text("name", name, true)?;
                check_text("business_line", business_line, true)?;
                check_approval(approval)
            }
            Command::SetApproval { project, approval } => {
                check_id("project", project)?;
                check_approval(approval)
            }
            Command::CreateBatch {
                id,
                project,
                business_line,
                title,
            } => {
                check_id("id", id)?;
                check_id("project", project)?;
                if let Some(l) = business_line {
                    check_text("business_line", l, true)?;
                }
                check_text("title", title, false)
            }
            Command::Advance { batch }
            | Command::ConfirmPlan { batch }
            | Command::StartDeploy { batch }
            | Command::Escalate { batch } => check_id("batch", batch),
            Command::AttachPlan { batch, plan } => {
                check_id("batch", batch)?;
                check_text("plan.digest", &plan.digest, true)?;
                check_list("plan.hosts", &plan.hosts)?;
                check_list("plan.incomplete", &plan.incomplete)
            }
            Command::RecordReadiness { batch, summary } => {
                check_id("batch", batch)?;
                check_text("summary.run_id", &summary.run_id, true)?;
                check_text("summary.plan_digest", &summary.plan_digest, true)?;
                check_failures("summary.hard_failures", &summary.hard_failures)?;
                check_failures("summary.soft_failures", &summary.soft_failures)
            }
            Command::RecordHardening { batch, summary } => {
                check_id("batch", batch)?;
                if summary.hosts.len() > MAX_LIST_LEN {
                    return Err(too_many("summary.hosts", summary.hosts.len()));
                }
                for (host, h) in &summary.hosts {
                    check_text("summary.hosts", host, true)?;
                    check_list("summary.hosts.noncompliant", &h.noncompliant)?;
                }
                Ok(())
            }
            Command::RecordPerf { batch, summary } => {
                check_id("batch", batch)?;
                check_text("summary.run_id", &summary.run_id, true)?;
                check_failures("summary.shortfalls", &summary.shortfalls)
            }
            Command::AddRisk {
                batch,
                text,
                source,
            } => {
                check_id("batch", batch)?;
                check_text("text", text, true)?;
                if let Some(s) = source {
                    check_text("source", s, true)?;
                }
                Ok(())
            }
            Command::FileRisks {
                batch,
                risks,
                document,
            } => {
                check_id("batch", batch)?;
                if risks.len() > MAX_LIST_LEN {
                    return Err(too_many("risks", risks.len()));
                }
                check_text("document", document, true)
            }
            Command::ReviewFiling { batch, note, .. } => {
                check_id("batch", batch)?;
                check_text("note", note, false)
            }
            Command::RecordAcceptance {
                batch,
                rating,
                comment,
            } => {
                check_id("batch", batch)?;
                if !(1..=5).contains(rating) {
                    return Err(Refusal::Invalid {
                        field: "rating",
                        problem: format!("{rating} is out of range: give 1 to 5"),
                    });
                }
                check_text("comment", comment, false)
            }
            Command::Assign { batch, deployer } => {
                check_id("batch", batch)?;
                if let Some(d) = deployer {
                    check_id("deployer", d)?;
                }
                Ok(())
            }
            Command::JumpQueue {
                batch,
                position,
                reason,
            } => {
                check_id("batch", batch)?;
                if !(1..=MAX_POSITION).contains(position) {
                    return Err(Refusal::Invalid {
                        field: "position",
                        problem: format!("{position} is out of range: give 1 to {MAX_POSITION}"),
                    });
                }
                check_text("reason", reason, true)
            }
            Command::Pause { batch, text, .. } => {
                check_id("batch", batch)?;
                check_text("text", text, true)
            }
            Command::Resolve { batch, note } => {
                check_id("batch", batch)?;
                check_text("note", note, false)
            }
            Command::Terminate { batch, reason } => {
                check_id("batch", batch)?;
                check_text("reason", reason, true)
            }
            Command::GdConfirm { batch, note, .. } => {
                check_id("batch", batch)?;
                check_text("note", note, false)
            }
        }
    }
}

fn check_id(field: &'static str, v: &str) -> Result<(), Refusal> {
    let ok = !v.is_empty()
        && v.len() <= MAX_ID_LEN
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid {
            field,
            problem: format!(
                "{v:?} is not an id: use 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"
            ),
        })
    }
}

fn check_text(field: &'static str, v: &str, required: bool) -> Result<(), Refusal> {
    if required && v.trim().is_empty() {
        return Err(Refusal::Invalid {
            field,
            problem: "is empty: say something".into(),
        });
    }
    if v.len() > MAX_TEXT_LEN {
        return Err(Refusal::Invalid {
            field,
            problem: format!(
                "is {} bytes long: keep it under {MAX_TEXT_LEN} bytes",
                v.len()
            ),
        });
    }
    Ok(())
}

fn too_many(field: &'static str, n: usize) -> Refusal {
    Refusal::Invalid {
        field,
        problem: format!("has {n} entries: at most {MAX_LIST_LEN} are accepted"),
    }
}

fn check_list(field: &'static str, v: &[String]) -> Result<(), Refusal> {
    if v.len() > MAX_LIST_LEN {
        return Err(too_many(field, v.len()));
    }
    v.iter().try_for_each(|s| check_text(field, s, true))
}

fn check_failures(field: &'static str, v: &[CheckFailure]) -> Result<(), Refusal> {
    if v.len() > MAX_LIST_LEN {
        return Err(too_many(field, v.len()));
    }
    for f in v {
        check_text(field, &f.check, true)?;
        check_text(field, &f.detail, false)?;
    }
    Ok(())
}

fn check_approval(a: &Approval) -> Result<(), Refusal> {
    match a {
        Approval::Pending => Ok(()),
        Approval::Approved { budget } => check_text("approval.budget", budget, true),
        Approval::Exception {
            approver,
            reference,
        } => {
            check_text("approval.approver", approver, true)?;
            check_text("approval.reference", reference, true)
        }
    }
}

/// What a successful command produced: new events (already numbered) and the entities they
/// changed, in their new state. Persist both in one transaction, then [`World::commit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// New history entries, `seq` continuing the history.
    pub events: Vec<Event>,
    /// Changed or new batches.
    pub batches: Vec<Batch>,
    /// Changed or new projects.
    pub projects: Vec<Project>,
    /// Deployers added.
    pub deployers_added: Vec<String>,
}

/// Replaying a history failed: the events are not a history this workflow produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sequence numbers must continue the history without gaps.
    #[error(
        "event seq {found} out of order: expected {expected}; the history has a gap or a duplicate"
    )]
    Sequence {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// The event names a batch or project that does not exist at that point.
    #[error("event {seq} names unknown {what} {id:?}")]
    Unknown {
        /// Event seq.
        seq: u64,
        /// `batch` or `project`.
        what: &'static str,
        /// Id.
        id: String,
    },
    /// The stages recorded in the event disagree with the fold.
    #[error(
        "event {seq} records {recorded_from:?} -> {recorded_to:?}, replay gives {from:?} -> {to:?}"
    )]
    StageMismatch {
        /// Event seq.
        seq: u64,
        /// Recorded from.
        recorded_from: Option<Stage>,
        /// Recorded to.
        recorded_to: Option<Stage>,
        /// Replayed from.
        from: Option<Stage>,
        /// Replayed to.
        to: Option<Stage>,
    },
}

/// [`World::commit`] got an outcome computed against another version of the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stale outcome: its first event is seq {found} but the history continues at {expected}; apply the command again")]
pub struct StaleOutcome {
    /// History length.
    pub expected: u64,
    /// First seq of the outcome.
    pub found: u64,
}

/// Everything `batch show` prints about one batch at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    /// The batch.
    pub batch: Batch,
    /// Chinese name of its stage.
    pub stage_zh: String,
    /// Who holds it.
    pub held_by: Holder,
    /// The gates of its current stage, met or not, each saying what it still needs.
    pub gates: Vec<GateStatus>,
    /// Its line in its deployer's queue, if it is in one.
    pub queue: Option<QueueEntry>,
    /// The batch restricting its project's deploy requests, if any.
    pub restricted_by: Option<BatchId>,
    /// When its pause is escalated to GD, while in `problem_handling`.
    pub escalates_after: Option<Timestamp>,
    /// Its history, oldest first.
    pub history: Vec<Event>,
}

/// The whole workflow state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct World {
    /// Tunables.
    pub config: WorkflowConfig,
    /// Projects by id.
    pub projects: BTreeMap<ProjectId, Project>,
    /// Batches by id.
    pub batches: BTreeMap<BatchId, Batch>,
    /// Deployer names.
    pub deployers: BTreeSet<String>,
    /// The append-only history (may be left empty or partial by a caller that keeps events
    /// elsewhere: only [`World::batch_view`], [`World::batch_history`] and
    /// [`World::pause_stats`] read it).
    pub history: Vec<Event>,
    /// Sequence number of the next event (the number of events ever recorded).
    #[serde(default)]
    pub next_seq: u64,
}

fn new_batch(id: &str, project: &str, business_line: &str, title: &str, at: Timestamp) -> Batch {
    Batch {
        id: id.to_string(),
        project: project.to_string(),
        business_line: business_line.to_string(),
        title: title.to_string(),
        stage: Stage::Apply,
        holder: None,
        created_at: at,
        stage_since: at,
        pause: None,
        deployer: None,
        queued_at: None,
        deploy_started_at: None,
        jump: None,
        plan: None,
        plan_confirmed: None,
        readiness: None,
        hardening: None,
        perf: None,
        risks: Vec::new(),
        filing: None,
        acceptance: None,
    }
}

/// Apply one event to a batch. Infallible by design: replay compares the resulting stage with
/// the one the event recorded.
fn fold_batch(b: &mut Batch, ev: &Event) {
    let at = ev.at;
    let before = b.stage;
    match &ev.kind {
        EventKind::DeployerAdded { .. }
        | EventKind::ProjectCreated { .. }
        | EventKind::ApprovalSet { .. }
        | EventKind::BatchCreated { .. } => {}
        EventKind::Advanced => {
            if let Some(next) = b.stage.next() {
                b.stage = next;
                b.holder = None;
                if next == Stage::Deploy {
                    b.deploy_started_at = Some(at);
                    b.jump = None;
                }
            }
        }
        EventKind::PlanAttached { plan } => {
            b.plan = Some(plan.clone());
            b.plan_confirmed = None;
        }
        EventKind::PlanConfirmed { digest } => b.plan_confirmed = Some(digest.clone()),
        EventKind::ReadinessRecorded { summary } => b.readiness = Some(summary.clone()),
        EventKind::HardeningRecorded { summary } => b.hardening = Some(summary.clone()),
        EventKind::PerfRecorded { summary } => b.perf = Some(summary.clone()),
        EventKind::RiskAdded { risk } => b.risks.push(risk.clone()),
        EventKind::RisksFiled { filing } => b.filing = Some(filing.clone()),
        EventKind::FilingReviewed { approved, note } => {
            if let Some(f) = &mut b.filing {
                f.status = if *approved {
                    FilingStatus::Approved
                } else {
                    FilingStatus::Rejected
                };
                f.review_note = Some(note.clone());
            }
            b.stage = if *approved {
                Stage::Accept
            } else {
                Stage::RiskUpload
            };
            b.holder = None;
        }
        EventKind::AcceptanceRecorded { acceptance } => b.acceptance = Some(acceptance.clone()),
        EventKind::Assigned { deployer, .. } => {
            b.deployer = Some(deployer.clone());
            b.queued_at = Some(at);
            b.jump = None;
        }
        EventKind::DeployStarted => {
            b.deploy_started_at = Some(at);
            b.jump = None;
        }
        EventKind::QueueJumped { jump } => b.jump = Some(jump.clone()),
        EventKind::Paused { pause } => {
            b.pause = Some(pause.clone());
            b.stage = Stage::ProblemHandling;
            b.holder = None;
            b.jump = None;
        }
        EventKind::Resolved { requeued } => {
            if let Some(p) = b.pause.take() {
                b.stage = p.stage;
                b.holder = match p.by {
                    Actor::User { name, .. } => Some(name),
                    Actor::System => None,
                };
            }
            if *requeued {
                b.queued_at = Some(at);
                b.deploy_started_at = None;
                b.jump = None;
            }
        }
        EventKind::TerminationRequested => {
            if let Some(p) = &mut b.pause {
                p.termination_requested = true;
            }
            b.stage = Stage::GdConfirm;
        }
        EventKind::Escalated => {
            if let Some(p) = &mut b.pause {
                p.escalated_at = Some(at);
            }
            b.stage = Stage::GdConfirm;
        }
        EventKind::GdConfirmedReason => {
            if let Some(p) = &mut b.pause {
                p.clock_start = at;
                p.gd_confirmed_at = Some(at);
                p.termination_requested = false;
            }
            b.stage = Stage::ProblemHandling;
        }
        EventKind::Terminated => {
            b.stage = Stage::Terminated;
            b.holder = None;
        }
    }
    if b.stage != before {
        b.stage_since = at;
    }
}

/// Work in progress of one `apply`: changed entities over the unchanged world.
struct Tx<'a> {
    world: &'a World,
    now: Timestamp,
    actor: &'a Actor,
    events: Vec<Event>,
    batches: BTreeMap<BatchId, Batch>,
    projects: BTreeMap<ProjectId, Project>,
    deployers: Vec<String>,
}

impl<'a> Tx<'a> {
    fn batch(&self, id: &str) -> Option<&Batch> {
        self.batches.get(id).or_else(|| self.world.batches.get(id))
    }

    /// Append an event and fold it into the overlay.
    fn emit(&mut self, batch: Option<&str>, project: Option<&str>, kind: EventKind, why: String) {
        let seq = self.world.next_seq + self.events.len() as u64;
        let mut ev = Event {
            seq,
            at: self.now,
            by: self.actor.clone(),
            batch: batch.map(str::to_string),
            project: project.map(str::to_string),
            from: None,
            to: None,
            why,
            kind,
        };
        match &ev.kind {
            EventKind::DeployerAdded { name } => self.deployers.push(name.clone()),
            EventKind::ProjectCreated { project } => {
                self.projects.insert(project.id.clone(), project.clone());
            }
            EventKind::ApprovalSet { approval } => {
                if let Some(pid) = project {
                    let p = self
                        .projects
                        .get(pid)
                        .or_else(|| self.world.projects.get(pid))
                        .cloned();
                    if let Some(mut p) = p {
                        p.approval = approval.clone();
                        self.projects.insert(pid.to_string(), p);
                    }
                }
            }
            EventKind::BatchCreated {
                business_line,
                title,
            } => {
                if let (Some(id), Some(pid)) = (batch, project) {
                    let b = new_batch(id, pid, business_line, title, self.now);
                    ev.to = Some(b.stage);
                    self.batches.insert(id.to_string(), b);
                }
            }
            _ => {
                if let Some(id) = batch {
                    if let Some(mut b) = self.batch(id).cloned() {
                        ev.from = Some(b.stage);
                        fold_batch(&mut b, &ev);
                        ev.to = Some(b.stage);
                        self.batches.insert(id.to_string(), b);
                    }
                }
            }
        }
        self.events.push(ev);
    }

    fn finish(self) -> Outcome {
        Outcome {
            events: self.events,
            batches: self.batches.into_values().collect(),
            projects: self.projects.into_values().collect(),
            deployers_added: self.deployers,
        }
    }
}

fn permit(cmd: &Command, actor: &Actor, stage: Option<Stage>) -> Result<(), Refusal> {
    match actor {
        Actor::System if cmd.system_allowed() => Ok(()),
        Actor::System => Err(Refusal::Permission {
            action: cmd.action(stage),
            actor: actor.to_string(),
            allowed: cmd.allowed_roles(stage).to_vec(),
        }),
        Actor::User { role, .. } => {
            let allowed = cmd.allowed_roles(stage);
            if allowed.contains(role) {
                Ok(())
            } else if allowed.is_empty() {
                Err(Refusal::SystemOnly {
                    action: cmd.action(stage),
                    actor: actor.to_string(),
                })
            } else {
                Err(Refusal::Permission {
                    action: cmd.action(stage),
                    actor: actor.to_string(),
                    allowed: allowed.to_vec(),
                })
            }
        }
    }
}

fn wrong_stage(b: &Batch, action: String, allowed: Vec<Stage>, hint: &str) -> Refusal {
    Refusal::WrongStage {
        batch: b.id.clone(),
        stage: b.stage,
        action,
        allowed,
        hint: hint.to_string(),
    }
}

fn require_stage(b: &Batch, cmd: &Command, allowed: &[Stage]) -> Result<(), Refusal> {
    if allowed.contains(&b.stage) {
        return Ok(());
    }
    let names = allowed
        .iter()
        .map(|s| s.id())
        .collect::<Vec<_>>()
        .join(", ");
    Err(wrong_stage(
        b,
        cmd.action(Some(b.stage)),
        allowed.to_vec(),
        &format!("allowed only in {names}"),
    ))
}

/// A deployer acts only on batches assigned to them.
fn require_assignee(b: &Batch, actor: &Actor) -> Result<(), Refusal> {
    match actor {
        Actor::User {
            name,
            role: Role::Deployer,
        } if b.deployer.as_deref() != Some(name.as_str()) => Err(Refusal::NotAssignee {
            batch: b.id.clone(),
            deployer: b.deployer.clone(),
            actor: actor.to_string(),
        }),
        _ => Ok(()),
    }
}

fn not_found_batch(id: &str) -> Refusal {
    Refusal::NotFound {
        what: "batch",
        id: id.to_string(),
        hint: "list batches with `preflight batch list`",
    }
}

fn not_found_project(id: &str) -> Refusal {
    Refusal::NotFound {
        what: "project",
        id: id.to_string(),
        hint: "create it with `preflight project add`",
    }
}

fn numbered(from: u8, to: u8) -> Vec<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|s| s.number().is_some_and(|n| (from..=to).contains(&n)))
        .collect()
}

impl World {
    /// An empty workflow with the given tunables.
    pub fn new(config: WorkflowConfig) -> World {
        World {
            config,
            ..World::default()
        }
    }

    /// A batch by id.
    pub fn batch(&self, id: &str) -> Option<&Batch> {
        self.batches.get(id)
    }

    /// The view of one batch for `batch show`.
    pub fn batch_view(&self, id: &str, now: Timestamp) -> Option<BatchView> {
        let b = self.batches.get(id)?;
        let queue = b
            .deployer
            .as_deref()
            .and_then(|d| self.queue(d).into_iter().find(|e| e.batch == b.id));
        let escalates_after = b
            .pause
            .as_ref()
            .filter(|_| b.stage == Stage::ProblemHandling)
            .map(|p| p.clock_start.plus_ms(ESCALATE_AFTER_MS));
        Some(BatchView {
            batch: b.clone(),
            stage_zh: b.stage.zh().to_string(),
            held_by: b.held_by(),
            gates: self.gates(b, now),
            queue,
            restricted_by: self.restriction(&b.project, now),
            escalates_after,
            history: self.batch_history(id).cloned().collect(),
        })
    }

    /// The events of one batch, oldest first.
    pub fn batch_history<'s>(&'s self, id: &'s str) -> impl Iterator<Item = &'s Event> + 's {
        self.history
            .iter()
            .filter(move |e| e.batch.as_deref() == Some(id))
    }

    /// The batch that restricts a project at `now`, if any: one of its batches in
    /// `problem_handling` or `gd_confirm` whose escalation clock is past 15 days (the oldest).
    pub fn restriction(&self, project: &str, now: Timestamp) -> Option<BatchId> {
        self.batches
            .values()
            .filter(|b| b.project == project)
            .filter(|b| matches!(b.stage, Stage::ProblemHandling | Stage::GdConfirm))
            .filter_map(|b| b.pause.as_ref().map(|p| (p.clock_start, b)))
            .filter(|(start, _)| now.since(*start) > ESCALATE_AFTER_MS)
            .min_by_key(|(start, b)| (*start, b.id.clone()))
            .map(|(_, b)| b.id.clone())
    }

    /// Escalations due at `now`, as commands for [`Actor::System`] to apply one per transaction
    /// (on the timer and at start-up). Oldest pause first.
    pub fn escalate_due(&self, now: Timestamp) -> Vec<Command> {
        let mut due: Vec<(Timestamp, &Batch)> = self
            .batches
            .values()
            .filter(|b| b.stage == Stage::ProblemHandling)
            .filter_map(|b| b.pause.as_ref().map(|p| (p.clock_start, b)))
            .filter(|(start, _)| now.since(*start) > ESCALATE_AFTER_MS)
            .collect();
        due.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        due.into_iter()
            .map(|(_, b)| Command::Escalate {
                batch: b.id.clone(),
            })
            .collect()
    }

    /// Pause statistics over this world's history (see [`pause_stats`]).
    pub fn pause_stats(
        &self,
        by: StatsKey,
        since: Option<Timestamp>,
        now: Timestamp,
    ) -> Vec<PauseStatsRow> {
        pause_stats(&self.history, &self.batches, by, since, now)
    }

    /// Check `cmd` from `actor` at `now`; on success return the events and changed entities.
    /// Nothing changes until [`World::commit`].
    pub fn apply(&self, now: Timestamp, actor: &Actor, cmd: Command) -> Result<Outcome, Refusal> {
        cmd.validate()?;
        // The auditor reads and never writes, whatever the batch and its stage.
        if actor.role() == Some(Role::Auditor) {
            let stage = cmd
                .batch()
                .and_then(|id| self.batches.get(id))
                .map(|b| b.stage);
            return Err(Refusal::Permission {
                action: cmd.action(stage),
                actor: actor.to_string(),
                allowed: cmd.allowed_roles(stage).to_vec(),
            });
        }
        let stage = cmd
            .batch()
            .filter(|_| !matches!(cmd, Command::CreateBatch { .. }))
            .map(|id| self.batches.get(id).ok_or_else(|| not_found_batch(id)))
            .transpose()?;
        if let Some(b) = stage {
            if b.stage.is_final() {
                return Err(Refusal::Final {
                    batch: b.id.clone(),
                    stage: b.stage,
                });
            }
        }
        permit(&cmd, actor, stage.map(|b| b.stage))?;
        let mut tx = Tx {
            world: self,
            now,
            actor,
            events: Vec::new(),
            batches: BTreeMap::new(),
            projects: BTreeMap::new(),
            deployers: Vec::new(),
        };
        match stage {
            None => self.apply_global(&mut tx, cmd)?,
            Some(b) => self.apply_batch(&mut tx, b, cmd)?,
        }
        Ok(tx.finish())
    }

    fn apply_global(&self, tx: &mut Tx<'_>, cmd: Command) -> Result<(), Refusal> {
        match cmd {
            Command::AddDeployer { name } => {
                if self.deployers.contains(&name) {
                    return Err(Refusal::AlreadyExists {
                        what: "deployer",
                        id: name,
                    });
                }
                let why = format!("deployer {name} added");
                tx.emit(None, None, EventKind::DeployerAdded { name }, why);
            }
            Command::CreateProject {
                id,
                name,
                business_line,
                approval,
            } => {
                if self.projects.contains_key(&id) {
                    return Err(Refusal::AlreadyExists {
                        what: "project",
                        id,
                    });
                }
                let project = Project {
                    id: id.clone(),
                    name,
                    business_line,
                    approval,
                    created_at: tx.now,
                };
                let why = format!("project {id} created");
                tx.emit(None, Some(&id), EventKind::ProjectCreated { project }, why);
            }
            Command::SetApproval { project, approval } => {
                if !self.projects.contains_key(&project) {
                    return Err(not_found_project(&project));
                }
                let why = match &approval {
                    Approval::Pending => "approval withdrawn".to_string(),
                    Approval::Approved { budget } => format!("approved with budget {budget}"),
                    Approval::Exception {
                        approver,
                        reference,
                    } => format!("exception {reference} approved by {approver}"),
                };
                tx.emit(
                    None,
                    Some(&project),
                    EventKind::ApprovalSet { approval },
                    why,
                );
            }
            Command::CreateBatch {
                id,
                project,
                business_line,
                title,
            } => {
                if self.batches.contains_key(&id) {
                    return Err(Refusal::AlreadyExists { what: "batch", id });
                }
                let p = self
                    .projects
                    .get(&project)
                    .ok_or_else(|| not_found_project(&project))?;
                let business_line = business_line.unwrap_or_else(|| p.business_line.clone());
                let why = format!("batch {id} applied for by project {project}");
                tx.emit(
                    Some(&id),
                    Some(&project),
                    EventKind::BatchCreated {
                        business_line,
                        title,
                    },
                    why,
                );
            }
            // Every other command names a batch and is handled in apply_batch.
            other => {
                return Err(Refusal::Invalid {
                    field: "batch",
                    problem: format!("{} needs a batch id", other.action(None)),
                })
            }
        }
        Ok(())
    }

    fn apply_batch(&self, tx: &mut Tx<'_>, b: &Batch, cmd: Command) -> Result<(), Refusal> {
        let id = b.id.as_str();
        let pid = Some(b.project.as_str());
        let now = tx.now;
        match &cmd {
            Command::Advance { .. } => {
                let Some(next) = b.stage.next() else {
                    let hint = match b.stage {
                        Stage::RiskReview => "the reviewer approves or rejects the filing instead",
                        Stage::ProblemHandling => "the project resolves or terminates instead",
                        Stage::GdConfirm => "GD confirms the reason or the termination instead",
                        _ => "nothing follows this stage",
                    };
                    return Err(wrong_stage(
                        b,
                        cmd.action(Some(b.stage)),
                        numbered(1, 14),
                        hint,
                    ));
                };
                require_assignee(b, tx.actor)?;
                if b.stage == Stage::DeployRequest {
                    if let Some(blocking) = self.restriction(&b.project, now) {
                        return Err(Refusal::Restricted {
                            project: b.project.clone(),
                            blocking,
                        });
                    }
                }
                let gates = self.gates(b, now);
                if gates.iter().any(|g| !g.met) {
                    return Err(Refusal::GateUnmet {
                        batch: id.to_string(),
                        stage: b.stage,
                        gates: gates.into_iter().filter(|g| !g.met).collect(),
                    });
                }
                let why = format!("{} -> {}", b.stage, next);
                tx.emit(Some(id), pid, EventKind::Advanced, why);
            }
            Command::AttachPlan { plan, .. } => {
                require_stage(
                    b,
                    &cmd,
                    &[Stage::Plan, Stage::ConfirmPlan, Stage::ProblemHandling],
                )?;
                let why = format!("plan {} attached", plan.digest);
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::PlanAttached { plan: plan.clone() },
                    why,
                );
            }
            Command::ConfirmPlan { .. } => {
                require_stage(b, &cmd, &[Stage::ConfirmPlan])?;
                let plan = b.plan.as_ref().ok_or_else(|| Refusal::State {
                    batch: id.to_string(),
                    action: cmd.action(None),
                    problem: "no plan attached: the integrator attaches one first".into(),
                })?;
                let why = format!("plan {} confirmed", plan.digest);
                let digest = plan.digest.clone();
                tx.emit(Some(id), pid, EventKind::PlanConfirmed { digest }, why);
            }
            Command::RecordReadiness { summary, .. } => {
                let why = format!(
                    "readiness run {}: {} hard, {} soft failures",
                    summary.run_id,
                    summary.hard_failures.len(),
                    summary.soft_failures.len()
                );
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::ReadinessRecorded {
                        summary: summary.clone(),
                    },
                    why,
                );
                let for_current_plan = b
                    .plan
                    .as_ref()
                    .is_some_and(|p| p.digest == summary.plan_digest);
                let from_confirm = b.stage.pausable() && b.stage >= Stage::ConfirmPlan;
                if let (Some(first), true, true) = (
                    summary.hard_failures.first(),
                    for_current_plan,
                    from_confirm,
                ) {
                    let mut text = format!(
                        "readiness run {} found {} hard failures:",
                        summary.run_id,
                        summary.hard_failures.len()
                    );
                    for f in summary.hard_failures.iter().take(20) {
                        text.push_str(&format!(" {} [{}];", f.check, f.party.id()));
                    }
                    let pause = PauseRecord {
                        stage: b.stage,
                        by: tx.actor.clone(),
                        at: now,
                        reason: first.reason,
                        text: text.clone(),
                        party: first.party,
                        items: summary.hard_failures.clone(),
                        clock_start: now,
                        escalated_at: None,
                        termination_requested: false,
                        gd_confirmed_at: None,
                    };
                    tx.emit(Some(id), pid, EventKind::Paused { pause }, text);
                }
            }
            Command::RecordHardening { summary, .. } => {
                let why = format!("hardening evidence for {} hosts", summary.hosts.len());
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::HardeningRecorded {
                        summary: summary.clone(),
                    },
                    why,
                );
            }
            Command::RecordPerf { summary, .. } => {
                let why = format!(
                    "performance run {}: {} shortfalls",
                    summary.run_id,
                    summary.shortfalls.len()
                );
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::PerfRecorded {
                        summary: summary.clone(),
                    },
                    why,
                );
            }
            Command::AddRisk { text, source, .. } => {
                let mut allowed = numbered(1, 11);
                allowed.extend([Stage::ProblemHandling, Stage::GdConfirm]);
                require_stage(b, &cmd, &allowed)?;
                if b.risks.len() >= MAX_RISKS {
                    return Err(Refusal::State {
                        batch: id.to_string(),
                        action: cmd.action(None),
                        problem: format!(
                            "it has {MAX_RISKS} risks already: merge related ones into one"
                        ),
                    });
                }
                if let Some(src) = source {
                    let known = finding_ids(b);
                    if !known.iter().any(|k| k == src) {
                        return Err(Refusal::State {
                            batch: id.to_string(),
                            action: cmd.action(None),
                            problem: unknown_source(src, &known),
                        });
                    }
                }
                let risk = Risk {
                    id: b.risks.len() as u32 + 1,
                    text: text.clone(),
                    source: source.clone(),
                    by: tx.actor.name().to_string(),
                    at: now,
                };
                let why = format!("risk {}: {}", risk.id, text);
                tx.emit(Some(id), pid, EventKind::RiskAdded { risk }, why);
            }
            Command::FileRisks {
                risks, document, ..
            } => {
                require_stage(b, &cmd, &[Stage::RiskUpload])?;
                if let Some(r) = risks.iter().find(|r| !b.risks.iter().any(|x| x.id == **r)) {
                    return Err(Refusal::Invalid {
                        field: "risks",
                        problem: format!(
                            "batch {id} has no risk {r}: name risks 1 to {}",
                            b.risks.len()
                        ),
                    });
                }
                let mut ids = risks.clone();
                ids.sort_unstable();
                ids.dedup();
                let filing = RiskFiling {
                    risks: ids,
                    document: document.clone(),
                    by: tx.actor.name().to_string(),
                    at: now,
                    status: FilingStatus::Pending,
                    review_note: None,
                };
                let why = format!("risk filing {document} uploaded");
                tx.emit(Some(id), pid, EventKind::RisksFiled { filing }, why);
            }
            Command::ReviewFiling { approve, note, .. } => {
                require_stage(b, &cmd, &[Stage::RiskReview])?;
                if *approve {
                    if b.filing.is_none() {
                        return Err(Refusal::State {
                            batch: id.to_string(),
                            action: cmd.action(None),
                            problem: "no risk filing uploaded: the project uploads one first"
                                .into(),
                        });
                    }
                    // Entering accept unhardened would be a security incident: re-check.
                    let h = self.gate_status(b, GateId::HardeningCompliant, now);
                    if !h.met {
                        return Err(Refusal::GateUnmet {
                            batch: id.to_string(),
                            stage: b.stage,
                            gates: vec![h],
                        });
                    }
                }
                let why = if *approve {
                    format!("risk filing approved: {note}")
                } else {
                    format!("risk filing rejected: {note}")
                };
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::FilingReviewed {
                        approved: *approve,
                        note: note.clone(),
                    },
                    why,
                );
            }
            Command::RecordAcceptance {
                rating, comment, ..
            } => {
                require_stage(b, &cmd, &[Stage::Accept])?;
                let acceptance = Acceptance {
                    rating: *rating,
                    comment: comment.clone(),
                    by: tx.actor.name().to_string(),
                    at: now,
                };
                let why = format!("accepted with rating {rating}");
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::AcceptanceRecorded { acceptance },
                    why,
                );
            }
            Command::Assign { deployer, .. } => {
                require_stage(b, &cmd, &[Stage::Assign])?;
                let (deployer, balanced) = match deployer {
                    Some(d) if self.deployers.contains(d) => (d.clone(), false),
                    Some(d) => return Err(Refusal::NoSuchDeployer { name: d.clone() }),
                    None => match self.least_loaded(Some(id)) {
                        Some(d) => (d, true),
                        None => {
                            return Err(Refusal::State {
                                batch: id.to_string(),
                                action: cmd.action(None),
                                problem: "there are no deployers: add one first".into(),
                            })
                        }
                    },
                };
                if b.deployer.as_deref() == Some(deployer.as_str()) {
                    return Err(Refusal::State {
                        batch: id.to_string(),
                        action: cmd.action(None),
                        problem: format!(
                            "it is already in {deployer}'s queue: name another deployer to move it"
                        ),
                    });
                }
                let why = if balanced {
                    let own = b.deployer.as_deref() == Some(deployer.as_str());
                    let load = self.load(&deployer) - usize::from(own);
                    let n = self.deployers.len();
                    format!(
                        "assigned to {deployer}: least loaded of {n} deployer{} ({load} batch{} deploying or queued; ties go by name)",
                        if n == 1 { "" } else { "s" },
                        if load == 1 { "" } else { "es" },
                    )
                } else {
                    format!("assigned to {deployer}")
                };
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::Assigned { deployer, balanced },
                    why,
                );
            }
            Command::StartDeploy { .. } => {
                require_stage(b, &cmd, &[Stage::Deploy])?;
                require_assignee(b, tx.actor)?;
                if b.deploy_started_at.is_some() {
                    return Err(Refusal::State {
                        batch: id.to_string(),
                        action: cmd.action(None),
                        problem: "deployment is already running".into(),
                    });
                }
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::DeployStarted,
                    "deployment restarted".into(),
                );
            }
            Command::JumpQueue {
                position, reason, ..
            } => {
                if !matches!(queue_class(b), Some((QueueClass::Queued, _))) {
                    return Err(Refusal::State {
                        batch: id.to_string(),
                        action: cmd.action(None),
                        problem: "only a batch waiting in a deployer's queue can jump it".into(),
                    });
                }
                let jump = QueueJump {
                    position: *position,
                    approver: tx.actor.name().to_string(),
                    reason: reason.clone(),
                    at: now,
                };
                let why = format!(
                    "queue jump to position {position} approved by {}: {reason}",
                    jump.approver
                );
                tx.emit(Some(id), pid, EventKind::QueueJumped { jump }, why);
            }
            Command::Pause {
                reason,
                text,
                party,
                ..
            } => {
                if !b.stage.pausable() {
                    return Err(wrong_stage(
                        b,
                        cmd.action(None),
                        numbered(3, 13),
                        "pausing is allowed in stages 3 (deploy_request) to 13 (accept)",
                    ));
                }
                let party = party.unwrap_or_default();
                let pause = PauseRecord {
                    stage: b.stage,
                    by: tx.actor.clone(),
                    at: now,
                    reason: *reason,
                    text: text.clone(),
                    party,
                    items: Vec::new(),
                    clock_start: now,
                    escalated_at: None,
                    termination_requested: false,
                    gd_confirmed_at: None,
                };
                let why = format!("paused ({reason}, {party}): {text}");
                tx.emit(Some(id), pid, EventKind::Paused { pause }, why);
            }
            Command::Resolve { note, .. } => {
                require_stage(b, &cmd, &[Stage::ProblemHandling])?;
                let requeued = b
                    .pause
                    .as_ref()
                    .is_some_and(|p| p.stage.in_deployer_queue())
                    && b.deployer.is_some();
                let why = format!("pause resolved: {note}");
                tx.emit(Some(id), pid, EventKind::Resolved { requeued }, why);
            }
            Command::Terminate { reason, .. } => {
                require_stage(b, &cmd, &[Stage::ProblemHandling])?;
                let why = format!("termination requested: {reason}");
                tx.emit(Some(id), pid, EventKind::TerminationRequested, why);
            }
            Command::GdConfirm { decision, note, .. } => {
                require_stage(b, &cmd, &[Stage::GdConfirm])?;
                match decision {
                    GdDecision::ConfirmReason => tx.emit(
                        Some(id),
                        pid,
                        EventKind::GdConfirmedReason,
                        format!("GD confirmed the pause reason: {note}"),
                    ),
                    GdDecision::ConfirmTermination => tx.emit(
                        Some(id),
                        pid,
                        EventKind::Terminated,
                        format!("GD confirmed termination: {note}"),
                    ),
                }
            }
            Command::Escalate { .. } => {
                require_stage(b, &cmd, &[Stage::ProblemHandling])?;
                let start = b.pause.as_ref().map_or(b.stage_since, |p| p.clock_start);
                if now.since(start) <= ESCALATE_AFTER_MS {
                    return Err(Refusal::NotDue {
                        batch: id.to_string(),
                        due_after: start.plus_ms(ESCALATE_AFTER_MS),
                    });
                }
                let days = now.since(start) / DAY_MS;
                tx.emit(
                    Some(id),
                    pid,
                    EventKind::Escalated,
                    format!("paused {days} days without resolution: sent to GD"),
                );
            }
            Command::AddDeployer { .. }
            | Command::CreateProject { .. }
            | Command::SetApproval { .. }
            | Command::CreateBatch { .. } => {
                return Err(Refusal::Invalid {
                    field: "command",
                    problem: format!("{} does not take a batch", cmd.action(None)),
                })
            }
        }
        Ok(())
    }

    /// Take an [`Outcome`] of [`World::apply`] into this state (after persisting it).
    pub fn commit(&mut self, outcome: Outcome) -> Result<(), StaleOutcome> {
        let expected = self.next_seq;
        if let Some(first) = outcome.events.first() {
            if first.seq != expected {
                return Err(StaleOutcome {
                    expected,
                    found: first.seq,
                });
            }
        }
        for b in outcome.batches {
            self.batches.insert(b.id.clone(), b);
        }
        for p in outcome.projects {
            self.projects.insert(p.id.clone(), p);
        }
        self.deployers.extend(outcome.deployers_added);
        self.next_seq += outcome.events.len() as u64;
        self.history.extend(outcome.events);
        Ok(())
    }

    /// [`World::apply`] then [`World::commit`]; returns the new events.
    pub fn execute(
        &mut self,
        now: Timestamp,
        actor: &Actor,
        cmd: Command,
    ) -> Result<Vec<Event>, Refusal> {
        let outcome = self.apply(now, actor, cmd)?;
        let events = outcome.events.clone();
        // The outcome was computed against this very state, so it cannot be stale.
        if let Err(stale) = self.commit(outcome) {
            return Err(Refusal::State {
                batch: String::new(),
                action: "commit".into(),
                problem: stale.to_string(),
            });
        }
        Ok(events)
    }

    /// Fold one recorded event into the state, checking it continues the history and that the
    /// stages it records agree with the fold.
    pub fn fold(&mut self, ev: Event) -> Result<(), ReplayError> {
        let expected = self.next_seq;
        if ev.seq != expected {
            return Err(ReplayError::Sequence {
                expected,
                found: ev.seq,
            });
        }
        let (mut from, mut to) = (None, None);
        match &ev.kind {
            EventKind::DeployerAdded { name } => {
                self.deployers.insert(name.clone());
            }
            EventKind::ProjectCreated { project } => {
                self.projects.insert(project.id.clone(), project.clone());
            }
            EventKind::ApprovalSet { approval } => {
                let pid = ev.project.clone().unwrap_or_default();
                let p = self
                    .projects
                    .get_mut(&pid)
                    .ok_or_else(|| ReplayError::Unknown {
                        seq: ev.seq,
                        what: "project",
                        id: pid.clone(),
                    })?;
                p.approval = approval.clone();
            }
            EventKind::BatchCreated {
                business_line,
                title,
            } => {
                let id = ev.batch.clone().unwrap_or_default();
                let pid = ev.project.clone().unwrap_or_default();
                if !self.projects.contains_key(&pid) {
                    return Err(ReplayError::Unknown {
                        seq: ev.seq,
                        what: "project",
                        id: pid,
                    });
                }
                let b = new_batch(&id, &pid, business_line, title, ev.at);
                to = Some(b.stage);
                self.batches.insert(id, b);
            }
            _ => {
                let id = ev.batch.clone().unwrap_or_default();
                let b = self
                    .batches
                    .get_mut(&id)
                    .ok_or_else(|| ReplayError::Unknown {
                        seq: ev.seq,
                        what: "batch",
                        id: id.clone(),
                    })?;
                from = Some(b.stage);
                fold_batch(b, &ev);
                to = Some(b.stage);
            }
        }
        if (from, to) != (ev.from, ev.to) {
            return Err(ReplayError::StageMismatch {
                seq: ev.seq,
                recorded_from: ev.from,
                recorded_to: ev.to,
                from,
                to,
            });
        }
        self.next_seq += 1;
        self.history.push(ev);
        Ok(())
    }

    /// Rebuild a state from its history.
    pub fn replay(
        config: WorkflowConfig,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<World, ReplayError> {
        let mut w = World::new(config);
        for ev in events {
            w.fold(ev)?;
        }
        Ok(w)
    }
}

/// The check ids of every finding recorded for a batch that a risk may name as its source: the
/// readiness report's hard and soft failures and the performance sweep's shortfalls, in that
/// order, without duplicates.
pub fn finding_ids(b: &Batch) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let readiness = b
        .readiness
        .iter()
        .flat_map(|r| r.hard_failures.iter().chain(&r.soft_failures));
    let perf = b.perf.iter().flat_map(|p| p.shortfalls.iter());
    for f in readiness.chain(perf) {
        if !out.contains(&f.check) {
            out.push(f.check.clone());
        }
    }
    out
}

/// Why a risk's source is refused: it names no recorded finding; lists the ones that exist.
fn unknown_source(src: &str, known: &[String]) -> String {
    const SHOWN: usize = 20;
    if known.is_empty() {
        return format!(
            "--source {src} matches no finding: the batch has no recorded readiness failure or performance shortfall; leave --source out for a risk of your own"
        );
    }
    let mut list = known
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if known.len() > SHOWN {
        list.push_str(&format!(" and {} more", known.len() - SHOWN));
    }
    format!("--source {src} matches no finding; the recorded findings are: {list}")
}
