//! Folding events into state and views: replay, the batch view, restriction, escalation and
//! pause statistics.

use serde::{Deserialize, Serialize};

use super::gate::GateStatus;
use super::queue::QueueEntry;
use super::stats::{pause_stats, PauseStatsRow, StatsKey};
use super::types::*;
use super::*;

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

pub(super) fn new_batch(
    id: &str,
    project: &str,
    business_line: &str,
    title: &str,
    at: Timestamp,
) -> Batch {
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
pub(super) fn fold_batch(b: &mut Batch, ev: &Event) {
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

impl World {
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

/// One line of `batch list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Id.
    pub id: BatchId,
    /// Project.
    pub project: ProjectId,
    /// Business line.
    pub business_line: String,
    /// Title.
    pub title: String,
    /// Stage.
    pub stage: Stage,
    /// Chinese name of the stage.
    pub stage_zh: String,
    /// When it entered the stage.
    pub stage_since: Timestamp,
    /// Who holds it.
    pub held_by: Holder,
    /// Assigned deployer.
    pub deployer: Option<String>,
    /// Reason of its pause, while paused.
    pub pause_reason: Option<PauseReason>,
}

impl BatchSummary {
    /// The summary of one batch.
    pub fn of(b: &Batch) -> BatchSummary {
        BatchSummary {
            id: b.id.clone(),
            project: b.project.clone(),
            business_line: b.business_line.clone(),
            title: b.title.clone(),
            stage: b.stage,
            stage_zh: b.stage.zh().to_string(),
            stage_since: b.stage_since,
            held_by: b.held_by(),
            deployer: b.deployer.clone(),
            pause_reason: b.pause.as_ref().map(|p| p.reason),
        }
    }
}

/// A project and the batch restricting its deploy requests, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRow {
    /// The project.
    pub project: Project,
    /// The batch restricting it (see [`World::restriction`]).
    pub restricted_by: Option<BatchId>,
}

/// A deployer and their load (see [`World::load`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployerLoad {
    /// Name.
    pub name: String,
    /// Batches being deployed plus queued.
    pub load: usize,
}

/// Everything `project list` and `deployer list` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectsView {
    /// Projects by id.
    pub projects: Vec<ProjectRow>,
    /// Deployers by name.
    pub deployers: Vec<DeployerLoad>,
}

impl World {
    /// Summaries of every batch, or of one project's, by id.
    pub fn batch_summaries(&self, project: Option<&str>) -> Vec<BatchSummary> {
        self.batches
            .values()
            .filter(|b| project.is_none_or(|p| b.project == p))
            .map(BatchSummary::of)
            .collect()
    }

    /// Projects with their restriction at `now`, and deployers with their load.
    pub fn projects_view(&self, now: Timestamp) -> ProjectsView {
        ProjectsView {
            projects: self
                .projects
                .values()
                .map(|p| ProjectRow {
                    project: p.clone(),
                    restricted_by: self.restriction(&p.id, now),
                })
                .collect(),
            deployers: self
                .deployers
                .iter()
                .map(|d| DeployerLoad {
                    name: d.clone(),
                    load: self.load(d),
                })
                .collect(),
        }
    }
}
