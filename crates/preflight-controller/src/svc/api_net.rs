//! Controller network RPCs: an agent's listening ports, port probes between two agents, and
//! bandwidth between two agents. The controller only orchestrates: it validates the request,
//! makes the secrets (probe nonce, bandwidth token), and asks the two agents in turn; every
//! socket is opened by an agent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use ring::rand::SecureRandom;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use crate::agents::{agent_status, dial_addr};
use crate::svc::api::ApiSvc;
use crate::Shared;

/// Most ports one probe request may name (the agent's cap on probe listeners).
pub const MAX_PROBE_PORTS: usize = 1024;
/// Per-probe timeout when the request does not name one.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest per-probe timeout.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time listeners may be kept open after a probe, and their longest TTL.
const MAX_LISTENER_TTL: Duration = Duration::from_secs(600);
/// Probes the source agent keeps in flight at once.
const PROBE_CONCURRENCY: u32 = 256;
/// Longest bandwidth test, and the most streams.
const MAX_BW_DURATION_S: u32 = 60;
const MAX_BW_STREAMS: u32 = 16;
/// Time allowed beyond a bandwidth test's duration for handshakes and the result.
const BW_GRACE: Duration = Duration::from_secs(30);

fn secret32() -> Result<[u8; 32], Status> {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Status::internal("system random generator failed"))?;
    Ok(b)
}

/// Parses a port list such as `80,443,8080-8090` into distinct ports, in the order given.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("ports is empty: name ports like 80,443,8080-8090".into());
    }
    let mut out: Vec<u16> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let port = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        let n: u64 = s.parse().map_err(|_| {
            format!("ports: {s:?} is not a port number: name ports like 80,443,8080-8090")
        })?;
        if n == 0 || n > 65535 {
            return Err(format!("ports: {n} is out of range: use 1 to 65535"));
        }
        Ok(n as u16)
    };
    for part in spec.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(part)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!(
                "ports: range {lo}-{hi} is reversed: write it as {hi}-{lo}"
            ));
        }
        let count = usize::from(hi - lo) + 1;
        if out.len() + count > MAX_PROBE_PORTS {
            return Err(format!(
                "ports: more than {MAX_PROBE_PORTS} ports named: split the probe into several"
            ));
        }
        for p in lo..=hi {
            if seen.insert(p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The record of the agent named in `field`, naming that field when it is bad.
fn agent(svc: &ApiSvc, field: &str, id: &str) -> Result<AgentRecord, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} is empty: name an agent (`preflight agents` lists them)"
        )));
    }
    svc.agent_record(id)
        .map_err(|s| Status::new(s.code(), format!("{field}: {}", s.message())))
}

/// Every address an agent is known by: where it listens, where its heartbeats come from, and
/// the addresses it reports.
fn known_addresses(rec: &AgentRecord) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    let mut add = |ip: IpAddr| {
        if !ip.is_unspecified() && !v.contains(&ip) {
            v.push(ip);
        }
    };
    if let Some(a) = dial_addr(rec).and_then(|a| a.parse::<SocketAddr>().ok()) {
        add(a.ip());
    }
    if let Ok(a) = rec.listen_addr.parse::<SocketAddr>() {
        add(a.ip());
    }
    if let Ok(ip) = rec.observed_ip.parse() {
        add(ip);
    }
    for a in &rec.addresses {
        if let Ok(ip) = a.split('/').next().unwrap_or_default().parse() {
            add(ip);
        }
    }
    v
}

/// The address of the target to use: `to_addr` when given (it must be one of the agent's),
/// else the address its agent is reached at.
fn target_address(rec: &AgentRecord, to_addr: &str) -> Result<IpAddr, Status> {
    let known = known_addresses(rec);
    if to_addr.is_empty() {
        return known.first().copied().ok_or_else(|| {
            Status::failed_precondition(format!(
                "agent {} has not reported an address yet (no heartbeat): wait or pass --to-addr",
                rec.id
            ))
        });
    }
    let ip: IpAddr = to_addr.trim().parse().map_err(|_| {
        Status::invalid_argument(format!(
            "to_addr {to_addr:?} is not an IP address, e.g. 10.0.0.5"
        ))
    })?;
    if !known.contains(&ip) {
        let list: Vec<String> = known.iter().map(ToString::to_string).collect();
        return Err(Status::invalid_argument(format!(
            "to_addr {ip} is not an address of agent {}: it is known as {}",
            rec.id,
            if list.is_empty() {
                "nothing yet".into()
            } else {
                list.join(", ")
            }
        )));
    }
    Ok(ip)
}

