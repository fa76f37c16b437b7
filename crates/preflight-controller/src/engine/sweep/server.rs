//! The per-server phase: every planned server by itself, through its own agent: inventory
//! (identity, capacity, free disk, clock), package files, planned ports, disk benchmarks.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use preflight_core::net::Proto;
use preflight_core::plan::{PackageKind, Plan, Server, Thresholds};
use preflight_core::readiness::{self, check, CheckGroup, DiskMeasure, Finding, Target};
use preflight_core::workflow::PauseReason;
use preflight_proto::json;
use preflight_proto::v1 as pb;
use preflight_store::sweeps::ServerRecord;
use preflight_store::AgentRecord;
use tonic::{Request, Status};

use super::{lost, Opts};
use crate::agents::{agent_for_host, dial_addr, AgentPool};
use crate::Clock;

type Client = pb::agent_client::AgentClient<tonic::transport::Channel>;

/// Test file of the sweep's disk benchmarks: small, so the layout takes a moment.
const DISK_BENCH_BYTES: u64 = 32 << 20;
/// How long a disk benchmark waits for the host's benchmark lock (agents sharing a host take
/// turns) before it is reported as not measured.
const DISK_LOCK_WAIT: Duration = Duration::from_secs(120);

/// What the per-server phase learnt, for the network phase.
pub(super) struct ServerOutcome {
    pub findings: Vec<Finding>,
    /// The agent, when it answered throughout.
    pub agent: Option<AgentRecord>,
    /// Planned ports already held: (port, protocol) → who holds it.
    pub held: HashMap<(u16, Proto), String>,
    /// The host holds the server's planned address (its interfaces or where it is dialled):
    /// only then do other agents connect to that address (paths) or probe from it (VIPs).
    pub holds_address: bool,
    /// What the inventory showed, when the agent answered it (the report's server summary).
    pub seen: Option<ServerRecord>,
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
                && s.proto() == pb::Protocol::from(proto)
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

/// Sweeps one server through its agent (found among `agents` by the one rule of
/// [`agent_for_host`]); a server whose agent does not answer, or stops answering, still lists
/// every check the plan owes for it ([`ServerOutcome::lost`]).
pub(super) async fn sweep_server(
    pool: &AgentPool,
    clock: &dyn Clock,
    plan: &Plan,
    server: &Server,
    agents: &[AgentRecord],
    opts: &Opts,
) -> ServerOutcome {
    let mut seen: Option<ServerRecord> = None;
    let gone = |findings: Vec<Finding>, seen: Option<ServerRecord>, msg: &str| {
        ServerOutcome {
            findings,
            agent: None,
            held: HashMap::new(),
            holds_address: false,
            seen,
        }
        .lost(plan, server, opts, msg)
    };
    let rec = match agent_for_host(&server.hostname, Some(server.address), agents) {
        Ok(rec) => rec,
        Err(why) => return gone(vec![], seen, &why),
    };
    let mut client = match pool.client(rec) {
        Ok(c) => c,
        Err(e) => return gone(vec![], seen, e.message()),
    };
    let t0 = clock.now_ms();
    let mut req = Request::new(pb::GetInventoryRequest {});
    req.set_timeout(Duration::from_secs(15));
    let inv = match client.get_inventory(req).await {
        Ok(r) => r.into_inner(),
        Err(e) => return gone(vec![], seen, e.message()),
    };
    let t1 = clock.now_ms();
    seen = Some(server_seen(server, &rec.id, &inv));
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
    if opts.runs(CheckGroup::Packages) {
        match packages(plan, server, &mut client).await {
            Ok(f) => out.extend(f),
            Err(e) => return gone(out, seen, &e),
        }
    }
    let mut held = HashMap::new();
    if opts.runs(CheckGroup::Ports) {
        match ports(server, &mut client, &mut held).await {
            Ok(f) => out.extend(f),
            Err(e) => return gone(out, seen, &e),
        }
    }
    if opts.runs(CheckGroup::Disk) {
        for dir in &server.data_dirs {
            match disk(server, t, dir, &mut client, opts).await {
                Ok(f) => out.extend(f),
                Err(e) => return gone(out, seen, &e),
            }
        }
    }
    ServerOutcome {
        findings: out,
        agent: Some(rec.clone()),
        held,
        holds_address,
        seen,
    }
}

/// Planned ports already held on the server (TCP and UDP, at its address or a wildcard).
/// `Err` when the agent is gone.
async fn ports(
    server: &Server,
    client: &mut Client,
    held: &mut HashMap<(u16, Proto), String>,
) -> Result<Vec<Finding>, String> {
    let planned = server.planned_ports();
    if planned.is_empty() {
        return Ok(vec![]);
    }
    // Without process names first: resolving them walks every process's descriptors,
    // which is the slow part (and grows with every agent on a shared host). Only when a
    // planned port is held is the list fetched again with the holders' names.
    let mut sockets = listening(server, client, true).await?;
    if planned
        .iter()
        .any(|p| holder(&sockets, server.address, p.port, p.protocol).is_some())
    {
        sockets = listening(server, client, false).await?;
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
            p.protocol,
            p.app,
            h.as_deref(),
        ));
    }
    Ok(out)
}

