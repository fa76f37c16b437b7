//! The Readiness service: a sweep over every server of a plan, fanned out to their agents with
//! a bound on concurrency, judged by `preflight_core::readiness`, stored as a run.
//!
//! The run is recorded `running` before the first agent is asked and replaced by the finished
//! record in one durable write; a caller that disconnects does not stop the run, and a
//! controller killed mid-sweep marks it `interrupted` at the next start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use preflight_core::net::Proto;
use preflight_core::plan::{PackageKind, Plan, Server, MAX_PLAN_BYTES};
use preflight_core::readiness::{self, Finding};
use preflight_core::role::Role;
use preflight_core::workflow::PauseReason;
use preflight_proto::json;
use preflight_proto::v1 as pb;
use preflight_store::sweeps::{FindingRecord, ServerRecord, SweepContext, SweepRecord};
use preflight_store::AgentRecord;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agents::{agent_for_host, agent_status, dial_addr};
use crate::auth::authorize;
use crate::engine::net::{bandwidth_between, probe_between, Side, MAX_PROBE_PORTS};
use crate::error::store_status;
use crate::Shared;

pub(crate) struct ReadinessSvc(pub Arc<Shared>);

/// Roles allowed to call each RPC of the Readiness service (`preflight_core::role::rpc_roles`).
fn allowed(rpc: &str) -> &'static [Role] {
    preflight_core::role::rpc_roles("Readiness", rpc).unwrap_or(&[])
}

const MAX_CONCURRENCY: u32 = 256;
/// Most sweeps running at once in one controller.
pub(crate) const MAX_RUNNING_SWEEPS: usize = 8;

/// A running sweep as others see it: its progress (the latest event; the last one carries the
/// report) and the switch that cancels it (set to who cancelled).
#[derive(Clone)]
pub(crate) struct RunningSweep {
    run_id: u64,
    events: tokio::sync::watch::Receiver<pb::SweepEvent>,
    cancel: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

type SlotMap = HashMap<String, Option<RunningSweep>>;

/// The sweeps running now, by batch: at most [`MAX_RUNNING_SWEEPS`], one per batch.
#[derive(Default)]
pub(crate) struct SweepSlots(Arc<std::sync::Mutex<SlotMap>>);

/// A running sweep's place in [`SweepSlots`], given back when dropped (the run ends).
pub(crate) struct SweepSlot {
    slots: Arc<std::sync::Mutex<SlotMap>>,
    batch: String,
}

fn lock_slots(m: &std::sync::Mutex<SlotMap>) -> std::sync::MutexGuard<'_, SlotMap> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SweepSlots {
    /// A place for a sweep of `batch`, or why not: RESOURCE_EXHAUSTED when
    /// MAX_RUNNING_SWEEPS are running, FAILED_PRECONDITION when the batch is being swept
    /// (naming the run, and how to follow or cancel it).
    fn take(&self, batch: &str) -> Result<SweepSlot, Status> {
        let mut m = lock_slots(&self.0);
        if let Some(r) = m.get(batch) {
            let how = match r {
                Some(r) => format!(
                    " (run {id}): follow it with `preflight sweep --attach {id}`, or stop it with `preflight sweep cancel {id}`",
                    id = r.run_id
                ),
                None => format!(
                    ": wait for that sweep to finish (`preflight sweeps --batch {batch}`), then sweep again"
                ),
            };
            return Err(Status::failed_precondition(format!(
                "batch {batch} is being swept{how}"
            )));
        }
        if m.len() >= MAX_RUNNING_SWEEPS {
            return Err(Status::resource_exhausted(format!(
                "{} sweeps are running, the most this controller runs at once ({MAX_RUNNING_SWEEPS}): try again when one has finished",
                m.len()
            )));
        }
        m.insert(batch.to_string(), None);
        Ok(SweepSlot {
            slots: self.0.clone(),
            batch: batch.to_string(),
        })
    }

    /// The running sweep `run_id`, if it is running in this controller.
    fn running(&self, run_id: u64) -> Option<RunningSweep> {
        lock_slots(&self.0)
            .values()
            .flatten()
            .find(|r| r.run_id == run_id)
            .cloned()
    }
}

impl SweepSlot {
    fn set_run(&self, run: RunningSweep) {
        if let Some(r) = lock_slots(&self.slots).get_mut(&self.batch) {
            *r = Some(run);
        }
    }
}

impl Drop for SweepSlot {
    fn drop(&mut self) {
        lock_slots(&self.slots).remove(&self.batch);
    }
}

/// How long CancelSweep waits for the run to end before it answers with the stored run.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// Length of each disk benchmark and bandwidth test when the request names none, and the cap.
const DEFAULT_MEASURE_MS: u32 = 2_000;
const MAX_MEASURE_MS: u32 = 30_000;
/// Test file of the sweep's disk benchmarks: small, so the layout takes a moment.
const DISK_BENCH_BYTES: u64 = 32 << 20;
/// How long a disk benchmark waits for the host's benchmark lock (agents sharing a host take
/// turns) before it is reported as not measured.
const DISK_LOCK_WAIT: Duration = Duration::from_secs(120);
/// Per-port timeout of path and virtual IP probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Ports of a virtual IP probed in one request (all at once, so one request takes about
/// PROBE_TIMEOUT); a VIP with more ports takes several requests.
const VIP_CHUNK: usize = 64;

/// What a sweep runs.
#[derive(Debug, Clone)]
struct Opts {
    skip: BTreeSet<String>,
    measure_ms: u32,
}

impl Opts {
    fn runs(&self, check: &str) -> bool {
        !self.skip.contains(check)
    }
}

