//! The workflow's typed replies on the wire: each core type of the workflow and its message
//! in `proto/preflight/v1/workflow.proto`, both ways. The controller encodes what it read
//! from the core; the CLI decodes a reply into the same core types, so it renders and prints
//! (`--output json`) exactly what the core holds. Decoding refuses what this build cannot
//! represent (an enum value it does not know, a required part missing), naming the field.

use std::collections::BTreeMap;

use preflight_core::role::Role;
use preflight_core::workflow::{
    Acceptance, Actor, Approval, Batch, BatchSummary, BatchView, CheckFailure, DeployerLoad, Event,
    EventKind, FilingStatus, GateId, GateStatus, GdDecision, HardeningSummary, Holder,
    HostHardening, Party, PauseReason, PauseRecord, PauseStatsRow, PerfSummary, PlanFacts, Project,
    ProjectRow, ProjectsView, QueueClass, QueueEntry, QueueJump, ReadinessSummary, Risk,
    RiskFiling, Stage, StatsKey, Timestamp,
};
use preflight_proto::v1 as pb;

pub use crate::error::{enum_field, InvalidRequest};

/// A closed set of the core and its proto enum.
pub trait WireEnum: Sized + Copy + 'static {
    /// The proto enum.
    type Pb: TryFrom<i32> + Into<i32> + Copy + std::fmt::Debug;
    /// Every value.
    const ALL: &'static [Self];
    /// The proto value.
    fn to_pb(self) -> Self::Pb;
    /// The core value; `None` for the unset zero value.
    fn from_pb(p: Self::Pb) -> Option<Self>;
    /// The proto value as carried in a message field.
    fn to_i32(self) -> i32 {
        self.to_pb().into()
    }
}

/// A required enum field in the core's terms: a value unknown to this build is refused
/// ([`enum_field`]), and so is the unset zero value, naming the values the field takes.
pub fn enum_of<E: WireEnum>(field: &str, v: i32) -> Result<E, InvalidRequest> {
    E::from_pb(enum_field::<E::Pb>(field, v)?).ok_or_else(|| {
        let words: Vec<String> = E::ALL
            .iter()
            .map(|e| preflight_proto::json::name::<E::Pb>(e.to_i32()))
            .collect();
        InvalidRequest::new(field, format!("not given: use one of {}", words.join(", ")))
    })
}

macro_rules! same_variants {
    ($($core:ident <=> $pb:ident { $($v:ident),* $(,)? })*) => {$(
        impl WireEnum for $core {
            type Pb = pb::$pb;
            const ALL: &'static [Self] = &[$($core::$v),*];
            fn to_pb(self) -> pb::$pb {
                match self { $($core::$v => pb::$pb::$v,)* }
            }
            fn from_pb(p: pb::$pb) -> Option<Self> {
                match p {
                    $(pb::$pb::$v => Some($core::$v),)*
                    pb::$pb::Unspecified => None,
                }
            }
        }
    )*};
}

same_variants! {
    Stage <=> WorkflowStage {
        Apply, PrePlan, DeployRequest, Plan, ConfirmPlan, Assign, Deploy, Integrate, Harden,
        EnvCheck, RiskUpload, RiskReview, Accept, Archive, ProblemHandling, GdConfirm,
        Terminated, Done,
    }
    PauseReason <=> WorkflowPauseReason {
        Package, NetworkPorts, Planning, HistoryInfo, SiteBusy, RemoteAccess, DiskPerformance,
        VipMissing, JumpHostMissing, Other,
    }
    Party <=> WorkflowParty {
        Project, Integrator, Deployer, Dispatcher, PerfChecker, Customer, Other,
    }
    Role <=> Role {
        Admin, Dispatcher, Project, Integrator, Deployer, PerfChecker, Reviewer, DeliveryLead,
        Gd, Auditor,
    }
    FilingStatus <=> RiskFilingStatus { Pending, Approved, Rejected }
    QueueClass <=> QueueClass { Deploying, Queued, Paused }
    GateId <=> WorkflowGate {
        ProjectApproved, ProjectNotRestricted, PlanComplete, PlanConfirmed, ReadinessFresh,
        NoHardFailures, SoftFailuresAreRisks, DeployerAssigned, DeploymentStarted,
        BaselineHardening, HardeningCompliant, PerfPassed, RiskFilingComplete, FilingApproved,
        AcceptanceRecorded,
    }
    StatsKey <=> PauseStatsKey { Reason, Party, Project, Line }
}

impl WireEnum for GdDecision {
    type Pb = pb::GdDecision;
    const ALL: &'static [Self] = &[GdDecision::ConfirmReason, GdDecision::ConfirmTermination];
    fn to_pb(self) -> pb::GdDecision {
        match self {
            GdDecision::ConfirmReason => pb::GdDecision::Reason,
            GdDecision::ConfirmTermination => pb::GdDecision::Termination,
        }
    }
    fn from_pb(p: pb::GdDecision) -> Option<Self> {
        match p {
            pb::GdDecision::Reason => Some(GdDecision::ConfirmReason),
            pb::GdDecision::Termination => Some(GdDecision::ConfirmTermination),
            pb::GdDecision::Unspecified => None,
        }
    }
}

/// A core type of the workflow and its message.
pub trait Wire: Sized {
    /// The message.
    type Pb;
    /// The message of this value.
    fn encode(&self) -> Self::Pb;
    /// The value of a message.
    fn decode(p: Self::Pb) -> Result<Self, InvalidRequest>;
}

/// A list of core values as sent.
pub fn enc_all<T: Wire>(v: &[T]) -> Vec<T::Pb> {
    v.iter().map(Wire::encode).collect()
}

/// A list of core values as received.
pub fn dec_all<T: Wire>(v: Vec<T::Pb>) -> Result<Vec<T>, InvalidRequest> {
    v.into_iter().map(T::decode).collect()
}

fn dec_opt<T: Wire>(v: Option<T::Pb>) -> Result<Option<T>, InvalidRequest> {
    v.map(T::decode).transpose()
}

/// A required message as received.
pub fn dec_need<T: Wire>(field: &str, v: Option<T::Pb>) -> Result<T, InvalidRequest> {
    T::decode(v.ok_or_else(|| InvalidRequest::missing(field))?)
}