pub async fn list_agent_ports(
    svc: &ApiSvc,
    req: Request<pb::AgentPortsRequest>,
) -> Result<pb::ListListeningPortsResponse, Status> {
    let r = req.into_inner();
    let rec = agent(svc, "agent_id", &r.agent_id)?;
    let mut client = svc.0.agents.client(&rec)?;
    let mut q = Request::new(pb::ListListeningPortsRequest {
        tcp: r.tcp,
        udp: r.udp,
        no_processes: r.no_processes,
    });
    q.set_timeout(Duration::from_secs(30));
    Ok(client
        .list_listening_ports(q)
        .await
        .map_err(|s| agent_status(&rec.id, s))?
        .into_inner())
}

/// A validated probe request.
struct ProbePlan {
    from: AgentRecord,
    to: AgentRecord,
    addr: IpAddr,
    ports: Vec<u16>,
    timeout: Duration,
    keep: Duration,
}

fn probe_plan(svc: &ApiSvc, r: &pb::ProbeRequest) -> Result<ProbePlan, Status> {
    let ports = parse_ports(&r.ports).map_err(Status::invalid_argument)?;
    let timeout = match r.timeout_ms {
        0 => DEFAULT_PROBE_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    if timeout > MAX_PROBE_TIMEOUT {
        return Err(Status::invalid_argument(format!(
            "timeout_ms {} is out of range: use at most {} s",
            r.timeout_ms,
            MAX_PROBE_TIMEOUT.as_secs()
        )));
    }
    let keep = Duration::from_millis(u64::from(r.keep_ms));
    if keep > MAX_LISTENER_TTL {
        return Err(Status::invalid_argument(format!(
            "keep_ms {} is out of range: keep listeners at most {} s",
            r.keep_ms,
            MAX_LISTENER_TTL.as_secs()
        )));
    }
    let from = agent(svc, "from_agent", &r.from_agent)?;
    let to = agent(svc, "to_agent", &r.to_agent)?;
    let addr = target_address(&to, &r.to_addr)?;
    Ok(ProbePlan {
        from,
        to,
        addr,
        ports,
        timeout,
        keep,
    })
}

fn listener_note(p: &pb::ProbeListenerPort) -> String {
    match p.status.as_str() {
        "in_use" => match p.owner_pid {
            Some(pid) => format!("in use by {} (pid {pid})", p.owner_process),
            None => "in use by another process".into(),
        },
        "forbidden" => "the target agent's own port".into(),
        "failed" => format!("listener failed: {}", p.error),
        _ => String::new(),
    }
}

/// Which end of a probe or bandwidth test failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The source agent (connector / sender).
    From,
    /// The destination agent (listeners / receiver).
    To,
}

/// What [`probe_between`] found: one result per port (listener status and note included) and
/// the listeners' TTL.
pub(crate) struct Probed {
    pub ports: Vec<pb::ProbePortResult>,
    pub ttl: Duration,
}

/// Probes `ports` of `addr` (an address of `to`) from `from`: opens the probe listeners on the
/// destination agent, runs the probes on the source agent, then closes the listeners unless
/// `keep` is set (their TTL closes them in any case). Shared by `preflight probe` and the
/// readiness sweep. An error names the agent and says which end failed.
/// Probe listeners opened on an agent, closed (by a task of their own) when dropped while still
/// set: a caller that goes away between opening and closing them leaves nothing listening
/// until the TTL.
struct CloseListenersOnDrop(
    Option<(
        pb::agent_client::AgentClient<tonic::transport::Channel>,
        String,
    )>,
);

impl Drop for CloseListenersOnDrop {
    fn drop(&mut self) {
        let Some((mut client, listeners_id)) = self.0.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut q = Request::new(pb::CloseProbeListenersRequest { listeners_id });
                q.set_timeout(Duration::from_secs(10));
                if let Err(e) = client.close_probe_listeners(q).await {
                    tracing::warn!(error = %e.message(), "closing abandoned probe listeners failed; they close at their ttl");
                }
            });
        }
    }
}