/// What the per-server phase learnt, for the network phase.
struct ServerOutcome {
    findings: Vec<Finding>,
    /// The agent, when it answered throughout.
    agent: Option<AgentRecord>,
    /// Planned ports already held: (port, protocol) → who holds it.
    held: HashMap<(u16, Proto), String>,
    /// The host holds the server's planned address (its interfaces or where it is dialled):
    /// only then do other agents connect to that address (paths) or probe from it (VIPs).
    holds_address: bool,
    /// What the inventory showed, when the agent answered it (the report's server summary).
    seen: Option<ServerRecord>,
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

/// Who holds a planned port, from the agent's listening sockets: a socket on the port at the
/// server's address or at a wildcard address.
fn holder(
    sockets: &[pb::ListeningSocket],
    addr: IpAddr,
    port: u16,
    proto: Proto,
) -> Option<String> {
    sockets
        .iter()
        .find(|s| {
            s.port == u32::from(port)
                && s.proto == proto.as_str()
                && s.address
                    .parse::<IpAddr>()
                    .is_ok_and(|a| a == addr || a.is_unspecified())
        })
        .map(|s| {
            let who = match (s.pid, s.process.as_str()) {
                (Some(pid), p) if !p.is_empty() => format!("{p} (pid {pid})"),
                (Some(pid), _) => format!("pid {pid}"),
                (None, p) if !p.is_empty() => p.to_string(),
                _ => "another process".to_string(),
            };
            format!("{who} on {}", s.address)
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
        opts: &Opts,
    ) -> ServerOutcome {
        let s = &self.0;
        let seen = std::sync::Mutex::new(None);
        let gone = |findings, msg: &str| {
            ServerOutcome {
                findings,
                agent: None,
                held: HashMap::new(),
                holds_address: false,
                seen: seen.lock().ok().and_then(|mut x| x.take()),
            }
            .lost(plan, server, opts, msg)
        };
        let rec = match agent_for_host(&server.hostname, Some(server.address), agents) {
            Ok(rec) => rec,
            Err(why) => return gone(vec![], &why),
        };
        let mut client = match s.agents.client(rec) {
            Ok(c) => c,
            Err(e) => return gone(vec![], e.message()),
        };
        let t0 = s.now_ms();
        let mut req = Request::new(pb::GetInventoryRequest {});
        req.set_timeout(Duration::from_secs(15));
        let inv = match client.get_inventory(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => return gone(vec![], e.message()),
        };
        let t1 = s.now_ms();
        if let Ok(mut x) = seen.lock() {
            *x = Some(server_seen(server, &rec.id, &inv));
        }
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
        let holds_address = addrs.iter().any(|a| {
            a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) == Some(server.address)
        });
        out.push(readiness::identity(server, &inv.hostname, &addrs));
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
        if opts.runs("packages") {
            match self.packages(plan, server, &mut client).await {
                Ok(f) => out.extend(f),
                Err(e) => return gone(out, &e),
            }
        }
        let mut held = HashMap::new();
        if opts.runs("ports") {
            match self.ports(server, &mut client, &mut held).await {
                Ok(f) => out.extend(f),
                Err(e) => return gone(out, &e),
            }
        }
        if opts.runs("disk") {
            for dir in &server.data_dirs {
                match self.disk(server, t, dir, &mut client, opts).await {
                    Ok(f) => out.extend(f),
                    Err(e) => return gone(out, &e),
                }
            }
        }
        ServerOutcome {
            findings: out,
            agent: Some(rec.clone()),
            held,
            holds_address,
            seen: seen.into_inner().ok().flatten(),
        }
    }

    /// Planned ports already held on the server (TCP and UDP, at its address or a wildcard).
    /// `Err` when the agent is gone.
    async fn ports(
        &self,
        server: &Server,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
        held: &mut HashMap<(u16, Proto), String>,
    ) -> Result<Vec<Finding>, String> {
        let planned = server.planned_ports();
        if planned.is_empty() {
            return Ok(vec![]);
        }
        // Without process names first: resolving them walks every process's descriptors,
        // which is the slow part (and grows with every agent on a shared host). Only when a
        // planned port is held is the list fetched again with the holders' names.
        let mut sockets = self.listening(server, client, true).await?;
        if planned
            .iter()
            .any(|p| holder(&sockets, server.address, p.port, p.protocol).is_some())
        {
            sockets = self.listening(server, client, false).await?;
        }
        let mut out = Vec::new();
        for p in planned {
            let h = holder(&sockets, server.address, p.port, p.protocol);
            if let Some(h) = &h {
                held.insert((p.port, p.protocol), h.clone());
            }
            out.push(readiness::port_free(
                server,
                p.port,
                p.protocol.as_str(),
                p.app,
                h.as_deref(),
            ));
        }
        Ok(out)
    }

    /// The server's listening sockets (TCP and UDP); empty, with a warning, when the agent
    /// cannot list them; `Err` when the agent is gone.
    async fn listening(
        &self,
        server: &Server,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
        no_processes: bool,
    ) -> Result<Vec<pb::ListeningSocket>, String> {
        let mut req = Request::new(pb::ListListeningPortsRequest {
            tcp: true,
            udp: true,
            no_processes,
        });
        req.set_timeout(Duration::from_secs(30));
        match client.list_listening_ports(req).await {
            Ok(r) => Ok(r.into_inner().sockets),
            Err(e) if lost(&e) => Err(e.message().to_string()),
            Err(e) => {
                tracing::warn!(server = %server.hostname, error = %e.message(), "listening ports unavailable");
                Ok(vec![])
            }
        }
    }

    /// One disk benchmark on `dir`; waits its turn when another disk benchmark holds the
    /// host's lock (several agents on one host). `Err` when the agent is gone.
    async fn bench(
        &self,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
        d: pb::DiskBenchmark,
    ) -> Result<Result<pb::DiskResult, String>, String> {
        let waited = Instant::now();
        let mut d = d;
        loop {
            let mut req = Request::new(pb::BenchmarkRequest {
                kind: Some(pb::benchmark_request::Kind::Disk(d.clone())),
            });
            req.set_timeout(Duration::from_millis(d.time_ms) + Duration::from_secs(60));
            let res = match client.run_benchmark(req).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let mut result = Err(Status::internal("the benchmark ended without a result"));
                    while let Some(ev) = stream.next().await {
                        match ev {
                            Ok(pb::BenchmarkEvent {
                                event:
                                    Some(pb::benchmark_event::Event::Result(pb::BenchmarkResult {
                                        kind: Some(pb::benchmark_result::Kind::Disk(r)),
                                    })),
                            }) => {
                                result = Ok(r);
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(r) => return Ok(Ok(r)),
                Err(e)
                    if e.code() == tonic::Code::ResourceExhausted
                        && e.message().contains("lock")
                        && waited.elapsed() < DISK_LOCK_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) if e.message().contains("io_uring") && d.iodepth > 1 => d.iodepth = 1,
                Err(e) if lost(&e) => return Err(e.message().to_string()),
                Err(e) => return Ok(Err(e.message().to_string())),
            }
        }
    }

    /// A short disk benchmark of a data directory: 4 KiB random read and write IOPS, and the
    /// p99 of write + fdatasync, against the thresholds.
    async fn disk(
        &self,
        server: &Server,
        t: &preflight_core::plan::Thresholds,
        dir: &str,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
        opts: &Opts,
    ) -> Result<Vec<Finding>, String> {
        use readiness::DiskMeasure as M;
        let base = pb::DiskBenchmark {
            directory: dir.to_string(),
            rw: "randread".into(),
            bs_bytes: 4096,
            iodepth: 16,
            size_bytes: DISK_BENCH_BYTES,
            time_ms: u64::from(opts.measure_ms),
            warmup_ms: 0,
            direct: true,
            time_based: true,
            fdatasync: 0,
            rwmixread: 0,
            filename: String::new(),
        };
        let mut out = Vec::new();
        let read = self.bench(client, base.clone()).await?;
        out.push(readiness::disk_bench(
            server,
            t,
            dir,
            M::RandRead,
            read.as_ref()
                .map(|r| r.read.as_ref().map_or(r.iops, |x| x.iops))
                .map_err(String::as_str),
        ));
        let write = self
            .bench(
                client,
                pb::DiskBenchmark {
                    rw: "randwrite".into(),
                    ..base.clone()
                },
            )
            .await?;
        out.push(readiness::disk_bench(
            server,
            t,
            dir,
            M::RandWrite,
            write
                .as_ref()
                .map(|r| r.write.as_ref().map_or(r.iops, |x| x.iops))
                .map_err(String::as_str),
        ));
        let sync = self
            .bench(
                client,
                pb::DiskBenchmark {
                    rw: "write".into(),
                    iodepth: 1,
                    fdatasync: 1,
                    size_bytes: 8 << 20,
                    ..base
                },
            )
            .await?;
        out.push(readiness::disk_bench(
            server,
            t,
            dir,
            M::FdatasyncP99,
            sync.as_ref().map_err(String::as_str).and_then(|r| {
                r.fdatasync
                    .as_ref()
                    .map(|l| l.p99_us)
                    .ok_or("no fdatasync latency reported")
            }),
        ));
        Ok(out)
    }

    async fn packages(
        &self,
        plan: &Plan,
        server: &Server,
        client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    ) -> Result<Vec<Finding>, String> {
        let listed: Vec<_> = plan.packages_for(server).collect();
        if listed.is_empty() {
            return Ok(vec![]);
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
                                use pb::PackageFileStatus as S;
                                if f.status() == S::WrongSize {
                                    out.push(readiness::package_wrong_size(
                                        server,
                                        &f.path,
                                        is_backup(&f.path),
                                        &json::name::<pb::SizeRelation>(f.size_relation),
                                        f.expected_size,
                                    ));
                                    continue;
                                }
                                let detail = match f.status() {
                                    S::WrongHash => String::new(),
                                    _ => f.error.clone(),
                                };
                                out.push(readiness::package_file(
                                    server,
                                    &f.path,
                                    is_backup(&f.path),
                                    &json::name::<S>(f.status),
                                    &detail,
                                ));
                            }
                        }
                        Err(e) if lost(&e) && e.code() != tonic::Code::DeadlineExceeded => {
                            return Err(e.message().to_string())
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
            Err(e) if lost(&e) => return Err(e.message().to_string()),
            Err(e) => out.push(readiness::package_file(
                server,
                "(all)",
                false,
                "unreadable",
                e.message(),
            )),
        }
        Ok(out)
    }
}

/// One unit of the network phase, run after every server has been swept.
enum NetTask {
    /// Every required TCP path into one destination: (source index, ports), at most
    /// MAX_PROBE_PORTS ports per entry (a source may have several entries).
    Paths {
        to: usize,
        from: Vec<(usize, Vec<u16>)>,
    },
    /// A declared bandwidth pair, through the plan's port for it.
    Bandwidth { from: usize, to: usize, port: u16 },
    /// A declared virtual IP.
    Vip(usize),
}

impl NetTask {
    fn label(&self, plan: &Plan) -> String {
        match self {
            NetTask::Paths { to, .. } => format!("paths to {}", plan.servers[*to].hostname),
            NetTask::Bandwidth { from, to, .. } => format!(
                "bandwidth {} -> {}",
                plan.servers[*from].hostname, plan.servers[*to].hostname
            ),
            NetTask::Vip(i) => format!("vip {}", plan.vips[*i].address),
        }
    }
}

/// The network checks of a plan, in order: paths (destinations side by side, each one's
/// sources one after the other, since they share its probe listeners), then bandwidth pairs
/// and virtual IPs.
fn net_tasks(plan: &Plan, opts: &Opts) -> (Vec<NetTask>, Vec<NetTask>) {
    let idx = |s: &Server| {
        plan.servers
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .unwrap_or_default()
    };
    let mut paths = Vec::new();
    if opts.runs("paths") {
        let mut by_to: BTreeMap<usize, BTreeMap<usize, Vec<u16>>> = BTreeMap::new();
        for p in plan.expanded_paths() {
            if p.protocol == Proto::Tcp {
                by_to
                    .entry(idx(p.to))
                    .or_default()
                    .entry(idx(p.from))
                    .or_default()
                    .push(p.port);
            }
        }
        for (to, from) in by_to {
            // The destination agent opens at most MAX_PROBE_PORTS listeners per request: a
            // pair with more ports is probed in several requests, one after the other.
            paths.push(NetTask::Paths {
                to,
                from: from
                    .into_iter()
                    .flat_map(|(f, ports)| {
                        ports
                            .chunks(MAX_PROBE_PORTS)
                            .map(|c| (f, c.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            });
        }
    }
    let mut serial = Vec::new();
    if opts.runs("bandwidth") {
        for b in &plan.bandwidth {
            if let (Some(f), Some(t)) = (plan.server(&b.from), plan.server(&b.to)) {
                serial.push(NetTask::Bandwidth {
                    from: idx(f),
                    to: idx(t),
                    port: b.port,
                });
            }
        }
    }
    if opts.runs("vips") {
        serial.extend((0..plan.vips.len()).map(NetTask::Vip));
    }
    (paths, serial)
}

/// The paths of one probe request that an agent refused (see [`readiness::unchecked`]).
fn paths_unchecked(from: &Server, to: &Server, ports: &[u16], side: Side, error: &str) -> Finding {
    let (first, last) = (
        ports.iter().min().copied().unwrap_or_default(),
        ports.iter().max().copied().unwrap_or_default(),
    );
    let check = if first == last {
        format!("path:{}:{first}", to.hostname)
    } else {
        format!("path:{}:{first}-{last}", to.hostname)
    };
    let who = match side {
        Side::From => &from.hostname,
        Side::To => &to.hostname,
    };
    readiness::unchecked(
        &from.hostname,
        check,
        PauseReason::NetworkPorts,
        &format!(
            "{} tcp port(s) to {}, refused by {who}'s agent: {error}",
            ports.len(),
            to.hostname
        ),
    )
}

impl ReadinessSvc {
    /// Runs one network check between the agents that answered in the server phase. A check
    /// whose agent is gone reports it once as `reachable`; checks of a server that never
    /// answered (or stopped) are not tried but reported `not checked: SERVER unreachable`, so
    /// the report lists every planned check.
    async fn net_task(
        &self,
        plan: &Plan,
        task: &NetTask,
        servers: &[ServerOutcome],
        opts: &Opts,
    ) -> Vec<Finding> {
        let s = &self.0;
        let sv = |i: usize| &plan.servers[i];
        let agent = |i: usize| servers[i].agent.as_ref();
        let mut out = Vec::new();
        let gone = |i: usize, e: &Status| readiness::reachable(sv(i), Some(e.message()));
        match task {
            NetTask::Paths { to, from } => {
                let Some(to_rec) = agent(*to) else {
                    for (f, ports) in from {
                        out.extend(paths_not_checked(sv(*f), sv(*to), ports, &sv(*to).hostname));
                    }
                    return out;
                };
                // The sources connect to the planned address: never to one the destination's
                // host does not hold (the identity check reports the mismatch).
                if !servers[*to].holds_address {
                    for (f, ports) in from {
                        out.push(paths_unchecked(
                            sv(*f),
                            sv(*to),
                            ports,
                            Side::To,
                            &format!(
                                "not probed: {} does not hold its planned address {} (see its identity check)",
                                sv(*to).hostname,
                                sv(*to).address
                            ),
                        ));
                    }
                    return out;
                }
                let mut lost_from = BTreeSet::new();
                let mut lost_to = false;
                for (f, ports) in from {
                    if lost_to {
                        out.extend(paths_not_checked(sv(*f), sv(*to), ports, &sv(*to).hostname));
                        continue;
                    }
                    if agent(*f).is_none() || lost_from.contains(f) {
                        out.extend(paths_not_checked(sv(*f), sv(*to), ports, &sv(*f).hostname));
                        continue;
                    }
                    let Some(from_rec) = agent(*f) else { continue };
                    match probe_between(
                        s,
                        from_rec,
                        to_rec,
                        sv(*to).address,
                        ports,
                        PROBE_TIMEOUT,
                        Duration::ZERO,
                    )
                    .await
                    {
                        Ok(probed) => {
                            for r in &probed.ports {
                                let port = r.port as u16;
                                let held =
                                    servers[*to].held.get(&(port, Proto::Tcp)).cloned().or_else(
                                        || (r.listener == "in_use").then(|| r.note.clone()),
                                    );
                                out.push(readiness::path(
                                    sv(*f),
                                    sv(*to),
                                    port,
                                    &r.outcome,
                                    &r.note,
                                    held.as_deref(),
                                ));
                            }
                        }
                        Err((Side::To, e)) if lost(&e) => {
                            out.push(gone(*to, &e));
                            out.extend(paths_not_checked(
                                sv(*f),
                                sv(*to),
                                ports,
                                &sv(*to).hostname,
                            ));
                            lost_to = true;
                        }
                        Err((Side::From, e)) if lost(&e) => {
                            lost_from.insert(*f);
                            out.push(gone(*f, &e));
                            out.extend(paths_not_checked(sv(*f), sv(*to), ports, &sv(*f).hostname));
                        }
                        // An agent refused the request (not the path): the sweep's own
                        // failure, one finding per request, not "open the firewall".
                        Err((side, e)) => {
                            out.push(paths_unchecked(sv(*f), sv(*to), ports, side, e.message()))
                        }
                    }
                }
            }
            NetTask::Bandwidth { from, to, port } => {
                let t = plan.thresholds_for(sv(*from));
                let (Some(fr), Some(tr)) = (agent(*from), agent(*to)) else {
                    let down = if agent(*from).is_none() { *from } else { *to };
                    out.push(readiness::not_checked(
                        &sv(*from).hostname,
                        format!("bandwidth:{}", sv(*to).hostname),
                        PauseReason::NetworkPorts,
                        &sv(down).hostname,
                    ));
                    return out;
                };
                let res = bandwidth_between(
                    s,
                    fr,
                    tr,
                    std::net::SocketAddr::new(sv(*to).address, *port),
                    opts.measure_ms,
                    1,
                    false,
                    None,
                )
                .await;
                let mbit = match &res {
                    Ok((_, Some(r))) => Ok(r.total_mbit_per_s),
                    Ok((_, None)) => Err("no report".to_string()),
                    Err((_, e)) => Err(e.message().to_string()),
                };
                out.push(readiness::bandwidth(
                    sv(*from),
                    sv(*to),
                    t,
                    mbit.as_ref().map(|m| *m).map_err(String::as_str),
                ));
            }
            NetTask::Vip(i) => {
                let v = &plan.vips[*i];
                if v.protocol != Proto::Tcp {
                    return out;
                }
                // From a member's agent (it is on the VIP's network), else any that answered;
                // only from a host that holds its planned address in the VIP's network (the
                // plan's bound on what agents probe).
                let in_net = |i: usize| {
                    servers[i].holds_address
                        && preflight_core::plan::batch_networks(std::iter::once(sv(i).address))
                            .iter()
                            .any(|n| n.contains(&v.address))
                };
                let prober = v
                    .members
                    .iter()
                    .filter_map(|m| {
                        plan.servers
                            .iter()
                            .position(|x| x.hostname.eq_ignore_ascii_case(m))
                    })
                    .chain(0..plan.servers.len())
                    .filter(|&i| in_net(i))
                    .find_map(|i| agent(i).map(|a| (i, a)));
                let label = v.name.clone().unwrap_or_else(|| v.address.to_string());
                let Some((pi, rec)) = prober else {
                    if (0..plan.servers.len()).any(|i| agent(i).is_some()) {
                        out.push(readiness::unchecked(
                            &label,
                            format!("vip:{}", v.address),
                            PauseReason::VipMissing,
                            &format!(
                                "not probed: no server of the plan holding its planned address is in the network of {}",
                                v.address
                            ),
                        ));
                    } else {
                        let who = if v.members.is_empty() {
                            "every server of the plan".to_string()
                        } else {
                            v.members.join(", ")
                        };
                        out.push(readiness::not_checked(
                            &label,
                            format!("vip:{}", v.address),
                            PauseReason::VipMissing,
                            &who,
                        ));
                    }
                    return out;
                };
                let ports: Vec<u16> = v.ports.iter().flat_map(|r| r.ports()).collect();
                let mut answers: Vec<(u16, String)> = Vec::new();
                // In requests of VIP_CHUNK ports, so each stays within its timeout.
                for chunk in ports.chunks(VIP_CHUNK) {
                    match self.probe_vip(rec, v.address, chunk).await {
                        Ok(a) => answers.extend(a),
                        Err(e) if lost(&e) => {
                            out.push(gone(pi, &e));
                            out.push(readiness::not_checked(
                                &label,
                                format!("vip:{}", v.address),
                                PauseReason::VipMissing,
                                &sv(pi).hostname,
                            ));
                            return out;
                        }
                        Err(e) => {
                            out.push(readiness::unchecked(
                                &label,
                                format!("vip:{}", v.address),
                                PauseReason::VipMissing,
                                &format!(
                                    "could not probe {} from {}: {}",
                                    v.address,
                                    sv(pi).hostname,
                                    e.message()
                                ),
                            ));
                            return out;
                        }
                    }
                }
                out.push(readiness::vip(&label, &v.address.to_string(), &answers));
            }
        }
        out
    }
}

impl ReadinessSvc {
    /// Probes `ports` (at most [`VIP_CHUNK`]) of a virtual IP from the agent `rec`:
    /// `(port, outcome)` per port.
    async fn probe_vip(
        &self,
        rec: &AgentRecord,
        address: IpAddr,
        ports: &[u16],
    ) -> Result<Vec<(u16, String)>, Status> {
        let mut nonce = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let mut req = Request::new(pb::RunProbesRequest {
            targets: ports
                .iter()
                .map(|&p| pb::ProbeTarget {
                    ip: address.to_string(),
                    port: u32::from(p),
                })
                .collect(),
            nonce: nonce.to_vec(),
            timeout_ms: PROBE_TIMEOUT.as_millis() as u32,
            concurrency: VIP_CHUNK as u32,
        });
        req.set_timeout(PROBE_TIMEOUT * 2 + Duration::from_secs(10));
        let mut c = self.0.agents.client(rec)?;
        let r = c
            .run_probes(req)
            .await
            .map_err(|e| agent_status(&rec.id, e))?;
        Ok(r.into_inner()
            .results
            .into_iter()
            .map(|x| (x.port as u16, x.outcome))
            .collect())
    }
}

impl ServerOutcome {
    /// The agent stopped answering: the server's result is a hard `reachable` failure (in
    /// place of the passed one, when it answered at first), with what was judged before, and
    /// every planned check of the server not judged yet as `not checked` (so the report still
    /// lists the whole plan).
    fn lost(mut self, plan: &Plan, server: &Server, opts: &Opts, msg: &str) -> Self {
        let f = readiness::reachable(server, Some(msg));
        match self.findings.iter_mut().find(|f| f.check == "reachable") {
            Some(x) => *x = f,
            None => self.findings.insert(0, f),
        }
        let judged: BTreeSet<String> = self.findings.iter().map(|f| f.check.clone()).collect();
        for (check, reason) in server_checks(plan, server, opts) {
            if !judged.contains(&check) {
                self.findings.push(readiness::not_checked(
                    &server.hostname,
                    check,
                    reason,
                    &server.hostname,
                ));
            }
        }
        self.agent = None;
        self
    }
}

/// The checks the per-server phase owes for `server`, in the order it judges them (after
/// `reachable`): identity, capacity, free disk, clock, package files, planned ports, disk
/// benchmarks; those `opts` leaves out are not owed.
fn server_checks(plan: &Plan, server: &Server, opts: &Opts) -> Vec<(String, PauseReason)> {
    let mut out = vec![
        ("identity".to_string(), PauseReason::Planning),
        ("cores".to_string(), PauseReason::Planning),
        ("memory".to_string(), PauseReason::Planning),
    ];
    for dir in &server.data_dirs {
        out.push((format!("disk_free:{dir}"), PauseReason::DiskPerformance));
    }
    out.push(("clock".to_string(), PauseReason::Other));
    if opts.runs("packages") {
        for p in plan.packages_for(server) {
            out.push((format!("package:{}", p.path), PauseReason::Package));
        }
    }
    if opts.runs("ports") {
        for p in server.planned_ports() {
            out.push((
                format!("port:{}/{}", p.port, p.protocol.as_str()),
                PauseReason::NetworkPorts,
            ));
        }
    }
    if opts.runs("disk") {
        for dir in &server.data_dirs {
            for m in ["disk_randread", "disk_randwrite", "disk_fdatasync"] {
                out.push((format!("{m}:{dir}"), PauseReason::DiskPerformance));
            }
        }
    }
    out
}

/// The paths `from` → `to` on `ports` that could not be probed because the agent of
/// `unreachable` did not answer.
fn paths_not_checked(from: &Server, to: &Server, ports: &[u16], unreachable: &str) -> Vec<Finding> {
    ports
        .iter()
        .map(|p| {
            readiness::not_checked(
                &from.hostname,
                format!("path:{}:{p}", to.hostname),
                PauseReason::NetworkPorts,
                unreachable,
            )
        })
        .collect()
}

/// One `reachable` finding per server: a server whose agent was lost in the network phase
/// has a hard one there, which replaces the passed one of the server phase (so a run lists
/// each planned check once, whenever its agent went away).
fn one_reachable_each(all: Vec<Finding>) -> Vec<Finding> {
    let lost: BTreeSet<String> = all
        .iter()
        .filter(|f| f.check == "reachable" && f.verdict != readiness::Verdict::Pass)
        .map(|f| f.server.clone())
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(all.len());
    for f in all {
        if f.check == "reachable"
            && lost.contains(&f.server)
            && (f.verdict == readiness::Verdict::Pass || !seen.insert(f.server.clone()))
        {
            continue;
        }
        out.push(f);
    }
    out
}

/// Why a run is not the readiness when the workflow refused to record it (the English text
/// carries the workflow's own reason).
const NOT_ACCEPTED_ZH: &str =
    "工作流未接受这次检查的记录，因此不计入批次的就绪结论；具体原因见英文报告（--lang en）";

/// A planned server before any agent answered: the plan's facts only.
fn server_planned(server: &Server) -> ServerRecord {
    ServerRecord {
        server: server.hostname.clone(),
        address: server.address.to_string(),
        role: server.role.clone(),
        ..Default::default()
    }
}

/// A planned server and what its agent's inventory showed.
fn server_seen(server: &Server, agent: &str, inv: &pb::Inventory) -> ServerRecord {
    let cpu = inv.cpu.clone().unwrap_or_default();
    ServerRecord {
        agent: agent.into(),
        hostname: inv.hostname.clone(),
        os: inv
            .os
            .as_ref()
            .map(|o| o.pretty_name.clone())
            .unwrap_or_default(),
        kernel: inv.kernel.clone(),
        cpu_model: cpu.model,
        cpu_threads: cpu.threads,
        memory_bytes: inv.memory.map(|m| m.total_bytes).unwrap_or_default(),
        disks: inv
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.size_bytes, d.rotational))
            .collect(),
        ..server_planned(server)
    }
}

/// Whether a finished run may be recorded as its batch's readiness: `Ok(true)` when a batch of
/// that id exists with this very plan attached and the run left nothing out, `Ok(false)` when
/// no batch of that id exists (a free label), else why not (shown with the report).
/// The reason comes in English and Chinese.
async fn workflow_decision(s: &Shared, rec: &SweepRecord) -> Result<bool, (String, String)> {
    let attached = s
        .workflow
        .read(|w| {
            w.batch(&rec.batch)
                .map(|b| b.plan.as_ref().map(|p| p.digest.clone()))
        })
        .await;
    match attached {
        None => Ok(false),
        Some(None) => Err((format!(
            "batch {} has no plan attached, so the run is not recorded as its readiness; attach one with `preflight plan attach {} PLAN_FILE`",
            rec.batch, rec.batch
        ), format!(
            "批次 {} 尚未挂接部署方案，本次检查不计入其就绪结论；请先用 `preflight plan attach {} 方案文件` 挂接方案",
            rec.batch, rec.batch
        ))),
        Some(Some(d)) if d != rec.plan_digest => Err((format!(
            "the run checked another plan than the one attached to batch {}, so it is not recorded as the batch's readiness; sweep without --plan to check the attached plan",
            rec.batch
        ), format!(
            "本次检查的方案与批次 {} 已挂接的方案不同，不计入其就绪结论；去掉 --plan 重新检查即可检查已挂接的方案",
            rec.batch
        ))),
        Some(Some(_)) if !rec.skipped.is_empty() => Err((format!(
            "checks were skipped: {}, not recorded as the batch's readiness; sweep again without --skip for the confirm_plan gate",
            rec.skipped.join(", ")
        ), format!(
            "跳过了检查项 {}，不计入批次的就绪结论；去掉 --skip 重新检查，才能满足方案确认（confirm_plan）关口",
            rec.skipped.join("、")
        ))),
        Some(Some(_)) => Ok(true),
    }
}

/// Feeds a finished run to the workflow (see [`workflow_decision`]): the gate of
/// `confirm_plan` then sees it, and a hard failure from `confirm_plan` on pauses the batch with
/// the failing checks and their parties (WORKFLOW.md). Returns why it was not recorded.
async fn record_in_workflow(s: &Shared, rec: &SweepRecord, findings: &[Finding]) -> Option<String> {
    use preflight_core::workflow::{Actor, Command, ReadinessSummary, Timestamp};
    let pick = |v: readiness::Verdict| {
        fit_failures(
            findings
                .iter()
                .filter(|f| f.verdict == v)
                .map(Finding::to_failure)
                .collect(),
            rec.run_id,
        )
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
    match s.workflow.execute(s.now_ms(), &Actor::System, cmd).await {
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(batch = %rec.batch, error = %e, "sweep not recorded in the workflow");
            Some(format!("not recorded as the batch's readiness: {e}"))
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, ending with "…" when cut.
fn clip(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// Failures as the workflow accepts them (`check_failures`): texts cut to MAX_TEXT_LEN bytes,
/// and past MAX_LIST_LEN entries the first ones plus one saying how many more the run has,
/// so a large plan's summary is never refused (which would leave an older readiness in force).
fn fit_failures(
    mut v: Vec<preflight_core::workflow::CheckFailure>,
    run_id: u64,
) -> Vec<preflight_core::workflow::CheckFailure> {
    use preflight_core::workflow::{MAX_LIST_LEN, MAX_TEXT_LEN};
    if v.len() > MAX_LIST_LEN {
        let more = v.len() - (MAX_LIST_LEN - 1);
        let rest = v.split_off(MAX_LIST_LEN - 1);
        v.push(preflight_core::workflow::CheckFailure {
            check: "more".into(),
            detail: format!(
                "{more} more failures not listed here: `preflight report --run {run_id}` shows them all"
            ),
            reason: rest[0].reason,
            party: rest[0].party,
        });
    }
    for f in &mut v {
        clip(&mut f.check, MAX_TEXT_LEN);
        clip(&mut f.detail, MAX_TEXT_LEN);
    }
    v
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
        measured: f.measured,
        threshold: f.threshold,
        unit: f.unit.clone(),
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
                    measured: f.measured,
                    threshold: f.threshold,
                    unit: f.unit.clone(),
                })
                .collect()
        } else {
            vec![]
        },
        skipped: r.skipped.clone(),
        not_recorded: r.not_recorded.clone(),
        project: r.context.project.clone(),
        started_by: r.context.started_by.clone(),
        started_by_role: r.context.started_by_role.clone(),
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

/// A run id as requests give it: 0 is no run.
fn run_id_of(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(Status::invalid_argument(
            "run_id is missing: give the run's number (`preflight sweeps` lists them)",
        ));
    }
    Ok(id)
}

impl ReadinessSvc {
    /// The stored run `run_id`, or NOT_FOUND naming how to list them.
    fn stored(&self, run_id: u64) -> Result<SweepRecord, Status> {
        self.0
            .store
            .sweep(run_id)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no sweep run {run_id}: `preflight sweeps` lists them"
                ))
            })
    }
}

