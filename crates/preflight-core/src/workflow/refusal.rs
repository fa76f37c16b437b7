//! Why a command was refused, typed so the controller can map it to a status code in one place.

use crate::role::Role;

use super::gate::GateStatus;
use super::types::{BatchId, ProjectId, Stage, Timestamp};

/// How the controller should report a [`Refusal`] (gRPC status it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// PERMISSION_DENIED: the caller's role (or identity) may not do this.
    PermissionDenied,
    /// FAILED_PRECONDITION: wrong stage, gate unmet, final batch, restriction, not due.
    FailedPrecondition,
    /// INVALID_ARGUMENT: the command itself is malformed.
    InvalidArgument,
    /// NOT_FOUND: a named project, batch or deployer does not exist.
    NotFound,
    /// ALREADY_EXISTS: an id is taken.
    AlreadyExists,
}

/// A command the workflow refused. Messages name what is allowed or missing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The actor's role is not among the allowed ones.
    #[error("{actor} may not {action}: allowed roles are {}", roles_list(allowed))]
    Permission {
        /// What was attempted.
        action: String,
        /// Who tried (name and role).
        actor: String,
        /// The roles that may do it (empty: only the controller itself).
        allowed: Vec<Role>,
    },
    /// Only the controller records this (sweep results, escalation timer).
    #[error("{actor} may not {action}: only the controller records it (sweeps and the escalation timer)")]
    SystemOnly {
        /// What was attempted.
        action: String,
        /// Who tried.
        actor: String,
    },
    /// A deployer acted on a batch assigned to someone else.
    #[error("batch {batch} is assigned to {}, not to {actor}: ask a dispatcher to reassign it", deployer.as_deref().unwrap_or("nobody"))]
    NotAssignee {
        /// Batch.
        batch: BatchId,
        /// Its deployer.
        deployer: Option<String>,
        /// Who tried.
        actor: String,
    },
    /// The batch is in a stage where this command does not apply.
    #[error("cannot {action}: batch {batch} is in stage {stage} ({}); {hint}", stage.zh())]
    WrongStage {
        /// Batch.
        batch: BatchId,
        /// Its stage.
        stage: Stage,
        /// What was attempted.
        action: String,
        /// Stages in which it is allowed (may be empty).
        allowed: Vec<Stage>,
        /// What to do instead.
        hint: String,
    },
    /// Gates of the stage are not met.
    #[error("batch {batch} cannot leave {stage}: {}", unmet_list(gates))]
    GateUnmet {
        /// Batch.
        batch: BatchId,
        /// Its stage.
        stage: Stage,
        /// The unmet gates, each saying what is missing.
        gates: Vec<GateStatus>,
    },
    /// The batch is terminated or done: nothing may move it.
    #[error("batch {batch} is {stage} ({}): nothing may change it any more", stage.zh())]
    Final {
        /// Batch.
        batch: BatchId,
        /// `terminated` or `done`.
        stage: Stage,
    },
    /// The project is restricted by a batch paused more than 15 days that GD has not processed.
    #[error("project {project} may not request deployment: batch {blocking} has been paused more than 15 days and GD has not processed it yet; GD must confirm its pause reason or its termination first")]
    Restricted {
        /// Project.
        project: ProjectId,
        /// The blocking batch.
        blocking: BatchId,
    },
    /// Automatic escalation is not due yet.
    #[error(
        "batch {batch} is not due for escalation: its pause is escalated only after {due_after}"
    )]
    NotDue {
        /// Batch.
        batch: BatchId,
        /// Escalation is allowed strictly after this time.
        due_after: Timestamp,
    },
    /// Another state problem of the batch (already started, not queued, no plan).
    #[error("cannot {action} (batch {batch}): {problem}")]
    State {
        /// Batch.
        batch: BatchId,
        /// What was attempted.
        action: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A named thing does not exist.
    #[error("{what} {id:?} not found: {hint}")]
    NotFound {
        /// `project`, `batch`, `deployer`, `risk`.
        what: &'static str,
        /// The id given.
        id: String,
        /// How to find valid ones.
        hint: &'static str,
    },
    /// An id is taken.
    #[error("{what} {id:?} already exists: choose another id")]
    AlreadyExists {
        /// `project`, `batch`, `deployer`.
        what: &'static str,
        /// The id given.
        id: String,
    },
    /// A field of the command is malformed.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong and what to send instead.
        problem: String,
    },
}

impl Refusal {
    /// The status class the controller maps this to.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Permission { .. }
            | Refusal::SystemOnly { .. }
            | Refusal::NotAssignee { .. } => RefusalKind::PermissionDenied,
            Refusal::WrongStage { .. }
            | Refusal::GateUnmet { .. }
            | Refusal::Final { .. }
            | Refusal::Restricted { .. }
            | Refusal::NotDue { .. }
            | Refusal::State { .. } => RefusalKind::FailedPrecondition,
            Refusal::NotFound { .. } => RefusalKind::NotFound,
            Refusal::AlreadyExists { .. } => RefusalKind::AlreadyExists,
            Refusal::Invalid { .. } => RefusalKind::InvalidArgument,
        }
    }
}

fn roles_list(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "none (only the controller)".to_string();
    }
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unmet_list(gates: &[GateStatus]) -> String {
    gates
        .iter()
        .filter(|g| !g.met)
        .map(|g| {
            if g.missing.is_empty() {
                format!("{} needs {}", g.gate.id(), g.needs)
            } else {
                format!(
                    "{} needs {} (missing: {})",
                    g.gate.id(),
                    g.needs,
                    g.missing.join("; ")
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
