//! The Workflow service: the deployment workflow of WORKFLOW.md, persisted in sled.
//!
//! [`Engine`] owns the in-memory [`World`] behind one lock, so commands are serialised: a
//! command is checked by the core (`World::apply`), persisted in one sled transaction and
//! flushed, and only then committed to memory and acknowledged. The escalation timer and the
//! dev clock go through the same path as [`Actor::System`].
//!
//! Roles: every RPC authenticates the caller with [`authorize`] and the RPC's role list
//! ([`allowed`]); commands are then checked against the core's own role rules
//! (`Command::allowed_roles`), and refusals map to status codes in one place, [`refusal_status`].

use std::sync::Arc;

use preflight_core::role::Role;
use preflight_core::workflow::{
    Actor, Approval, CheckFailure, Command, Event, GdDecision, HardeningSummary, HostHardening,
    Party, PauseReason, PerfSummary, PlanFacts, ReadinessSummary, Refusal, RefusalKind, StatsKey,
    Timestamp, WorkflowConfig, World, MAX_LIST_LEN,
};
use preflight_proto::v1 as pb;
use preflight_store::workflow::WorkflowStore;
use preflight_store::{Store, StoreError, UserRecord};
use tonic::{Request, Response, Status};

use crate::auth::authorize;
use crate::error::store_status;
use crate::Shared;

/// Roles allowed to call each RPC of the Workflow service. Commands (`Execute`) are open to
/// every authenticated user at this level because the core names the roles of each command.
pub fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Workflow", rpc).unwrap_or(&[])
}

