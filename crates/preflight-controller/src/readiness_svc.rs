//! The Readiness service: a sweep over every server of a plan, fanned out to their agents with
//! a bound on concurrency, judged by `preflight_core::readiness`, stored as a run.
//!
//! The run is recorded `running` before the first agent is asked and replaced by the finished
//! record in one durable write; a caller that disconnects does not stop the run, and a
//! controller killed mid-sweep marks it `interrupted` at the next start.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use preflight_core::plan::{PackageKind, Plan, Server, MAX_PLAN_BYTES};
use preflight_core::readiness::{self, Finding};
use preflight_core::role::Role;
use preflight_proto::v1 as pb;
use preflight_store::sweeps::{FindingRecord, SweepRecord};
use preflight_store::AgentRecord;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agents::dial_addr;
use crate::auth::authorize;
use crate::Shared;

pub(crate) struct ReadinessSvc(pub Arc<Shared>);

/// Roles allowed to call each RPC of the Readiness service (`preflight_core::role::rpc_roles`).
fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Readiness", rpc).unwrap_or(&[])
}

const MAX_CONCURRENCY: u32 = 256;

fn store_status(e: preflight_store::StoreError) -> Status {
    Status::unavailable(e.to_string())
}

/// The agent that serves a planned server: the one reachable at, or holding, its address;
/// else the one reporting its hostname.
fn agent_for<'a>(server: &Server, agents: &'a [AgentRecord]) -> Option<&'a AgentRecord> {
    let addr = server.address;
    let holds = |a: &AgentRecord| {
        dial_addr(a)
            .and_then(|d| d.parse::<std::net::SocketAddr>().ok())
            .is_some_and(|d| d.ip() == addr)
            || a.addresses
                .iter()
                .any(|c| c.split('/').next().and_then(|s| s.parse::<IpAddr>().ok()) == Some(addr))
    };
    let live = agents.iter().filter(|a| !a.revoked);
    live.clone().find(|a| holds(a)).or_else(|| {
        live.into_iter()
            .find(|a| a.hostname.eq_ignore_ascii_case(&server.hostname))
    })
}

/// Free bytes of the filesystem holding `dir`: the mount with the longest matching prefix.
fn free_for(dir: &str, mounts: &[pb::Mount]) -> Option<u64> {
    mounts
        .iter()
        .filter(|m| {
            let mp = m.mount_point.trim_end_matches('/');
            dir == mp || dir.starts_with(&format!("{mp}/")) || mp.is_empty()
        })
        .max_by_key(|m| m.mount_point.len())
        .map(|m| m.free_bytes)
}

impl ReadinessSvc {
    async fn sweep_server(
        &self,
        plan: &Plan,
        server: &Server,
        agents: &[AgentRecord],
    ) -> Vec<Finding> {
        let s = &self.0;
        let Some(rec) = agent_for(server, agents) else {
            return vec![readiness::reachable(
                server,
                Some("no enrolled agent holds this address or hostname"),
            )];
        };
        let mut client = match s.agents.client(rec) {
            Ok(c) => c,
            Err(e) => return vec![readiness::reachable(server, Some(e.message()))],
        };
        let t0 = s.now_ms();
        let mut req = Request::new(pb::GetInventoryRequest {});
        req.set_timeout(Duration::from_secs(15));
        let inv = match client.get_inventory(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => return vec![readiness::reachable(server, Some(e.message()))],
        };
        let t1 = s.now_ms();
        let t = plan.thresholds_for(server);
        let mut out = vec![readiness::reachable(server, None)];
        let mut addrs: Vec<String> = inv
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().cloned())
            .collect();
        if let Some(d) = dial_addr(rec).and_then(|d| d.parse::<std::net::SocketAddr>().ok()) {
            addrs.push(d.ip().to_string());
        }
        out.push(readiness::identity(server, &inv.hostname, &rec.id, &addrs));
        let cpu = inv.cpu.clone().unwrap_or_default();
        let mem = inv.memory.unwrap_or_default();
        out.extend(readiness::capacity(
            server,
            t,
            u64::from(cpu.threads),
            mem.total_bytes,
        ));
        for dir in &server.data_dirs {
            out.push(readiness::disk_free(
                server,
                t,
                dir,
                free_for(dir, &inv.mounts),
            ));
        }
        let clock = inv.clock.clone().unwrap_or_default();
        let offset = inv.collected_at_unix_ms - (t0 + t1) / 2;
        out.push(readiness::clock(server, t, offset, clock.synchronized));
        out.extend(self.packages(plan, server, &mut client).await);
        out
    }

    async fn packages(
        &self,
        plan: &Plan,
        server: &Server,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    ) -> Vec<Finding> {
        let listed: Vec<_> = plan.packages_for(server).collect();
        if listed.is_empty() {
            return vec![];
        }
        let mut req = Request::new(pb::VerifyPackageRequest {
            files: listed
                .iter()
                .map(|p| pb::PackageFile {
                    path: p.path.clone(),
                    size: p.size,
                    sha256: p.sha256.clone(),
                })
                .collect(),
        });
        // Large backups take a while to hash; the cap keeps a stuck disk from holding a sweep.
        req.set_timeout(Duration::from_secs(3600));
        let is_backup = |path: &str| {
            listed
                .iter()
                .any(|p| p.path == path && matches!(p.kind, PackageKind::DbBackup { .. }))
        };
        let mut out = Vec::new();
        match client.verify_package(req).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ev) => {
                            if let Some(f) = ev.file {
                                let detail = match f.status.as_str() {
                                    "wrong_size" => f.actual_size.to_string(),
                                    "wrong_hash" => f.actual_sha256.clone(),
                                    _ => f.error.clone(),
                                };
                                out.push(readiness::package_file(
                                    server,
                                    &f.path,
                                    is_backup(&f.path),
                                    &f.status,
                                    &detail,
                                ));
                            }
                        }
                        Err(e) => {
                            out.push(readiness::package_file(
                                server,
                                "(stream)",
                                false,
                                "unreadable",
                                e.message(),
                            ));
                            break;
                        }
                    }
                }
            }
            Err(e) => out.push(readiness::package_file(
                server,
                "(all)",
                false,
                "unreadable",
                e.message(),
            )),
        }
        out
    }
}

