//! The network phase, between servers, after every server has been swept by itself: required
//! TCP paths (probes between agents), declared bandwidth pairs and virtual IPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use preflight_core::net::Proto;
use preflight_core::plan::{Plan, Server};
use preflight_core::readiness::{self, check, CheckGroup, Finding, Target};
use preflight_core::workflow::PauseReason;
use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use tonic::{Request, Status};

use super::server::ServerOutcome;
use super::{lost, Opts};
use crate::agents::{agent_status, AgentPool};
use crate::engine::net::{bandwidth_between, probe_between, Side, MAX_PROBE_PORTS};

/// Per-port timeout of path and virtual IP probes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Ports of a virtual IP probed in one request (all at once, so one request takes about
/// PROBE_TIMEOUT); a VIP with more ports takes several requests.
const VIP_CHUNK: usize = 64;

/// One unit of the network phase, run after every server has been swept.
pub(super) enum NetTask {
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
    /// What the progress line shows when the task is done.
    pub(super) fn label(&self, plan: &Plan) -> String {
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
pub(super) fn net_tasks(plan: &Plan, opts: &Opts) -> (Vec<NetTask>, Vec<NetTask>) {
    let idx = |s: &Server| {
        plan.servers
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .unwrap_or_default()
    };
    let mut paths = Vec::new();
    if opts.runs(CheckGroup::Paths) {
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
    if opts.runs(CheckGroup::Bandwidth) {
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
    if opts.runs(CheckGroup::Vips) {
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
    let check = check::path(&to.hostname, first, last);
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
    .about(Target::path(
        &from.hostname,
        &to.hostname,
        (first == last).then_some(first),
    ))
}

/// The paths `from` → `to` on `ports` that could not be probed because the agent of
/// `unreachable` did not answer.
fn paths_not_checked(from: &Server, to: &Server, ports: &[u16], unreachable: &str) -> Vec<Finding> {
    ports
        .iter()
        .map(|p| {
            readiness::not_checked(
                &from.hostname,
                check::path(&to.hostname, *p, *p),
                PauseReason::NetworkPorts,
                unreachable,
            )
            .about(Target::path(&from.hostname, &to.hostname, Some(*p)))
        })
        .collect()
}

/// Runs one network check between the agents that answered in the server phase. A check
/// whose agent is gone reports it once as `reachable`; checks of a server that never
/// answered (or stopped) are not tried but reported `not checked: SERVER unreachable`, so
/// the report lists every planned check.
pub(super) async fn net_task(
    pool: &AgentPool,
    plan: &Plan,
    task: &NetTask,
    servers: &[ServerOutcome],
    opts: &Opts,
) -> Vec<Finding> {
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
                    pool,
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
                                servers[*to]
                                    .held
                                    .get(&(port, Proto::Tcp))
                                    .cloned()
                                    .or_else(|| {
                                        (r.listener() == pb::ListenerStatus::InUse)
                                            .then(|| r.note.clone())
                                    });
                            out.push(readiness::path(
                                sv(*f),
                                sv(*to),
                                port,
                                &outcome_word(r.outcome),
                                &r.note,
                                held.as_deref(),
                            ));
                        }
                    }
                    Err((Side::To, e)) if lost(&e) => {
                        out.push(gone(*to, &e));
                        out.extend(paths_not_checked(sv(*f), sv(*to), ports, &sv(*to).hostname));
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
                out.push(
                    readiness::not_checked(
                        &sv(*from).hostname,
                        check::bandwidth(&sv(*to).hostname),
                        PauseReason::NetworkPorts,
                        &sv(down).hostname,
                    )
                    .about(Target::bandwidth(
                        &sv(*from).hostname,
                        &sv(*to).hostname,
                        *port,
                    )),
                );
                return out;
            };
            let res = bandwidth_between(
                pool,
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
                *port,
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
            let target = Target::vip(&label, &v.address.to_string());
            let Some((pi, rec)) = prober else {
                if (0..plan.servers.len()).any(|i| agent(i).is_some()) {
                    out.push(readiness::unchecked(
                        &label,
                        check::vip(v.address),
                        PauseReason::VipMissing,
                        &format!(
                            "not probed: no server of the plan holding its planned address is in the network of {}",
                            v.address
                        ),
                    ).about(target.clone()));
                } else {
                    let who = if v.members.is_empty() {
                        "every server of the plan".to_string()
                    } else {
                        v.members.join(", ")
                    };
                    out.push(
                        readiness::not_checked(
                            &label,
                            check::vip(v.address),
                            PauseReason::VipMissing,
                            &who,
                        )
                        .about(target.clone()),
                    );
                }
                return out;
            };
            let ports: Vec<u16> = v.ports.iter().flat_map(|r| r.ports()).collect();
            let mut answers: Vec<(u16, String)> = Vec::new();
            // In requests of VIP_CHUNK ports, so each stays within its timeout.
            for chunk in ports.chunks(VIP_CHUNK) {
                match probe_vip(pool, rec, v.address, chunk).await {
                    Ok(a) => answers.extend(a),
                    Err(e) if lost(&e) => {
                        out.push(gone(pi, &e));
                        out.push(
                            readiness::not_checked(
                                &label,
                                check::vip(v.address),
                                PauseReason::VipMissing,
                                &sv(pi).hostname,
                            )
                            .about(target.clone()),
                        );
                        return out;
                    }
                    Err(e) => {
                        out.push(
                            readiness::unchecked(
                                &label,
                                check::vip(v.address),
                                PauseReason::VipMissing,
                                &format!(
                                    "could not probe {} from {}: {}",
                                    v.address,
                                    sv(pi).hostname,
                                    e.message()
                                ),
                            )
                            .about(target.clone()),
                        );
                        return out;
                    }
                }
            }
            out.push(readiness::vip(&label, &v.address.to_string(), &answers));
        }
    }
    out
}

/// Probes `ports` (at most [`VIP_CHUNK`]) of a virtual IP from the agent `rec`:
/// `(port, outcome)` per port.
async fn probe_vip(
    pool: &AgentPool,
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
    let mut c = pool.client(rec)?;
    let r = c
        .run_probes(req)
        .await
        .map_err(|e| agent_status(&rec.id, e))?;
    Ok(r.into_inner()
        .results
        .into_iter()
        .map(|x| (x.port as u16, outcome_word(x.outcome)))
        .collect())
}

/// A probe outcome as the readiness rules name it (`verified`, `open`, `refused`, …).
fn outcome_word(o: i32) -> String {
    preflight_proto::json::name::<pb::ProbeOutcome>(o)
}

/// One `reachable` finding per server: a server whose agent was lost in the network phase
/// has a hard one there, which replaces the passed one of the server phase (so a run lists
/// each planned check once, whenever its agent went away).
pub(super) fn one_reachable_each(all: Vec<Finding>) -> Vec<Finding> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_core::workflow::Party;

    pub(crate) fn plan(ports: &str) -> Plan {
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

    #[test]
    fn a_pairs_ports_are_probed_in_requests_the_agent_accepts() {
        let p = plan("1000-3499");
        let (paths, _) = net_tasks(&p, &Opts::default());
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

    #[test]
    fn a_reachable_lost_in_the_network_phase_replaces_the_passed_one() {
        let p = plan("80");
        let s = &p.servers[0];
        let all = vec![
            readiness::reachable(s, None),
            readiness::reachable(s, Some("gone")),
            readiness::reachable(s, Some("gone again")),
        ];
        let one = one_reachable_each(all);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].verdict, readiness::Verdict::Hard);
    }
}
