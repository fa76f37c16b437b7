//! The readiness sweep: every server of a plan through its agent (with a bound on
//! concurrency), then the network between them, judged by `preflight_core::readiness` and
//! stored as a run.
//!
//! The run is recorded `running` before the first agent is asked and replaced by the finished
//! record in one durable write; a caller that disconnects does not stop the run, and a
//! controller killed mid-sweep marks it `interrupted` at the next start.
//!
//! Parts: [`slots`] (how many run, one per batch), [`server`] (the per-server phase),
//! [`network`] (paths, bandwidth and virtual IPs between servers), [`record`] (what is stored
//! and what the workflow is told). The engine reaches the rest of the controller only through
//! [`SweepEnv`]: the store, the agent pool, the clock, its slots and what it reads of and tells
//! the workflow.

mod network;
mod record;
mod server;
mod slots;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use preflight_core::plan::Plan;
use preflight_core::readiness::{CheckGroup, Finding};
use preflight_core::role::Role;
use preflight_core::workflow::ReadinessSummary;
use preflight_store::sweeps::{ServerRecord, SweepContext, SweepRecord};
use preflight_store::{AgentRecord, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::agents::AgentPool;
use crate::Clock;

pub(crate) use record::target_of;
use slots::{RunningSweep, SweepSlot};
pub(crate) use slots::{SweepSlots, MAX_RUNNING_SWEEPS};

/// Most agents asked at once by one sweep, and how many when the request names none.
pub(crate) const MAX_CONCURRENCY: u32 = 256;
pub(crate) const DEFAULT_CONCURRENCY: u32 = 32;
/// Length of each disk benchmark and bandwidth test when the request names none, and the
/// bounds.
pub(crate) const DEFAULT_MEASURE_MS: u32 = 2_000;
pub(crate) const MIN_MEASURE_MS: u32 = 200;
pub(crate) const MAX_MEASURE_MS: u32 = 30_000;
/// How long a cancel waits for the run to end before it answers with the stored run.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// What the sweep engine uses of the controller: narrow parts, so it never sees a service.
pub(crate) trait SweepEnv: Send + Sync + 'static {
    fn store(&self) -> &Store;
    fn agents(&self) -> &AgentPool;
    fn clock(&self) -> &dyn Clock;
    fn slots(&self) -> &SweepSlots;
    /// What the workflow holds of `batch`, if there is such a batch.
    fn batch(&self, batch: &str) -> impl Future<Output = Option<BatchFacts>> + Send;
    /// The canonical TOML of the plan with this digest, if one was stored with an attachment.
    fn plan_text(&self, digest: &str) -> Result<Option<String>, StoreError>;
    /// Records a finished run as the batch's readiness, or the workflow's refusal in words.
    fn record_readiness(
        &self,
        now_ms: i64,
        batch: &str,
        summary: ReadinessSummary,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// What the workflow holds of a batch, as far as sweeps go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchFacts {
    pub project: String,
    /// The digest of the attached plan.
    pub plan_digest: Option<String>,
    /// The run recorded as the batch's readiness.
    pub readiness_run: Option<String>,
}

/// What a sweep runs besides the plan's servers.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    /// Checks left out.
    pub skip: BTreeSet<CheckGroup>,
    /// Length of each disk benchmark and bandwidth test.
    pub measure_ms: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            skip: BTreeSet::new(),
            measure_ms: DEFAULT_MEASURE_MS,
        }
    }
}

impl Opts {
    fn runs(&self, group: CheckGroup) -> bool {
        !self.skip.contains(&group)
    }
}

/// A sweep to run, checked.
#[derive(Debug, Clone)]
pub(crate) struct SweepRequest {
    pub batch: String,
    /// A plan file; `None`: the plan attached to the batch.
    pub plan: Option<Plan>,
    /// Agents asked at once.
    pub concurrency: usize,
    pub opts: Opts,
}

/// Who asked for a run.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub role: Role,
}

/// A run's progress: the units done (servers, then network checks) of the total, the one just
/// done, and on the last event the run as stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub run_id: u64,
    pub done: u32,
    pub total: u32,
    pub unit: String,
    pub report: Option<Arc<SweepRecord>>,
}

