//! The workflow engine: the deployment workflow of WORKFLOW.md, persisted in sled, and the
//! controller's reactions to its events.
//!
//! [`Engine`] owns the in-memory [`World`] behind one lock, so commands are serialised: a
//! command is checked by the core (`World::apply`), persisted in one sled transaction and
//! flushed, and only then committed to memory and acknowledged. The escalation timer and the
//! dev clock go through the same path as [`Actor::System`].
//!
//! What the controller does after a command (a plan attached: the hardening facts of the
//! batch's servers recorded from the evidence already gathered) is decided in one place,
//! [`react`], from the events the core returned, so every path that produces such an event
//! gets the reaction: commands go through [`execute`].

use std::collections::BTreeMap;
use std::future::Future;

use preflight_core::plan::Plan;
use preflight_core::workflow::{
    Actor, BatchView, Command, Event, EventKind, HardeningSummary, HostHardening, PerfSummary,
    PlanFacts, QueueEntry, ReadinessSummary, Refusal, Timestamp, WorkflowConfig, World,
};
use preflight_store::workflow::WorkflowStore;
use preflight_store::{Store, StoreError};

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot record the change: {0}")]
    Store(#[from] StoreError),
    #[error("batch {0:?} not found: `preflight batch list` lists them")]
    NoBatch(String),
    #[error("deployer {0:?} not found: `preflight deployer list` lists them")]
    NoDeployer(String),
    #[error("batch {0} has no plan attached, and readiness is recorded against a plan: attach one first with `preflight plan attach {0} PLAN.toml`")]
    NoPlan(String),
    #[error("stored plan {digest}: {problem}")]
    StoredPlan { digest: String, problem: String },
}

/// The workflow state and its store; the lock serialises commands.
pub(crate) struct Engine {
    world: tokio::sync::Mutex<World>,
    store: WorkflowStore,
}

impl Engine {
    /// Opens the workflow trees and rebuilds the state from the history, checking it against the
    /// stored batches, projects and deployers.
    pub fn load(store: &Store) -> Result<Engine, StoreError> {
        let ws = WorkflowStore::open(store)?;
        let world = ws.load(WorkflowConfig::default())?;
        tracing::info!(
            events = world.next_seq,
            batches = world.batches.len(),
            projects = world.projects.len(),
            "workflow loaded from its history"
        );
        Ok(Engine {
            world: tokio::sync::Mutex::new(world),
            store: ws,
        })
    }

    /// The persisted dev clock offset (0 when never set).
    pub fn dev_clock_offset(&self) -> Result<i64, StoreError> {
        Ok(self.store.dev_clock_offset()?.unwrap_or(0))
    }

    /// The view of one batch at `now`.
    pub async fn batch_view(&self, id: &str, now: Timestamp) -> Result<BatchView, EngineError> {
        self.read(|w| w.batch_view(id, now))
            .await
            .ok_or_else(|| EngineError::NoBatch(id.to_string()))
    }

    /// Every deployer's list (empty ones too), or one deployer's.
    pub async fn queues(
        &self,
        deployer: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<QueueEntry>>, EngineError> {
        self.read(|w| match deployer {
            None => Ok(w.queues()),
            Some(d) if w.deployers.contains(d) => Ok([(d.to_string(), w.queue(d))].into()),
            Some(d) => Err(EngineError::NoDeployer(d.to_string())),
        })
        .await
    }

    /// Persists the dev clock offset, so a restart keeps a rehearsal's time.
    pub fn set_dev_clock_offset(&self, offset_ms: i64) -> Result<(), StoreError> {
        self.store.set_dev_clock_offset(offset_ms)
    }

    /// Checks, persists (one transaction, flushed) and commits one command, storing `plan`
    /// (digest, canonical TOML) in the same transaction: nothing is stored when the command is
    /// refused. Private: from outside the engine commands go through [`execute`], which runs
    /// the reactions to their events.
    async fn execute_with_plan(
        &self,
        now: i64,
        actor: &Actor,
        cmd: Command,
        plan: Option<(&str, &str)>,
    ) -> Result<Vec<Event>, EngineError> {
        let mut world = self.world.lock().await;
        let outcome = world.apply(Timestamp(now), actor, cmd)?;
        let events = outcome.events.clone();
        // sled's transaction and flush block for a few milliseconds; commands are serialised by
        // the lock anyway, and block_in_place would panic on a current-thread runtime.
        self.store.persist_with_plan(&outcome, plan)?;
        if let Err(stale) = world.commit(outcome) {
            // Impossible while the lock is held; say so loudly rather than diverge silently.
            tracing::error!(%stale, "workflow commit after persist failed");
        }
        for ev in &events {
            tracing::info!(seq = ev.seq, kind = ev.kind.name(), batch = ?ev.batch, by = %ev.by, "workflow event");
        }
        Ok(events)
    }

    /// Applies every escalation due at `now` as the controller, with the reactions to its
    /// events; returns the escalated batches.
    pub async fn escalate(&self, reactions: &impl Reactions, now: i64) -> Vec<String> {
        let due = self.world.lock().await.escalate_due(Timestamp(now));
        let mut done = Vec::new();
        for cmd in due {
            let batch = cmd.batch().unwrap_or_default().to_string();
            match execute(self, reactions, now, &Actor::System, cmd, None).await {
                Ok(_) => {
                    tracing::info!(%batch, "pause older than 15 days escalated to GD");
                    done.push(batch);
                }
                // Someone acted on the batch in between: nothing to escalate any more.
                Err(EngineError::Refused(r)) => {
                    tracing::debug!(%batch, refusal = %r, "escalation no longer due")
                }
                Err(e) => {
                    tracing::warn!(%batch, error = %e, "escalation failed; retried on the next check")
                }
            }
        }
        done
    }

    /// The canonical TOML of the plan with this digest, if one was stored with an attachment.
    pub fn plan_text(&self, digest: &str) -> Result<Option<String>, StoreError> {
        self.store.plan_text(digest)
    }

    /// Reads the state under the lock.
    pub async fn read<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        f(&*self.world.lock().await)
    }
}

