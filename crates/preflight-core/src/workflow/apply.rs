//! Applying a command to the state: the transitions, producing events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::role::Role;

use super::command::*;
use super::fold::*;
use super::refusal::Refusal;
use super::types::*;
use super::*;

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

/// [`World::commit`] got an outcome computed against another version of the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stale outcome: its first event is seq {found} but the history continues at {expected}; apply the command again")]
pub struct StaleOutcome {
    /// History length.
    pub expected: u64,
    /// First seq of the outcome.
    pub found: u64,
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