/// Why a sweep request is not served, in the user's words (the service maps each to a code).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SweepError {
    #[error(
        "no batch {0:?}: `preflight batch list` lists them; or sweep a plan file with --plan FILE"
    )]
    NoBatch(String),
    #[error("batch {0} has no plan attached: attach one with `preflight plan attach {0} PLAN_FILE`, or sweep a plan file with --plan FILE")]
    NoPlanAttached(String),
    #[error("batch {batch}: the controller holds only the facts of the attached plan {digest}, not the plan itself; attach it again with `preflight plan attach {batch} PLAN_FILE`, or sweep with --plan FILE")]
    PlanTextMissing { batch: String, digest: String },
    #[error("the stored plan {digest} of batch {batch} does not read back to its digest; attach it again with `preflight plan attach {batch} PLAN_FILE`")]
    StoredPlanUnreadable { batch: String, digest: String },
    #[error("batch {batch} is being swept{}", busy_how(batch, *run_id))]
    Busy { batch: String, run_id: Option<u64> },
    #[error("{running} sweeps are running, the most this controller runs at once ({MAX_RUNNING_SWEEPS}): try again when one has finished")]
    Full { running: usize },
    #[error("no sweep run {0}: `preflight sweeps` lists them")]
    NoRun(u64),
    #[error("no such sweep run: `preflight sweeps` lists them")]
    NoneStored,
    #[error("run {run_id} is not running (it is {state}): only a running sweep can be cancelled")]
    NotRunning { run_id: u64, state: String },
    #[error("run {0} ended without a report: see the controller's log")]
    EndedWithoutReport(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn busy_how(batch: &str, run_id: Option<u64>) -> String {
    match run_id {
        Some(id) => format!(
            " (run {id}): follow it with `preflight sweep --attach {id}`, or stop it with `preflight sweep cancel {id}`"
        ),
        None => format!(
            ": wait for that sweep to finish (`preflight sweeps --batch {batch}`), then sweep again"
        ),
    }
}

/// A failed call that means the agent is gone (killed, network down), not that it refused.
fn lost(e: &Status) -> bool {
    matches!(
        e.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
    )
}

/// The plan attached to `batch`, as stored on attachment; why not when the batch has none
/// (or only its facts, from an attachment without the plan's text).
pub(crate) async fn batch_plan(env: &impl SweepEnv, batch: &str) -> Result<Plan, SweepError> {
    let digest = env
        .batch(batch)
        .await
        .ok_or_else(|| SweepError::NoBatch(batch.to_string()))?
        .plan_digest
        .ok_or_else(|| SweepError::NoPlanAttached(batch.to_string()))?;
    let text = env
        .plan_text(&digest)?
        .ok_or_else(|| SweepError::PlanTextMissing {
            batch: batch.to_string(),
            digest: digest.clone(),
        })?;
    Plan::from_toml("stored plan", &text)
        .ok()
        .filter(|p| p.digest() == digest)
        .ok_or(SweepError::StoredPlanUnreadable {
            batch: batch.to_string(),
            digest,
        })
}

/// The stored run `run_id`.
pub(crate) fn stored(store: &Store, run_id: u64) -> Result<SweepRecord, SweepError> {
    store.sweep(run_id)?.ok_or(SweepError::NoRun(run_id))
}

/// The stored runs, of one batch or of all, without judging whether they count now.
pub(crate) fn list(store: &Store, batch: Option<&str>) -> Result<Vec<SweepRecord>, SweepError> {
    Ok(store.sweeps(batch)?)
}

/// Which stored run a reader wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// The latest run, of one batch or of all.
    Latest(Option<String>),
    Run(u64),
}

/// A stored run, with whether it is its batch's readiness now (a later run may have
/// replaced it).
pub(crate) async fn get(env: &impl SweepEnv, wanted: &Wanted) -> Result<SweepRecord, SweepError> {
    let rec = match wanted {
        Wanted::Latest(batch) => env.store().sweeps(batch.as_deref())?.pop(),
        Wanted::Run(id) => env.store().sweep(*id)?,
    }
    .ok_or(SweepError::NoneStored)?;
    let current = env.batch(&rec.batch).await.and_then(|b| b.readiness_run);
    Ok(record::standing(rec, current.as_deref()))
}