impl Engine {
    /// The facts of a plan attachment as the controller judges them, never as the client
    /// sent them. With the plan itself (`sent`): its digest, hostnames and completeness.
    /// With only the facts (`batch plan --digest`): when the controller already keeps the plan
    /// with that digest, its servers are the batch's, whatever host list came along (a
    /// shorter list would shrink the set of servers the hardening gates ask about), and its
    /// completeness; without one the plan cannot be complete. The client's `incomplete` is
    /// never read.
    pub fn judge_attachment(
        &self,
        batch: &str,
        facts: &mut PlanFacts,
        sent: Option<&Plan>,
    ) -> Result<(), EngineError> {
        let kept;
        let plan = match sent {
            Some(p) => Some(p),
            None => {
                kept = self
                    .plan_text(&facts.digest)?
                    .map(|text| {
                        Plan::from_toml("stored plan", &text).map_err(|e| EngineError::StoredPlan {
                            digest: facts.digest.clone(),
                            problem: e.to_string(),
                        })
                    })
                    .transpose()?;
                kept.as_ref()
            }
        };
        match plan {
            Some(p) => {
                facts.digest = p.digest();
                facts.hosts = p.servers.iter().map(|s| s.hostname.clone()).collect();
                facts.incomplete = p.incomplete();
                facts.incomplete_zh = p.incomplete_zh();
            }
            None => {
                facts.incomplete = vec![preflight_core::plan::facts_only_incomplete(batch)];
                facts.incomplete_zh = vec![preflight_core::plan::facts_only_incomplete_zh(batch)];
            }
        }
        Ok(())
    }

    /// The command recording a sweep result as the controller would (`dev record`, tests and
    /// rehearsals): readiness against the attached plan, every planned host hardened, or a
    /// performance sweep, at `now`.
    pub async fn dev_record(&self, now: i64, r: DevRecord) -> Result<Command, EngineError> {
        let plan = self
            .read(|w| w.batch(&r.batch).map(|b| b.plan.clone()))
            .await
            .ok_or_else(|| EngineError::NoBatch(r.batch.clone()))?;
        let run_id = format!("dev-{now}");
        Ok(match r.kind {
            DevRecordKind::Readiness {
                failures,
                soft_failures,
            } => {
                let plan = plan.ok_or_else(|| EngineError::NoPlan(r.batch.clone()))?;
                Command::RecordReadiness {
                    batch: r.batch,
                    summary: ReadinessSummary {
                        run_id,
                        finished_at: Timestamp(now),
                        plan_digest: plan.digest,
                        hard_failures: failures,
                        soft_failures,
                    },
                }
            }
            DevRecordKind::Hardening => Command::RecordHardening {
                batch: r.batch,
                summary: HardeningSummary {
                    recorded_at: Timestamp(now),
                    hosts: plan
                        .map(|p| p.hosts)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|h| {
                            (
                                h,
                                HostHardening {
                                    baseline_applied: true,
                                    all_compliant: true,
                                    verified_after_last_change: true,
                                    firewall_covers_planned_ports: true,
                                    noncompliant: vec![],
                                    firewall_missing_ports: vec![],
                                },
                            )
                        })
                        .collect(),
                },
            },
            DevRecordKind::Perf { shortfalls } => Command::RecordPerf {
                batch: r.batch,
                summary: PerfSummary {
                    run_id,
                    finished_at: Timestamp(now),
                    shortfalls,
                },
            },
        })
    }
}

/// What `dev record` records.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DevRecordKind {
    Readiness {
        failures: Vec<preflight_core::workflow::CheckFailure>,
        soft_failures: Vec<preflight_core::workflow::CheckFailure>,
    },
    Hardening,
    Perf {
        shortfalls: Vec<preflight_core::workflow::CheckFailure>,
    },
}

/// A `dev record` request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DevRecord {
    pub batch: String,
    pub kind: DevRecordKind,
}