pub(crate) async fn probe_between(
    shared: &Shared,
    from: &AgentRecord,
    to: &AgentRecord,
    addr: IpAddr,
    ports: &[u16],
    timeout: Duration,
    keep: Duration,
) -> Result<Probed, (Side, Status)> {
    let nonce = secret32().map_err(|e| (Side::From, e))?;
    // Long enough for every probe (connect and proof, in rounds of PROBE_CONCURRENCY) plus
    // slack; the listeners close themselves by then even if we never get to close them.
    let rounds = ports.len().div_ceil(PROBE_CONCURRENCY as usize) as u32;
    let budget = timeout * 2 * rounds + Duration::from_secs(10);
    let ttl = (budget + keep).min(MAX_LISTENER_TTL);
    let mut to_client = shared.agents.client(to).map_err(|e| (Side::To, e))?;
    let mut from_client = shared.agents.client(from).map_err(|e| (Side::From, e))?;

    let mut q = Request::new(pb::OpenProbeListenersRequest {
        ports: ports.iter().map(|&p| u32::from(p)).collect(),
        nonce: nonce.to_vec(),
        ttl_ms: ttl.as_millis() as u32,
        bind_ip: addr.to_string(),
    });
    q.set_timeout(Duration::from_secs(30));
    let opened = to_client
        .open_probe_listeners(q)
        .await
        .map_err(|s| (Side::To, agent_status(&to.id, s)))?
        .into_inner();
    tracing::debug!(to = %to.id, %addr, ports = ports.len(), listeners = %opened.listeners_id, "probe listeners opened");
    // Closes the listeners also when this future is dropped half-way (a cancelled sweep).
    let mut guard = CloseListenersOnDrop(Some((to_client.clone(), opened.listeners_id.clone())));

    let mut q = Request::new(pb::RunProbesRequest {
        targets: ports
            .iter()
            .map(|&p| pb::ProbeTarget {
                ip: addr.to_string(),
                port: u32::from(p),
            })
            .collect(),
        nonce: nonce.to_vec(),
        timeout_ms: timeout.as_millis() as u32,
        concurrency: PROBE_CONCURRENCY,
    });
    q.set_timeout(budget);
    let probed = from_client
        .run_probes(q)
        .await
        .map_err(|s| (Side::From, agent_status(&from.id, s)));

    // Close whether the probes worked or not; the TTL is the backstop.
    guard.0 = None;
    if keep.is_zero() {
        let mut q = Request::new(pb::CloseProbeListenersRequest {
            listeners_id: opened.listeners_id.clone(),
        });
        q.set_timeout(Duration::from_secs(10));
        if let Err(e) = to_client.close_probe_listeners(q).await {
            tracing::warn!(to = %to.id, error = %e.message(), "closing probe listeners failed; they close at their ttl");
        }
    }
    let probed = probed?.into_inner();

    let ports = ports
        .iter()
        .map(|&port| {
            let lst = opened.ports.iter().find(|p| p.port == u32::from(port));
            let res = probed.results.iter().find(|p| p.port == u32::from(port));
            let mut note = lst.map(listener_note).unwrap_or_default();
            if let Some(d) = res.map(|r| r.detail.as_str()).filter(|d| !d.is_empty()) {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(d);
            }
            pb::ProbePortResult {
                port: u32::from(port),
                outcome: res.map(|r| r.outcome.clone()).unwrap_or_default(),
                connect_us: res.and_then(|r| r.connect_us),
                listener: lst.map(|p| p.status.clone()).unwrap_or_default(),
                note,
            }
        })
        .collect();
    Ok(Probed { ports, ttl })
}

pub async fn probe(
    svc: &ApiSvc,
    req: Request<pb::ProbeRequest>,
) -> Result<pb::ProbeResponse, Status> {
    let r = req.into_inner();
    let plan = probe_plan(svc, &r)?;
    let probed = probe_between(
        &svc.0,
        &plan.from,
        &plan.to,
        plan.addr,
        &plan.ports,
        plan.timeout,
        plan.keep,
    )
    .await
    .map_err(|(_, s)| s)?;
    Ok(pb::ProbeResponse {
        from_agent: plan.from.id,
        to_agent: plan.to.id,
        address: plan.addr.to_string(),
        ports: probed.ports,
        listeners_ttl_ms: if plan.keep.is_zero() {
            0
        } else {
            probed.ttl.as_millis() as u32
        },
    })
}

