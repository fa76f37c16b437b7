//! The Workflow service: a thin tonic service over the workflow engine
//! (`crate::engine::workflow`). Requests become domain requests with `TryFrom` (refusals name
//! the field), the engine applies them and reacts to their events, and replies are the typed
//! messages of `crate::wire`.
//!
//! Roles: every RPC authenticates the caller with [`authorize`] and the RPC's role list
//! ([`allowed`]); commands are then checked against the core's own role rules
//! (`Command::allowed_roles`), and refusals map to status codes in one place, [`refusal_status`].

use std::sync::Arc;

use preflight_core::plan::{Plan, MAX_ATTACHED_PLAN_BYTES};
use preflight_core::role::Role;
use preflight_core::workflow::{
    check_id, Actor, Approval, CheckFailure, Command, Party, PlanFacts, Refusal, RefusalKind,
    StatsKey, Timestamp, MAX_LIST_LEN,
};
use preflight_proto::v1 as pb;
use preflight_store::UserRecord;
use tonic::{Request, Response, Status};

use crate::auth::authorize;
use crate::engine::workflow::{self as engine, DevRecord, DevRecordKind, EngineError};
use crate::error::{enum_field, store_status, InvalidRequest};
use crate::wire::{self, enum_of, Wire, WireEnum};
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

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
        let msg = e.to_string();
        match e {
            EngineError::Refused(r) => refusal_status(&r),
            EngineError::Store(s) => store_status(s),
            EngineError::NoBatch(_) | EngineError::NoDeployer(_) => Status::not_found(msg),
            EngineError::NoPlan(_) => Status::failed_precondition(msg),
            EngineError::StoredPlan { .. } => Status::internal(msg),
        }
    }
}

pub(crate) struct WorkflowSvc(pub Arc<Shared>);

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    InvalidRequest::new(field, problem).into()
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An enum field whose unset zero value means `default`.
fn or_default<E: WireEnum>(field: &str, v: i32, default: E) -> Result<E, InvalidRequest> {
    Ok(E::from_pb(enum_field::<E::Pb>(field, v)?).unwrap_or(default))
}

fn approval(a: Option<pb::ProjectApproval>) -> Result<Approval, InvalidRequest> {
    let a = a.unwrap_or_default();
    match enum_field::<pb::ApprovalKind>("approval.kind", a.kind)? {
        pb::ApprovalKind::Unspecified | pb::ApprovalKind::Pending => Ok(Approval::Pending),
        pb::ApprovalKind::Approved => Ok(Approval::Approved { budget: a.budget }),
        pb::ApprovalKind::Exception => Ok(Approval::Exception {
            approver: a.approver,
            reference: a.reference,
        }),
    }
}