fn ts(t: Timestamp) -> i64 {
    t.0
}

impl Wire for Actor {
    type Pb = pb::WorkflowActor;
    fn encode(&self) -> pb::WorkflowActor {
        match self {
            Actor::User { name, role } => pb::WorkflowActor {
                kind: pb::ActorKind::User.into(),
                name: name.clone(),
                role: role.to_i32(),
            },
            Actor::System => pb::WorkflowActor {
                kind: pb::ActorKind::System.into(),
                ..Default::default()
            },
        }
    }
    fn decode(p: pb::WorkflowActor) -> Result<Actor, InvalidRequest> {
        match pb::ActorKind::try_from(p.kind) {
            Ok(pb::ActorKind::User) => Ok(Actor::User {
                name: p.name,
                role: enum_of("by.role", p.role)?,
            }),
            Ok(pb::ActorKind::System) => Ok(Actor::System),
            _ => Err(InvalidRequest::new(
                "by.kind",
                format!("value {} unknown", p.kind),
            )),
        }
    }
}

impl Wire for Approval {
    type Pb = pb::ProjectApproval;
    fn encode(&self) -> pb::ProjectApproval {
        match self {
            Approval::Pending => pb::ProjectApproval {
                kind: pb::ApprovalKind::Pending.into(),
                ..Default::default()
            },
            Approval::Approved { budget } => pb::ProjectApproval {
                kind: pb::ApprovalKind::Approved.into(),
                budget: budget.clone(),
                ..Default::default()
            },
            Approval::Exception {
                approver,
                reference,
            } => pb::ProjectApproval {
                kind: pb::ApprovalKind::Exception.into(),
                approver: approver.clone(),
                reference: reference.clone(),
                ..Default::default()
            },
        }
    }
    fn decode(p: pb::ProjectApproval) -> Result<Approval, InvalidRequest> {
        match pb::ApprovalKind::try_from(p.kind) {
            Ok(pb::ApprovalKind::Unspecified | pb::ApprovalKind::Pending) => Ok(Approval::Pending),
            Ok(pb::ApprovalKind::Approved) => Ok(Approval::Approved { budget: p.budget }),
            Ok(pb::ApprovalKind::Exception) => Ok(Approval::Exception {
                approver: p.approver,
                reference: p.reference,
            }),
            Err(_) => Err(InvalidRequest::new(
                "approval.kind",
                format!("value {} unknown", p.kind),
            )),
        }
    }
}

impl Wire for Project {
    type Pb = pb::WorkflowProject;
    fn encode(&self) -> pb::WorkflowProject {
        pb::WorkflowProject {
            id: self.id.clone(),
            name: self.name.clone(),
            business_line: self.business_line.clone(),
            approval: Some(self.approval.encode()),
            created_at_ms: ts(self.created_at),
        }
    }
    fn decode(p: pb::WorkflowProject) -> Result<Project, InvalidRequest> {
        Ok(Project {
            id: p.id,
            name: p.name,
            business_line: p.business_line,
            approval: dec_need("project.approval", p.approval)?,
            created_at: Timestamp(p.created_at_ms),
        })
    }
}

impl Wire for CheckFailure {
    type Pb = pb::WorkflowCheckFailure;
    fn encode(&self) -> pb::WorkflowCheckFailure {
        pb::WorkflowCheckFailure {
            check: self.check.clone(),
            detail: self.detail.clone(),
            reason: self.reason.to_i32(),
            party: self.party.to_i32(),
        }
    }
    fn decode(p: pb::WorkflowCheckFailure) -> Result<CheckFailure, InvalidRequest> {
        Ok(CheckFailure {
            reason: enum_of("reason", p.reason)?,
            party: enum_of("party", p.party)?,
            check: p.check,
            detail: p.detail,
        })
    }
}

impl Wire for PlanFacts {
    type Pb = pb::WorkflowPlanFacts;
    fn encode(&self) -> pb::WorkflowPlanFacts {
        pb::WorkflowPlanFacts {
            digest: self.digest.clone(),
            hosts: self.hosts.clone(),
            incomplete: self.incomplete.clone(),
            incomplete_zh: self.incomplete_zh.clone(),
        }
    }
    fn decode(p: pb::WorkflowPlanFacts) -> Result<PlanFacts, InvalidRequest> {
        Ok(PlanFacts {
            digest: p.digest,
            hosts: p.hosts,
            incomplete: p.incomplete,
            incomplete_zh: p.incomplete_zh,
        })
    }
}

impl Wire for ReadinessSummary {
    type Pb = pb::WorkflowReadiness;
    fn encode(&self) -> pb::WorkflowReadiness {
        pb::WorkflowReadiness {
            run_id: self.run_id.clone(),
            finished_at_ms: ts(self.finished_at),
            plan_digest: self.plan_digest.clone(),
            hard_failures: enc_all(&self.hard_failures),
            soft_failures: enc_all(&self.soft_failures),
        }
    }
    fn decode(p: pb::WorkflowReadiness) -> Result<ReadinessSummary, InvalidRequest> {
        Ok(ReadinessSummary {
            run_id: p.run_id,
            finished_at: Timestamp(p.finished_at_ms),
            plan_digest: p.plan_digest,
            hard_failures: dec_all(p.hard_failures)?,
            soft_failures: dec_all(p.soft_failures)?,
        })
    }
}

impl Wire for HostHardening {
    type Pb = pb::WorkflowHostHardening;
    fn encode(&self) -> pb::WorkflowHostHardening {
        pb::WorkflowHostHardening {
            baseline_applied: self.baseline_applied,
            all_compliant: self.all_compliant,
            verified_after_last_change: self.verified_after_last_change,
            firewall_covers_planned_ports: self.firewall_covers_planned_ports,
            noncompliant: self.noncompliant.clone(),
            firewall_missing_ports: self.firewall_missing_ports.clone(),
        }
    }
    fn decode(p: pb::WorkflowHostHardening) -> Result<HostHardening, InvalidRequest> {
        Ok(HostHardening {
            baseline_applied: p.baseline_applied,
            all_compliant: p.all_compliant,
            verified_after_last_change: p.verified_after_last_change,
            firewall_covers_planned_ports: p.firewall_covers_planned_ports,
            noncompliant: p.noncompliant,
            firewall_missing_ports: p.firewall_missing_ports,
        })
    }
}