/// Starts a sweep: stores the run as `running`, then runs it in a task of its own (a caller
/// that goes away does not stop it). The events: the run id at once, one per unit done, and
/// the stored run last; the one refusal before the run starts is the returned error.
pub(crate) async fn start<E: SweepEnv>(
    env: Arc<E>,
    caller: &Caller,
    req: SweepRequest,
) -> Result<mpsc::Receiver<Result<Progress, SweepError>>, SweepError> {
    let facts = env.batch(&req.batch).await;
    let plan = match req.plan {
        Some(p) => p,
        None => batch_plan(&*env, &req.batch).await?,
    };
    let slot = env.slots().take(&req.batch)?;
    let agents = env.store().agents()?;
    let run_id = env.store().next_sweep_id()?;
    let rec = SweepRecord {
        run_id,
        batch: req.batch.clone(),
        plan_digest: plan.digest(),
        started_at_ms: env.clock().now_ms(),
        finished_at_ms: 0,
        state: "running".into(),
        findings: vec![],
        skipped: req
            .opts
            .skip
            .iter()
            .map(|g| g.as_str().to_string())
            .collect(),
        not_recorded: String::new(),
        context: SweepContext {
            project: facts
                .map(|b| b.project)
                .or_else(|| plan.batch.project.clone())
                .unwrap_or_default(),
            started_by: caller.name.clone(),
            started_by_role: caller.role.as_str().into(),
            recorded: false,
            not_recorded_zh: String::new(),
            servers: plan.servers.iter().map(server::server_planned).collect(),
        },
    };
    env.store().put_sweep(&rec)?;
    tracing::info!(run_id, batch = %rec.batch, servers = plan.servers.len(), by = %caller.name, "sweep started");
    let (tx, rx) = mpsc::channel(64);
    let (paths, serial) = network::net_tasks(&plan, &req.opts);
    let total = (plan.servers.len() + paths.len() + serial.len()) as u32;
    let first = Progress {
        run_id,
        total,
        ..Default::default()
    };
    let (ev_tx, ev_rx) = watch::channel(first.clone());
    let (cancel_tx, cancel_rx) = watch::channel(None::<String>);
    slot.set_run(RunningSweep {
        run_id,
        events: ev_rx,
        cancel: Arc::new(cancel_tx),
    });
    // The caller learns the run id at once (to attach or cancel it later).
    let _ = tx.try_send(Ok(first));
    let run = Run {
        env,
        slot,
        rec,
        plan,
        agents,
        opts: req.opts,
        concurrency: req.concurrency.max(1),
        paths,
        serial,
        total,
        tx,
        events: ev_tx,
        cancel: cancel_rx,
    };
    tokio::spawn(run.run());
    Ok(rx)
}

/// A started run and everything its task owns.
struct Run<E> {
    env: Arc<E>,
    /// Held until the run ends: given back before the last message, so a caller that sweeps
    /// again as soon as it has the report finds the place free.
    slot: SweepSlot,
    rec: SweepRecord,
    plan: Plan,
    agents: Vec<AgentRecord>,
    opts: Opts,
    concurrency: usize,
    paths: Vec<network::NetTask>,
    serial: Vec<network::NetTask>,
    total: u32,
    tx: mpsc::Sender<Result<Progress, SweepError>>,
    events: watch::Sender<Progress>,
    cancel: watch::Receiver<Option<String>>,
}