fn failures(
    field: &str,
    list: Vec<pb::WorkflowCheckFailure>,
) -> Result<Vec<CheckFailure>, InvalidRequest> {
    if list.len() > MAX_LIST_LEN {
        return Err(InvalidRequest::new(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    list.into_iter()
        .map(|f| {
            Ok(CheckFailure {
                reason: enum_of(&format!("{field}.reason"), f.reason)?,
                party: or_default(&format!("{field}.party"), f.party, Party::Project)?,
                check: f.check,
                detail: f.detail,
            })
        })
        .collect()
}

/// A plan sent with an attachment: parsed and checked, and its text as sent, which the
/// controller keeps.
#[derive(Debug)]
pub(crate) struct SentPlan {
    pub plan: Plan,
    pub text: String,
}

/// `Execute`, checked: the core command, and the plan sent with an attachment.
#[derive(Debug)]
pub(crate) struct ExecuteRequest {
    pub cmd: Command,
    pub plan: Option<SentPlan>,
}

impl TryFrom<pb::WorkflowCommand> for ExecuteRequest {
    type Error = InvalidRequest;
    fn try_from(c: pb::WorkflowCommand) -> Result<ExecuteRequest, InvalidRequest> {
        use pb::workflow_command::Cmd as C;
        let Some(cmd) = c.cmd else {
            return Err(InvalidRequest::new(
                "command",
                "none given: the request names no workflow command (a CLI older than the controller? upgrade it)",
            ));
        };
        let mut plan = None;
        let cmd = match cmd {
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
            C::AttachPlan(x) => {
                if !x.plan_toml.is_empty() {
                    plan = Some(SentPlan {
                        plan: attached_plan_from_wire(&x.plan_toml, &x.digest)?,
                        text: x.plan_toml,
                    });
                }
                Command::AttachPlan {
                    batch: x.batch,
                    plan: PlanFacts {
                        digest: x.digest,
                        hosts: x.hosts,
                        incomplete: x.incomplete,
                        incomplete_zh: vec![],
                    },
                }
            }
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
                    .map_err(|_| InvalidRequest::new("rating", "use a whole number from 1 to 5"))?,
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
                reason: enum_of("reason", x.reason)?,
                text: x.text,
                party: Party::from_pb(enum_field::<pb::WorkflowParty>("party", x.party)?),
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
                decision: enum_of("decision", x.decision)?,
                note: x.note,
            },
        };
        Ok(ExecuteRequest { cmd, plan })
    }
}

/// Ten years either way is plenty for any rehearsal and keeps arithmetic far from overflow.
const DEV_CLOCK_LIMIT_MS: i64 = 10 * 366 * preflight_core::workflow::DAY_MS;

/// `DevClock`, checked as far as it can be without the clock.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DevClockOp {
    /// Set the clock to this Unix ms.
    Set(i64),
    /// Move it forward by this many ms (0 to ten years).
    Advance(i64),
    /// Only report the time.
    Show,
}

impl TryFrom<pb::DevClockRequest> for DevClockOp {
    type Error = InvalidRequest;
    fn try_from(r: pb::DevClockRequest) -> Result<DevClockOp, InvalidRequest> {
        use pb::dev_clock_request::Op;
        Ok(match r.op {
            Some(Op::SetMs(t)) => DevClockOp::Set(t),
            Some(Op::AdvanceMs(d)) if (0..=DEV_CLOCK_LIMIT_MS).contains(&d) => {
                DevClockOp::Advance(d)
            }
            Some(Op::AdvanceMs(_)) => {
                return Err(InvalidRequest::new(
                    "advance_ms",
                    "advance by 0 to ten years; the clock never goes back by advancing",
                ))
            }
            Some(Op::Show(_)) | None => DevClockOp::Show,
        })
    }
}

/// `PauseStats`, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PauseStatsQuery {
    pub by: StatsKey,
    pub since: Option<Timestamp>,
}

impl TryFrom<pb::PauseStatsRequest> for PauseStatsQuery {
    type Error = InvalidRequest;
    fn try_from(r: pb::PauseStatsRequest) -> Result<PauseStatsQuery, InvalidRequest> {
        Ok(PauseStatsQuery {
            by: or_default("by", r.by, StatsKey::Reason)?,
            since: (r.since_ms != 0).then_some(Timestamp(r.since_ms)),
        })
    }
}

impl TryFrom<pb::DevRecordRequest> for DevRecord {
    type Error = InvalidRequest;
    fn try_from(r: pb::DevRecordRequest) -> Result<DevRecord, InvalidRequest> {
        let kind = match enum_field::<pb::DevRecordKind>("kind", r.kind)? {
            pb::DevRecordKind::Readiness => DevRecordKind::Readiness {
                failures: failures("failures", r.failures)?,
                soft_failures: failures("soft_failures", r.soft_failures)?,
            },
            pb::DevRecordKind::Hardening => DevRecordKind::Hardening,
            pb::DevRecordKind::Perf => DevRecordKind::Perf {
                shortfalls: failures("failures", r.failures)?,
            },
            pb::DevRecordKind::Unspecified => {
                return Err(InvalidRequest::new(
                    "kind",
                    "not given: use readiness, hardening or perf",
                ))
            }
        };
        Ok(DevRecord {
            batch: r.batch,
            kind,
        })
    }
}

