//! The Readiness service: converts each request into the sweep engine's terms
//! (`crate::engine::sweep`), refusing a bad field by name, and the engine's answers into
//! wire messages. The sweep itself (slots, per-server phase, network phase, recording) is the
//! engine's.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::stream::{BoxStream, StreamExt};
use preflight_core::net::Proto;
use preflight_core::plan::{Plan, MAX_PLAN_BYTES};
use preflight_core::readiness::{self, CheckGroup};
use preflight_core::role::Role;
use preflight_core::workflow::{Actor, Command, Party, PauseReason, ReadinessSummary};
use preflight_proto::v1 as pb;
use preflight_store::sweeps::{SweepRecord, TargetRecord};
use preflight_store::{Store, StoreError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agents::AgentPool;
use crate::auth::authorize;
use crate::engine::sweep::{
    self, BatchFacts, Caller, Opts, Progress, SweepEnv, SweepError, SweepRequest, SweepSlots,
    Wanted, DEFAULT_CONCURRENCY, DEFAULT_MEASURE_MS, MAX_CONCURRENCY, MAX_MEASURE_MS,
    MIN_MEASURE_MS,
};
use crate::error::{store_status, InvalidRequest};
use crate::wire::WireEnum;
use crate::{Clock, Shared};

pub(crate) struct ReadinessSvc(pub Arc<Shared>);

/// Roles allowed to call each RPC of the Readiness service (`preflight_core::role::rpc_roles`).
fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Readiness", rpc).unwrap_or(&[])
}

impl From<SweepError> for Status {
    fn from(e: SweepError) -> Status {
        let msg = e.to_string();
        match e {
            SweepError::Store(e) => store_status(e),
            SweepError::NoBatch(_) | SweepError::NoRun(_) | SweepError::NoneStored => {
                Status::not_found(msg)
            }
            SweepError::NoPlanAttached(_)
            | SweepError::PlanTextMissing { .. }
            | SweepError::Busy { .. }
            | SweepError::NotRunning { .. } => Status::failed_precondition(msg),
            SweepError::StoredPlanUnreadable { .. } => Status::internal(msg),
            SweepError::Full { .. } => Status::resource_exhausted(msg),
            SweepError::EndedWithoutReport(_) => Status::unavailable(msg),
        }
    }
}