/// Feeds a finished run to the workflow when a batch of that id exists with this very plan
/// attached: the gate of `confirm_plan` then sees it, and a hard failure from `confirm_plan` on
/// pauses the batch with the failing checks and their parties (WORKFLOW.md).
async fn record_in_workflow(s: &Shared, rec: &SweepRecord, findings: &[Finding]) {
    use preflight_core::workflow::{Actor, Command, ReadinessSummary, Timestamp};
    let attached = s
        .workflow
        .read(|w| {
            w.batch(&rec.batch)
                .map(|b| b.plan.as_ref().map(|p| p.digest.clone()))
        })
        .await;
    match attached {
        None => return,
        Some(None) => {
            tracing::info!(batch = %rec.batch, "sweep not recorded in the workflow: no plan attached to the batch");
            return;
        }
        Some(Some(d)) if d != rec.plan_digest => {
            tracing::warn!(batch = %rec.batch, "sweep not recorded in the workflow: it checked another plan than the one attached");
            return;
        }
        Some(Some(_)) => {}
    }
    let pick = |v: readiness::Verdict| {
        findings
            .iter()
            .filter(|f| f.verdict == v)
            .map(Finding::to_failure)
            .collect()
    };
    let cmd = Command::RecordReadiness {
        batch: rec.batch.clone(),
        summary: ReadinessSummary {
            run_id: rec.run_id.to_string(),
            finished_at: Timestamp(rec.finished_at_ms),
            plan_digest: rec.plan_digest.clone(),
            hard_failures: pick(readiness::Verdict::Hard),
            soft_failures: pick(readiness::Verdict::Soft),
        },
    };
    if let Err(e) = s.workflow.execute(s.now_ms(), &Actor::System, cmd).await {
        tracing::warn!(batch = %rec.batch, error = %e, "sweep not recorded in the workflow");
    }
}

fn to_record(f: &Finding) -> FindingRecord {
    FindingRecord {
        server: f.server.clone(),
        check: f.check.clone(),
        verdict: f.verdict.as_str().into(),
        party: f.party.id().into(),
        reason: f.reason.id().into(),
        message: f.message.clone(),
        message_zh: f.message_zh.clone(),
        fix: f.fix.clone(),
        fix_zh: f.fix_zh.clone(),
    }
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
        state: r.state.clone(),
        passed: count("pass"),
        soft: count("soft"),
        hard: count("hard"),
        findings: if with_findings {
            r.findings
                .iter()
                .map(|f| pb::SweepFinding {
                    server: f.server.clone(),
                    check: f.check.clone(),
                    verdict: f.verdict.clone(),
                    party: f.party.clone(),
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                    message_zh: f.message_zh.clone(),
                    fix: f.fix.clone(),
                    fix_zh: f.fix_zh.clone(),
                })
                .collect()
        } else {
            vec![]
        },
    }
}

