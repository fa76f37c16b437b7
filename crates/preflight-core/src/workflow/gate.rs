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

    /// What the gate needs, in Chinese (`--lang zh`).
    pub fn needs_zh(self) -> &'static str {
        match self {
            GateId::ProjectApproved => "项目已立项并有预算，或有例外记录（审批人和依据）",
            GateId::ProjectNotRestricted => "本项目没有暂停超过 15 天且 GD 尚未处理的批次",
            GateId::PlanComplete => {
                "已附上完整的规划：服务器（IP、主机名、角色、应用、端口）、必需路径、阈值、虚拟IP、跳板机、安装包清单"
            }
            GateId::PlanConfirmed => "项目组已确认当前规划",
            GateId::ReadinessFresh => "有针对当前规划、且未超过有效期的就绪检查报告",
            GateId::NoHardFailures => "就绪检查报告中没有硬性失败项",
            GateId::SoftFailuresAreRisks => "就绪检查的每个软性失败项都已登记为风险",
            GateId::DeployerAssigned => "已安排部署人员（批次在该部署人员的队列中）",
            GateId::DeploymentStarted => "已安排的部署人员已开始部署",
            GateId::BaselineHardening => {
                "规划中的每台服务器都已完成基线加固（账号策略、防火墙），并有证据"
            }
            GateId::HardeningCompliant => {
                "每台服务器的每项加固检查都合规，且在最后一次变更后复核过，防火墙白名单覆盖全部规划端口"
            }
            GateId::PerfPassed => "性能检测已通过，或每个不达标项都已登记为风险",
            GateId::RiskFilingComplete => "已上传风险备案，且列出本批次登记的全部风险",
            GateId::FilingApproved => "风险备案已由审核人批准",
            GateId::AcceptanceRecorded => "已记录验收结果和评价",
        }
    }
}

/// Acronyms Chinese text may keep as they are: the specs' own Chinese uses them
/// (`GD确认暂停原因`, `集群缺少虚拟IP`, `VPN不可用`).
pub const ZH_ALLOWED_ACRONYMS: &[&str] = &["GD", "IP", "VPN"];

/// The rule every Chinese text of the workflow follows: outside `backticks` (ids, commands,
/// plan keys, host names) and 「corner quotes」 (text a person typed, shown verbatim) there
/// are no ASCII letters except the acronyms in [`ZH_ALLOWED_ACRONYMS`] standing as whole
/// words; and there is at least one Chinese character. `Err` names the offending fragment.
pub fn check_zh_text(s: &str) -> Result<(), String> {
    if !s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
        return Err(format!("no Chinese in {s:?}"));
    }
    let mut outside = String::new();
    let mut in_tick = false;
    let mut quote_depth = 0usize;
    for c in s.chars() {
        match c {
            '`' if quote_depth == 0 => {
                in_tick = !in_tick;
                outside.push(' ');
            }
            '「' if !in_tick => quote_depth += 1,
            '」' if !in_tick && quote_depth > 0 => quote_depth -= 1,
            _ if in_tick || quote_depth > 0 => {}
            _ => outside.push(c),
        }
    }
    if in_tick || quote_depth > 0 {
        return Err(format!("unbalanced backticks or quotes in {s:?}"));
    }
    let mut word = String::new();
    for c in outside.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else if !word.is_empty() {
            if !ZH_ALLOWED_ACRONYMS.contains(&word.as_str()) {
                return Err(format!("English {word:?} outside backticks in {s:?}"));
            }
            word.clear();
        }
    }
    Ok(())
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
    /// `needs` in Chinese (`--lang zh`; empty from a controller that predates it).
    #[serde(default)]
    pub needs_zh: String,
    /// `missing` in Chinese, item by item (empty from a controller that predates it).
    #[serde(default)]
    pub missing_zh: Vec<String>,
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

/// One missing item, in English and Chinese.
struct Miss {
    en: String,
    zh: String,
}

/// The missing items of a gate, each in both languages.
#[derive(Default)]
struct Misses(Vec<Miss>);

impl Misses {
    fn push(&mut self, en: impl Into<String>, zh: impl Into<String>) {
        self.0.push(Miss {
            en: en.into(),
            zh: zh.into(),
        });
    }
}

/// Ids and values inside Chinese text, in backticks.
fn tick(v: impl std::fmt::Display) -> String {
    format!("`{v}`")
}

fn ticks(vs: &[String]) -> String {
    vs.iter().map(tick).collect::<Vec<_>>().join("、")
}

fn unlisted(batch: &Batch, failures: &[CheckFailure], out: &mut Misses) {
    for f in failures
        .iter()
        .filter(|f| !risk_sources(batch).any(|s| s == f.check))
    {
        out.push(
            format!("{} ({}) is not listed as a risk", f.check, f.detail),
            format!("{}（{}）尚未登记为风险", tick(&f.check), f.reason.zh()),
        );
    }
}