/// The plan sent with an attachment, validated again here (never trusted from the client):
/// at most [`MAX_ATTACHED_PLAN_BYTES`], a valid plan, with the digest the client named (if any).
fn attached_plan_from_wire(text: &str, digest: &str) -> Result<Plan, InvalidRequest> {
    if text.len() > MAX_ATTACHED_PLAN_BYTES {
        return Err(InvalidRequest::new(
            "the plan file",
            format!(
                "{} bytes; at most {MAX_ATTACHED_PLAN_BYTES} are accepted: split the batch into smaller ones",
                text.len()
            ),
        ));
    }
    let plan = Plan::from_toml("plan.toml", text).map_err(|e| {
        let lines: Vec<String> = e.to_string().lines().take(20).map(String::from).collect();
        InvalidRequest::new(
            "the plan file",
            format!("not a valid plan; nothing attached:\n{}", lines.join("\n")),
        )
    })?;
    if !digest.is_empty() && plan.digest() != digest {
        return Err(InvalidRequest::new(
            "the plan's digest",
            format!(
                "{digest} was sent with a plan file whose digest is {}: send the plan file's own digest, or none",
                plan.digest()
            ),
        ));
    }
    Ok(plan)
}

/// An identifier field (batch, project, deployer), refused as the core refuses it.
fn id(field: &'static str, v: String) -> Result<String, InvalidRequest> {
    match check_id(field, &v) {
        Ok(()) => Ok(v),
        Err(Refusal::Invalid { field, problem }) => Err(InvalidRequest::new(field, problem)),
        Err(other) => Err(InvalidRequest::new(field, other)),
    }
}

/// An optional identifier field: empty means "not given".
fn opt_id(field: &'static str, v: String) -> Result<Option<String>, InvalidRequest> {
    opt(v).map(|v| id(field, v)).transpose()
}

/// `GetBatch`, checked: the batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GetBatch(pub String);

impl TryFrom<pb::GetBatchRequest> for GetBatch {
    type Error = InvalidRequest;
    fn try_from(r: pb::GetBatchRequest) -> Result<GetBatch, InvalidRequest> {
        Ok(GetBatch(id("batch", r.batch)?))
    }
}

/// `ListBatches`, checked: every batch, or one project's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListBatches {
    pub project: Option<String>,
}

impl TryFrom<pb::ListBatchesRequest> for ListBatches {
    type Error = InvalidRequest;
    fn try_from(r: pb::ListBatchesRequest) -> Result<ListBatches, InvalidRequest> {
        Ok(ListBatches {
            project: opt_id("project", r.project)?,
        })
    }
}

/// `GetQueue`, checked: every deployer's list, or one deployer's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GetQueue {
    pub deployer: Option<String>,
}

impl TryFrom<pb::GetQueueRequest> for GetQueue {
    type Error = InvalidRequest;
    fn try_from(r: pb::GetQueueRequest) -> Result<GetQueue, InvalidRequest> {
        Ok(GetQueue {
            deployer: opt_id("deployer", r.deployer)?,
        })
    }
}

fn actor(user: UserRecord, role: Role) -> Actor {
    Actor::user(user.name, role)
}