fn valid_label(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 64
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[tonic::async_trait]
impl pb::readiness_server::Readiness for ReadinessSvc {
    type RunSweepStream = ReceiverStream<Result<pb::SweepEvent, Status>>;

    async fn run_sweep(
        &self,
        req: Request<pb::RunSweepRequest>,
    ) -> Result<Response<Self::RunSweepStream>, Status> {
        authorize(&self.0, &req, allowed("RunSweep"))?;
        let r = req.into_inner();
        if !valid_label(&r.batch) {
            return Err(Status::invalid_argument(format!(
                "batch {:?}: use 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'",
                r.batch
            )));
        }
        if r.plan_toml.len() > MAX_PLAN_BYTES {
            return Err(Status::invalid_argument(format!(
                "plan_toml is {} bytes; at most {MAX_PLAN_BYTES} are accepted",
                r.plan_toml.len()
            )));
        }
        if r.concurrency > MAX_CONCURRENCY {
            return Err(Status::invalid_argument(format!(
                "concurrency {} is over the cap of {MAX_CONCURRENCY}",
                r.concurrency
            )));
        }
        let name = if r.plan_name.is_empty() {
            "plan.toml"
        } else {
            r.plan_name.as_str()
        };
        let plan = Plan::from_toml(name, &r.plan_toml).map_err(|e| {
            let lines: Vec<String> = e.to_string().lines().take(20).map(String::from).collect();
            Status::invalid_argument(format!("plan_toml is invalid:\n{}", lines.join("\n")))
        })?;
        let s = self.0.clone();
        let agents = s.store.agents().map_err(store_status)?;
        let run_id = s.store.next_sweep_id().map_err(store_status)?;
        let mut rec = SweepRecord {
            run_id,
            batch: r.batch.clone(),
            plan_digest: plan.digest(),
            started_at_ms: s.now_ms(),
            finished_at_ms: 0,
            state: "running".into(),
            findings: vec![],
        };
        s.store.put_sweep(&rec).map_err(store_status)?;
        tracing::info!(run_id, batch = %rec.batch, servers = plan.servers.len(), "sweep started");
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let conc = if r.concurrency == 0 {
            32
        } else {
            r.concurrency
        } as usize;
        let svc = ReadinessSvc(s.clone());
        tokio::spawn(async move {
            let total = plan.servers.len() as u32;
            let plan = Arc::new(plan);
            let agents = Arc::new(agents);
            let mut results = futures_util::stream::iter(0..plan.servers.len())
                .map(|i| {
                    let (plan, agents, svc) = (plan.clone(), agents.clone(), &svc);
                    async move {
                        let server = &plan.servers[i];
                        (i, svc.sweep_server(&plan, server, &agents).await)
                    }
                })
                .buffer_unordered(conc);
            let mut per_server: Vec<Vec<Finding>> = vec![vec![]; plan.servers.len()];
            let mut done = 0;
            while let Some((i, f)) = results.next().await {
                done += 1;
                per_server[i] = f;
                let _ = tx
                    .send(Ok(pb::SweepEvent {
                        done,
                        total,
                        server: plan.servers[i].hostname.clone(),
                        report: None,
                    }))
                    .await;
            }
            drop(results);
            let all: Vec<Finding> = per_server.into_iter().flatten().collect();
            rec.findings = all.iter().map(to_record).collect();
            rec.finished_at_ms = svc.0.now_ms();
            rec.state = "finished".into();
            if let Err(e) = svc.0.store.put_sweep(&rec) {
                tracing::error!(run_id, error = %e, "cannot store the sweep");
                let _ = tx.send(Err(store_status(e))).await;
                return;
            }
            let report = to_pb(&rec, true);
            tracing::info!(
                run_id,
                hard = report.hard,
                soft = report.soft,
                "sweep finished"
            );
            record_in_workflow(&svc.0, &rec, &all).await;
            let _ = tx
                .send(Ok(pb::SweepEvent {
                    done,
                    total,
                    server: String::new(),
                    report: Some(report),
                }))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_sweeps(
        &self,
        req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        authorize(&self.0, &req, allowed("ListSweeps"))?;
        let b = req.into_inner().batch;
        if !b.is_empty() && !valid_label(&b) {
            return Err(Status::invalid_argument(format!(
                "batch {:?}: use 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-' (or none for all)",
                b.chars().take(64).collect::<String>()
            )));
        }
        let runs = self
            .0
            .store
            .sweeps((!b.is_empty()).then_some(b.as_str()))
            .map_err(store_status)?;
        Ok(Response::new(pb::ListSweepsResponse {
            runs: runs.iter().map(|r| to_pb(r, false)).collect(),
        }))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        authorize(&self.0, &req, allowed("GetSweep"))?;
        let r = req.into_inner();
        let rec = if r.run_id == 0 {
            self.0
                .store
                .sweeps((!r.batch.is_empty()).then_some(r.batch.as_str()))
                .map_err(store_status)?
                .pop()
        } else {
            self.0.store.sweep(r.run_id).map_err(store_status)?
        };
        let rec = rec
            .ok_or_else(|| Status::not_found("no such sweep run: `preflight sweeps` lists them"))?;
        Ok(Response::new(to_pb(&rec, true)))
    }
}
