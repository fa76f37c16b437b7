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

mod apply;
mod command;
mod fold;
mod gate;
mod queue;
mod refusal;
mod stats;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use apply::{Outcome, StaleOutcome};
pub use command::{check_id, Command, GdDecision};
pub use fold::{
    finding_ids, BatchSummary, BatchView, DeployerLoad, ProjectRow, ProjectsView, ReplayError,
};
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
}