impl Wire for HardeningSummary {
    type Pb = pb::WorkflowHardening;
    fn encode(&self) -> pb::WorkflowHardening {
        pb::WorkflowHardening {
            recorded_at_ms: ts(self.recorded_at),
            hosts: self
                .hosts
                .iter()
                .map(|(h, v)| (h.clone(), v.encode()))
                .collect(),
        }
    }
    fn decode(p: pb::WorkflowHardening) -> Result<HardeningSummary, InvalidRequest> {
        Ok(HardeningSummary {
            recorded_at: Timestamp(p.recorded_at_ms),
            hosts: p
                .hosts
                .into_iter()
                .map(|(h, v)| Ok((h, HostHardening::decode(v)?)))
                .collect::<Result<BTreeMap<_, _>, InvalidRequest>>()?,
        })
    }
}

impl Wire for PerfSummary {
    type Pb = pb::WorkflowPerf;
    fn encode(&self) -> pb::WorkflowPerf {
        pb::WorkflowPerf {
            run_id: self.run_id.clone(),
            finished_at_ms: ts(self.finished_at),
            shortfalls: enc_all(&self.shortfalls),
        }
    }
    fn decode(p: pb::WorkflowPerf) -> Result<PerfSummary, InvalidRequest> {
        Ok(PerfSummary {
            run_id: p.run_id,
            finished_at: Timestamp(p.finished_at_ms),
            shortfalls: dec_all(p.shortfalls)?,
        })
    }
}

impl Wire for Risk {
    type Pb = pb::WorkflowRisk;
    fn encode(&self) -> pb::WorkflowRisk {
        pb::WorkflowRisk {
            id: self.id,
            text: self.text.clone(),
            source: self.source.clone(),
            by: self.by.clone(),
            at_ms: ts(self.at),
        }
    }
    fn decode(p: pb::WorkflowRisk) -> Result<Risk, InvalidRequest> {
        Ok(Risk {
            id: p.id,
            text: p.text,
            source: p.source,
            by: p.by,
            at: Timestamp(p.at_ms),
        })
    }
}

impl Wire for RiskFiling {
    type Pb = pb::WorkflowRiskFiling;
    fn encode(&self) -> pb::WorkflowRiskFiling {
        pb::WorkflowRiskFiling {
            risks: self.risks.clone(),
            document: self.document.clone(),
            by: self.by.clone(),
            at_ms: ts(self.at),
            status: self.status.to_i32(),
            review_note: self.review_note.clone(),
        }
    }
    fn decode(p: pb::WorkflowRiskFiling) -> Result<RiskFiling, InvalidRequest> {
        Ok(RiskFiling {
            status: enum_of("filing.status", p.status)?,
            risks: p.risks,
            document: p.document,
            by: p.by,
            at: Timestamp(p.at_ms),
            review_note: p.review_note,
        })
    }
}

impl Wire for Acceptance {
    type Pb = pb::WorkflowAcceptance;
    fn encode(&self) -> pb::WorkflowAcceptance {
        pb::WorkflowAcceptance {
            rating: u32::from(self.rating),
            comment: self.comment.clone(),
            by: self.by.clone(),
            at_ms: ts(self.at),
        }
    }
    fn decode(p: pb::WorkflowAcceptance) -> Result<Acceptance, InvalidRequest> {
        Ok(Acceptance {
            rating: u8::try_from(p.rating)
                .map_err(|_| InvalidRequest::new("acceptance.rating", "out of range"))?,
            comment: p.comment,
            by: p.by,
            at: Timestamp(p.at_ms),
        })
    }
}

impl Wire for QueueJump {
    type Pb = pb::WorkflowQueueJump;
    fn encode(&self) -> pb::WorkflowQueueJump {
        pb::WorkflowQueueJump {
            position: self.position,
            approver: self.approver.clone(),
            reason: self.reason.clone(),
            at_ms: ts(self.at),
        }
    }
    fn decode(p: pb::WorkflowQueueJump) -> Result<QueueJump, InvalidRequest> {
        Ok(QueueJump {
            position: p.position,
            approver: p.approver,
            reason: p.reason,
            at: Timestamp(p.at_ms),
        })
    }
}

impl Wire for PauseRecord {
    type Pb = pb::WorkflowPause;
    fn encode(&self) -> pb::WorkflowPause {
        pb::WorkflowPause {
            stage: self.stage.to_i32(),
            by: Some(self.by.encode()),
            at_ms: ts(self.at),
            reason: self.reason.to_i32(),
            text: self.text.clone(),
            party: self.party.to_i32(),
            items: enc_all(&self.items),
            clock_start_ms: ts(self.clock_start),
            escalated_at_ms: self.escalated_at.map(ts),
            termination_requested: self.termination_requested,
            gd_confirmed_at_ms: self.gd_confirmed_at.map(ts),
        }
    }
    fn decode(p: pb::WorkflowPause) -> Result<PauseRecord, InvalidRequest> {
        Ok(PauseRecord {
            stage: enum_of("pause.stage", p.stage)?,
            by: dec_need("pause.by", p.by)?,
            at: Timestamp(p.at_ms),
            reason: enum_of("pause.reason", p.reason)?,
            text: p.text,
            party: enum_of("pause.party", p.party)?,
            items: dec_all(p.items)?,
            clock_start: Timestamp(p.clock_start_ms),
            escalated_at: p.escalated_at_ms.map(Timestamp),
            termination_requested: p.termination_requested,
            gd_confirmed_at: p.gd_confirmed_at_ms.map(Timestamp),
        })
    }
}

