//! The workflow subcommands' calls of the controller's Workflow service; what they print is
//! rendered by `preflight_render::workflow`.

use anyhow::{bail, Context};
use preflight_controller::wire::{self, WireEnum};
use preflight_core::role::Role;
use preflight_core::workflow::{
    BatchSummary, BatchView, Event, Party, PauseReason, PauseStatsRow, ProjectsView, QueueEntry,
    StatsKey, Timestamp,
};
use preflight_proto::v1 as pb;
use preflight_render::workflow as views;

use super::args::*;
use crate::client::{status, Conn};
use crate::Output;

type Client = pb::workflow_client::WorkflowClient<crate::client::Authed>;

async fn client(conn: &Conn) -> anyhow::Result<Client> {
    Ok(conn
        .service(pb::workflow_client::WorkflowClient::with_interceptor)
        .await?
        .max_decoding_message_size(preflight_controller::MAX_MESSAGE_BYTES))
}

/// Attaches a plan to a batch, with its facts (digest and hosts) and its canonical TOML, which
/// the controller keeps: `preflight plan attach`.
pub(crate) async fn attach_plan(
    conn: &Conn,
    batch: String,
    digest: String,
    hosts: Vec<String>,
    plan_toml: String,
    out: Output,
) -> anyhow::Result<()> {
    let mut c = client(conn).await?;
    exec(
        &mut c,
        pb::workflow_command::Cmd::AttachPlan(pb::AttachPlanCmd {
            batch,
            digest,
            hosts,
            incomplete: vec![],
            plan_toml,
        }),
        out,
    )
    .await
}

/// A value of the controller's reply, in this build's terms. A reply this build cannot read
/// comes from a newer controller (or a broken one): say so and what to do, with the detail
/// after it for a bug report.
pub(crate) fn reply<T>(r: Result<T, wire::InvalidRequest>) -> anyhow::Result<T> {
    r.map_err(|e| {
        anyhow::anyhow!(
            "this preflight cannot read the controller's reply, which is probably from a newer \
             version: install the command line of the controller's version (detail: {e})"
        )
    })
}

fn print_events(r: pb::WorkflowExecuteReply, out: Output) -> anyhow::Result<()> {
    let events: Vec<Event> = reply(wire::dec_all(r.events))?;
    if out == Output::Json {
        return crate::json(&events);
    }
    print!("{}", views::events(&events));
    Ok(())
}

/// A workflow time as shown: in the display zone (`--tz`); JSON keeps UTC.
fn at(t: Timestamp) -> String {
    preflight_render::time(t.0)
}

async fn exec(c: &mut Client, cmd: pb::workflow_command::Cmd, out: Output) -> anyhow::Result<()> {
    let r = c
        .execute(pb::WorkflowCommand { cmd: Some(cmd) })
        .await
        .map_err(status)?
        .into_inner();
    print_events(r, out)
}

/// The refusal of `batch advance --lang zh` for unmet gates, in Chinese, from the gates the
/// controller evaluates now (`None` when it sends no Chinese texts or every gate is met).
async fn unmet_gates_zh(c: &mut Client, batch: &str) -> Option<String> {
    let r = c
        .get_batch(pb::GetBatchRequest {
            batch: batch.to_string(),
        })
        .await
        .ok()?
        .into_inner();
    let v: BatchView = wire::dec_need("view", r.view).ok()?;
    views::unmet_gates_zh(&v)
}

