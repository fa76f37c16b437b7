//! Gates: the exit requirement of each stage, evaluated from facts the controller supplies.

use serde::{Deserialize, Serialize};

use super::types::{Batch, CheckFailure, FilingStatus, Stage, Timestamp};
use super::World;

/// Identifier of one exit requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateId {
    /// deploy_request: approved with budget or an exception record.
    ProjectApproved,
    /// deploy_request: no batch of the project paused > 15 days awaiting GD.
    ProjectNotRestricted,
    /// plan: a complete plan is attached.
    PlanComplete,
    /// confirm_plan: the project confirmed the current plan.
    PlanConfirmed,
    /// confirm_plan: a readiness report for this plan, newer than its max age.
    ReadinessFresh,
    /// confirm_plan: that report has no hard failure.
    NoHardFailures,
    /// confirm_plan: every soft failure is listed as a risk.
    SoftFailuresAreRisks,
    /// assign: a deployer is assigned (the batch is in their queue).
    DeployerAssigned,
    /// deploy: deployment has (re)started (a batch returned from a pause is queued again).
    DeploymentStarted,
    /// deploy: baseline hardening applied on every planned host, with evidence.
    BaselineHardening,
    /// harden: every check compliant on every host, verified after the last change, firewall
    /// covers the planned ports.
    HardeningCompliant,
    /// env_check: a performance sweep passed, or each shortfall is a risk.
    PerfPassed,
    /// risk_upload: a filing naming every recorded risk.
    RiskFilingComplete,
    /// risk_review: the filing is approved.
    FilingApproved,
    /// accept: acceptance and rating recorded.
    AcceptanceRecorded,
}

impl GateId {
    /// Stable identifier.
    pub fn id(self) -> &'static str {
        match self {
            GateId::ProjectApproved => "project_approved",
            GateId::ProjectNotRestricted => "project_not_restricted",
            GateId::PlanComplete => "plan_complete",
            GateId::PlanConfirmed => "plan_confirmed",
            GateId::ReadinessFresh => "readiness_fresh",
            GateId::NoHardFailures => "no_hard_failures",
            GateId::SoftFailuresAreRisks => "soft_failures_are_risks",
            GateId::DeployerAssigned => "deployer_assigned",
            GateId::DeploymentStarted => "deployment_started",
            GateId::BaselineHardening => "baseline_hardening",
            GateId::HardeningCompliant => "hardening_compliant",
            GateId::PerfPassed => "perf_passed",
            GateId::RiskFilingComplete => "risk_filing_complete",
            GateId::FilingApproved => "filing_approved",
            GateId::AcceptanceRecorded => "acceptance_recorded",
        }
    }

    /// What the gate needs, in words.
    pub fn needs(self) -> &'static str {
        match self {
            GateId::ProjectApproved => {
                "the project approved (立项) with a budget, or an exception record (approver and reference)"
            }
            GateId::ProjectNotRestricted => {
                "no batch of the project paused more than 15 days that GD has not processed"
            }
            GateId::PlanComplete => {
                "a complete plan attached: servers (IP, hostname, role, apps, ports), required paths, thresholds, VIPs, jump host, package manifest"
            }
            GateId::PlanConfirmed => "the project's confirmation of the current plan",
            GateId::ReadinessFresh => "a readiness report for the current plan, newer than its max age",
            GateId::NoHardFailures => "a readiness report without hard failures",
            GateId::SoftFailuresAreRisks => "every soft readiness failure listed as a risk",
            GateId::DeployerAssigned => "a deployer assigned (the batch in that deployer's queue)",
            GateId::DeploymentStarted => "deployment started by the assigned deployer",
            GateId::BaselineHardening => {
                "baseline hardening (account policy, firewall) applied on every planned server, with evidence"
            }
            GateId::HardeningCompliant => {
                "every hardening check compliant on every server, verified after the last change, firewall allow-list covering all planned ports"
            }
            GateId::PerfPassed => "a passed performance sweep, or every shortfall listed as a risk",
            GateId::RiskFilingComplete => "a risk filing naming every risk recorded for the batch",
            GateId::FilingApproved => "the risk filing approved by a reviewer",
            GateId::AcceptanceRecorded => "acceptance and a rating recorded",
        }
    }
}