impl Wire for Batch {
    type Pb = pb::WorkflowBatch;
    fn encode(&self) -> pb::WorkflowBatch {
        pb::WorkflowBatch {
            id: self.id.clone(),
            project: self.project.clone(),
            business_line: self.business_line.clone(),
            title: self.title.clone(),
            stage: self.stage.to_i32(),
            holder: self.holder.clone(),
            created_at_ms: ts(self.created_at),
            stage_since_ms: ts(self.stage_since),
            pause: self.pause.as_ref().map(Wire::encode),
            deployer: self.deployer.clone(),
            queued_at_ms: self.queued_at.map(ts),
            deploy_started_at_ms: self.deploy_started_at.map(ts),
            jump: self.jump.as_ref().map(Wire::encode),
            plan: self.plan.as_ref().map(Wire::encode),
            plan_confirmed: self.plan_confirmed.clone(),
            readiness: self.readiness.as_ref().map(Wire::encode),
            hardening: self.hardening.as_ref().map(Wire::encode),
            perf: self.perf.as_ref().map(Wire::encode),
            risks: enc_all(&self.risks),
            filing: self.filing.as_ref().map(Wire::encode),
            acceptance: self.acceptance.as_ref().map(Wire::encode),
        }
    }
    fn decode(p: pb::WorkflowBatch) -> Result<Batch, InvalidRequest> {
        Ok(Batch {
            stage: enum_of("batch.stage", p.stage)?,
            id: p.id,
            project: p.project,
            business_line: p.business_line,
            title: p.title,
            holder: p.holder,
            created_at: Timestamp(p.created_at_ms),
            stage_since: Timestamp(p.stage_since_ms),
            pause: dec_opt(p.pause)?,
            deployer: p.deployer,
            queued_at: p.queued_at_ms.map(Timestamp),
            deploy_started_at: p.deploy_started_at_ms.map(Timestamp),
            jump: dec_opt(p.jump)?,
            plan: dec_opt(p.plan)?,
            plan_confirmed: p.plan_confirmed,
            readiness: dec_opt(p.readiness)?,
            hardening: dec_opt(p.hardening)?,
            perf: dec_opt(p.perf)?,
            risks: dec_all(p.risks)?,
            filing: dec_opt(p.filing)?,
            acceptance: dec_opt(p.acceptance)?,
        })
    }
}

impl Wire for Holder {
    type Pb = pb::WorkflowHolder;
    fn encode(&self) -> pb::WorkflowHolder {
        match self {
            Holder::Person(p) => pb::WorkflowHolder {
                kind: pb::HolderKind::Person.into(),
                person: p.clone(),
                roles: vec![],
            },
            Holder::Roles(r) => pb::WorkflowHolder {
                kind: pb::HolderKind::Roles.into(),
                person: String::new(),
                roles: r.iter().map(|r| r.to_i32()).collect(),
            },
            Holder::Nobody => pb::WorkflowHolder {
                kind: pb::HolderKind::Nobody.into(),
                ..Default::default()
            },
        }
    }
    fn decode(p: pb::WorkflowHolder) -> Result<Holder, InvalidRequest> {
        match pb::HolderKind::try_from(p.kind) {
            Ok(pb::HolderKind::Person) => Ok(Holder::Person(p.person)),
            Ok(pb::HolderKind::Roles) => Ok(Holder::Roles(
                p.roles
                    .into_iter()
                    .map(|r| enum_of("held_by.roles", r))
                    .collect::<Result<_, _>>()?,
            )),
            Ok(pb::HolderKind::Nobody) => Ok(Holder::Nobody),
            _ => Err(InvalidRequest::new(
                "held_by.kind",
                format!("value {} unknown", p.kind),
            )),
        }
    }
}

impl Wire for GateStatus {
    type Pb = pb::WorkflowGateStatus;
    fn encode(&self) -> pb::WorkflowGateStatus {
        pb::WorkflowGateStatus {
            gate: self.gate.to_i32(),
            met: self.met,
            needs: self.needs.clone(),
            missing: self.missing.clone(),
            needs_zh: self.needs_zh.clone(),
            missing_zh: self.missing_zh.clone(),
        }
    }
    fn decode(p: pb::WorkflowGateStatus) -> Result<GateStatus, InvalidRequest> {
        Ok(GateStatus {
            gate: enum_of("gates.gate", p.gate)?,
            met: p.met,
            needs: p.needs,
            missing: p.missing,
            needs_zh: p.needs_zh,
            missing_zh: p.missing_zh,
        })
    }
}

impl Wire for QueueEntry {
    type Pb = pb::WorkflowQueueEntry;
    fn encode(&self) -> pb::WorkflowQueueEntry {
        pb::WorkflowQueueEntry {
            position: self.position,
            batch: self.batch.clone(),
            class: self.class.to_i32(),
            since_ms: ts(self.since),
            jump: self.jump.as_ref().map(Wire::encode),
        }
    }
    fn decode(p: pb::WorkflowQueueEntry) -> Result<QueueEntry, InvalidRequest> {
        Ok(QueueEntry {
            position: p.position,
            class: enum_of("queue.class", p.class)?,
            batch: p.batch,
            since: Timestamp(p.since_ms),
            jump: dec_opt(p.jump)?,
        })
    }
}