/// The one mapping from a workflow refusal to a gRPC status; the message is the refusal's own
/// (it names what is allowed or missing).
pub(crate) fn refusal_status(r: &Refusal) -> Status {
    let msg = r.to_string();
    match r.kind() {
        RefusalKind::PermissionDenied => Status::permission_denied(msg),
        RefusalKind::FailedPrecondition => Status::failed_precondition(msg),
        RefusalKind::InvalidArgument => Status::invalid_argument(msg),
        RefusalKind::NotFound => Status::not_found(msg),
        RefusalKind::AlreadyExists => Status::already_exists(msg),
    }
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot record the change: {0}")]
    Store(#[from] StoreError),
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
        match e {
            EngineError::Refused(r) => refusal_status(&r),
            EngineError::Store(s) => store_status(s),
        }
    }
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

    /// Checks, persists (one transaction, flushed) and commits one command.
    pub async fn execute(
        &self,
        now: i64,
        actor: &Actor,
        cmd: Command,
    ) -> Result<Vec<Event>, EngineError> {
        self.execute_with_plan(now, actor, cmd, None).await
    }

    /// [`Self::execute`], storing `plan` (digest, canonical TOML) in the same transaction as
    /// the command: nothing is stored when the command is refused.
    pub async fn execute_with_plan(
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

    /// Applies every escalation due at `now` as the controller; returns the escalated batches.
    pub async fn escalate(&self, now: i64) -> Vec<String> {
        let due = self.world.lock().await.escalate_due(Timestamp(now));
        let mut done = Vec::new();
        for cmd in due {
            let batch = cmd.batch().unwrap_or_default().to_string();
            match self.execute(now, &Actor::System, cmd).await {
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

pub(crate) struct WorkflowSvc(pub Arc<Shared>);

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {field}: {problem}"))
}

fn reason(s: &str) -> Result<PauseReason, Status> {
    s.parse().map_err(|e| invalid("reason", e))
}

fn party(field: &str, s: &str) -> Result<Party, Status> {
    s.parse().map_err(|e| invalid(field, e))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn approval(a: Option<pb::ProjectApproval>) -> Result<Approval, Status> {
    let a = a.unwrap_or_default();
    match a.kind.as_str() {
        "" | "pending" => Ok(Approval::Pending),
        "approved" => Ok(Approval::Approved { budget: a.budget }),
        "exception" => Ok(Approval::Exception {
            approver: a.approver,
            reference: a.reference,
        }),
        other => Err(invalid(
            "approval.kind",
            format!("{other:?}: use pending, approved (with a budget) or exception (with approver and reference)"),
        )),
    }
}

fn failures(field: &str, list: Vec<pb::DevCheckFailure>) -> Result<Vec<CheckFailure>, Status> {
    if list.len() > MAX_LIST_LEN {
        return Err(invalid(field, format!("at most {MAX_LIST_LEN} entries")));
    }
    list.into_iter()
        .map(|f| {
            Ok(CheckFailure {
                reason: reason(&f.reason)?,
                party: if f.party.is_empty() {
                    Party::Project
                } else {
                    party(&format!("{field}.party"), &f.party)?
                },
                check: f.check,
                detail: f.detail,
            })
        })
        .collect()
}

/// The wire command as a core command; INVALID_ARGUMENT names the bad field.
fn command_from_pb(c: pb::WorkflowCommand) -> Result<Command, Status> {
    {
        use pb::workflow_command::Cmd as C;
        let Some(cmd) = c.cmd else {
            return Err(invalid("cmd", "no command given"));
        };
        Ok(match cmd {
            C::AddDeployer(x) => Command::AddDeployer { name: x.name },
            C::CreateProject(x) => Command::CreateProject {
                id: x.id,
                name: x.name,
                business_line: x.business_line,
                approval: approval(x.approval)?,
            },
            C::SetApproval(x) => Command::SetApproval {
                project: x.project,
                approval: approval(x.approval)?,
            },
            C::CreateBatch(x) => Command::CreateBatch {
                id: x.id,
                project: x.project,
                business_line: opt(x.business_line),
                title: x.title,
            },
            C::Advance(x) => Command::Advance { batch: x.batch },
            C::AttachPlan(x) => Command::AttachPlan {
                batch: x.batch,
                plan: PlanFacts {
                    digest: x.digest,
                    hosts: x.hosts,
                    incomplete: x.incomplete,
                    incomplete_zh: vec![],
                },
            },
            C::ConfirmPlan(x) => Command::ConfirmPlan { batch: x.batch },
            C::AddRisk(x) => Command::AddRisk {
                batch: x.batch,
                text: x.text,
                source: opt(x.source),
            },
            C::FileRisks(x) => Command::FileRisks {
                batch: x.batch,
                risks: x.risks,
                document: x.document,
            },
            C::ReviewFiling(x) => Command::ReviewFiling {
                batch: x.batch,
                approve: x.approve,
                note: x.note,
            },
            C::RecordAcceptance(x) => Command::RecordAcceptance {
                batch: x.batch,
                rating: u8::try_from(x.rating)
                    .map_err(|_| invalid("rating", "use a whole number from 1 to 5"))?,
                comment: x.comment,
            },
            C::Assign(x) => Command::Assign {
                batch: x.batch,
                deployer: opt(x.deployer),
            },
            C::StartDeploy(x) => Command::StartDeploy { batch: x.batch },
            C::JumpQueue(x) => Command::JumpQueue {
                batch: x.batch,
                position: x.position,
                reason: x.reason,
            },
            C::Pause(x) => Command::Pause {
                batch: x.batch,
                reason: reason(&x.reason)?,
                text: x.text,
                party: if x.party.is_empty() {
                    None
                } else {
                    Some(party("party", &x.party)?)
                },
            },
            C::Resolve(x) => Command::Resolve {
                batch: x.batch,
                note: x.note,
            },
            C::Terminate(x) => Command::Terminate {
                batch: x.batch,
                reason: x.note,
            },
            C::GdConfirm(x) => Command::GdConfirm {
                batch: x.batch,
                decision: match x.decision.as_str() {
                    "reason" => GdDecision::ConfirmReason,
                    "termination" => GdDecision::ConfirmTermination,
                    other => {
                        return Err(invalid(
                            "decision",
                            format!("{other:?}: use reason or termination"),
                        ))
                    }
                },
                note: x.note,
            },
        })
    }
}

use preflight_core::plan::MAX_ATTACHED_PLAN_BYTES;

/// The plan sent with an attachment, validated again here (never trusted from the client):
/// at most [`MAX_ATTACHED_PLAN_BYTES`], a valid plan, with the digest the client named (if any).
fn attached_plan_from_wire(text: &str, digest: &str) -> Result<preflight_core::plan::Plan, Status> {
    if text.len() > MAX_ATTACHED_PLAN_BYTES {
        return Err(invalid(
            "attach_plan.plan_toml",
            format!(
                "{} bytes; at most {MAX_ATTACHED_PLAN_BYTES} are accepted: split the batch into smaller ones",
                text.len()
            ),
        ));
    }
    let plan = preflight_core::plan::Plan::from_toml("plan_toml", text).map_err(|e| {
        let lines: Vec<String> = e.to_string().lines().take(20).map(String::from).collect();
        invalid(
            "attach_plan.plan_toml",
            format!("not a valid plan; nothing attached:\n{}", lines.join("\n")),
        )
    })?;
    if !digest.is_empty() && plan.digest() != digest {
        return Err(invalid(
            "attach_plan.digest",
            format!(
                "{digest} is not the digest of plan_toml ({}); send the digest of the plan sent, or none",
                plan.digest()
            ),
        ));
    }
    Ok(plan)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
}

fn actor(user: UserRecord, role: Role) -> Actor {
    Actor::user(user.name, role)
}

impl WorkflowSvc {
    fn json_reply(&self, json: String, now: i64) -> Response<pb::WorkflowJsonReply> {
        Response::new(pb::WorkflowJsonReply { json, now_ms: now })
    }

    async fn run(&self, actor: &Actor, cmd: Command) -> Result<pb::WorkflowExecuteReply, Status> {
        let now = self.0.now_ms();
        let events = self.0.workflow.execute(now, actor, cmd).await?;
        Ok(pb::WorkflowExecuteReply {
            events_json: to_json(&events)?,
            now_ms: now,
        })
    }

    fn dev_clock(&self) -> Result<&Arc<crate::DevClock>, Status> {
        self.0.dev_clock.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "the controller runs on the system clock: the dev clock needs a controller started with `preflight serve --dev-clock` (tests and rehearsals only)",
            )
        })
    }
}

#[tonic::async_trait]
impl pb::workflow_server::Workflow for WorkflowSvc {
    async fn execute(
        &self,
        req: Request<pb::WorkflowCommand>,
    ) -> Result<Response<pb::WorkflowExecuteReply>, Status> {
        let (user, role) = authorize(&self.0, &req, allowed("Execute"))?;
        let mut wire = req.into_inner();
        let plan_toml = match &mut wire.cmd {
            Some(pb::workflow_command::Cmd::AttachPlan(x)) => std::mem::take(&mut x.plan_toml),
            _ => String::new(),
        };
        let mut cmd = command_from_pb(wire)?;
        let attached = match &cmd {
            Command::AttachPlan { batch, .. } => Some(batch.clone()),
            _ => None,
        };
        let stored = if plan_toml.is_empty() {
            // Facts only (`batch plan --digest`): when the controller already keeps the plan
            // with that digest, its servers are the batch's, whatever host list came along —
            // a shorter list would shrink the set of servers the hardening gates ask about.
            // Completeness is the controller's judgement of the stored plan; without one the
            // plan cannot be complete. The client's `incomplete` is never read.
            if let Command::AttachPlan { batch, plan } = &mut cmd {
                let known = self
                    .0
                    .workflow
                    .plan_text(&plan.digest)
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                if let Some(text) = known {
                    let p = preflight_core::plan::Plan::from_toml("stored plan", &text).map_err(
                        |e| Status::internal(format!("stored plan {}: {e}", plan.digest)),
                    )?;
                    plan.hosts = p.servers.iter().map(|s| s.hostname.clone()).collect();
                    plan.incomplete = p.incomplete();
                    plan.incomplete_zh = p.incomplete_zh();
                } else {
                    plan.incomplete = vec![preflight_core::plan::facts_only_incomplete(batch)];
                    plan.incomplete_zh =
                        vec![preflight_core::plan::facts_only_incomplete_zh(batch)];
                }
            }
            None
        } else {
            let Command::AttachPlan { plan, .. } = &mut cmd else {
                unreachable!("plan_toml is taken from an AttachPlan command only")
            };
            let p = attached_plan_from_wire(&plan_toml, &plan.digest)?;
            plan.digest = p.digest();
            plan.hosts = p.servers.iter().map(|s| s.hostname.clone()).collect();
            plan.incomplete = p.incomplete();
            plan.incomplete_zh = p.incomplete_zh();
            Some((plan.digest.clone(), plan_toml))
        };
        let now = self.0.now_ms();
        let events = self
            .0
            .workflow
            .execute_with_plan(
                now,
                &actor(user, role),
                cmd,
                stored.as_ref().map(|(d, t)| (d.as_str(), t.as_str())),
            )
            .await?;
        let reply = pb::WorkflowExecuteReply {
            events_json: to_json(&events)?,
            now_ms: now,
        };
        if let Some(batch) = attached {
            // Evidence gathered before the plan was attached counts for its gates.
            crate::engine::hardening::record_hardening(&self.0, None, Some(&batch)).await;
        }
        Ok(Response::new(reply))
    }

    async fn get_batch(
        &self,
        req: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::WorkflowJsonReply>, Status> {
        authorize(&self.0, &req, allowed("GetBatch"))?;
        let id = req.into_inner().batch;
        let now = self.0.now_ms();
        let view = self
            .0
            .workflow
            .read(|w| w.batch_view(&id, Timestamp(now)))
            .await
            .ok_or_else(|| {
                Status::not_found(format!(
                    "batch {id:?} not found: `preflight batch list` lists them"
                ))
            })?;
        Ok(self.json_reply(to_json(&view)?, now))
    }

    async fn list_batches(
        &self,
        req: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::WorkflowJsonReply>, Status> {
        authorize(&self.0, &req, allowed("ListBatches"))?;
        let project = req.into_inner().project;
        let now = self.0.now_ms();
        let list = self
            .0
            .workflow
            .read(|w| {
                w.batches
                    .values()
                    .filter(|b| project.is_empty() || b.project == project)
                    .map(|b| {
                        serde_json::json!({
                            "id": b.id,
                            "project": b.project,
                            "business_line": b.business_line,
                            "title": b.title,
                            "stage": b.stage,
                            "stage_zh": b.stage.zh(),
                            "stage_since": b.stage_since,
                            "held_by": b.held_by(),
                            "deployer": b.deployer,
                            "pause_reason": b.pause.as_ref().map(|p| p.reason),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        Ok(self.json_reply(to_json(&list)?, now))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::WorkflowJsonReply>, Status> {
        authorize(&self.0, &req, allowed("GetQueue"))?;
        let deployer = req.into_inner().deployer;
        let now = self.0.now_ms();
        let queues = self
            .0
            .workflow
            .read(|w| {
                if deployer.is_empty() {
                    let mut all = w.queues();
                    for d in &w.deployers {
                        all.entry(d.clone()).or_default();
                    }
                    Ok(all)
                } else if w.deployers.contains(&deployer) {
                    Ok([(deployer.clone(), w.queue(&deployer))]
                        .into_iter()
                        .collect())
                } else {
                    Err(Status::not_found(format!(
                        "deployer {deployer:?} not found: `preflight deployer list` lists them"
                    )))
                }
            })
            .await?;
        Ok(self.json_reply(to_json(&queues)?, now))
    }

    async fn list_projects(
        &self,
        req: Request<pb::WorkflowEmpty>,
    ) -> Result<Response<pb::WorkflowJsonReply>, Status> {
        authorize(&self.0, &req, allowed("ListProjects"))?;
        let now = self.0.now_ms();
        let v = self
            .0
            .workflow
            .read(|w| {
                serde_json::json!({
                    "projects": w.projects.values().map(|p| serde_json::json!({
                        "project": p,
                        "restricted_by": w.restriction(&p.id, Timestamp(now)),
                    })).collect::<Vec<_>>(),
                    "deployers": w.deployers.iter().map(|d| serde_json::json!({
                        "name": d,
                        "load": w.load(d),
                    })).collect::<Vec<_>>(),
                })
            })
            .await;
        Ok(self.json_reply(to_json(&v)?, now))
    }

    async fn pause_stats(
        &self,
        req: Request<pb::PauseStatsRequest>,
    ) -> Result<Response<pb::WorkflowJsonReply>, Status> {
        authorize(&self.0, &req, allowed("PauseStats"))?;
        let r = req.into_inner();
        let by: StatsKey = if r.by.is_empty() {
            StatsKey::Reason
        } else {
            r.by.parse().map_err(|e| invalid("by", e))?
        };
        let since = (r.since_ms != 0).then_some(Timestamp(r.since_ms));
        let now = self.0.now_ms();
        let rows = self
            .0
            .workflow
            .read(|w| w.pause_stats(by, since, Timestamp(now)))
            .await;
        Ok(self.json_reply(to_json(&rows)?, now))
    }

    async fn add_user(
        &self,
        req: Request<pb::AddUserRequest>,
    ) -> Result<Response<pb::AddUserReply>, Status> {
        let (user, role) = authorize(&self.0, &req, allowed("AddUser"))?;
        crate::svc::users::add(&self.0, &user, role, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_users(
        &self,
        req: Request<pb::WorkflowEmpty>,
    ) -> Result<Response<pb::ListUsersReply>, Status> {
        authorize(&self.0, &req, allowed("ListUsers"))?;
        crate::svc::users::list(&self.0).map(Response::new)
    }

    async fn dev_clock(
        &self,
        req: Request<pb::DevClockRequest>,
    ) -> Result<Response<pb::DevClockReply>, Status> {
        use pb::dev_clock_request::Op;
        let op = req.get_ref().op;
        let rpc = match op {
            Some(Op::Show(_)) | None => "DevClockShow",
            _ => "DevClock",
        };
        authorize(&self.0, &req, allowed(rpc))?;
        let dev = self.dev_clock()?.clone();
        // Ten years either way is plenty for any rehearsal and keeps arithmetic far from overflow.
        const LIMIT_MS: i64 = 10 * 366 * preflight_core::workflow::DAY_MS;
        let new_offset = match op {
            Some(Op::SetMs(t)) => {
                let off = t.saturating_sub(dev.base_ms());
                if off.unsigned_abs() > LIMIT_MS.unsigned_abs() {
                    return Err(invalid(
                        "set_ms",
                        "the time must be within ten years of the system clock",
                    ));
                }
                Some(off)
            }
            Some(Op::AdvanceMs(d)) => {
                if !(0..=LIMIT_MS).contains(&d) {
                    return Err(invalid(
                        "advance_ms",
                        "advance by 0 to ten years; the clock never goes back by advancing",
                    ));
                }
                let off = dev.offset_ms().saturating_add(d);
                if off.unsigned_abs() > LIMIT_MS.unsigned_abs() {
                    return Err(invalid(
                        "advance_ms",
                        "the clock would be more than ten years from the system clock",
                    ));
                }
                Some(off)
            }
            Some(Op::Show(_)) | None => None,
        };
        let mut escalated = Vec::new();
        if let Some(off) = new_offset {
            // Persist first so a restart keeps the rehearsal's time, then move the clock and run
            // the escalation check right away at the new time.
            let ws = &self.0.workflow.store;
            ws.set_dev_clock_offset(off).map_err(store_status)?;
            dev.set_offset_ms(off);
            tracing::info!(
                offset_ms = off,
                now_ms = crate::Clock::now_ms(&*dev),
                "dev clock changed"
            );
            escalated = self.0.workflow.escalate(self.0.now_ms()).await;
        }
        Ok(Response::new(pb::DevClockReply {
            now_ms: self.0.now_ms(),
            offset_ms: dev.offset_ms(),
            escalated,
        }))
    }

    async fn dev_record(
        &self,
        req: Request<pb::DevRecordRequest>,
    ) -> Result<Response<pb::WorkflowExecuteReply>, Status> {
        authorize(&self.0, &req, allowed("DevRecord"))?;
        self.dev_clock()?;
        let r = req.into_inner();
        let now = self.0.now_ms();
        let plan = self
            .0
            .workflow
            .read(|w| w.batch(&r.batch).map(|b| b.plan.clone()))
            .await
            .ok_or_else(|| {
                Status::not_found(format!(
                    "batch {:?} not found: `preflight batch list` lists them",
                    r.batch
                ))
            })?;
        let run_id = format!("dev-{now}");
        if r.kind == "readiness" && plan.is_none() {
            return Err(Status::failed_precondition(format!(
                "batch {} has no plan attached, and readiness is recorded against a plan: attach one first with `preflight plan attach {} PLAN.toml`",
                r.batch, r.batch
            )));
        }
        let cmd = match r.kind.as_str() {
            "readiness" => Command::RecordReadiness {
                batch: r.batch,
                summary: ReadinessSummary {
                    run_id,
                    finished_at: Timestamp(now),
                    plan_digest: plan.map(|p| p.digest).unwrap_or_default(),
                    hard_failures: failures("failures", r.failures)?,
                    soft_failures: failures("soft_failures", r.soft_failures)?,
                },
            },
            "hardening" => Command::RecordHardening {
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
            "perf" => Command::RecordPerf {
                batch: r.batch,
                summary: PerfSummary {
                    run_id,
                    finished_at: Timestamp(now),
                    shortfalls: failures("failures", r.failures)?,
                },
            },
            other => {
                return Err(invalid(
                    "kind",
                    format!("{other:?}: use readiness, hardening or perf"),
                ))
            }
        };
        Ok(Response::new(self.run(&Actor::System, cmd).await?))
    }

    async fn rotate_user_token(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::AddUserReply>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RotateUserToken"))?;
        crate::svc::users::rotate(&self.0, &user, req.into_inner()).map(Response::new)
    }

    async fn set_user_disabled(
        &self,
        req: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::WorkflowUser>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("SetUserDisabled"))?;
        crate::svc::users::set_disabled(&self.0, &user, req.into_inner()).map(Response::new)
    }

    async fn remove_user(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::WorkflowEmpty>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RemoveUser"))?;
        crate::svc::users::remove(&self.0, &user, req.into_inner()).map(Response::new)
    }

    async fn user_history(
        &self,
        req: Request<pb::WorkflowEmpty>,
    ) -> Result<Response<pb::UserHistoryReply>, Status> {
        authorize(&self.0, &req, allowed("UserHistory"))?;
        crate::svc::users::history(&self.0).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_codes_with_their_message() {
        let r = Refusal::Permission {
            action: "advance from plan".into(),
            actor: "pat (project)".into(),
            allowed: vec![Role::Integrator],
        };
        let s = refusal_status(&r);
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().contains("integrator"), "{}", s.message());
        let r = Refusal::Restricted {
            project: "P1".into(),
            blocking: "B7".into(),
        };
        let s = refusal_status(&r);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(s.message().contains("B7"));
        let r = Refusal::Invalid {
            field: "id",
            problem: "empty".into(),
        };
        assert_eq!(refusal_status(&r).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_commands_name_the_field() {
        let c = pb::WorkflowCommand {
            cmd: Some(pb::workflow_command::Cmd::Pause(pb::PauseCmd {
                batch: "B".into(),
                reason: "weather".into(),
                text: "t".into(),
                party: String::new(),
            })),
        };
        let e = command_from_pb(c).expect_err("bad reason");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("reason"), "{}", e.message());
        let e = command_from_pb(pb::WorkflowCommand { cmd: None }).expect_err("empty");
        assert!(e.message().contains("cmd"));
    }
}