/// A bandwidth test from `from` to `target` (an address of `to`, and the receiver's port there;
/// port 0: a free one the agent picks): starts the receiver on the destination agent, runs the sender on the source agent, and returns the receiver's address
/// and the report (the receiver's own in reverse). Shared by `preflight bandwidth` and the
/// readiness sweep. With `progress`, the test runs through the source agent's live sender and
/// `progress` gets a `started` message once the receiver listens, then one message per whole
/// second as the source counts it (at most one per second of the duration, in order); a
/// closed `progress` is ignored (the caller decides whether to drop this future).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn bandwidth_between(
    shared: &Shared,
    from: &AgentRecord,
    to: &AgentRecord,
    target: SocketAddr,
    duration_ms: u32,
    streams: u32,
    reverse: bool,
    progress: Option<&mpsc::Sender<Result<pb::BandwidthProgress, Status>>>,
) -> Result<(SocketAddr, Option<pb::BandwidthReport>), (Side, Status)> {
    let (ip, port) = (target.ip(), target.port());
    let token = secret32().map_err(|e| (Side::From, e))?;
    let duration = Duration::from_millis(u64::from(duration_ms));
    let mut to_client = shared.agents.client(to).map_err(|e| (Side::To, e))?;
    let mut from_client = shared.agents.client(from).map_err(|e| (Side::From, e))?;

    let mut q = Request::new(pb::StartBandwidthReceiverRequest {
        token: token.to_vec(),
        streams,
        duration_ms,
        reverse,
        ttl_ms: (duration + BW_GRACE).as_millis() as u32,
        bind_ip: ip.to_string(),
        port: u32::from(port),
    });
    q.set_timeout(Duration::from_secs(30));
    let rx = to_client
        .start_bandwidth_receiver(q)
        .await
        .map_err(|s| (Side::To, agent_status(&to.id, s)))?
        .into_inner();
    let port = u16::try_from(rx.port).map_err(|_| {
        (
            Side::To,
            Status::internal(format!("agent {} reported port {}", to.id, rx.port)),
        )
    })?;
    let addr = SocketAddr::new(ip, port);
    tracing::debug!(from = %from.id, to = %to.id, %addr, streams, duration_ms, reverse, "bandwidth test starting");

    let mut q = Request::new(pb::RunBandwidthSenderRequest {
        address: addr.to_string(),
        token: token.to_vec(),
        streams,
        duration_ms,
        reverse,
    });
    q.set_timeout(duration + BW_GRACE + Duration::from_secs(10));
    let sent = match progress {
        None => from_client
            .run_bandwidth_sender(q)
            .await
            .map_err(|s| (Side::From, agent_status(&from.id, s)))?
            .into_inner(),
        Some(tx) => {
            let started = pb::BandwidthProgress {
                started: Some(pb::BandwidthResponse {
                    from_agent: from.id.clone(),
                    to_agent: to.id.clone(),
                    address: addr.to_string(),
                    report: None,
                }),
                ..Default::default()
            };
            let _ = tx.send(Ok(started)).await;
            let mut live = from_client
                .run_bandwidth_sender_live(q)
                .await
                .map_err(|s| (Side::From, agent_status(&from.id, s)))?
                .into_inner();
            // The agent sends at most one message per whole second, then the report; anything
            // past the duration's seconds or out of order is not passed on.
            let whole = u64::from(duration_ms).div_ceil(1000) as u32;
            let mut next = 0u32;
            loop {
                let msg = live
                    .message()
                    .await
                    .map_err(|s| (Side::From, agent_status(&from.id, s)))?
                    .ok_or_else(|| {
                        (
                            Side::From,
                            Status::unavailable(format!(
                                "agent {} ended the bandwidth test without a result: try again",
                                from.id
                            )),
                        )
                    })?;
                if let Some(report) = msg.report {
                    break pb::RunBandwidthSenderResponse {
                        report: Some(report),
                    };
                }
                if msg.second == next && next < whole {
                    next += 1;
                    let sec = pb::BandwidthProgress {
                        second: msg.second,
                        bytes: msg.bytes,
                        ..Default::default()
                    };
                    let _ = tx.send(Ok(sec)).await;
                }
            }
        }
    };

    // The receiver's own report: complete in reverse (it sent, so it knows retransmissions);
    // in the forward direction the sender's report already carries the receiver's figures.
    let mut q = Request::new(pb::GetBandwidthResultRequest {
        receiver_id: rx.receiver_id,
        wait_ms: 15_000,
    });
    q.set_timeout(Duration::from_secs(20));
    let received = to_client.get_bandwidth_result(q).await;
    let report = if reverse {
        received
            .map_err(|s| (Side::To, agent_status(&to.id, s)))?
            .into_inner()
            .report
    } else {
        if let Err(e) = received {
            tracing::warn!(to = %to.id, error = %e.message(), "bandwidth receiver result unavailable; using the sender's copy");
        }
        sent.report
    };
    Ok((addr, report))
}

/// A validated bandwidth request.
struct BandwidthPlan {
    from: AgentRecord,
    to: AgentRecord,
    target: SocketAddr,
    duration_s: u32,
    streams: u32,
    reverse: bool,
}