impl Wire for Event {
    type Pb = pb::WorkflowEvent;
    fn encode(&self) -> pb::WorkflowEvent {
        use pb::workflow_event::Data as D;
        use pb::WorkflowEventKind as K;
        let (kind, data) = match &self.kind {
            EventKind::DeployerAdded { name } => {
                (K::DeployerAdded, Some(D::DeployerName(name.clone())))
            }
            EventKind::ProjectCreated { project } => {
                (K::ProjectCreated, Some(D::CreatedProject(project.encode())))
            }
            EventKind::ApprovalSet { approval } => {
                (K::ApprovalSet, Some(D::Approval(approval.encode())))
            }
            EventKind::BatchCreated {
                business_line,
                title,
            } => (
                K::BatchCreated,
                Some(D::BatchCreated(pb::BatchCreatedData {
                    business_line: business_line.clone(),
                    title: title.clone(),
                })),
            ),
            EventKind::Advanced => (K::Advanced, None),
            EventKind::PlanAttached { plan } => (K::PlanAttached, Some(D::Plan(plan.encode()))),
            EventKind::PlanConfirmed { digest } => {
                (K::PlanConfirmed, Some(D::ConfirmedDigest(digest.clone())))
            }
            EventKind::ReadinessRecorded { summary } => {
                (K::ReadinessRecorded, Some(D::Readiness(summary.encode())))
            }
            EventKind::HardeningRecorded { summary } => {
                (K::HardeningRecorded, Some(D::Hardening(summary.encode())))
            }
            EventKind::PerfRecorded { summary } => {
                (K::PerfRecorded, Some(D::Perf(summary.encode())))
            }
            EventKind::RiskAdded { risk } => (K::RiskAdded, Some(D::Risk(risk.encode()))),
            EventKind::RisksFiled { filing } => (K::RisksFiled, Some(D::Filing(filing.encode()))),
            EventKind::FilingReviewed { approved, note } => (
                K::FilingReviewed,
                Some(D::Review(pb::FilingReviewedData {
                    approved: *approved,
                    note: note.clone(),
                })),
            ),
            EventKind::AcceptanceRecorded { acceptance } => (
                K::AcceptanceRecorded,
                Some(D::Acceptance(acceptance.encode())),
            ),
            EventKind::Assigned { deployer, balanced } => (
                K::Assigned,
                Some(D::Assigned(pb::AssignedData {
                    deployer: deployer.clone(),
                    balanced: *balanced,
                })),
            ),
            EventKind::DeployStarted => (K::DeployStarted, None),
            EventKind::QueueJumped { jump } => (K::QueueJumped, Some(D::Jump(jump.encode()))),
            EventKind::Paused { pause } => (K::Paused, Some(D::Pause(pause.encode()))),
            EventKind::Resolved { requeued } => (K::Resolved, Some(D::Requeued(*requeued))),
            EventKind::TerminationRequested => (K::TerminationRequested, None),
            EventKind::Escalated => (K::Escalated, None),
            EventKind::GdConfirmedReason => (K::GdConfirmedReason, None),
            EventKind::Terminated => (K::Terminated, None),
        };
        pb::WorkflowEvent {
            seq: self.seq,
            at_ms: ts(self.at),
            by: Some(self.by.encode()),
            batch: self.batch.clone(),
            project: self.project.clone(),
            from: self.from.map(Stage::to_i32),
            to: self.to.map(Stage::to_i32),
            why: self.why.clone(),
            kind: kind.into(),
            data,
        }
    }
    fn decode(p: pb::WorkflowEvent) -> Result<Event, InvalidRequest> {
        use pb::workflow_event::Data as D;
        use pb::WorkflowEventKind as K;
        let kind = K::try_from(p.kind)
            .map_err(|_| InvalidRequest::new("event.kind", format!("value {} unknown", p.kind)))?;
        let mismatch = || InvalidRequest::new("event.data", format!("does not fit kind {kind:?}"));
        let kind = match (kind, p.data) {
            (K::DeployerAdded, Some(D::DeployerName(name))) => EventKind::DeployerAdded { name },
            (K::ProjectCreated, Some(D::CreatedProject(x))) => EventKind::ProjectCreated {
                project: Project::decode(x)?,
            },
            (K::ApprovalSet, Some(D::Approval(x))) => EventKind::ApprovalSet {
                approval: Approval::decode(x)?,
            },
            (K::BatchCreated, Some(D::BatchCreated(x))) => EventKind::BatchCreated {
                business_line: x.business_line,
                title: x.title,
            },
            (K::Advanced, _) => EventKind::Advanced,
            (K::PlanAttached, Some(D::Plan(x))) => EventKind::PlanAttached {
                plan: PlanFacts::decode(x)?,
            },
            (K::PlanConfirmed, Some(D::ConfirmedDigest(digest))) => {
                EventKind::PlanConfirmed { digest }
            }
            (K::ReadinessRecorded, Some(D::Readiness(x))) => EventKind::ReadinessRecorded {
                summary: ReadinessSummary::decode(x)?,
            },
            (K::HardeningRecorded, Some(D::Hardening(x))) => EventKind::HardeningRecorded {
                summary: HardeningSummary::decode(x)?,
            },
            (K::PerfRecorded, Some(D::Perf(x))) => EventKind::PerfRecorded {
                summary: PerfSummary::decode(x)?,
            },
            (K::RiskAdded, Some(D::Risk(x))) => EventKind::RiskAdded {
                risk: Risk::decode(x)?,
            },
            (K::RisksFiled, Some(D::Filing(x))) => EventKind::RisksFiled {
                filing: RiskFiling::decode(x)?,
            },
            (K::FilingReviewed, Some(D::Review(x))) => EventKind::FilingReviewed {
                approved: x.approved,
                note: x.note,
            },
            (K::AcceptanceRecorded, Some(D::Acceptance(x))) => EventKind::AcceptanceRecorded {
                acceptance: Acceptance::decode(x)?,
            },
            (K::Assigned, Some(D::Assigned(x))) => EventKind::Assigned {
                deployer: x.deployer,
                balanced: x.balanced,
            },
            (K::DeployStarted, _) => EventKind::DeployStarted,
            (K::QueueJumped, Some(D::Jump(x))) => EventKind::QueueJumped {
                jump: QueueJump::decode(x)?,
            },
            (K::Paused, Some(D::Pause(x))) => EventKind::Paused {
                pause: PauseRecord::decode(x)?,
            },
            (K::Resolved, Some(D::Requeued(requeued))) => EventKind::Resolved { requeued },
            (K::TerminationRequested, _) => EventKind::TerminationRequested,
            (K::Escalated, _) => EventKind::Escalated,
            (K::GdConfirmedReason, _) => EventKind::GdConfirmedReason,
            (K::Terminated, _) => EventKind::Terminated,
            (K::Unspecified, _) => return Err(InvalidRequest::new("event.kind", "not given")),
            _ => return Err(mismatch()),
        };
        Ok(Event {
            seq: p.seq,
            at: Timestamp(p.at_ms),
            by: dec_need("event.by", p.by)?,
            batch: p.batch,
            project: p.project,
            from: p.from.map(|s| enum_of("event.from", s)).transpose()?,
            to: p.to.map(|s| enum_of("event.to", s)).transpose()?,
            why: p.why,
            kind,
        })
    }
}