/// `batch risk B --all-soft`: one risk per soft failure of the recorded readiness report that
/// no risk names yet, with the failure's check as its source.
async fn all_soft_risks(c: &mut Client, batch: String, out: Output) -> anyhow::Result<()> {
    let r = c
        .get_batch(pb::GetBatchRequest {
            batch: batch.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let v: BatchView = reply(wire::dec_need("view", r.view))?;
    let Some(readiness) = &v.batch.readiness else {
        bail!(
            "batch {batch} has no recorded readiness report, so no soft failure to list: run `preflight sweep {batch}` first"
        );
    };
    let listed: Vec<&str> = v
        .batch
        .risks
        .iter()
        .filter_map(|r| r.source.as_deref())
        .collect();
    let mut events: Vec<Event> = Vec::new();
    let mut added = 0;
    for f in &readiness.soft_failures {
        if listed.contains(&f.check.as_str()) {
            continue;
        }
        let mut text = format!("soft failure {}: {}", f.check, f.detail);
        if text.len() > preflight_core::workflow::MAX_TEXT_LEN {
            let mut end = preflight_core::workflow::MAX_TEXT_LEN - 3;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let reply = c
            .execute(pb::WorkflowCommand {
                cmd: Some(pb::workflow_command::Cmd::AddRisk(pb::AddRiskCmd {
                    batch: batch.clone(),
                    text,
                    source: f.check.clone(),
                })),
            })
            .await
            .map_err(status)?
            .into_inner();
        added += 1;
        if out == Output::Json {
            events.extend(self::reply(wire::dec_all(reply.events))?);
        } else {
            print_events(reply, out)?;
        }
    }
    if out == Output::Json {
        return crate::json(&events);
    }
    if added == 0 {
        println!(
            "batch {batch}: every soft failure of readiness run {} is already listed as a risk ({} in all)",
            readiness.run_id,
            readiness.soft_failures.len()
        );
    } else {
        println!(
            "batch {batch}: {added} soft failure(s) of readiness run {} listed as risks",
            readiness.run_id
        );
    }
    Ok(())
}

/// A `--ttl` in seconds on the wire: 0 (the controller's default) when not given, else clamped
/// to 1 s ..= `u32::MAX` s.
fn ttl_s(ttl: Option<u64>) -> u32 {
    ttl.map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX).max(1))
}

fn batch_ref(batch: String) -> pb::BatchRefCmd {
    pb::BatchRefCmd { batch }
}

/// Runs one workflow subcommand.
pub async fn run(cmd: WorkflowCmd, conn: &Conn, out: Output) -> anyhow::Result<()> {
    use pb::workflow_command::Cmd as C;
    let mut c = client(conn).await?;
    match cmd {
        WorkflowCmd::User(UserCmd::Add { name, role, ttl }) => {
            let role = word::<Role>(&role)?.to_i32();
            let r = c
                .add_user(pb::AddUserRequest {
                    name,
                    role,
                    ttl_s: ttl_s(ttl),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r);
            }
            println!(
                "user {} ({}) added; token (shown only this once, expires {}):\n  {}",
                r.name,
                views::role(r.role),
                at(Timestamp(r.expires_at_ms)),
                r.token
            );
            if r.deployer_added {
                println!("{} is also in the deployer list now", r.name);
            }
            Ok(())
        }
        WorkflowCmd::User(UserCmd::Token(UserTokenCmd::Rotate { name, ttl })) => {
            let r = c
                .rotate_user_token(pb::UserNameRequest {
                    name,
                    ttl_s: ttl_s(ttl),
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r);
            }
            println!(
                "new token for {} ({}) (shown only this once, expires {}); the old one is refused from now on:\n  {}",
                r.name,
                views::role(r.role),
                at(Timestamp(r.expires_at_ms)),
                r.token
            );
            Ok(())
        }
        WorkflowCmd::User(cmd @ (UserCmd::Disable { .. } | UserCmd::Enable { .. })) => {
            let (name, disabled) = match cmd {
                UserCmd::Disable { name } => (name, true),
                UserCmd::Enable { name } => (name, false),
                _ => unreachable!("matched above"),
            };
            let u = c
                .set_user_disabled(pb::SetUserDisabledRequest { name, disabled })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&u);
            }
            if u.disabled {
                println!(
                    "user {} disabled: their token is refused until `preflight user enable {}`",
                    u.name, u.name
                );
            } else {
                println!("user {} enabled: their token works again", u.name);
            }
            Ok(())
        }
        WorkflowCmd::User(UserCmd::Remove { name }) => {
            c.remove_user(pb::UserNameRequest {
                name: name.clone(),
                ttl_s: 0,
            })
            .await
            .map_err(status)?;
            if out == Output::Json {
                return crate::json(&serde_json::json!({ "removed": name }));
            }
            println!("user {name} removed: their token is refused; the history keeps the name");
            Ok(())
        }
        WorkflowCmd::User(UserCmd::History) => {
            let r = c
                .user_history(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r.entries);
            }
            print!("{}", views::user_history(&r.entries));
            Ok(())
        }
        WorkflowCmd::User(UserCmd::List) => {
            let r = c
                .list_users(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&r.users);
            }
            print!("{}", views::users(&r));
            Ok(())
        }
        WorkflowCmd::Project(ProjectCmd::Add {
            id,
            name,
            line,
            approval,
        }) => {
            exec(
                &mut c,
                C::CreateProject(pb::CreateProjectCmd {
                    id,
                    name,
                    business_line: line,
                    approval: Some(approval.to_pb()),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Project(ProjectCmd::Approve { id, approval }) => {
            if approval.budget.is_none() && approval.exception_approver.is_none() {
                bail!("give --budget, or --exception-approver with --exception-ref");
            }
            exec(
                &mut c,
                C::SetApproval(pb::SetApprovalCmd {
                    project: id,
                    approval: Some(approval.to_pb()),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Project(ProjectCmd::List) | WorkflowCmd::Deployer(DeployerCmd::List) => {
            let r = c
                .list_projects(pb::WorkflowEmpty {})
                .await
                .map_err(status)?
                .into_inner();
            let v: ProjectsView = reply(wire::projects_view(r))?;
            if out == Output::Json {
                return crate::json(&v);
            }
            print!("{}", views::projects(&v));
            Ok(())
        }
        WorkflowCmd::Batch(b) => batch(&mut c, b, out).await,
        WorkflowCmd::Gd(GdCmd::Confirm {
            batch,
            decision,
            note,
        }) => {
            exec(
                &mut c,
                C::GdConfirm(pb::GdConfirmCmd {
                    batch,
                    decision: decision.to_pb().into(),
                    note,
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Assign { batch, deployer } => {
            exec(
                &mut c,
                C::Assign(pb::AssignCmd {
                    batch,
                    deployer: deployer.unwrap_or_default(),
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Deployer(DeployerCmd::Add { name }) => {
            let r = c
                .execute(pb::WorkflowCommand {
                    cmd: Some(C::AddDeployer(pb::AddDeployerCmd { name: name.clone() })),
                })
                .await;
            match r {
                // Already there (e.g. added with `user add NAME --role deployer`): nothing to do.
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    if out == Output::Json {
                        return crate::json(&serde_json::json!([]));
                    }
                    println!("deployer {name} is already in the deployer list: nothing to do");
                    Ok(())
                }
                r => print_events(r.map_err(status)?.into_inner(), out),
            }
        }
        WorkflowCmd::Queue { deployer, lang } => {
            let r = c
                .get_queue(pb::GetQueueRequest {
                    deployer: deployer.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let queues: std::collections::BTreeMap<String, Vec<QueueEntry>> =
                reply(wire::queues(r))?;
            if out == Output::Json {
                return crate::json(&queues);
            }
            print!("{}", views::queues(&queues, lang.lang.into()));
            Ok(())
        }
        WorkflowCmd::Jump {
            batch,
            position,
            approval,
        } => {
            if approval.trim().is_empty() {
                anyhow::bail!(
                    "--approval is empty: say who approved the jump and why, e.g. --approval \"customer go-live on Friday, approved by lee\""
                );
            }
            exec(
                &mut c,
                C::JumpQueue(pb::JumpCmd {
                    batch,
                    position,
                    reason: approval,
                }),
                out,
            )
            .await
        }
        WorkflowCmd::Stats(StatsCmd::Pauses { by, since, lang }) => {
            let since_ms = since
                .as_deref()
                .map(|t| parse_time_arg("--since", t))
                .transpose()?
                .unwrap_or(0);
            let key = word::<StatsKey>(&by)?;
            let r = c
                .pause_stats(pb::PauseStatsRequest {
                    by: key.to_i32(),
                    since_ms,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<PauseStatsRow> = reply(wire::dec_all(r.rows))?;
            if out == Output::Json {
                return crate::json(&rows);
            }
            print!("{}", views::pause_stats(&rows, key, lang.lang.into()));
            Ok(())
        }
        WorkflowCmd::Dev(DevCmd::Clock(cc)) => {
            use pb::dev_clock_request::Op;
            let op = match cc {
                ClockCmd::Set { time } => Op::SetMs(parse_time_arg("dev clock set TIME", &time)?),
                ClockCmd::Advance { duration } => {
                    let d = preflight_core::units::parse_duration(&duration)
                        .map_err(|why| anyhow::anyhow!("invalid duration {duration:?}: {why}"))?;
                    Op::AdvanceMs(i64::try_from(d.as_millis()).context("duration too long")?)
                }
                ClockCmd::Show => Op::Show(true),
            };
            let r = c
                .dev_clock(pb::DevClockRequest { op: Some(op) })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                return crate::json(&serde_json::json!({
                    "now": Timestamp(r.now_ms).to_string(),
                    "now_ms": r.now_ms,
                    "offset_ms": r.offset_ms,
                    "escalated": r.escalated,
                }));
            }
            println!(
                "controller time {} (offset {} s)",
                at(Timestamp(r.now_ms)),
                r.offset_ms / 1000
            );
            if !r.escalated.is_empty() {
                println!("escalated to GD: {}", r.escalated.join(", "));
            }
            Ok(())
        }
        WorkflowCmd::Dev(DevCmd::Record {
            kind,
            batch,
            fails,
            softs,
        }) => {
            let r = c
                .dev_record(pb::DevRecordRequest {
                    batch,
                    kind: kind.to_pb().into(),
                    failures: fails
                        .iter()
                        .map(|s| failure_arg(s))
                        .collect::<Result<_, _>>()?,
                    soft_failures: softs
                        .iter()
                        .map(|s| failure_arg(s))
                        .collect::<Result<_, _>>()?,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_events(r, out)
        }
    }
}

async fn batch(c: &mut Client, cmd: BatchCmd, out: Output) -> anyhow::Result<()> {
    use pb::workflow_command::Cmd as C;
    match cmd {
        BatchCmd::Create {
            id,
            project,
            title,
            line,
        } => {
            exec(
                c,
                C::CreateBatch(pb::CreateBatchCmd {
                    id,
                    project,
                    business_line: line.unwrap_or_default(),
                    title,
                }),
                out,
            )
            .await
        }
        BatchCmd::List { project, lang } => {
            let r = c
                .list_batches(pb::ListBatchesRequest {
                    project: project.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let list: Vec<BatchSummary> = reply(wire::dec_all(r.batches))?;
            if out == Output::Json {
                return crate::json(&list);
            }
            print!("{}", views::batch_list(&list, lang.lang.into()));
            Ok(())
        }
        BatchCmd::Show { batch, lang } => {
            let r = c
                .get_batch(pb::GetBatchRequest { batch })
                .await
                .map_err(status)?
                .into_inner();
            let v: BatchView = reply(wire::dec_need("view", r.view))?;
            if out == Output::Json {
                return crate::json(&v);
            }
            print!("{}", views::batch(&v, lang.lang.into(), r.now_ms));
            Ok(())
        }
        BatchCmd::Advance { batch, lang } => {
            let id = batch.clone();
            let r = c
                .execute(pb::WorkflowCommand {
                    cmd: Some(C::Advance(batch_ref(batch))),
                })
                .await;
            match r {
                Ok(r) => print_events(r.into_inner(), out),
                Err(s)
                    if lang.lang == Lang::Zh
                        && s.code() == tonic::Code::FailedPrecondition
                        && s.message().contains(" cannot leave ") =>
                {
                    match unmet_gates_zh(c, &id).await {
                        Some(msg) => bail!("不允许：{msg}"),
                        None => Err(status(s)),
                    }
                }
                Err(s) => Err(status(s)),
            }
        }
        BatchCmd::Pause {
            batch,
            reason,
            text,
            party,
        } => {
            exec(
                c,
                C::Pause(pb::PauseCmd {
                    batch,
                    reason: word::<PauseReason>(&reason)?.to_i32(),
                    text,
                    party: party
                        .as_deref()
                        .map(word::<Party>)
                        .transpose()?
                        .map_or(0, Party::to_i32),
                }),
                out,
            )
            .await
        }
        BatchCmd::Resolve { batch, note } => {
            exec(c, C::Resolve(pb::NoteCmd { batch, note }), out).await
        }
        BatchCmd::Terminate { batch, reason } => {
            exec(
                c,
                C::Terminate(pb::NoteCmd {
                    batch,
                    note: reason,
                }),
                out,
            )
            .await
        }
        BatchCmd::Start { batch } => exec(c, C::StartDeploy(batch_ref(batch)), out).await,
        BatchCmd::Plan {
            batch,
            digest,
            hosts,
        } => {
            exec(
                c,
                C::AttachPlan(pb::AttachPlanCmd {
                    batch,
                    digest,
                    hosts,
                    incomplete: vec![],
                    plan_toml: String::new(),
                }),
                out,
            )
            .await
        }
        BatchCmd::ConfirmPlan { batch } => exec(c, C::ConfirmPlan(batch_ref(batch)), out).await,
        BatchCmd::Risk {
            batch,
            text,
            source,
            all_soft,
        } => {
            if all_soft {
                return all_soft_risks(c, batch, out).await;
            }
            exec(
                c,
                C::AddRisk(pb::AddRiskCmd {
                    batch,
                    text: text.unwrap_or_default(),
                    source: source.unwrap_or_default(),
                }),
                out,
            )
            .await
        }
        BatchCmd::FileRisks {
            batch,
            risks,
            document,
        } => {
            exec(
                c,
                C::FileRisks(pb::FileRisksCmd {
                    batch,
                    risks,
                    document,
                }),
                out,
            )
            .await
        }
        BatchCmd::Review {
            batch,
            approve,
            reject: _,
            note,
        } => {
            exec(
                c,
                C::ReviewFiling(pb::ReviewFilingCmd {
                    batch,
                    approve,
                    note,
                }),
                out,
            )
            .await
        }
        BatchCmd::Accept {
            batch,
            rating,
            comment,
        } => {
            exec(
                c,
                C::RecordAcceptance(pb::AcceptanceCmd {
                    batch,
                    rating,
                    comment,
                }),
                out,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ttl_is_the_default_or_clamped_to_what_the_wire_holds() {
        use super::ttl_s;
        assert_eq!(ttl_s(None), 0);
        assert_eq!(ttl_s(Some(0)), 1);
        assert_eq!(ttl_s(Some(900)), 900);
        assert_eq!(ttl_s(Some(u64::MAX)), u32::MAX);
    }
}