/// The server's listening sockets (TCP and UDP); empty, with a warning, when the agent
/// cannot list them; `Err` when the agent is gone.
async fn listening(
    server: &Server,
    client: &mut Client,
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
    client: &mut Client,
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
                // Pacing between attempts at the host's benchmark lock, not a wait for a
                // state: the agent answers at once whether the lock is free.
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
    server: &Server,
    t: &Thresholds,
    dir: &str,
    client: &mut Client,
    opts: &Opts,
) -> Result<Vec<Finding>, String> {
    use DiskMeasure as M;
    let base = pb::DiskBenchmark {
        directory: dir.to_string(),
        rw: pb::DiskRw::Randread as i32,
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
    let read = bench(client, base.clone()).await?;
    out.push(readiness::disk_bench(
        server,
        t,
        dir,
        M::RandRead,
        read.as_ref()
            .map(|r| r.read.as_ref().map_or(r.iops, |x| x.iops))
            .map_err(String::as_str),
    ));
    let write = bench(
        client,
        pb::DiskBenchmark {
            rw: pb::DiskRw::Randwrite as i32,
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
    let sync = bench(
        client,
        pb::DiskBenchmark {
            rw: pb::DiskRw::Write as i32,
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

/// The plan's package files for the server, verified by its agent (size and SHA-256).
async fn packages(
    plan: &Plan,
    server: &Server,
    client: &mut Client,
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

impl ServerOutcome {
    /// The agent stopped answering: the server's result is a hard `reachable` failure (in
    /// place of the passed one, when it answered at first), with what was judged before, and
    /// every planned check of the server not judged yet as `not checked` (so the report still
    /// lists the whole plan).
    pub(super) fn lost(mut self, plan: &Plan, server: &Server, opts: &Opts, msg: &str) -> Self {
        let f = readiness::reachable(server, Some(msg));
        match self.findings.iter_mut().find(|f| f.check == "reachable") {
            Some(x) => *x = f,
            None => self.findings.insert(0, f),
        }
        let judged: BTreeSet<String> = self.findings.iter().map(|f| f.check.clone()).collect();
        for (check, reason, target) in server_checks(plan, server, opts) {
            if !judged.contains(&check) {
                let f = readiness::not_checked(&server.hostname, check, reason, &server.hostname);
                self.findings.push(match target {
                    Some(t) => f.about(t),
                    None => f,
                });
            }
        }
        self.agent = None;
        self
    }
}

/// The checks the per-server phase owes for `server`, in the order it judges them (after
/// `reachable`): identity, capacity, free disk, clock, package files, planned ports, disk
/// benchmarks; those `opts` leaves out are not owed. Each with its pause reason, and its
/// target when it has one (planned ports).
pub(super) fn server_checks(
    plan: &Plan,
    server: &Server,
    opts: &Opts,
) -> Vec<(String, PauseReason, Option<Target>)> {
    let own = |check: String, reason| (check, reason, None);
    let mut out = vec![
        own("identity".into(), PauseReason::Planning),
        own("cores".into(), PauseReason::Planning),
        own("memory".into(), PauseReason::Planning),
    ];
    for dir in &server.data_dirs {
        out.push(own(check::disk_free(dir), PauseReason::DiskPerformance));
    }
    out.push(own("clock".into(), PauseReason::Other));
    if opts.runs(CheckGroup::Packages) {
        for p in plan.packages_for(server) {
            out.push(own(check::package(&p.path), PauseReason::Package));
        }
    }
    if opts.runs(CheckGroup::Ports) {
        for p in server.planned_ports() {
            out.push((
                check::port(p.port, p.protocol),
                PauseReason::NetworkPorts,
                Some(Target::port(&server.hostname, p.port, p.protocol)),
            ));
        }
    }
    if opts.runs(CheckGroup::Disk) {
        for dir in &server.data_dirs {
            for m in DiskMeasure::ALL {
                out.push(own(check::disk(m, dir), PauseReason::DiskPerformance));
            }
        }
    }
    out
}

/// A planned server before any agent answered: the plan's facts only.
pub(super) fn server_planned(server: &Server) -> ServerRecord {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let opts = Opts::default();
        let o = ServerOutcome {
            findings: judged,
            agent: None,
            held: HashMap::new(),
            holds_address: false,
            seen: None,
        }
        .lost(&p, s, &opts, "connection refused");
        let checks: Vec<&str> = o.findings.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(checks[0], "reachable");
        assert_eq!(o.findings[0].verdict, readiness::Verdict::Hard);
        assert_eq!(o.findings[1].verdict, readiness::Verdict::Pass);
        let owed = server_checks(&p, s, &opts);
        assert_eq!(o.findings.len(), owed.len() + 1, "{checks:?}");
        for (c, _, _) in &owed {
            assert!(checks.contains(&c.as_str()), "{c} missing: {checks:?}");
        }
        for f in &o.findings[2..] {
            assert_eq!(f.message, "not checked: a unreachable");
            assert_eq!(f.verdict, readiness::Verdict::Hard);
        }
        assert!(checks.contains(&"port:443/tcp") && checks.contains(&"disk_fdatasync:/data"));
        // A planned port not checked still carries its target.
        let port = o
            .findings
            .iter()
            .find(|f| f.check == "port:443/tcp")
            .unwrap();
        assert_eq!(
            port.target,
            Some(Target::port("a", 443, preflight_core::net::Proto::Tcp))
        );
    }
}