impl Wire for BatchView {
    type Pb = pb::WorkflowBatchView;
    fn encode(&self) -> pb::WorkflowBatchView {
        pb::WorkflowBatchView {
            batch: Some(self.batch.encode()),
            stage_zh: self.stage_zh.clone(),
            held_by: Some(self.held_by.encode()),
            gates: enc_all(&self.gates),
            queue: self.queue.as_ref().map(Wire::encode),
            restricted_by: self.restricted_by.clone(),
            escalates_after_ms: self.escalates_after.map(ts),
            history: enc_all(&self.history),
        }
    }
    fn decode(p: pb::WorkflowBatchView) -> Result<BatchView, InvalidRequest> {
        Ok(BatchView {
            batch: dec_need("view.batch", p.batch)?,
            stage_zh: p.stage_zh,
            held_by: dec_need("view.held_by", p.held_by)?,
            gates: dec_all(p.gates)?,
            queue: dec_opt(p.queue)?,
            restricted_by: p.restricted_by,
            escalates_after: p.escalates_after_ms.map(Timestamp),
            history: dec_all(p.history)?,
        })
    }
}

impl Wire for BatchSummary {
    type Pb = pb::WorkflowBatchSummary;
    fn encode(&self) -> pb::WorkflowBatchSummary {
        pb::WorkflowBatchSummary {
            id: self.id.clone(),
            project: self.project.clone(),
            business_line: self.business_line.clone(),
            title: self.title.clone(),
            stage: self.stage.to_i32(),
            stage_zh: self.stage_zh.clone(),
            stage_since_ms: ts(self.stage_since),
            held_by: Some(self.held_by.encode()),
            deployer: self.deployer.clone(),
            pause_reason: self.pause_reason.map(PauseReason::to_i32),
        }
    }
    fn decode(p: pb::WorkflowBatchSummary) -> Result<BatchSummary, InvalidRequest> {
        Ok(BatchSummary {
            stage: enum_of("batches.stage", p.stage)?,
            id: p.id,
            project: p.project,
            business_line: p.business_line,
            title: p.title,
            stage_zh: p.stage_zh,
            stage_since: Timestamp(p.stage_since_ms),
            held_by: dec_need("batches.held_by", p.held_by)?,
            deployer: p.deployer,
            pause_reason: p
                .pause_reason
                .map(|r| enum_of("batches.pause_reason", r))
                .transpose()?,
        })
    }
}

impl Wire for ProjectRow {
    type Pb = pb::WorkflowProjectRow;
    fn encode(&self) -> pb::WorkflowProjectRow {
        pb::WorkflowProjectRow {
            project: Some(self.project.encode()),
            restricted_by: self.restricted_by.clone(),
        }
    }
    fn decode(p: pb::WorkflowProjectRow) -> Result<ProjectRow, InvalidRequest> {
        Ok(ProjectRow {
            project: dec_need("projects.project", p.project)?,
            restricted_by: p.restricted_by,
        })
    }
}

impl Wire for DeployerLoad {
    type Pb = pb::DeployerLoad;
    fn encode(&self) -> pb::DeployerLoad {
        pb::DeployerLoad {
            name: self.name.clone(),
            load: self.load as u64,
        }
    }
    fn decode(p: pb::DeployerLoad) -> Result<DeployerLoad, InvalidRequest> {
        Ok(DeployerLoad {
            name: p.name,
            load: usize::try_from(p.load)
                .map_err(|_| InvalidRequest::new("deployers.load", "out of range"))?,
        })
    }
}

impl Wire for PauseStatsRow {
    type Pb = pb::PauseStatsRow;
    fn encode(&self) -> pb::PauseStatsRow {
        pb::PauseStatsRow {
            key: self.key.clone(),
            count: self.count,
            total_days: self.total_days,
            median_days: self.median_days,
        }
    }
    fn decode(p: pb::PauseStatsRow) -> Result<PauseStatsRow, InvalidRequest> {
        Ok(PauseStatsRow {
            key: p.key,
            count: p.count,
            total_days: p.total_days,
            median_days: p.median_days,
        })
    }
}

/// `ListProjects`: the view as sent.
pub fn projects_reply(v: &ProjectsView, now_ms: i64) -> pb::ProjectsReply {
    pb::ProjectsReply {
        projects: enc_all(&v.projects),
        deployers: enc_all(&v.deployers),
        now_ms,
    }
}

/// `ListProjects`: the view as received.
pub fn projects_view(r: pb::ProjectsReply) -> Result<ProjectsView, InvalidRequest> {
    Ok(ProjectsView {
        projects: dec_all(r.projects)?,
        deployers: dec_all(r.deployers)?,
    })
}

/// `GetQueue`: deployer lists as sent, by deployer name.
pub fn queue_reply(q: &BTreeMap<String, Vec<QueueEntry>>, now_ms: i64) -> pb::QueueReply {
    pb::QueueReply {
        queues: q
            .iter()
            .map(|(d, list)| pb::DeployerQueue {
                deployer: d.clone(),
                entries: enc_all(list),
            })
            .collect(),
        now_ms,
    }
}

