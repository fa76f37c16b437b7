//! Commands to the workflow: what can be asked, by whom, and the checks of their fields.

use serde::{Deserialize, Serialize};

use crate::role::Role;

use super::refusal::Refusal;
use super::types::*;
use super::{MAX_ID_LEN, MAX_LIST_LEN, MAX_POSITION, MAX_TEXT_LEN};

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

/// Everyone who takes part in a batch: every role but the admin and the auditor.
const PARTICIPANTS: [Role; 8] = roles_but(&[Role::Admin, Role::Auditor]);

/// Who may add a risk: the participants but the GD.
const RISK_ADDERS: [Role; 7] = roles_but(&[Role::Admin, Role::Auditor, Role::Gd]);

/// [`Role::ALL`] in its order without `left_out`; `N` (the number kept) is checked when the
/// constant is compiled.
const fn roles_but<const N: usize>(left_out: &[Role]) -> [Role; N] {
    let mut out = [Role::Admin; N];
    let mut kept = 0;
    let mut i = 0;
    while i < Role::ALL.len() {
        let role = Role::ALL[i];
        let mut j = 0;
        while j < left_out.len() && left_out[j] as u8 != role as u8 {
            j += 1;
        }
        if j == left_out.len() {
            out[kept] = role;
            kept += 1;
        }
        i += 1;
    }
    assert!(kept == N, "N is not the number of roles kept");
    out
}

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
            Command::AddRisk { .. } => &RISK_ADDERS,
            Command::FileRisks { .. } => &[Role::Project],
            Command::ReviewFiling { .. } => &[Role::Reviewer],
            Command::RecordAcceptance { .. } => &[Role::Project],
            Command::Assign { .. } => &[Role::Dispatcher],
            Command::StartDeploy { .. } => &[Role::Dispatcher, Role::Deployer],
            Command::JumpQueue { .. } => &[Role::DeliveryLead],
            Command::Pause { .. } => &PARTICIPANTS,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_role_lists_are_the_batch_participants() {
        use Role::*;
        assert_eq!(
            PARTICIPANTS,
            [
                Dispatcher,
                Project,
                Integrator,
                Deployer,
                PerfChecker,
                Reviewer,
                DeliveryLead,
                Gd
            ]
        );
        assert_eq!(RISK_ADDERS[..], PARTICIPANTS[..7]);
    }
}