/// The engine's view of the controller.
impl SweepEnv for Shared {
    fn store(&self) -> &Store {
        &self.store
    }
    fn agents(&self) -> &AgentPool {
        &self.agents
    }
    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
    fn slots(&self) -> &SweepSlots {
        &self.sweeps
    }
    async fn batch(&self, batch: &str) -> Option<BatchFacts> {
        self.workflow
            .read(|w| {
                w.batch(batch).map(|b| BatchFacts {
                    project: b.project.clone(),
                    plan_digest: b.plan.as_ref().map(|p| p.digest.clone()),
                    readiness_run: b.readiness.as_ref().map(|r| r.run_id.clone()),
                })
            })
            .await
    }
    fn plan_text(&self, digest: &str) -> Result<Option<String>, StoreError> {
        self.workflow.plan_text(digest)
    }
    async fn record_readiness(
        &self,
        now_ms: i64,
        batch: &str,
        summary: ReadinessSummary,
    ) -> Result<(), String> {
        let cmd = Command::RecordReadiness {
            batch: batch.to_string(),
            summary,
        };
        crate::engine::workflow::execute(&self.workflow, self, now_ms, &Actor::System, cmd, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn valid_label(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 64
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A batch label as requests give it (shown cut, since a refused one may be huge).
fn batch_label(b: &str, or_none: bool) -> Result<(), InvalidRequest> {
    if valid_label(b) {
        return Ok(());
    }
    Err(InvalidRequest::new(
        "batch",
        format!(
            "the batch {:?} is not a valid id: use 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'{}",
            b.chars().take(64).collect::<String>(),
            if or_none { " (or none for all)" } else { "" }
        ),
    ))
}

impl TryFrom<pb::RunSweepRequest> for SweepRequest {
    type Error = InvalidRequest;

    fn try_from(r: pb::RunSweepRequest) -> Result<Self, InvalidRequest> {
        batch_label(&r.batch, false)?;
        if r.plan_toml.len() > MAX_PLAN_BYTES {
            return Err(InvalidRequest::new(
                "the plan file",
                format!(
                    "{} bytes; at most {MAX_PLAN_BYTES} are accepted",
                    r.plan_toml.len()
                ),
            ));
        }
        if r.concurrency > MAX_CONCURRENCY {
            return Err(InvalidRequest::new(
                "concurrency",
                format!(
                    "{} is over the cap of {MAX_CONCURRENCY}: ask fewer agents at once",
                    r.concurrency
                ),
            ));
        }
        let mut skip = BTreeSet::new();
        for &k in &r.skip {
            let group = pb::CheckGroup::try_from(k)
                .ok()
                .and_then(|g| CheckGroup::try_from(g).ok())
                .ok_or_else(|| {
                    InvalidRequest::new(
                        "skip",
                        format!(
                            "value {k} is not a check this controller can leave out: use one of {}",
                            readiness::SKIPPABLE.join(", ")
                        ),
                    )
                })?;
            skip.insert(group);
        }
        let measure_ms = match r.measure_ms {
            0 => DEFAULT_MEASURE_MS,
            ms if (MIN_MEASURE_MS..=MAX_MEASURE_MS).contains(&ms) => ms,
            ms => {
                return Err(InvalidRequest::new(
                    "measure_ms",
                    format!(
                        "{ms} is out of range: use {MIN_MEASURE_MS} to {MAX_MEASURE_MS} (0: {DEFAULT_MEASURE_MS})"
                    ),
                ))
            }
        };
        let plan = if r.plan_toml.is_empty() {
            None
        } else {
            let name = if r.plan_name.is_empty() {
                "plan.toml"
            } else {
                r.plan_name.as_str()
            };
            let p = Plan::from_toml(name, &r.plan_toml).map_err(|e| {
                let lines: Vec<String> = e.to_string().lines().take(20).map(String::from).collect();
                InvalidRequest::new("the plan file", format!("invalid:\n{}", lines.join("\n")))
            })?;
            Some(p)
        };
        let concurrency = match r.concurrency {
            0 => DEFAULT_CONCURRENCY,
            n => n,
        } as usize;
        Ok(SweepRequest {
            batch: r.batch,
            plan,
            concurrency,
            opts: Opts { skip, measure_ms },
        })
    }
}

/// A run id as requests give it: 0 is no run.
struct RunId(u64);

fn run_id(id: u64) -> Result<RunId, InvalidRequest> {
    if id == 0 {
        return Err(InvalidRequest::new(
            "run_id",
            "missing: give the run's number (`preflight sweeps` lists them)",
        ));
    }
    Ok(RunId(id))
}

impl TryFrom<pb::AttachSweepRequest> for RunId {
    type Error = InvalidRequest;
    fn try_from(r: pb::AttachSweepRequest) -> Result<Self, InvalidRequest> {
        run_id(r.run_id)
    }
}

impl TryFrom<pb::CancelSweepRequest> for RunId {
    type Error = InvalidRequest;
    fn try_from(r: pb::CancelSweepRequest) -> Result<Self, InvalidRequest> {
        run_id(r.run_id)
    }
}

/// The batch whose runs are listed (`None`: all).
struct ListOf(Option<String>);

impl TryFrom<pb::ListSweepsRequest> for ListOf {
    type Error = InvalidRequest;
    fn try_from(r: pb::ListSweepsRequest) -> Result<Self, InvalidRequest> {
        if r.batch.is_empty() {
            return Ok(ListOf(None));
        }
        batch_label(&r.batch, true)?;
        Ok(ListOf(Some(r.batch)))
    }
}

impl TryFrom<pb::GetSweepRequest> for Wanted {
    type Error = InvalidRequest;
    fn try_from(r: pb::GetSweepRequest) -> Result<Self, InvalidRequest> {
        if r.run_id != 0 {
            return Ok(Wanted::Run(r.run_id));
        }
        let ListOf(batch) = ListOf::try_from(pb::ListSweepsRequest { batch: r.batch })?;
        Ok(Wanted::Latest(batch))
    }
}

/// A plan file decides what the agents probe: unless it is the batch's attached plan (attached
/// by an integrator), only the roles of `RunSweepPlanFile` may sweep it.
async fn plan_file_allowed(s: &Shared, batch: &str, plan: &Plan, role: Role) -> Result<(), Status> {
    let roles = allowed("RunSweepPlanFile");
    if roles.contains(&role) {
        return Ok(());
    }
    let attached = SweepEnv::batch(s, batch)
        .await
        .and_then(|b| b.plan_digest)
        .is_some_and(|d| d == plan.digest());
    if attached {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(Status::permission_denied(format!(
        "role {role} may sweep a batch's attached plan (`preflight sweep {batch}`), not another plan file: a plan file is swept by {}; or an integrator attaches it first with `preflight plan attach {batch} FILE`",
        names.join(", ")
    )))
}

/// A stored run on the wire (`with_findings` false for listings).
pub(crate) fn to_pb(r: &SweepRecord, with_findings: bool) -> pb::SweepReport {
    let count = |v: &str| r.findings.iter().filter(|f| f.verdict == v).count() as u32;
    pb::SweepReport {
        run_id: r.run_id,
        batch: r.batch.clone(),
        plan_digest: r.plan_digest.clone(),
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        state: state_pb(&r.state) as i32,
        passed: count("pass"),
        soft: count("soft"),
        hard: count("hard"),
        findings: if with_findings {
            r.findings
                .iter()
                .map(|f| pb::SweepFinding {
                    server: f.server.clone(),
                    check: f.check.clone(),
                    verdict: verdict_pb(&f.verdict) as i32,
                    party: word_pb::<Party>(&f.party),
                    reason: word_pb::<PauseReason>(&f.reason),
                    message: f.message.clone(),
                    message_zh: f.message_zh.clone(),
                    fix: f.fix.clone(),
                    fix_zh: f.fix_zh.clone(),
                    measured: f.measured,
                    threshold: f.threshold,
                    unit: unit_pb(&f.unit) as i32,
                    target: sweep::target_of(f).as_ref().map(target_pb),
                })
                .collect()
        } else {
            vec![]
        },
        // A stored word this build does not know: unspecified.
        skipped: r
            .skipped
            .iter()
            .map(|w| {
                CheckGroup::from_word(w).map_or(pb::CheckGroup::Unspecified, pb::CheckGroup::from)
                    as i32
            })
            .collect(),
        not_recorded: r.not_recorded.clone(),
        project: r.context.project.clone(),
        started_by: r.context.started_by.clone(),
        started_by_role: word_pb::<Role>(&r.context.started_by_role),
        recorded: r.context.recorded,
        not_recorded_zh: r.context.not_recorded_zh.clone(),
        servers: if with_findings {
            r.context
                .servers
                .iter()
                .map(|v| pb::SweepServer {
                    server: v.server.clone(),
                    address: v.address.clone(),
                    role: v.role.clone(),
                    agent: v.agent.clone(),
                    hostname: v.hostname.clone(),
                    os: v.os.clone(),
                    kernel: v.kernel.clone(),
                    cpu_model: v.cpu_model.clone(),
                    cpu_threads: v.cpu_threads,
                    memory_bytes: v.memory_bytes,
                    disks: v
                        .disks
                        .iter()
                        .map(|(name, size, rot)| pb::SweepDisk {
                            name: name.clone(),
                            size_bytes: *size,
                            rotational: *rot,
                        })
                        .collect(),
                })
                .collect()
        } else {
            vec![]
        },
    }
}

/// A stored verdict on the wire (a word this build does not know: unspecified).
fn verdict_pb(v: &str) -> pb::Verdict {
    match v {
        "pass" => pb::Verdict::Pass,
        "soft" => pb::Verdict::Soft,
        "hard" => pb::Verdict::Hard,
        _ => pb::Verdict::Unspecified,
    }
}

/// A stored word of one of the core's closed sets (party, pause reason, role) on the wire (a
/// word this build does not know: unspecified).
fn word_pb<E: FromStr + WireEnum>(v: &str) -> i32 {
    v.parse::<E>().map_or(0, WireEnum::to_i32)
}

/// A stored unit on the wire (a word this build does not know: unspecified).
fn unit_pb(v: &str) -> pb::MeasureUnit {
    match v {
        "iops" => pb::MeasureUnit::Iops,
        "us" => pb::MeasureUnit::Us,
        "mbit_per_s" => pb::MeasureUnit::MbitPerS,
        "cores" => pb::MeasureUnit::Cores,
        "mib" => pb::MeasureUnit::Mib,
        "gib" => pb::MeasureUnit::Gib,
        "ms" => pb::MeasureUnit::Ms,
        _ => pb::MeasureUnit::Unspecified,
    }
}

/// A stored run state on the wire.
fn state_pb(v: &str) -> pb::SweepState {
    match v {
        "running" => pb::SweepState::Running,
        "finished" => pb::SweepState::Finished,
        "interrupted" => pb::SweepState::Interrupted,
        "cancelled" => pb::SweepState::Cancelled,
        _ => pb::SweepState::Unspecified,
    }
}

/// A stored finding's target on the wire (a word this build does not know: unspecified).
fn target_pb(t: &TargetRecord) -> pb::FindingTarget {
    let kind = match t.kind.as_str() {
        "path" => pb::TargetKind::Path,
        "port" => pb::TargetKind::Port,
        "bandwidth" => pb::TargetKind::Bandwidth,
        "vip" => pb::TargetKind::Vip,
        _ => pb::TargetKind::Unspecified,
    };
    let proto = t
        .proto
        .parse::<Proto>()
        .map_or(pb::Protocol::Unspecified, pb::Protocol::from);
    pb::FindingTarget {
        kind: kind as i32,
        server: t.server.clone(),
        dest: t.dest.clone(),
        port: t.port.map(u32::from),
        proto: proto as i32,
    }
}

/// One progress event of the engine on the wire.
fn event(p: Result<Progress, SweepError>) -> Result<pb::SweepEvent, Status> {
    let p = p?;
    Ok(pb::SweepEvent {
        done: p.done,
        total: p.total,
        server: p.unit,
        report: p.report.map(|r| to_pb(&r, true)),
        run_id: p.run_id,
    })
}

type Events = BoxStream<'static, Result<pb::SweepEvent, Status>>;

fn events(rx: tokio::sync::mpsc::Receiver<Result<Progress, SweepError>>) -> Events {
    ReceiverStream::new(rx).map(event).boxed()
}

#[tonic::async_trait]
impl pb::readiness_server::Readiness for ReadinessSvc {
    type RunSweepStream = Events;
    type AttachSweepStream = Events;

    async fn run_sweep(
        &self,
        req: Request<pb::RunSweepRequest>,
    ) -> Result<Response<Self::RunSweepStream>, Status> {
        let (caller, role) = authorize(&self.0, &req, allowed("RunSweep"))?;
        let r = SweepRequest::try_from(req.into_inner())?;
        if let Some(p) = &r.plan {
            plan_file_allowed(&self.0, &r.batch, p, role).await?;
        }
        let caller = Caller {
            name: caller.name,
            role,
        };
        let rx = sweep::start(self.0.clone(), &caller, r).await?;
        Ok(Response::new(events(rx)))
    }

    async fn attach_sweep(
        &self,
        req: Request<pb::AttachSweepRequest>,
    ) -> Result<Response<Self::AttachSweepStream>, Status> {
        authorize(&self.0, &req, allowed("AttachSweep"))?;
        let RunId(id) = req.into_inner().try_into()?;
        Ok(Response::new(events(sweep::attach(self.0.clone(), id)?)))
    }

    async fn cancel_sweep(
        &self,
        req: Request<pb::CancelSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("CancelSweep"))?;
        let RunId(id) = req.into_inner().try_into()?;
        let rec = sweep::cancel(&*self.0, id, &user.name).await?;
        Ok(Response::new(to_pb(&rec, true)))
    }

    async fn list_sweeps(
        &self,
        req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        authorize(&self.0, &req, allowed("ListSweeps"))?;
        let ListOf(batch) = req.into_inner().try_into()?;
        let runs = sweep::list(&self.0.store, batch.as_deref())?;
        Ok(Response::new(pb::ListSweepsResponse {
            runs: runs.iter().map(|r| to_pb(r, false)).collect(),
        }))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        authorize(&self.0, &req, allowed("GetSweep"))?;
        let wanted = Wanted::try_from(req.into_inner())?;
        let rec = sweep::get(&*self.0, &wanted).await?;
        Ok(Response::new(to_pb(&rec, true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut pb::RunSweepRequest)) -> pb::RunSweepRequest {
        let mut r = pb::RunSweepRequest {
            batch: "B1".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn a_sweep_request_is_checked_field_by_field() {
        let ok = SweepRequest::try_from(req(|_| {})).unwrap();
        assert_eq!(ok.batch, "B1");
        assert!(ok.plan.is_none());
        assert_eq!(ok.concurrency, DEFAULT_CONCURRENCY as usize);
        assert_eq!(ok.opts.measure_ms, DEFAULT_MEASURE_MS);
        let cases: Vec<(&str, pb::RunSweepRequest)> = vec![
            ("batch", req(|r| r.batch = "../etc".into())),
            ("batch", req(|r| r.batch = String::new())),
            ("batch", req(|r| r.batch = "x".repeat(65))),
            ("concurrency", req(|r| r.concurrency = MAX_CONCURRENCY + 1)),
            ("skip", req(|r| r.skip = vec![99])),
            (
                "skip",
                req(|r| r.skip = vec![pb::CheckGroup::Unspecified as i32]),
            ),
            ("measure_ms", req(|r| r.measure_ms = MIN_MEASURE_MS - 1)),
            ("measure_ms", req(|r| r.measure_ms = MAX_MEASURE_MS + 1)),
            (
                "the plan file",
                req(|r| r.plan_toml = "[[servers]]\nnope".into()),
            ),
            (
                "the plan file",
                req(|r| r.plan_toml = "#".repeat(MAX_PLAN_BYTES + 1)),
            ),
        ];
        for (field, r) in cases {
            let e = SweepRequest::try_from(r).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            let s = Status::from(e);
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(
                s.message().starts_with(&format!("{field}: ")),
                "{}",
                s.message()
            );
        }
        // The refusal of --skip lists what can be left out.
        let e = SweepRequest::try_from(req(|r| r.skip = vec![-1])).unwrap_err();
        for k in readiness::SKIPPABLE {
            assert!(e.problem.contains(k), "{e}");
        }
    }

    #[test]
    fn run_ids_and_batches_of_the_readers_are_checked() {
        let e = RunId::try_from(pb::AttachSweepRequest { run_id: 0 })
            .err()
            .unwrap();
        assert_eq!(e.field, "run_id");
        let e = RunId::try_from(pb::CancelSweepRequest { run_id: 0 })
            .err()
            .unwrap();
        assert_eq!(e.field, "run_id");
        assert_eq!(
            RunId::try_from(pb::CancelSweepRequest { run_id: 3 })
                .ok()
                .map(|r| r.0),
            Some(3)
        );
        let e = ListOf::try_from(pb::ListSweepsRequest {
            batch: "a b".into(),
        })
        .err()
        .unwrap();
        assert_eq!(e.field, "batch");
        assert!(e.problem.contains("or none for all"), "{e}");
        assert_eq!(
            Wanted::try_from(pb::GetSweepRequest {
                run_id: 0,
                batch: String::new()
            }),
            Ok(Wanted::Latest(None))
        );
        assert_eq!(
            Wanted::try_from(pb::GetSweepRequest {
                run_id: 0,
                batch: "名字".into()
            })
            .unwrap_err()
            .field,
            "batch"
        );
        assert_eq!(
            Wanted::try_from(pb::GetSweepRequest {
                run_id: 9,
                batch: String::new()
            }),
            Ok(Wanted::Run(9))
        );
    }

    #[test]
    fn sweep_errors_keep_their_codes() {
        use tonic::Code;
        let cases = [
            (SweepError::NoBatch("b".into()), Code::NotFound),
            (SweepError::NoRun(4), Code::NotFound),
            (
                SweepError::NoPlanAttached("b".into()),
                Code::FailedPrecondition,
            ),
            (
                SweepError::Busy {
                    batch: "b".into(),
                    run_id: None,
                },
                Code::FailedPrecondition,
            ),
            (SweepError::Full { running: 8 }, Code::ResourceExhausted),
            (
                SweepError::NotRunning {
                    run_id: 4,
                    state: "finished".into(),
                },
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, shown.as_str()));
        }
    }

    #[test]
    fn a_stored_run_keeps_its_words_in_json() {
        let f = |check: &str, verdict: &str| preflight_store::sweeps::FindingRecord {
            server: "a".into(),
            check: check.into(),
            verdict: verdict.into(),
            party: "customer".into(),
            reason: "network_ports".into(),
            message: String::new(),
            message_zh: String::new(),
            fix: String::new(),
            fix_zh: String::new(),
            measured: None,
            threshold: None,
            unit: String::new(),
            target: None,
        };
        let rec = SweepRecord {
            run_id: 2,
            batch: "B1".into(),
            plan_digest: "d".into(),
            started_at_ms: 1,
            finished_at_ms: 2,
            state: "cancelled".into(),
            findings: vec![f("path:b:80", "hard"), f("reachable", "pass")],
            skipped: vec![],
            not_recorded: String::new(),
            context: Default::default(),
        };
        let pb = to_pb(&rec, true);
        assert_eq!((pb.hard, pb.passed), (1, 1));
        let j = serde_json::to_value(&pb).unwrap();
        assert_eq!(j["state"], "cancelled");
        assert_eq!(j["findings"][0]["verdict"], "hard");
        assert_eq!(j["findings"][0]["target"]["kind"], "path");
        assert_eq!(j["findings"][0]["target"]["port"], 80);
        assert_eq!(j["findings"][0]["party"], "customer");
        assert_eq!(j["findings"][0]["reason"], "network_ports");
        assert_eq!(j["findings"][1]["verdict"], "pass");
        assert!(j["findings"][1]["target"].is_null());
        // Every party and pause reason a finding can store keeps its word.
        for p in Party::ALL {
            let w = preflight_proto::json::name::<pb::WorkflowParty>(word_pb::<Party>(p.id()));
            assert_eq!(w, p.id());
        }
        for r in PauseReason::ALL {
            let w = preflight_proto::json::name::<pb::WorkflowPauseReason>(word_pb::<PauseReason>(
                r.id(),
            ));
            assert_eq!(w, r.id());
        }
        assert_eq!(word_pb::<Party>("somebody"), 0);
        // Who ran it keeps the role's word.
        for r in Role::ALL {
            let rec = SweepRecord {
                context: preflight_store::sweeps::SweepContext {
                    started_by_role: r.as_str().into(),
                    ..Default::default()
                },
                ..rec.clone()
            };
            let j = serde_json::to_value(to_pb(&rec, false)).unwrap();
            assert_eq!(j["started_by_role"], r.as_str());
        }
        // Every unit the readiness rules use keeps its word.
        for u in ["iops", "us", "mbit_per_s", "cores", "mib", "gib", "ms"] {
            assert_eq!(
                preflight_proto::json::name::<pb::MeasureUnit>(unit_pb(u) as i32),
                u
            );
        }
    }
}