impl WorkflowSvc {
    async fn run(
        &self,
        actor: &Actor,
        cmd: Command,
        plan: Option<&SentPlan>,
    ) -> Result<pb::WorkflowExecuteReply, Status> {
        let now = self.0.now_ms();
        let digest = plan.map(|p| p.plan.digest());
        let stored = plan
            .zip(digest.as_deref())
            .map(|(p, d)| (d, p.text.as_str()));
        let events = engine::execute(&self.0.workflow, &self.0, now, actor, cmd, stored).await?;
        Ok(pb::WorkflowExecuteReply {
            events: wire::enc_all(&events),
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
        let ExecuteRequest { mut cmd, plan } = req.into_inner().try_into()?;
        if let Command::AttachPlan { batch, plan: facts } = &mut cmd {
            self.0
                .workflow
                .judge_attachment(batch, facts, plan.as_ref().map(|p| &p.plan))?;
        }
        let reply = self.run(&actor(user, role), cmd, plan.as_ref()).await?;
        Ok(Response::new(reply))
    }

    async fn get_batch(
        &self,
        req: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::BatchViewReply>, Status> {
        authorize(&self.0, &req, allowed("GetBatch"))?;
        let GetBatch(id) = req.into_inner().try_into()?;
        let now = self.0.now_ms();
        let view = self.0.workflow.batch_view(&id, Timestamp(now)).await?;
        Ok(Response::new(pb::BatchViewReply {
            view: Some(view.encode()),
            now_ms: now,
        }))
    }

    async fn list_batches(
        &self,
        req: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::BatchListReply>, Status> {
        authorize(&self.0, &req, allowed("ListBatches"))?;
        let ListBatches { project } = req.into_inner().try_into()?;
        let now = self.0.now_ms();
        let batches = self
            .0
            .workflow
            .read(|w| w.batch_summaries(project.as_deref()))
            .await;
        Ok(Response::new(pb::BatchListReply {
            batches: wire::enc_all(&batches),
            now_ms: now,
        }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::QueueReply>, Status> {
        authorize(&self.0, &req, allowed("GetQueue"))?;
        let GetQueue { deployer } = req.into_inner().try_into()?;
        let now = self.0.now_ms();
        let queues = self.0.workflow.queues(deployer.as_deref()).await?;
        Ok(Response::new(wire::queue_reply(&queues, now)))
    }

    async fn list_projects(
        &self,
        req: Request<pb::WorkflowEmpty>,
    ) -> Result<Response<pb::ProjectsReply>, Status> {
        authorize(&self.0, &req, allowed("ListProjects"))?;
        let now = self.0.now_ms();
        let v = self
            .0
            .workflow
            .read(|w| w.projects_view(Timestamp(now)))
            .await;
        Ok(Response::new(wire::projects_reply(&v, now)))
    }

    async fn pause_stats(
        &self,
        req: Request<pb::PauseStatsRequest>,
    ) -> Result<Response<pb::PauseStatsReply>, Status> {
        authorize(&self.0, &req, allowed("PauseStats"))?;
        let PauseStatsQuery { by, since } = req.into_inner().try_into()?;
        let now = self.0.now_ms();
        let rows = self
            .0
            .workflow
            .read(|w| w.pause_stats(by, since, Timestamp(now)))
            .await;
        Ok(Response::new(pb::PauseStatsReply {
            rows: wire::enc_all(&rows),
            now_ms: now,
        }))
    }

    async fn add_user(
        &self,
        req: Request<pb::AddUserRequest>,
    ) -> Result<Response<pb::AddUserReply>, Status> {
        let (user, role) = authorize(&self.0, &req, allowed("AddUser"))?;
        crate::svc::users::add(&self.0, &user, role, req.into_inner().try_into()?)
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
        let new_offset = match DevClockOp::try_from(req.into_inner())? {
            DevClockOp::Set(t) => {
                let off = t.saturating_sub(dev.base_ms());
                if off.unsigned_abs() > DEV_CLOCK_LIMIT_MS.unsigned_abs() {
                    return Err(invalid(
                        "set_ms",
                        "the time must be within ten years of the system clock",
                    ));
                }
                Some(off)
            }
            DevClockOp::Advance(d) => {
                let off = dev.offset_ms().saturating_add(d);
                if off.unsigned_abs() > DEV_CLOCK_LIMIT_MS.unsigned_abs() {
                    return Err(invalid(
                        "advance_ms",
                        "the clock would be more than ten years from the system clock",
                    ));
                }
                Some(off)
            }
            DevClockOp::Show => None,
        };
        let mut escalated = Vec::new();
        if let Some(off) = new_offset {
            // Persist first so a restart keeps the rehearsal's time, then move the clock and run
            // the escalation check right away at the new time.
            self.0
                .workflow
                .set_dev_clock_offset(off)
                .map_err(store_status)?;
            dev.set_offset_ms(off);
            tracing::info!(
                offset_ms = off,
                now_ms = crate::Clock::now_ms(&*dev),
                "dev clock changed"
            );
            escalated = self.0.workflow.escalate(&self.0, self.0.now_ms()).await;
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
        let r: DevRecord = req.into_inner().try_into()?;
        let cmd = self.0.workflow.dev_record(self.0.now_ms(), r).await?;
        Ok(Response::new(self.run(&Actor::System, cmd, None).await?))
    }

    async fn rotate_user_token(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::AddUserReply>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RotateUserToken"))?;
        crate::svc::users::rotate(&self.0, &user, req.into_inner().try_into()?).map(Response::new)
    }

    async fn set_user_disabled(
        &self,
        req: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::WorkflowUser>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("SetUserDisabled"))?;
        crate::svc::users::set_disabled(&self.0, &user, req.into_inner().try_into()?)
            .map(Response::new)
    }

    async fn remove_user(
        &self,
        req: Request<pb::UserNameRequest>,
    ) -> Result<Response<pb::WorkflowEmpty>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("RemoveUser"))?;
        crate::svc::users::remove(&self.0, &user, req.into_inner().try_into()?).map(Response::new)
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
    use preflight_core::workflow::PauseReason;

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

    fn pause(reason: i32, party: i32) -> pb::WorkflowCommand {
        pb::WorkflowCommand {
            cmd: Some(pb::workflow_command::Cmd::Pause(pb::PauseCmd {
                batch: "B".into(),
                reason,
                text: "t".into(),
                party,
            })),
        }
    }

    fn refusal<T: std::fmt::Debug>(r: Result<T, InvalidRequest>) -> (String, String) {
        let e = r.expect_err("refused");
        let s = Status::from(e.clone());
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with(&format!("{}: ", e.field)),
            "{}",
            s.message()
        );
        (e.field, e.problem)
    }

    #[test]
    fn bad_commands_name_the_field() {
        let package = pb::WorkflowPauseReason::Package as i32;
        let (field, problem) = refusal(ExecuteRequest::try_from(pause(99, 0)));
        assert_eq!(field, "reason");
        assert!(problem.contains("99"), "{problem}");
        let (field, problem) = refusal(ExecuteRequest::try_from(pause(0, 0)));
        assert_eq!(field, "reason");
        assert!(problem.contains("network_ports"), "{problem}");
        let (field, _) = refusal(ExecuteRequest::try_from(pause(package, -3)));
        assert_eq!(field, "party");
        let (field, _) = refusal(ExecuteRequest::try_from(pb::WorkflowCommand { cmd: None }));
        assert_eq!(field, "command");
        let gd = |decision| pb::WorkflowCommand {
            cmd: Some(pb::workflow_command::Cmd::GdConfirm(pb::GdConfirmCmd {
                batch: "B".into(),
                decision,
                note: String::new(),
            })),
        };
        assert_eq!(refusal(ExecuteRequest::try_from(gd(0))).0, "decision");
        assert_eq!(refusal(ExecuteRequest::try_from(gd(7))).0, "decision");
        let approve = pb::WorkflowCommand {
            cmd: Some(pb::workflow_command::Cmd::SetApproval(pb::SetApprovalCmd {
                project: "P".into(),
                approval: Some(pb::ProjectApproval {
                    kind: 12,
                    ..Default::default()
                }),
            })),
        };
        assert_eq!(
            refusal(ExecuteRequest::try_from(approve)).0,
            "approval.kind"
        );
    }

    #[test]
    fn good_commands_become_core_commands() {
        let r = ExecuteRequest::try_from(pause(pb::WorkflowPauseReason::NetworkPorts as i32, 0))
            .expect("valid");
        assert_eq!(
            r.cmd,
            Command::Pause {
                batch: "B".into(),
                reason: PauseReason::NetworkPorts,
                text: "t".into(),
                party: None,
            }
        );
        let r = ExecuteRequest::try_from(pause(
            pb::WorkflowPauseReason::Other as i32,
            pb::WorkflowParty::Customer as i32,
        ))
        .expect("valid");
        assert!(matches!(
            r.cmd,
            Command::Pause {
                party: Some(Party::Customer),
                ..
            }
        ));
    }

    #[test]
    fn reads_refuse_malformed_ids_naming_the_field() {
        let (field, problem) = refusal(GetBatch::try_from(pb::GetBatchRequest {
            batch: "../etc".into(),
        }));
        assert_eq!(field, "batch");
        assert!(problem.contains("not an id"), "{problem}");
        assert_eq!(
            refusal(GetBatch::try_from(pb::GetBatchRequest::default())).0,
            "batch"
        );
        assert_eq!(
            GetBatch::try_from(pb::GetBatchRequest { batch: "B7".into() }).expect("ok"),
            GetBatch("B7".into())
        );
        let list = |project: &str| {
            ListBatches::try_from(pb::ListBatchesRequest {
                project: project.into(),
            })
        };
        assert_eq!(list("").expect("all").project, None);
        assert_eq!(list("P1").expect("one").project.as_deref(), Some("P1"));
        assert_eq!(refusal(list("a b")).0, "project");
        let queue = |deployer: &str| {
            GetQueue::try_from(pb::GetQueueRequest {
                deployer: deployer.into(),
            })
        };
        assert_eq!(queue("").expect("all").deployer, None);
        assert_eq!(refusal(queue(&"x".repeat(65))).0, "deployer");
    }

    #[test]
    fn a_plan_sent_with_another_digest_is_refused_in_the_users_words() {
        let valid = "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"h1\"\nrole = \"db\"\n";
        let e = attached_plan_from_wire(valid, &"0".repeat(64)).unwrap_err();
        assert_eq!(e.field, "the plan's digest");
        assert!(e.problem.contains("plan file"), "{}", e.problem);
        assert!(!e.to_string().contains("plan_toml"), "{e}");
        let e = attached_plan_from_wire("[[servers]]\naddress = 1\n", "").unwrap_err();
        assert_eq!(e.field, "the plan file");
    }

    #[test]
    fn other_requests_refuse_unknown_values_naming_the_field() {
        let q = PauseStatsQuery::try_from(pb::PauseStatsRequest { by: 0, since_ms: 0 })
            .expect("unset is by reason");
        assert_eq!(q.by, StatsKey::Reason);
        let (field, _) = refusal(PauseStatsQuery::try_from(pb::PauseStatsRequest {
            by: 40,
            since_ms: 0,
        }));
        assert_eq!(field, "by");
        let dev = |kind, failures| pb::DevRecordRequest {
            batch: "B".into(),
            kind,
            failures,
            soft_failures: vec![],
        };
        assert_eq!(refusal(DevRecord::try_from(dev(0, vec![]))).0, "kind");
        assert_eq!(refusal(DevRecord::try_from(dev(9, vec![]))).0, "kind");
        let bad_failure = pb::WorkflowCheckFailure {
            check: "c".into(),
            detail: "d".into(),
            reason: 0,
            party: 0,
        };
        let (field, _) = refusal(DevRecord::try_from(dev(
            pb::DevRecordKind::Perf as i32,
            vec![bad_failure],
        )));
        assert_eq!(field, "failures.reason");
        let user = |role| pb::AddUserRequest {
            name: "amy".into(),
            role,
            ttl_s: 0,
        };
        let (field, problem) = refusal(crate::engine::users::AddUser::try_from(user(0)));
        assert_eq!(field, "role");
        assert!(problem.contains("delivery_lead"), "{problem}");
        assert_eq!(
            refusal(crate::engine::users::AddUser::try_from(user(55))).0,
            "role"
        );
        let ok = crate::engine::users::AddUser::try_from(user(pb::Role::Gd as i32)).expect("ok");
        assert_eq!(ok.role, Role::Gd);
        let (field, _) = refusal(crate::engine::users::UserName::try_from(
            pb::UserNameRequest {
                name: "a b".into(),
                ttl_s: 0,
            },
        ));
        assert_eq!(field, "name");
        let clock = |op| DevClockOp::try_from(pb::DevClockRequest { op: Some(op) });
        use pb::dev_clock_request::Op;
        assert_eq!(clock(Op::AdvanceMs(1_000)), Ok(DevClockOp::Advance(1_000)));
        assert_eq!(refusal(clock(Op::AdvanceMs(-1))).0, "advance_ms");
        assert_eq!(refusal(clock(Op::AdvanceMs(i64::MAX))).0, "advance_ms");
        assert_eq!(
            DevClockOp::try_from(pb::DevClockRequest { op: None }),
            Ok(DevClockOp::Show)
        );
    }
}