/// The evaluation of one gate for one batch at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    /// Which gate.
    pub gate: GateId,
    /// Whether it is met.
    pub met: bool,
    /// What it needs, in words.
    pub needs: String,
    /// Why it is not met (empty when met).
    pub missing: Vec<String>,
}

/// The gates a batch must pass to leave `stage`, in order.
pub fn gates_of(stage: Stage) -> &'static [GateId] {
    match stage {
        Stage::DeployRequest => &[GateId::ProjectApproved, GateId::ProjectNotRestricted],
        Stage::Plan => &[GateId::PlanComplete],
        Stage::ConfirmPlan => &[
            GateId::PlanConfirmed,
            GateId::ReadinessFresh,
            GateId::NoHardFailures,
            GateId::SoftFailuresAreRisks,
        ],
        Stage::Assign => &[GateId::DeployerAssigned],
        Stage::Deploy => &[GateId::DeploymentStarted, GateId::BaselineHardening],
        Stage::Harden => &[GateId::HardeningCompliant],
        Stage::EnvCheck => &[GateId::PerfPassed],
        Stage::RiskUpload => &[GateId::RiskFilingComplete],
        Stage::RiskReview => &[GateId::FilingApproved],
        Stage::Accept => &[GateId::AcceptanceRecorded],
        _ => &[],
    }
}

fn risk_sources(batch: &Batch) -> impl Iterator<Item = &str> {
    batch.risks.iter().filter_map(|r| r.source.as_deref())
}

fn unlisted(batch: &Batch, failures: &[CheckFailure]) -> Vec<String> {
    failures
        .iter()
        .filter(|f| !risk_sources(batch).any(|s| s == f.check))
        .map(|f| format!("{} ({}) is not listed as a risk", f.check, f.detail))
        .collect()
}

impl World {
    /// Evaluate one gate for a batch at `now`.
    pub fn gate_status(&self, batch: &Batch, gate: GateId, now: Timestamp) -> GateStatus {
        let missing = self.gate_missing(batch, gate, now);
        GateStatus {
            gate,
            met: missing.is_empty(),
            needs: gate.needs().to_string(),
            missing,
        }
    }

    /// Evaluate the gates of the batch's current stage (for `batch show`).
    pub fn gates(&self, batch: &Batch, now: Timestamp) -> Vec<GateStatus> {
        self.gates_at(batch, batch.stage, now)
    }

    /// Evaluate the gates of any stage for a batch.
    pub fn gates_at(&self, batch: &Batch, stage: Stage, now: Timestamp) -> Vec<GateStatus> {
        gates_of(stage)
            .iter()
            .map(|g| self.gate_status(batch, *g, now))
            .collect()
    }