impl World {
    /// Evaluate one gate for a batch at `now`.
    pub fn gate_status(&self, batch: &Batch, gate: GateId, now: Timestamp) -> GateStatus {
        let m = self.gate_missing(batch, gate, now);
        GateStatus {
            gate,
            met: m.0.is_empty(),
            needs: gate.needs().to_string(),
            missing: m.0.iter().map(|x| x.en.clone()).collect(),
            needs_zh: gate.needs_zh().to_string(),
            missing_zh: m.0.into_iter().map(|x| x.zh).collect(),
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

    fn gate_missing(&self, batch: &Batch, gate: GateId, now: Timestamp) -> Misses {
        let mut missing = Misses::default();
        const NO_PLAN: (&str, &str) = ("no plan attached", "尚未附上规划");
        const NO_READINESS: (&str, &str) = ("no readiness report", "没有就绪检查报告");
        const NO_FILING: (&str, &str) = ("no risk filing uploaded", "尚未上传风险备案");
        match gate {
            GateId::ProjectApproved => match self.projects.get(&batch.project) {
                Some(p) if p.approval.is_granted() => {}
                Some(p) => missing.push(
                    format!(
                        "project {} has neither approval with budget nor an exception record",
                        p.id
                    ),
                    format!("项目 {} 既未立项获批预算，也没有例外记录", tick(&p.id)),
                ),
                None => missing.push(
                    format!("project {} does not exist", batch.project),
                    format!("项目 {} 不存在", tick(&batch.project)),
                ),
            },
            GateId::ProjectNotRestricted => {
                if let Some(blocking) = self.restriction(&batch.project, now) {
                    missing.push(
                        format!(
                            "batch {blocking} has been paused more than 15 days and GD has not processed it"
                        ),
                        format!("批次 {} 已暂停超过 15 天，GD 尚未处理", tick(&blocking)),
                    );
                }
            }
            GateId::PlanComplete => match &batch.plan {
                None => missing.push(NO_PLAN.0, NO_PLAN.1),
                Some(p) => {
                    if p.hosts.is_empty() {
                        missing.push("the plan lists no servers", "规划中没有服务器");
                    }
                    let zh_known = p.incomplete_zh.len() == p.incomplete.len();
                    for (i, en) in p.incomplete.iter().enumerate() {
                        let zh = if zh_known {
                            p.incomplete_zh[i].clone()
                        } else {
                            // Recorded before the Chinese texts existed.
                            "规划尚不完整：详情请用 `--lang en` 查看".to_string()
                        };
                        missing.push(en.clone(), zh);
                    }
                }
            },
            GateId::PlanConfirmed => match (&batch.plan, &batch.plan_confirmed) {
                (None, _) => missing.push(NO_PLAN.0, NO_PLAN.1),
                (Some(_), None) => missing.push(
                    "the project has not confirmed the plan",
                    "项目组尚未确认规划",
                ),
                (Some(p), Some(d)) if *d != p.digest => missing.push(
                    format!(
                        "the project confirmed plan {d}, the current plan is {}",
                        p.digest
                    ),
                    format!(
                        "项目组确认的是规划 {}，当前规划是 {}",
                        tick(d),
                        tick(&p.digest)
                    ),
                ),
                _ => {}
            },
            GateId::ReadinessFresh => match (&batch.plan, &batch.readiness) {
                (None, _) => missing.push(NO_PLAN.0, NO_PLAN.1),
                (_, None) => missing.push(NO_READINESS.0, NO_READINESS.1),
                (Some(p), Some(r)) => {
                    if r.plan_digest != p.digest {
                        missing.push(
                            format!(
                                "readiness run {} checked plan {}, the current plan is {}",
                                r.run_id, r.plan_digest, p.digest
                            ),
                            format!(
                                "就绪检查 {} 检查的是规划 {}，当前规划是 {}",
                                tick(&r.run_id),
                                tick(&r.plan_digest),
                                tick(&p.digest)
                            ),
                        );
                    }
                    let age = now.since(r.finished_at);
                    if age > self.config.readiness_max_age_ms {
                        missing.push(
                            format!(
                                "readiness run {} is {} s old, the max age is {} s: run a new sweep",
                                r.run_id,
                                age / 1000,
                                self.config.readiness_max_age_ms / 1000
                            ),
                            format!(
                                "就绪检查 {} 已过去 {} 秒，有效期为 {} 秒：请重新运行一次检查",
                                tick(&r.run_id),
                                age / 1000,
                                self.config.readiness_max_age_ms / 1000
                            ),
                        );
                    }
                }
            },
            GateId::NoHardFailures => match &batch.readiness {
                None => missing.push(NO_READINESS.0, NO_READINESS.1),
                Some(r) => {
                    for f in &r.hard_failures {
                        missing.push(
                            format!("{}: {} (fix: {})", f.check, f.detail, f.party.id()),
                            format!(
                                "{}：{}（由{}解决）",
                                tick(&f.check),
                                f.reason.zh(),
                                f.party.zh()
                            ),
                        );
                    }
                }
            },
            GateId::SoftFailuresAreRisks => {
                if let Some(r) = &batch.readiness {
                    unlisted(batch, &r.soft_failures, &mut missing);
                }
            }
            GateId::DeployerAssigned => {
                if batch.deployer.is_none() {
                    missing.push("no deployer assigned", "尚未安排部署人员");
                }
            }
            GateId::DeploymentStarted => {
                if batch.deploy_started_at.is_none() {
                    missing.push(
                        "the batch returned from a pause and is queued: the deployer must start it again",
                        "批次暂停后已恢复，正在排队：部署人员需要重新开始部署",
                    );
                }
            }
            GateId::BaselineHardening | GateId::HardeningCompliant => {
                let Some(plan) = &batch.plan else {
                    missing.push(NO_PLAN.0, NO_PLAN.1);
                    return missing;
                };
                let Some(h) = &batch.hardening else {
                    missing.push("no hardening evidence", "没有加固证据");
                    return missing;
                };
                for host in &plan.hosts {
                    let Some(hh) = h.hosts.get(host) else {
                        missing.push(
                            format!("{host}: no hardening evidence"),
                            format!("{}：没有加固证据", tick(host)),
                        );
                        continue;
                    };
                    if !hh.baseline_applied {
                        missing.push(
                            format!("{host}: baseline hardening not applied"),
                            format!("{}：尚未完成基线加固", tick(host)),
                        );
                    }
                    if gate == GateId::HardeningCompliant {
                        if !hh.all_compliant || !hh.noncompliant.is_empty() {
                            let (checks, checks_zh) = if hh.noncompliant.is_empty() {
                                ("some checks".to_string(), "部分检查项".to_string())
                            } else {
                                (hh.noncompliant.join(", "), ticks(&hh.noncompliant))
                            };
                            missing.push(
                                format!("{host}: not compliant: {checks}"),
                                format!("{}：不合规：{checks_zh}", tick(host)),
                            );
                        }
                        if !hh.verified_after_last_change {
                            missing.push(
                                format!("{host}: not verified after the last change"),
                                format!("{}：最后一次变更后尚未复核", tick(host)),
                            );
                        }
                        if !hh.firewall_missing_ports.is_empty() {
                            missing.push(
                                format!(
                                    "{host}: firewall allow-list lacks planned ports {}",
                                    hh.firewall_missing_ports.join(", ")
                                ),
                                format!(
                                    "{}：防火墙白名单缺少规划端口 {}",
                                    tick(host),
                                    ticks(&hh.firewall_missing_ports)
                                ),
                            );
                        } else if !hh.firewall_covers_planned_ports {
                            missing.push(
                                format!(
                                    "{host}: firewall allow-list does not cover all planned ports"
                                ),
                                format!("{}：防火墙白名单未覆盖全部规划端口", tick(host)),
                            );
                        }
                    }
                }
            }
            GateId::PerfPassed => match &batch.perf {
                None => missing.push("no performance sweep", "没有性能检测结果"),
                Some(p) => unlisted(batch, &p.shortfalls, &mut missing),
            },
            GateId::RiskFilingComplete => match &batch.filing {
                None => missing.push(NO_FILING.0, NO_FILING.1),
                Some(f) if f.status == FilingStatus::Rejected => missing.push(
                    "the last filing was rejected: upload a new one",
                    "上一次备案已被驳回：请重新上传",
                ),
                Some(f) => {
                    for r in batch.risks.iter().filter(|r| !f.risks.contains(&r.id)) {
                        missing.push(
                            format!("risk {} ({}) is not in the filing", r.id, r.text),
                            format!("风险 {}（「{}」）不在备案中", r.id, r.text),
                        );
                    }
                }
            },
            GateId::FilingApproved => match &batch.filing {
                Some(f) if f.status == FilingStatus::Approved => {}
                Some(_) => missing.push("the filing is not approved", "风险备案尚未批准"),
                None => missing.push(NO_FILING.0, NO_FILING.1),
            },
            GateId::AcceptanceRecorded => {
                if batch.acceptance.is_none() {
                    missing.push("no acceptance recorded", "尚未记录验收");
                }
            }
        }
        missing
    }
}