/// `GetQueue`: deployer lists as received, by deployer name.
pub fn queues(r: pb::QueueReply) -> Result<BTreeMap<String, Vec<QueueEntry>>, InvalidRequest> {
    r.queues
        .into_iter()
        .map(|q| Ok((q.deployer, dec_all(q.entries)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::workflow::{Command, WorkflowConfig, World};

    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).expect("serialises")
    }

    /// Every variant of every closed set goes out and comes back as itself.
    #[test]
    fn enums_round_trip_and_unset_is_none() {
        fn all<E: WireEnum + PartialEq + std::fmt::Debug>(v: &[E]) {
            for e in v {
                assert_eq!(enum_of::<E>("f", e.to_i32()).as_ref(), Ok(e));
                assert_ne!(e.to_i32(), 0, "{e:?} must not be the unset value");
            }
            let unset = enum_of::<E>("f", 0).unwrap_err().problem;
            assert!(unset.starts_with("not given: use one of "), "{unset}");
            assert_eq!(unset.matches(", ").count() + 1, E::ALL.len(), "{unset}");
            let e = enum_of::<E>("the_field", 1_000).unwrap_err();
            assert_eq!(e.field, "the_field");
            assert!(e.problem.contains("1000"), "{}", e.problem);
        }
        all(&Stage::ALL);
        all(&PauseReason::ALL);
        all(&Party::ALL);
        all(&Role::ALL);
        all(&[
            FilingStatus::Pending,
            FilingStatus::Approved,
            FilingStatus::Rejected,
        ]);
        all(&[
            QueueClass::Deploying,
            QueueClass::Queued,
            QueueClass::Paused,
        ]);
        all(&[
            StatsKey::Reason,
            StatsKey::Party,
            StatsKey::Project,
            StatsKey::Line,
        ]);
        all(&[GdDecision::ConfirmReason, GdDecision::ConfirmTermination]);
        for s in Stage::ALL {
            for g in preflight_core::workflow::gates_of(s) {
                assert_eq!(enum_of::<GateId>("gate", g.to_i32()), Ok(*g));
            }
        }
    }

    /// The words of a proto enum in JSON are the core's words.
    #[test]
    fn enum_words_on_the_wire_are_the_core_words() {
        for s in Stage::ALL {
            assert_eq!(
                preflight_proto::json::name::<pb::WorkflowStage>(s.to_i32()),
                s.id()
            );
        }
        for r in Role::ALL {
            assert_eq!(
                preflight_proto::json::name::<pb::Role>(r.to_i32()),
                r.as_str()
            );
        }
    }

    fn failure(check: &str) -> CheckFailure {
        CheckFailure {
            check: check.into(),
            detail: format!("{check} failed"),
            reason: PauseReason::NetworkPorts,
            party: Party::Customer,
        }
    }

    fn every_event_kind() -> Vec<EventKind> {
        let at = Timestamp(1_780_272_000_000);
        let user = Actor::user("pat", Role::Project);
        vec![
            EventKind::DeployerAdded { name: "amy".into() },
            EventKind::ProjectCreated {
                project: Project {
                    id: "P1".into(),
                    name: "Tax".into(),
                    business_line: "gov".into(),
                    approval: Approval::Exception {
                        approver: "lee".into(),
                        reference: "EX-1".into(),
                    },
                    created_at: at,
                },
            },
            EventKind::ApprovalSet {
                approval: Approval::Approved {
                    budget: "B-7".into(),
                },
            },
            EventKind::ApprovalSet {
                approval: Approval::Pending,
            },
            EventKind::BatchCreated {
                business_line: "gov".into(),
                title: "3 SOA nodes".into(),
            },
            EventKind::Advanced,
            EventKind::PlanAttached {
                plan: PlanFacts {
                    digest: "sha256:ab".into(),
                    hosts: vec!["h1".into(), "h2".into()],
                    incomplete: vec!["no VIP".into()],
                    incomplete_zh: vec!["缺少虚拟IP".into()],
                },
            },
            EventKind::PlanConfirmed {
                digest: "sha256:ab".into(),
            },
            EventKind::ReadinessRecorded {
                summary: ReadinessSummary {
                    run_id: "r1".into(),
                    finished_at: at,
                    plan_digest: "sha256:ab".into(),
                    hard_failures: vec![failure("ports.h1:8080")],
                    soft_failures: vec![failure("disk.h2:/data")],
                },
            },
            EventKind::HardeningRecorded {
                summary: HardeningSummary {
                    recorded_at: at,
                    hosts: [
                        (
                            "h1".to_string(),
                            HostHardening {
                                baseline_applied: true,
                                all_compliant: false,
                                verified_after_last_change: true,
                                firewall_covers_planned_ports: false,
                                noncompliant: vec!["ssh.max_auth_tries".into()],
                                firewall_missing_ports: vec!["9100/tcp".into()],
                            },
                        ),
                        (
                            "h2".to_string(),
                            HostHardening {
                                baseline_applied: true,
                                all_compliant: true,
                                verified_after_last_change: true,
                                firewall_covers_planned_ports: true,
                                noncompliant: vec![],
                                firewall_missing_ports: vec![],
                            },
                        ),
                    ]
                    .into_iter()
                    .collect(),
                },
            },
            EventKind::PerfRecorded {
                summary: PerfSummary {
                    run_id: "p1".into(),
                    finished_at: at,
                    shortfalls: vec![failure("disk.h1:/data")],
                },
            },
            EventKind::RiskAdded {
                risk: Risk {
                    id: 1,
                    text: "slow disk".into(),
                    source: Some("disk.h1:/data".into()),
                    by: "pat".into(),
                    at,
                },
            },
            EventKind::RisksFiled {
                filing: RiskFiling {
                    risks: vec![1],
                    document: "DOC-1".into(),
                    by: "pat".into(),
                    at,
                    status: FilingStatus::Rejected,
                    review_note: Some("name risk 2".into()),
                },
            },
            EventKind::FilingReviewed {
                approved: false,
                note: "again".into(),
            },
            EventKind::AcceptanceRecorded {
                acceptance: Acceptance {
                    rating: 5,
                    comment: "fine".into(),
                    by: "pat".into(),
                    at,
                },
            },
            EventKind::Assigned {
                deployer: "amy".into(),
                balanced: true,
            },
            EventKind::DeployStarted,
            EventKind::QueueJumped {
                jump: QueueJump {
                    position: 2,
                    approver: "lee".into(),
                    reason: "go-live Friday".into(),
                    at,
                },
            },
            EventKind::Paused {
                pause: PauseRecord {
                    stage: Stage::Deploy,
                    by: user.clone(),
                    at,
                    reason: PauseReason::Package,
                    text: "backup missing".into(),
                    party: Party::Project,
                    items: vec![failure("pkg.db")],
                    clock_start: at,
                    escalated_at: Some(at.plus_ms(1)),
                    termination_requested: true,
                    gd_confirmed_at: None,
                },
            },
            EventKind::Resolved { requeued: false },
            EventKind::Resolved { requeued: true },
            EventKind::TerminationRequested,
            EventKind::Escalated,
            EventKind::GdConfirmedReason,
            EventKind::Terminated,
        ]
    }

    #[test]
    fn every_event_round_trips_to_the_same_json() {
        let kinds = every_event_kind();
        let events: Vec<Event> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                seq: i as u64,
                at: Timestamp(1_780_272_000_000 + i as i64),
                by: if i % 2 == 0 {
                    Actor::System
                } else {
                    Actor::user("lee", Role::DeliveryLead)
                },
                batch: (i % 3 != 0).then(|| "B1".to_string()),
                project: (i % 2 == 0).then(|| "P1".to_string()),
                from: (i % 4 != 0).then_some(Stage::Plan),
                to: (i % 5 != 0).then_some(Stage::GdConfirm),
                why: format!("because {i}"),
                kind,
            })
            .collect();
        let back: Vec<Event> = dec_all(enc_all(&events)).expect("decodes");
        assert_eq!(back, events);
        assert_eq!(json(&back), json(&events));
    }

    #[test]
    fn an_event_whose_data_does_not_fit_its_kind_is_refused() {
        let ev = Event {
            seq: 0,
            at: Timestamp(0),
            by: Actor::System,
            batch: None,
            project: None,
            from: None,
            to: None,
            why: String::new(),
            kind: EventKind::PlanConfirmed { digest: "d".into() },
        };
        let mut p = ev.encode();
        p.kind = pb::WorkflowEventKind::Paused.into();
        assert_eq!(Event::decode(p.clone()).unwrap_err().field, "event.data");
        p.kind = 77;
        assert_eq!(Event::decode(p).unwrap_err().field, "event.kind");
        let mut p = ev.encode();
        p.by = None;
        assert_eq!(Event::decode(p).unwrap_err().field, "event.by");
    }

    /// A world with projects, deployers, queued and paused batches: every read reply decodes
    /// to what the core holds, so `--output json` prints the core's own JSON.
    #[test]
    fn read_replies_round_trip_to_the_core_views() {
        let mut w = World::new(WorkflowConfig::default());
        let t = |h: i64| Timestamp(1_780_272_000_000 + h * 3_600_000);
        let admin = Actor::user("adm", Role::Admin);
        let pat = Actor::user("pat", Role::Project);
        let ian = Actor::user("ian", Role::Integrator);
        let run = |w: &mut World, h, who: &Actor, cmd| {
            w.execute(t(h), who, cmd).expect("applies");
        };
        run(
            &mut w,
            0,
            &admin,
            Command::AddDeployer { name: "amy".into() },
        );
        run(
            &mut w,
            0,
            &admin,
            Command::AddDeployer { name: "bob".into() },
        );
        run(
            &mut w,
            0,
            &admin,
            Command::CreateProject {
                id: "P1".into(),
                name: "Tax".into(),
                business_line: "gov".into(),
                approval: Approval::Approved {
                    budget: "B-1".into(),
                },
            },
        );
        for id in ["B1", "B2"] {
            run(
                &mut w,
                1,
                &pat,
                Command::CreateBatch {
                    id: id.into(),
                    project: "P1".into(),
                    business_line: None,
                    title: format!("batch {id}"),
                },
            );
            run(&mut w, 2, &pat, Command::Advance { batch: id.into() });
            run(&mut w, 3, &ian, Command::Advance { batch: id.into() });
            run(&mut w, 4, &pat, Command::Advance { batch: id.into() });
        }
        run(
            &mut w,
            5,
            &pat,
            Command::Pause {
                batch: "B2".into(),
                reason: PauseReason::Planning,
                text: "IPs differ".into(),
                party: Some(Party::Integrator),
            },
        );
        let now = t(24 * 20);
        for id in ["B1", "B2"] {
            let view = w.batch_view(id, now).expect("batch");
            let back = BatchView::decode(view.encode()).expect("decodes");
            assert_eq!(back, view);
            assert_eq!(json(&back), json(&view));
        }
        let list = w.batch_summaries(None);
        assert_eq!(list.len(), 2);
        assert_eq!(dec_all::<BatchSummary>(enc_all(&list)), Ok(list.clone()));
        assert_eq!(list[1].pause_reason, Some(PauseReason::Planning));
        let projects = w.projects_view(now);
        assert_eq!(projects.projects[0].restricted_by.as_deref(), Some("B2"));
        assert_eq!(projects_view(projects_reply(&projects, 0)), Ok(projects));
        let queues = w.queues();
        assert_eq!(queues.len(), 2);
        assert_eq!(super::queues(queue_reply(&queues, 0)), Ok(queues));
        let rows = w.pause_stats(StatsKey::Party, None, now);
        assert!(!rows.is_empty());
        assert_eq!(dec_all::<PauseStatsRow>(enc_all(&rows)), Ok(rows));
    }

    /// `batch list` and `project list` print the keys they printed when the service built
    /// their JSON by hand.
    #[test]
    fn list_json_keeps_its_keys() {
        fn keys(v: &serde_json::Value) -> Vec<String> {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        }
        let b = BatchSummary {
            id: "B1".into(),
            project: "P1".into(),
            business_line: "gov".into(),
            title: "t".into(),
            stage: Stage::Plan,
            stage_zh: Stage::Plan.zh().into(),
            stage_since: Timestamp(5),
            held_by: Holder::Person("amy".into()),
            deployer: None,
            pause_reason: Some(PauseReason::Package),
        };
        let v = json(&b);
        assert_eq!(
            keys(&v),
            [
                "business_line",
                "deployer",
                "held_by",
                "id",
                "pause_reason",
                "project",
                "stage",
                "stage_since",
                "stage_zh",
                "title"
            ]
        );
        assert_eq!(v["stage"], "plan");
        assert_eq!(v["stage_since"], 5);
        assert_eq!(v["held_by"]["value"], "amy");
        assert_eq!(v["pause_reason"], "package");
        let p = ProjectsView {
            projects: vec![ProjectRow {
                project: Project {
                    id: "P1".into(),
                    name: "n".into(),
                    business_line: "gov".into(),
                    approval: Approval::Pending,
                    created_at: Timestamp(0),
                },
                restricted_by: None,
            }],
            deployers: vec![DeployerLoad {
                name: "amy".into(),
                load: 2,
            }],
        };
        let v = json(&p);
        assert_eq!(keys(&v), ["deployers", "projects"]);
        assert_eq!(keys(&v["projects"][0]), ["project", "restricted_by"]);
        assert_eq!(v["projects"][0]["project"]["approval"]["kind"], "pending");
        assert_eq!(keys(&v["deployers"][0]), ["load", "name"]);
        assert_eq!(v["deployers"][0]["load"], 2);
    }

    #[test]
    fn a_reply_missing_a_required_part_names_it() {
        let e = dec_need::<BatchView>("view", None).unwrap_err();
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("view", "missing"));
        let p = pb::WorkflowBatchView {
            batch: None,
            ..Default::default()
        };
        assert_eq!(BatchView::decode(p).unwrap_err().field, "view.batch");
    }
}