/// A plan file decides what the agents probe: unless it is the batch's attached plan (attached
/// by an integrator), only the roles of `RunSweepPlanFile` may sweep it.
async fn plan_file_allowed(s: &Shared, batch: &str, plan: &Plan, role: Role) -> Result<(), Status> {
    let roles = allowed("RunSweepPlanFile");
    if roles.contains(&role) {
        return Ok(());
    }
    let digest = plan.digest();
    let attached = s
        .workflow
        .read(|w| {
            w.batch(batch)
                .and_then(|b| b.plan.as_ref().map(|p| p.digest == digest))
        })
        .await
        .unwrap_or(false);
    if attached {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(Status::permission_denied(format!(
        "role {role} may sweep a batch's attached plan (`preflight sweep {batch}`), not another plan file: a plan file is swept by {}; or an integrator attaches it first with `preflight plan attach {batch} FILE`",
        names.join(", ")
    )))
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
    type AttachSweepStream = ReceiverStream<Result<pb::SweepEvent, Status>>;

    async fn run_sweep(
        &self,
        req: Request<pb::RunSweepRequest>,
    ) -> Result<Response<Self::RunSweepStream>, Status> {
        let (caller, caller_role) = authorize(&self.0, &req, allowed("RunSweep"))?;
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
        let mut skip = BTreeSet::new();
        for k in &r.skip {
            if !readiness::SKIPPABLE.contains(&k.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "skip {k:?} is not a check that can be left out: use one of {}",
                    readiness::SKIPPABLE.join(", ")
                )));
            }
            skip.insert(k.clone());
        }
        let measure_ms = match r.measure_ms {
            0 => DEFAULT_MEASURE_MS,
            ms if (200..=MAX_MEASURE_MS).contains(&ms) => ms,
            ms => {
                return Err(Status::invalid_argument(format!(
                    "measure_ms {ms} is out of range: use 200 to {MAX_MEASURE_MS} (0: {DEFAULT_MEASURE_MS})"
                )))
            }
        };
        let opts = Arc::new(Opts { skip, measure_ms });
        let name = if r.plan_name.is_empty() {
            "plan.toml"
        } else {
            r.plan_name.as_str()
        };
        let plan = if r.plan_toml.is_empty() {
            // No plan file: the batch's attached plan, as stored on attachment.
            crate::svc::workflow::batch_plan(&self.0, &r.batch).await?
        } else {
            let p = Plan::from_toml(name, &r.plan_toml).map_err(|e| {
                let lines: Vec<String> = e.to_string().lines().take(20).map(String::from).collect();
                Status::invalid_argument(format!("plan_toml is invalid:\n{}", lines.join("\n")))
            })?;
            plan_file_allowed(&self.0, &r.batch, &p, caller_role).await?;
            p
        };
        let s = self.0.clone();
        let slot = s.sweeps.take(&r.batch)?;
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
            skipped: opts.skip.iter().cloned().collect(),
            not_recorded: String::new(),
            context: SweepContext {
                project: s
                    .workflow
                    .read(|w| w.batch(&r.batch).map(|b| b.project.clone()))
                    .await
                    .or_else(|| plan.batch.project.clone())
                    .unwrap_or_default(),
                started_by: caller.name.clone(),
                started_by_role: caller_role.as_str().into(),
                recorded: false,
                not_recorded_zh: String::new(),
                servers: plan.servers.iter().map(server_planned).collect(),
            },
        };
        s.store.put_sweep(&rec).map_err(store_status)?;
        tracing::info!(run_id, batch = %rec.batch, servers = plan.servers.len(), by = %caller.name, "sweep started");
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let conc = if r.concurrency == 0 {
            32
        } else {
            r.concurrency
        } as usize;
        let (paths, serial) = net_tasks(&plan, &opts);
        let total = (plan.servers.len() + paths.len() + serial.len()) as u32;
        let first = pb::SweepEvent {
            done: 0,
            total,
            server: String::new(),
            report: None,
            run_id,
        };
        let (ev_tx, ev_rx) = tokio::sync::watch::channel(first.clone());
        let (cancel_tx, mut cancel_rx) = tokio::sync::watch::channel(None::<String>);
        slot.set_run(RunningSweep {
            run_id,
            events: ev_rx,
            cancel: Arc::new(cancel_tx),
        });
        // The caller learns the run id at once (to attach or cancel it later).
        let _ = tx.try_send(Ok(first));
        let svc = ReadinessSvc(s.clone());
        tokio::spawn(async move {
            // Held until the run ends: given back before the last message, so a caller that
            // sweeps again as soon as it has the report finds the place free.
            let slot = slot;
            let plan = Arc::new(plan);
            let agents = Arc::new(agents);
            let done = std::sync::atomic::AtomicU32::new(0);
            let progress = |what: String| {
                let tx = tx.clone();
                let ev = pb::SweepEvent {
                    done: done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    total,
                    server: what,
                    report: None,
                    run_id,
                };
                ev_tx.send_replace(ev.clone());
                async move {
                    let _ = tx.send(Ok(ev)).await;
                }
            };
            let work = async {
                // Phase 1: every server by itself, side by side.
                let mut results = futures_util::stream::iter(0..plan.servers.len())
                    .map(|i| {
                        let (plan, agents, svc, opts) =
                            (plan.clone(), agents.clone(), &svc, opts.clone());
                        async move {
                            let server = &plan.servers[i];
                            (i, svc.sweep_server(&plan, server, &agents, &opts).await)
                        }
                    })
                    .buffer_unordered(conc);
                let mut outcomes: Vec<Option<ServerOutcome>> =
                    (0..plan.servers.len()).map(|_| None).collect();
                while let Some((i, o)) = results.next().await {
                    outcomes[i] = Some(o);
                    progress(plan.servers[i].hostname.clone()).await;
                }
                drop(results);
                let mut outcomes: Vec<ServerOutcome> = outcomes.into_iter().flatten().collect();
                let seen: Vec<Option<ServerRecord>> =
                    outcomes.iter_mut().map(|o| o.seen.take()).collect();
                // Phase 2: between servers. Paths into different destinations side by side;
                // bandwidth pairs and virtual IPs one at a time, so tests do not share a link.
                let mut net: Vec<Vec<Finding>> = Vec::new();
                {
                    let (plan_r, svc_r, opts_r, out_r, paths_r) =
                        (&*plan, &svc, &*opts, &outcomes, &paths);
                    let mut results = futures_util::stream::iter(0..paths.len())
                        .map(move |i| async move {
                            let t = &paths_r[i];
                            (
                                t.label(plan_r),
                                svc_r.net_task(plan_r, t, out_r, opts_r).await,
                            )
                        })
                        .buffer_unordered(conc);
                    while let Some((label, f)) = results.next().await {
                        net.push(f);
                        progress(label).await;
                    }
                }
                for t in &serial {
                    net.push(svc.net_task(&plan, t, &outcomes, &opts).await);
                    progress(t.label(&plan)).await;
                }
                let mut per_server: Vec<Vec<Finding>> =
                    outcomes.into_iter().map(|o| o.findings).collect();
                per_server.extend(net);
                (
                    one_reachable_each(per_server.into_iter().flatten().collect()),
                    seen,
                )
            };
            // A cancel drops the work: every agent call in flight is cancelled with it (the
            // agents stop their benchmarks, probe listeners are closed), nothing is judged.
            let cancelled_by = async {
                loop {
                    if let Some(who) = cancel_rx.borrow_and_update().clone() {
                        return who;
                    }
                    if cancel_rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let outcome = tokio::select! {
                all = work => Ok(all),
                who = cancelled_by => Err(who),
            };
            let done = done.load(std::sync::atomic::Ordering::Relaxed);
            let finish = |report: pb::SweepReport| {
                let ev = pb::SweepEvent {
                    done,
                    total,
                    server: String::new(),
                    report: Some(report),
                    run_id,
                };
                ev_tx.send_replace(ev.clone());
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
                    rec.finished_at_ms = svc.0.now_ms();
                    rec.state = "cancelled".into();
                    rec.not_recorded = format!(
                        "the run was cancelled by {who}: nothing of it is recorded as readiness"
                    );
                    tracing::info!(run_id, batch = %rec.batch, by = %who, "sweep cancelled");
                    if let Err(e) = svc.0.store.put_sweep(&rec) {
                        tracing::error!(run_id, error = %e, "cannot store the cancelled sweep");
                    }
                    let ev = finish(to_pb(&rec, true));
                    drop(slot);
                    let _ = tx.send(Ok(ev)).await;
                    return;
                }
            };
            rec.findings = all.iter().map(to_record).collect();
            rec.finished_at_ms = svc.0.now_ms();
            rec.state = "finished".into();
            let decision = workflow_decision(&svc.0, &rec).await;
            if let Err((why, why_zh)) = &decision {
                tracing::info!(batch = %rec.batch, %why, "sweep not recorded in the workflow");
                rec.not_recorded = why.clone();
                rec.context.not_recorded_zh = why_zh.clone();
            }
            // Stored as recorded before the workflow has it; a refusal rewrites both below.
            rec.context.recorded = decision == Ok(true);
            if let Err(e) = svc.0.store.put_sweep(&rec) {
                tracing::error!(run_id, error = %e, "cannot store the sweep");
                drop(slot);
                let _ = tx.send(Err(store_status(e))).await;
                return;
            }
            let mut report = to_pb(&rec, true);
            tracing::info!(
                run_id,
                hard = report.hard,
                soft = report.soft,
                "sweep finished"
            );
            if decision == Ok(true) {
                if let Some(why) = record_in_workflow(&svc.0, &rec, &all).await {
                    rec.context.recorded = false;
                    report.recorded = false;
                    // The stored run must not pass for the batch's readiness either.
                    rec.not_recorded = why.clone();
                    rec.context.not_recorded_zh = NOT_ACCEPTED_ZH.into();
                    report.not_recorded_zh = NOT_ACCEPTED_ZH.into();
                    if let Err(e) = svc.0.store.put_sweep(&rec) {
                        tracing::error!(run_id, error = %e, "cannot store why the sweep was not recorded");
                    }
                    report.not_recorded = why;
                }
            }
            let ev = finish(report);
            drop(slot);
            let _ = tx.send(Ok(ev)).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn attach_sweep(
        &self,
        req: Request<pb::AttachSweepRequest>,
    ) -> Result<Response<Self::AttachSweepStream>, Status> {
        authorize(&self.0, &req, allowed("AttachSweep"))?;
        let run_id = run_id_of(req.get_ref().run_id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let Some(run) = self.0.sweeps.running(run_id) else {
            // Ended (or never ran here): its stored report at once.
            let rec = self.stored(run_id)?;
            let n = rec.findings.len() as u32;
            let _ = tx.try_send(Ok(pb::SweepEvent {
                done: n,
                total: n,
                server: String::new(),
                report: Some(to_pb(&rec, true)),
                run_id,
            }));
            return Ok(Response::new(ReceiverStream::new(rx)));
        };
        let s = self.0.clone();
        tokio::spawn(async move {
            let mut events = run.events;
            loop {
                let ev = events.borrow_and_update().clone();
                let last = ev.report.is_some();
                if tx.send(Ok(ev)).await.is_err() || last {
                    return;
                }
                if events.changed().await.is_err() {
                    // The run's task ended without a report (its store write failed): what
                    // the store holds, or the error.
                    let ev = match s.store.sweep(run_id) {
                        Ok(Some(rec)) if rec.state != "running" => Ok(pb::SweepEvent {
                            report: Some(to_pb(&rec, true)),
                            run_id,
                            ..Default::default()
                        }),
                        Ok(_) => Err(Status::unavailable(format!(
                            "run {run_id} ended without a report: see the controller's log"
                        ))),
                        Err(e) => Err(store_status(e)),
                    };
                    let _ = tx.send(ev).await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_sweep(
        &self,
        req: Request<pb::CancelSweepRequest>,
    ) -> Result<Response<pb::SweepReport>, Status> {
        let (user, _) = authorize(&self.0, &req, allowed("CancelSweep"))?;
        let run_id = run_id_of(req.get_ref().run_id)?;
        let Some(run) = self.0.sweeps.running(run_id) else {
            let rec = self.stored(run_id)?;
            return Err(Status::failed_precondition(format!(
                "run {run_id} is not running (it is {}): only a running sweep can be cancelled",
                rec.state
            )));
        };
        run.cancel.send_replace(Some(user.name.clone()));
        let mut events = run.events;
        let ended =
            tokio::time::timeout(CANCEL_WAIT, events.wait_for(|e| e.report.is_some())).await;
        if let Ok(Ok(ev)) = ended {
            if let Some(r) = ev.report.clone() {
                return Ok(Response::new(r));
            }
        }
        Ok(Response::new(to_pb(&self.stored(run_id)?, true)))
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
        let mut report = to_pb(&rec, true);
        // Whether it counts now is the workflow's fact: a later run may have replaced it.
        let current = self
            .0
            .workflow
            .read(|w| {
                w.batch(&rec.batch)
                    .and_then(|b| b.readiness.as_ref().map(|x| x.run_id.clone()))
            })
            .await;
        match current {
            Some(id) if id == rec.run_id.to_string() => report.recorded = true,
            Some(id) if rec.context.recorded => {
                report.recorded = false;
                report.not_recorded = format!(
                    "run {id} replaced this run as the readiness of batch {}",
                    rec.batch
                );
                report.not_recorded_zh = format!(
                    "第 {id} 次运行已取代本次，成为批次 {} 的就绪结论",
                    rec.batch
                );
            }
            _ => report.recorded = false,
        }
        Ok(Response::new(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::workflow::{CheckFailure, Party, PauseReason, MAX_LIST_LEN, MAX_TEXT_LEN};

    fn plan(ports: &str) -> Plan {
        let toml = format!(
            r#"
[[servers]]
address = "10.0.0.1"
hostname = "a"
role = "x"

[[servers]]
address = "10.0.0.2"
hostname = "b"
role = "y"

[[paths]]
from = {{ server = "a" }}
to = {{ server = "b" }}
ports = "{ports}"
"#
        );
        Plan::from_toml("plan.toml", &toml).unwrap()
    }

    fn opts() -> Opts {
        Opts {
            skip: BTreeSet::new(),
            measure_ms: DEFAULT_MEASURE_MS,
        }
    }

    #[test]
    fn a_pairs_ports_are_probed_in_requests_the_agent_accepts() {
        let p = plan("1000-3499");
        let (paths, _) = net_tasks(&p, &opts());
        let [NetTask::Paths { to: 1, from }] = &paths[..] else {
            panic!("one destination expected");
        };
        let sizes: Vec<usize> = from
            .iter()
            .map(|(f, ports)| {
                assert_eq!(*f, 0);
                ports.len()
            })
            .collect();
        assert_eq!(
            sizes,
            vec![MAX_PROBE_PORTS, MAX_PROBE_PORTS, 2500 - 2 * MAX_PROBE_PORTS]
        );
        let all: Vec<u16> = from.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        assert_eq!(all, (1000..3500).collect::<Vec<u16>>());
    }

    #[test]
    fn a_refused_probe_request_is_the_sweeps_failure_not_a_firewall() {
        let p = plan("80");
        let f = paths_unchecked(
            &p.servers[0],
            &p.servers[1],
            &[80, 81, 90],
            Side::To,
            "ports: too many",
        );
        assert_eq!(
            (f.verdict, f.party),
            (readiness::Verdict::Hard, Party::Project)
        );
        assert_eq!(f.check, "path:b:80-90");
        assert!(
            f.message.contains("refused by b's agent: ports: too many"),
            "{}",
            f.message
        );
        assert!(!f.fix.contains("firewall"), "{}", f.fix);
    }

    fn failure(i: usize, detail: String) -> CheckFailure {
        CheckFailure {
            check: format!("s{i}:path:b:{i}"),
            detail,
            reason: PauseReason::NetworkPorts,
            party: Party::Customer,
        }
    }

    #[test]
    fn a_large_summary_fits_the_workflows_limits() {
        let v: Vec<CheckFailure> = (0..MAX_LIST_LEN + 500)
            .map(|i| failure(i, "x".into()))
            .collect();
        let fitted = fit_failures(v, 7);
        assert_eq!(fitted.len(), MAX_LIST_LEN);
        assert_eq!(
            fitted[MAX_LIST_LEN - 2].check,
            format!("s{}:path:b:{}", MAX_LIST_LEN - 2, MAX_LIST_LEN - 2)
        );
        let last = &fitted[MAX_LIST_LEN - 1];
        assert_eq!(last.check, "more");
        assert!(
            last.detail.starts_with("501 more failures"),
            "{}",
            last.detail
        );
        assert!(last.detail.contains("--run 7"));

        // Multi-byte text over the limit is cut on a character boundary.
        let long = "端".repeat(MAX_TEXT_LEN);
        let fitted = fit_failures(vec![failure(1, long)], 7);
        assert!(fitted[0].detail.len() <= MAX_TEXT_LEN);
        assert!(fitted[0].detail.ends_with('…'));
        let short = fit_failures(vec![failure(1, "fine".into())], 7);
        assert_eq!(short[0].detail, "fine");

        // The workflow accepts it.
        use preflight_core::workflow::{Command, ReadinessSummary, Timestamp};
        let summary = ReadinessSummary {
            run_id: "7".into(),
            finished_at: Timestamp(0),
            plan_digest: "d".into(),
            hard_failures: fit_failures(
                (0..MAX_LIST_LEN + 1)
                    .map(|i| failure(i, "端".repeat(2000)))
                    .collect(),
                7,
            ),
            soft_failures: vec![],
        };
        Command::RecordReadiness {
            batch: "B1".into(),
            summary,
        }
        .validate()
        .unwrap();
    }

    /// A server whose agent went away lists every check the plan owes for it: those judged
    /// before, a hard `reachable`, and the rest `not checked: SERVER unreachable`.
    #[test]
    fn a_lost_server_still_lists_every_planned_check() {
        let p = Plan::from_toml(
            "plan.toml",
            "[[servers]]\naddress = \"10.0.0.1\"\nhostname = \"a\"\nrole = \"x\"\napps = [{ name = \"w\", ports = \"80,443\" }]\ndata_dirs = [\"/data\"]\n",
        )
        .unwrap();
        let s = &p.servers[0];
        let judged = vec![
            readiness::reachable(s, None),
            readiness::identity(s, "a", &["10.0.0.1".into()]),
        ];
        let o = ServerOutcome {
            findings: judged,
            agent: None,
            held: HashMap::new(),
            holds_address: false,
            seen: None,
        }
        .lost(&p, s, &opts(), "connection refused");
        let checks: Vec<&str> = o.findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(checks[0], "reachable");
        assert_eq!(o.findings[0].verdict, readiness::Verdict::Hard);
        assert_eq!(o.findings[1].verdict, readiness::Verdict::Pass);
        let owed = server_checks(&p, s, &opts());
        assert_eq!(o.findings.len(), owed.len() + 1, "{checks:?}");
        for (c, _) in &owed {
            assert!(checks.contains(&c.as_str()), "{c} missing: {checks:?}");
        }
        for f in &o.findings[2..] {
            assert_eq!(f.message, "not checked: a unreachable");
            assert_eq!(f.verdict, readiness::Verdict::Hard);
        }
        assert!(checks.contains(&"port:443/tcp") && checks.contains(&"disk_fdatasync:/data"));

        // A reachable lost in the network phase replaces the passed one.
        let mut all = vec![readiness::reachable(s, None)];
        all.push(readiness::reachable(s, Some("gone")));
        all.push(readiness::reachable(s, Some("gone again")));
        let one = one_reachable_each(all);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].verdict, readiness::Verdict::Hard);
    }

    #[test]
    fn sweeps_are_bounded_and_one_per_batch() {
        let slots = SweepSlots::default();
        let first = slots.take("B1").unwrap();
        let (_ev_tx, events) = tokio::sync::watch::channel(pb::SweepEvent::default());
        let (cancel, _) = tokio::sync::watch::channel(None);
        first.set_run(RunningSweep {
            run_id: 41,
            events,
            cancel: Arc::new(cancel),
        });
        let e = slots.take("B1").err().unwrap();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        // The refusal names the run and how to follow or stop it.
        for want in [
            "run 41",
            "preflight sweep --attach 41",
            "preflight sweep cancel 41",
        ] {
            assert!(e.message().contains(want), "{}", e.message());
        }
        assert_eq!(slots.running(41).map(|r| r.run_id), Some(41));
        assert!(slots.running(42).is_none());
        let mut held: Vec<SweepSlot> = (1..MAX_RUNNING_SWEEPS)
            .map(|i| slots.take(&format!("C{i}")).unwrap())
            .collect();
        let e = slots.take("D").err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains(&MAX_RUNNING_SWEEPS.to_string()),
            "{}",
            e.message()
        );
        held.pop();
        drop(first);
        let _again = slots.take("B1").unwrap();
        let _d = slots.take("D").unwrap();
    }
}