fn bandwidth_plan(svc: &ApiSvc, r: &pb::BandwidthRequest) -> Result<BandwidthPlan, Status> {
    let duration_s = if r.duration_s == 0 { 10 } else { r.duration_s };
    if duration_s > MAX_BW_DURATION_S {
        return Err(Status::invalid_argument(format!(
            "duration_s {duration_s} is out of range: use 1 to {MAX_BW_DURATION_S} s"
        )));
    }
    let streams = if r.streams == 0 { 1 } else { r.streams };
    if streams > MAX_BW_STREAMS {
        return Err(Status::invalid_argument(format!(
            "streams {streams} is out of range: use 1 to {MAX_BW_STREAMS}"
        )));
    }
    let from = agent(svc, "from_agent", &r.from_agent)?;
    let to = agent(svc, "to_agent", &r.to_agent)?;
    let ip = target_address(&to, &r.to_addr)?;
    let port = u16::try_from(r.port).map_err(|_| {
        Status::invalid_argument(format!(
            "port {} is out of range: use 1 to 65535 (0: a free port)",
            r.port
        ))
    })?;
    Ok(BandwidthPlan {
        from,
        to,
        target: SocketAddr::new(ip, port),
        duration_s,
        streams,
        reverse: r.reverse,
    })
}

pub async fn bandwidth(
    svc: &ApiSvc,
    req: Request<pb::BandwidthRequest>,
) -> Result<pb::BandwidthResponse, Status> {
    let p = bandwidth_plan(svc, req.get_ref())?;
    let (addr, report) = bandwidth_between(
        &svc.0,
        &p.from,
        &p.to,
        p.target,
        p.duration_s * 1000,
        p.streams,
        p.reverse,
        None,
    )
    .await
    .map_err(|(_, s)| s)?;
    Ok(pb::BandwidthResponse {
        from_agent: p.from.id,
        to_agent: p.to.id,
        address: addr.to_string(),
        report,
    })
}

/// BandwidthLive's messages (see [`bandwidth_live`]).
pub type BandwidthProgressStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::BandwidthProgress, Status>>;

/// Messages of one live test: `started`, a second each (the duration is capped at 60 s), and
/// `done`.
const BW_PROGRESS_BUFFER: usize = MAX_BW_DURATION_S as usize + 4;

/// BandwidthLive: Bandwidth with progress. The request is checked first (a bad one fails the
/// call itself); then the stream carries `started`, one message per whole second as it
/// completes, and `done` with the whole result (or the test's error). When the caller goes
/// away the test is dropped, which drops the calls to the agents.
pub async fn bandwidth_live(
    svc: &ApiSvc,
    req: Request<pb::BandwidthRequest>,
) -> Result<BandwidthProgressStream, Status> {
    let p = bandwidth_plan(svc, req.get_ref())?;
    let shared = svc.0.clone();
    let (tx, rx) = mpsc::channel(BW_PROGRESS_BUFFER);
    tokio::spawn(async move {
        let test = bandwidth_between(
            &shared,
            &p.from,
            &p.to,
            p.target,
            p.duration_s * 1000,
            p.streams,
            p.reverse,
            Some(&tx),
        );
        let res = tokio::select! {
            res = test => res,
            _ = tx.closed() => return,
        };
        let last = res
            .map(|(addr, report)| pb::BandwidthProgress {
                done: Some(pb::BandwidthResponse {
                    from_agent: p.from.id.clone(),
                    to_agent: p.to.id.clone(),
                    address: addr.to_string(),
                    report,
                }),
                ..Default::default()
            })
            .map_err(|(_, s)| s);
        let _ = tx.send(last).await;
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::parse_ports;

    #[test]
    fn port_lists_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_ports("80,443,8080-8082").unwrap(),
            vec![80, 443, 8080, 8081, 8082]
        );
        assert_eq!(parse_ports(" 22 , 22,21-22 ").unwrap(), vec![22, 21]);
        assert_eq!(parse_ports("1-1024").unwrap().len(), 1024);
        for (bad, says) in [
            ("", "ports is empty"),
            ("0", "0 is out of range"),
            ("65536", "65536 is out of range"),
            ("90-80", "range 90-80 is reversed"),
            ("1-1025", "more than 1024"),
            ("http", "not a port number"),
            ("80,", "not a port number"),
        ] {
            let e = parse_ports(bad).unwrap_err();
            assert!(e.starts_with("ports"), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