impl<E: SweepEnv> Run<E> {
    async fn run(self) {
        let Run {
            env,
            slot,
            mut rec,
            plan,
            agents,
            opts,
            concurrency,
            paths,
            serial,
            total,
            tx,
            events,
            mut cancel,
        } = self;
        let run_id = rec.run_id;
        let done = AtomicU32::new(0);
        let progress = |unit: String| {
            let tx = tx.clone();
            let ev = Progress {
                run_id,
                done: done.fetch_add(1, Ordering::Relaxed) + 1,
                total,
                unit,
                report: None,
            };
            events.send_replace(ev.clone());
            async move {
                let _ = tx.send(Ok(ev)).await;
            }
        };
        let work = async {
            let (pool, clock) = (env.agents(), env.clock());
            // Phase 1: every server by itself, side by side.
            let mut results = futures_util::stream::iter(0..plan.servers.len())
                .map(|i| {
                    let (plan, agents, opts) = (&plan, &agents, &opts);
                    async move {
                        let server = &plan.servers[i];
                        (
                            i,
                            server::sweep_server(pool, clock, plan, server, agents, opts).await,
                        )
                    }
                })
                .buffer_unordered(concurrency);
            let mut outcomes: Vec<Option<server::ServerOutcome>> =
                (0..plan.servers.len()).map(|_| None).collect();
            while let Some((i, o)) = results.next().await {
                outcomes[i] = Some(o);
                progress(plan.servers[i].hostname.clone()).await;
            }
            drop(results);
            let mut outcomes: Vec<server::ServerOutcome> = outcomes.into_iter().flatten().collect();
            let seen: Vec<Option<ServerRecord>> =
                outcomes.iter_mut().map(|o| o.seen.take()).collect();
            // Phase 2: between servers. Paths into different destinations side by side;
            // bandwidth pairs and virtual IPs one at a time, so tests do not share a link.
            let mut net: Vec<Vec<Finding>> = Vec::new();
            {
                let (plan, opts, outcomes, paths) = (&plan, &opts, &outcomes, &paths);
                let mut results = futures_util::stream::iter(0..paths.len())
                    .map(move |i| async move {
                        let t = &paths[i];
                        (
                            t.label(plan),
                            network::net_task(pool, plan, t, outcomes, opts).await,
                        )
                    })
                    .buffer_unordered(concurrency);
                while let Some((label, f)) = results.next().await {
                    net.push(f);
                    progress(label).await;
                }
            }
            for t in &serial {
                net.push(network::net_task(pool, &plan, t, &outcomes, &opts).await);
                progress(t.label(&plan)).await;
            }
            let mut per_server: Vec<Vec<Finding>> =
                outcomes.into_iter().map(|o| o.findings).collect();
            per_server.extend(net);
            (
                network::one_reachable_each(per_server.into_iter().flatten().collect()),
                seen,
            )
        };
        // A cancel drops the work: every agent call in flight is cancelled with it (the
        // agents stop their benchmarks, probe listeners are closed), nothing is judged.
        let cancelled_by = async {
            loop {
                if let Some(who) = cancel.borrow_and_update().clone() {
                    return who;
                }
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let outcome = tokio::select! {
            all = work => Ok(all),
            who = cancelled_by => Err(who),
        };
        let done = done.load(Ordering::Relaxed);
        let finish = |rec: &SweepRecord| {
            let ev = Progress {
                run_id,
                done,
                total,
                unit: String::new(),
                report: Some(Arc::new(rec.clone())),
            };
            events.send_replace(ev.clone());
            ev
        };
        let all = match outcome {
            Ok((all, seen)) => {
                for (slot, seen) in rec.context.servers.iter_mut().zip(seen) {
                    if let Some(seen) = seen {
                        *slot = seen;
                    }
                }
                all
            }
            Err(who) => {
                rec.finished_at_ms = env.clock().now_ms();
                rec.state = "cancelled".into();
                rec.not_recorded = format!(
                    "the run was cancelled by {who}: nothing of it is recorded as readiness"
                );
                tracing::info!(run_id, batch = %rec.batch, by = %who, "sweep cancelled");
                if let Err(e) = env.store().put_sweep(&rec) {
                    tracing::error!(run_id, error = %e, "cannot store the cancelled sweep");
                }
                let ev = finish(&rec);
                drop(slot);
                let _ = tx.send(Ok(ev)).await;
                return;
            }
        };
        rec.findings = all.iter().map(record::to_record).collect();
        rec.finished_at_ms = env.clock().now_ms();
        rec.state = "finished".into();
        let decision = record::workflow_decision(env.batch(&rec.batch).await.as_ref(), &rec);
        if let Err((why, why_zh)) = &decision {
            tracing::info!(batch = %rec.batch, %why, "sweep not recorded in the workflow");
            rec.not_recorded = why.clone();
            rec.context.not_recorded_zh = why_zh.clone();
        }
        // Stored as recorded before the workflow has it; a refusal rewrites both below.
        rec.context.recorded = decision == Ok(true);
        if let Err(e) = env.store().put_sweep(&rec) {
            tracing::error!(run_id, error = %e, "cannot store the sweep");
            drop(slot);
            let _ = tx.send(Err(e.into())).await;
            return;
        }
        let hard = all
            .iter()
            .filter(|f| f.verdict == preflight_core::readiness::Verdict::Hard)
            .count();
        let soft = all
            .iter()
            .filter(|f| f.verdict == preflight_core::readiness::Verdict::Soft)
            .count();
        tracing::info!(run_id, hard, soft, "sweep finished");
        if decision == Ok(true) {
            let summary = record::summary(&rec, &all);
            if let Err(e) = env
                .record_readiness(env.clock().now_ms(), &rec.batch, summary)
                .await
            {
                tracing::warn!(batch = %rec.batch, error = %e, "sweep not recorded in the workflow");
                // The stored run must not pass for the batch's readiness either.
                rec.context.recorded = false;
                rec.not_recorded = format!("not recorded as the batch's readiness: {e}");
                rec.context.not_recorded_zh = record::NOT_ACCEPTED_ZH.into();
                if let Err(e) = env.store().put_sweep(&rec) {
                    tracing::error!(run_id, error = %e, "cannot store why the sweep was not recorded");
                }
            }
        }
        let ev = finish(&rec);
        drop(slot);
        let _ = tx.send(Ok(ev)).await;
    }
}

/// Follows run `run_id`: its progress while it runs here, then the stored run (at once when it
/// has ended, or never ran in this controller).
pub(crate) fn attach<E: SweepEnv>(
    env: Arc<E>,
    run_id: u64,
) -> Result<mpsc::Receiver<Result<Progress, SweepError>>, SweepError> {
    let (tx, rx) = mpsc::channel(16);
    let Some(run) = env.slots().running(run_id) else {
        let rec = stored(env.store(), run_id)?;
        let n = rec.findings.len() as u32;
        let _ = tx.try_send(Ok(Progress {
            run_id,
            done: n,
            total: n,
            unit: String::new(),
            report: Some(Arc::new(rec)),
        }));
        return Ok(rx);
    };
    tokio::spawn(async move {
        let mut events = run.events;
        loop {
            let ev = events.borrow_and_update().clone();
            let last = ev.report.is_some();
            if tx.send(Ok(ev)).await.is_err() || last {
                return;
            }
            if events.changed().await.is_err() {
                // The run's task ended without a report (its store write failed): what the
                // store holds, or the error.
                let ev = match env.store().sweep(run_id) {
                    Ok(Some(rec)) if rec.state != "running" => Ok(Progress {
                        run_id,
                        report: Some(Arc::new(rec)),
                        ..Default::default()
                    }),
                    Ok(_) => Err(SweepError::EndedWithoutReport(run_id)),
                    Err(e) => Err(e.into()),
                };
                let _ = tx.send(ev).await;
                return;
            }
        }
    });
    Ok(rx)
}

/// Cancels the running run `run_id` for `by`, and answers with the run once it has ended (or
/// as stored, when it takes longer than [`CANCEL_WAIT`]).
pub(crate) async fn cancel(
    env: &impl SweepEnv,
    run_id: u64,
    by: &str,
) -> Result<Arc<SweepRecord>, SweepError> {
    let Some(run) = env.slots().running(run_id) else {
        let rec = stored(env.store(), run_id)?;
        return Err(SweepError::NotRunning {
            run_id,
            state: rec.state,
        });
    };
    run.cancel.send_replace(Some(by.to_string()));
    let mut events = run.events;
    let ended = tokio::time::timeout(CANCEL_WAIT, events.wait_for(|e| e.report.is_some())).await;
    if let Ok(Ok(ev)) = ended {
        if let Some(r) = ev.report.clone() {
            return Ok(r);
        }
    }
    Ok(Arc::new(stored(env.store(), run_id)?))
}