/// The work of one reaction.
pub(crate) type Reaction<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What the controller does in reaction to workflow events.
pub(crate) trait Reactions: Send + Sync {
    /// A plan was attached to `batch`: evidence gathered before counts for its gates. Boxed:
    /// the controller's reaction executes a command itself, and a boxed future breaks that
    /// cycle of types.
    fn plan_attached<'a>(&'a self, batch: &'a str) -> Reaction<'a>;
}

/// The controller's reactions: a plan attached records the hardening facts of the batch's
/// servers from the evidence already gathered.
impl Reactions for crate::Shared {
    fn plan_attached<'a>(&'a self, batch: &'a str) -> Reaction<'a> {
        Box::pin(async move { self.hardening().record_hardening(None, Some(batch)).await })
    }
}

/// The reactions of what an `Arc` holds.
impl<R: Reactions> Reactions for std::sync::Arc<R> {
    fn plan_attached<'a>(&'a self, batch: &'a str) -> Reaction<'a> {
        (**self).plan_attached(batch)
    }
}

/// The reactions to `events`, in their order.
pub(crate) async fn react(r: &(impl Reactions + ?Sized), events: &[Event]) {
    for ev in events {
        // Today one event has a reaction; a new one is another arm here.
        if let (EventKind::PlanAttached { .. }, Some(batch)) = (&ev.kind, &ev.batch) {
            r.plan_attached(batch).await;
        }
    }
}

/// Checks, persists and commits `cmd` (with `plan`, digest and canonical TOML, stored in the
/// same transaction), then runs the reactions to its events.
pub(crate) async fn execute(
    engine: &Engine,
    reactions: &(impl Reactions + ?Sized),
    now: i64,
    actor: &Actor,
    cmd: Command,
    plan: Option<(&str, &str)>,
) -> Result<Vec<Event>, EngineError> {
    let events = engine.execute_with_plan(now, actor, cmd, plan).await?;
    react(reactions, &events).await;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::role::Role;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Reactions for Seen {
        fn plan_attached<'a>(&'a self, batch: &'a str) -> Reaction<'a> {
            self.0.lock().unwrap().push(batch.to_string());
            Box::pin(std::future::ready(()))
        }
    }

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let e = Engine::load(&store).unwrap();
        (dir, e)
    }

    #[tokio::test]
    async fn attaching_a_plan_records_hardening_and_nothing_else_does() {
        let (_dir, e) = engine();
        let seen = Seen::default();
        let admin = Actor::user("adm", Role::Admin);
        let pat = Actor::user("pat", Role::Project);
        let ian = Actor::user("ian", Role::Integrator);
        let steps: Vec<(&Actor, Command)> = vec![
            (
                &admin,
                Command::CreateProject {
                    id: "P1".into(),
                    name: "p".into(),
                    business_line: "gov".into(),
                    approval: preflight_core::workflow::Approval::Approved { budget: "B".into() },
                },
            ),
            (
                &pat,
                Command::CreateBatch {
                    id: "B1".into(),
                    project: "P1".into(),
                    business_line: None,
                    title: "t".into(),
                },
            ),
            (&pat, Command::Advance { batch: "B1".into() }),
            (&ian, Command::Advance { batch: "B1".into() }),
            (&pat, Command::Advance { batch: "B1".into() }),
        ];
        for (who, cmd) in steps {
            execute(&e, &seen, 1, who, cmd, None)
                .await
                .expect("applies");
        }
        assert!(seen.0.lock().unwrap().is_empty(), "no plan attached yet");
        let mut facts = PlanFacts {
            digest: "0".repeat(64),
            hosts: vec!["h1".into()],
            incomplete: vec![],
            incomplete_zh: vec![],
        };
        e.judge_attachment("B1", &mut facts, None).unwrap();
        assert_eq!(facts.incomplete.len(), 1, "facts only: never complete");
        let cmd = Command::AttachPlan {
            batch: "B1".into(),
            plan: facts,
        };
        let events = execute(&e, &seen, 2, &ian, cmd, None)
            .await
            .expect("attaches");
        assert!(matches!(events[0].kind, EventKind::PlanAttached { .. }));
        assert_eq!(*seen.0.lock().unwrap(), vec!["B1".to_string()]);
        // A refused attachment reacts to nothing.
        let cmd = Command::AttachPlan {
            batch: "B1".into(),
            plan: PlanFacts {
                digest: "1".repeat(64),
                hosts: vec![],
                incomplete: vec![],
                incomplete_zh: vec![],
            },
        };
        assert!(execute(&e, &seen, 3, &pat, cmd, None).await.is_err());
        assert_eq!(seen.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn dev_records_need_the_batch_and_readiness_its_plan() {
        let (_dir, e) = engine();
        let r = DevRecord {
            batch: "NOPE".into(),
            kind: DevRecordKind::Hardening,
        };
        assert!(matches!(
            e.dev_record(0, r).await,
            Err(EngineError::NoBatch(b)) if b == "NOPE"
        ));
        assert!(matches!(
            e.queues(Some("zed")).await,
            Err(EngineError::NoDeployer(d)) if d == "zed"
        ));
        assert!(e.queues(None).await.expect("all").is_empty());
    }
}