    fn gate_missing(&self, batch: &Batch, gate: GateId, now: Timestamp) -> Vec<String> {
        let mut missing = Vec::new();
        match gate {
            GateId::ProjectApproved => match self.projects.get(&batch.project) {
                Some(p) if p.approval.is_granted() => {}
                Some(p) => missing.push(format!(
                    "project {} has neither approval with budget nor an exception record",
                    p.id
                )),
                None => missing.push(format!("project {} does not exist", batch.project)),
            },
            GateId::ProjectNotRestricted => {
                if let Some(blocking) = self.restriction(&batch.project, now) {
                    missing.push(format!(
                        "batch {blocking} has been paused more than 15 days and GD has not processed it"
                    ));
                }
            }
            GateId::PlanComplete => match &batch.plan {
                None => missing.push("no plan attached".to_string()),
                Some(p) => {
                    if p.hosts.is_empty() {
                        missing.push("the plan lists no servers".to_string());
                    }
                    missing.extend(p.incomplete.iter().cloned());
                }
            },
            GateId::PlanConfirmed => match (&batch.plan, &batch.plan_confirmed) {
                (None, _) => missing.push("no plan attached".to_string()),
                (Some(_), None) => missing.push("the project has not confirmed the plan".into()),
                (Some(p), Some(d)) if *d != p.digest => missing.push(format!(
                    "the project confirmed plan {d}, the current plan is {}",
                    p.digest
                )),
                _ => {}
            },
            GateId::ReadinessFresh => match (&batch.plan, &batch.readiness) {
                (None, _) => missing.push("no plan attached".to_string()),
                (_, None) => missing.push("no readiness report".to_string()),
                (Some(p), Some(r)) => {
                    if r.plan_digest != p.digest {
                        missing.push(format!(
                            "readiness run {} checked plan {}, the current plan is {}",
                            r.run_id, r.plan_digest, p.digest
                        ));
                    }
                    let age = now.since(r.finished_at);
                    if age > self.config.readiness_max_age_ms {
                        missing.push(format!(
                            "readiness run {} is {} s old, the max age is {} s: run a new sweep",
                            r.run_id,
                            age / 1000,
                            self.config.readiness_max_age_ms / 1000
                        ));
                    }
                }
            },
            GateId::NoHardFailures => match &batch.readiness {
                None => missing.push("no readiness report".to_string()),
                Some(r) => missing.extend(
                    r.hard_failures
                        .iter()
                        .map(|f| format!("{}: {} (fix: {})", f.check, f.detail, f.party.id())),
                ),
            },
            GateId::SoftFailuresAreRisks => {
                if let Some(r) = &batch.readiness {
                    missing.extend(unlisted(batch, &r.soft_failures));
                }
            }
            GateId::DeployerAssigned => {
                if batch.deployer.is_none() {
                    missing.push("no deployer assigned".to_string());
                }
            }
            GateId::DeploymentStarted => {
                if batch.deploy_started_at.is_none() {
                    missing.push(
                        "the batch returned from a pause and is queued: the deployer must start it again"
                            .to_string(),
                    );
                }
            }
            GateId::BaselineHardening | GateId::HardeningCompliant => {
                let Some(plan) = &batch.plan else {
                    missing.push("no plan attached".to_string());
                    return missing;
                };
                let Some(h) = &batch.hardening else {
                    missing.push("no hardening evidence".to_string());
                    return missing;
                };
                for host in &plan.hosts {
                    let Some(hh) = h.hosts.get(host) else {
                        missing.push(format!("{host}: no hardening evidence"));
                        continue;
                    };
                    if !hh.baseline_applied {
                        missing.push(format!("{host}: baseline hardening not applied"));
                    }
                    if gate == GateId::HardeningCompliant {
                        if !hh.all_compliant || !hh.noncompliant.is_empty() {
                            let checks = if hh.noncompliant.is_empty() {
                                "some checks".to_string()
                            } else {
                                hh.noncompliant.join(", ")
                            };
                            missing.push(format!("{host}: not compliant: {checks}"));
                        }
                        if !hh.verified_after_last_change {
                            missing.push(format!("{host}: not verified after the last change"));
                        }
                        if !hh.firewall_missing_ports.is_empty() {
                            missing.push(format!(
                                "{host}: firewall allow-list lacks planned ports {}",
                                hh.firewall_missing_ports.join(", ")
                            ));
                        } else if !hh.firewall_covers_planned_ports {
                            missing.push(format!(
                                "{host}: firewall allow-list does not cover all planned ports"
                            ));
                        }
                    }
                }
            }
            GateId::PerfPassed => match &batch.perf {
                None => missing.push("no performance sweep".to_string()),
                Some(p) => missing.extend(unlisted(batch, &p.shortfalls)),
            },
            GateId::RiskFilingComplete => match &batch.filing {
                None => missing.push("no risk filing uploaded".to_string()),
                Some(f) if f.status == FilingStatus::Rejected => {
                    missing.push("the last filing was rejected: upload a new one".to_string())
                }
                Some(f) => missing.extend(
                    batch
                        .risks
                        .iter()
                        .filter(|r| !f.risks.contains(&r.id))
                        .map(|r| format!("risk {} ({}) is not in the filing", r.id, r.text)),
                ),
            },
            GateId::FilingApproved => match &batch.filing {
                Some(f) if f.status == FilingStatus::Approved => {}
                Some(_) => missing.push("the filing is not approved".to_string()),
                None => missing.push("no risk filing uploaded".to_string()),
            },
            GateId::AcceptanceRecorded => {
                if batch.acceptance.is_none() {
                    missing.push("no acceptance recorded".to_string());
                }
            }
        }
        missing
    }
}
