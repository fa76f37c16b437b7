//! Controller network RPCs: an agent's listening ports, port probes between two agents, and
//! bandwidth between two agents. The controller only orchestrates: it validates the request,
//! makes the secrets (probe nonce, bandwidth token), and asks the two agents in turn; every
//! socket is opened by an agent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use crate::agents::{agent_status, dial_addr};
use crate::engine::net::{
    bandwidth_between, probe_between, DEFAULT_PROBE_TIMEOUT, MAX_BW_DURATION_S, MAX_BW_STREAMS,
    MAX_LISTENER_TTL, MAX_PROBE_PORTS, MAX_PROBE_TIMEOUT,
};
use crate::error::InvalidRequest;
use crate::svc::ApiSvc;

/// Parses a port list such as `80,443,8080-8090` into distinct ports, in the order given; the
/// error is the problem with the `ports` field.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty: name ports like 80,443,8080-8090".into());
    }
    let mut out: Vec<u16> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let port = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        let n: u64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a port number: name ports like 80,443,8080-8090"))?;
        if n == 0 || n > 65535 {
            return Err(format!("{n} is out of range: use 1 to 65535"));
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
                "range {lo}-{hi} is reversed: write it as {hi}-{lo}"
            ));
        }
        let count = usize::from(hi - lo) + 1;
        if out.len() + count > MAX_PROBE_PORTS {
            return Err(format!(
                "more than {MAX_PROBE_PORTS} ports named: split the probe into several"
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

/// An agent id as a request names it in `field`: present and well-formed.
fn agent_id(field: &str, id: String) -> Result<String, InvalidRequest> {
    if id.is_empty() {
        return Err(InvalidRequest::new(
            field,
            "empty: name an agent (`preflight agents` lists them)",
        ));
    }
    preflight_pki::validate_agent_id(&id).map_err(|e| InvalidRequest::new(field, e))?;
    Ok(id)
}

/// The record of the agent named in `field`, naming that field when there is none.
fn agent(svc: &ApiSvc, field: &str, id: &str) -> Result<AgentRecord, Status> {
    svc.agent_record(id)
        .map_err(|s| Status::new(s.code(), format!("{field}: {}", s.message())))
}

/// A target address as a request gives it (`None`: where the agent is reached).
fn to_addr(a: &str) -> Result<Option<IpAddr>, InvalidRequest> {
    if a.is_empty() {
        return Ok(None);
    }
    a.trim().parse().map(Some).map_err(|_| {
        InvalidRequest::new(
            "to_addr",
            format!(
                "{:?} is not an IP address, e.g. 10.0.0.5",
                a.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// A checked `AgentPortsRequest`.
pub(crate) struct PortsAsk {
    agent_id: String,
    tcp: bool,
    udp: bool,
    no_processes: bool,
}

impl TryFrom<pb::AgentPortsRequest> for PortsAsk {
    type Error = InvalidRequest;
    fn try_from(r: pb::AgentPortsRequest) -> Result<Self, InvalidRequest> {
        Ok(PortsAsk {
            agent_id: agent_id("agent_id", r.agent_id)?,
            tcp: r.tcp,
            udp: r.udp,
            no_processes: r.no_processes,
        })
    }
}

/// A checked `ProbeRequest` (the agents are looked up after).
pub(crate) struct ProbeAsk {
    from_agent: String,
    to_agent: String,
    to_addr: Option<IpAddr>,
    ports: Vec<u16>,
    timeout: Duration,
    keep: Duration,
}

impl TryFrom<pb::ProbeRequest> for ProbeAsk {
    type Error = InvalidRequest;
    fn try_from(r: pb::ProbeRequest) -> Result<Self, InvalidRequest> {
        let ports = parse_ports(&r.ports).map_err(|e| InvalidRequest::new("ports", e))?;
        let timeout = match r.timeout_ms {
            0 => DEFAULT_PROBE_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        if timeout > MAX_PROBE_TIMEOUT {
            return Err(InvalidRequest::new(
                "timeout_ms",
                format!(
                    "{} is out of range: use at most {} s",
                    r.timeout_ms,
                    MAX_PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        let keep = Duration::from_millis(u64::from(r.keep_ms));
        if keep > MAX_LISTENER_TTL {
            return Err(InvalidRequest::new(
                "keep_ms",
                format!(
                    "{} is out of range: keep listeners at most {} s",
                    r.keep_ms,
                    MAX_LISTENER_TTL.as_secs()
                ),
            ));
        }
        Ok(ProbeAsk {
            from_agent: agent_id("from_agent", r.from_agent)?,
            to_agent: agent_id("to_agent", r.to_agent)?,
            to_addr: to_addr(&r.to_addr)?,
            ports,
            timeout,
            keep,
        })
    }
}

/// A checked `BandwidthRequest` (the agents are looked up after).
pub(crate) struct BandwidthAsk {
    from_agent: String,
    to_agent: String,
    to_addr: Option<IpAddr>,
    port: u16,
    duration_s: u32,
    streams: u32,
    reverse: bool,
}

impl TryFrom<pb::BandwidthRequest> for BandwidthAsk {
    type Error = InvalidRequest;
    fn try_from(r: pb::BandwidthRequest) -> Result<Self, InvalidRequest> {
        let duration_s = if r.duration_s == 0 { 10 } else { r.duration_s };
        if duration_s > MAX_BW_DURATION_S {
            return Err(InvalidRequest::new(
                "duration_s",
                // The value named with its field, as `preflight bandwidth` has always said it.
                format!("duration_s {duration_s} is out of range: use 1 to {MAX_BW_DURATION_S} s"),
            ));
        }
        let streams = if r.streams == 0 { 1 } else { r.streams };
        if streams > MAX_BW_STREAMS {
            return Err(InvalidRequest::new(
                "streams",
                format!("streams {streams} is out of range: use 1 to {MAX_BW_STREAMS}"),
            ));
        }
        let port = u16::try_from(r.port).map_err(|_| {
            InvalidRequest::new(
                "port",
                format!(
                    "{} is out of range: use 1 to 65535 (0: a free port)",
                    r.port
                ),
            )
        })?;
        Ok(BandwidthAsk {
            from_agent: agent_id("from_agent", r.from_agent)?,
            to_agent: agent_id("to_agent", r.to_agent)?,
            to_addr: to_addr(&r.to_addr)?,
            port,
            duration_s,
            streams,
            reverse: r.reverse,
        })
    }
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
fn target_address(rec: &AgentRecord, to_addr: Option<IpAddr>) -> Result<IpAddr, Status> {
    let known = known_addresses(rec);
    let Some(ip) = to_addr else {
        return known.first().copied().ok_or_else(|| {
            Status::failed_precondition(format!(
                "agent {} has not reported an address yet (no heartbeat): wait or pass --to-addr",
                rec.id
            ))
        });
    };
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
    let r = PortsAsk::try_from(req.into_inner())?;
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

fn probe_plan(svc: &ApiSvc, r: ProbeAsk) -> Result<ProbePlan, Status> {
    let from = agent(svc, "from_agent", &r.from_agent)?;
    let to = agent(svc, "to_agent", &r.to_agent)?;
    let addr = target_address(&to, r.to_addr)?;
    Ok(ProbePlan {
        from,
        to,
        addr,
        ports: r.ports,
        timeout: r.timeout,
        keep: r.keep,
    })
}

pub async fn probe(
    svc: &ApiSvc,
    req: Request<pb::ProbeRequest>,
) -> Result<pb::ProbeResponse, Status> {
    let plan = probe_plan(svc, req.into_inner().try_into()?)?;
    let probed = probe_between(
        &svc.0.agents,
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

/// A validated bandwidth request.
struct BandwidthPlan {
    from: AgentRecord,
    to: AgentRecord,
    target: SocketAddr,
    duration_s: u32,
    streams: u32,
    reverse: bool,
}

fn bandwidth_plan(svc: &ApiSvc, r: BandwidthAsk) -> Result<BandwidthPlan, Status> {
    let from = agent(svc, "from_agent", &r.from_agent)?;
    let to = agent(svc, "to_agent", &r.to_agent)?;
    let ip = target_address(&to, r.to_addr)?;
    Ok(BandwidthPlan {
        from,
        to,
        target: SocketAddr::new(ip, r.port),
        duration_s: r.duration_s,
        streams: r.streams,
        reverse: r.reverse,
    })
}

pub async fn bandwidth(
    svc: &ApiSvc,
    req: Request<pb::BandwidthRequest>,
) -> Result<pb::BandwidthResponse, Status> {
    let p = bandwidth_plan(svc, req.into_inner().try_into()?)?;
    let (addr, report) = bandwidth_between(
        &svc.0.agents,
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
    let p = bandwidth_plan(svc, req.into_inner().try_into()?)?;
    let shared = svc.0.clone();
    let (tx, rx) = mpsc::channel(BW_PROGRESS_BUFFER);
    tokio::spawn(async move {
        let test = bandwidth_between(
            &shared.agents,
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
    use super::*;

    #[test]
    fn port_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_ports("80,443,8080-8082").unwrap(),
            vec![80, 443, 8080, 8081, 8082]
        );
        assert_eq!(parse_ports(" 22 , 22,21-22 ").unwrap(), vec![22, 21]);
        assert_eq!(parse_ports("1-1024").unwrap().len(), 1024);
        for (bad, says) in [
            ("", "empty"),
            ("0", "0 is out of range"),
            ("65536", "65536 is out of range"),
            ("90-80", "range 90-80 is reversed"),
            ("1-1025", "more than 1024"),
            ("http", "not a port number"),
            ("80,", "not a port number"),
        ] {
            let e = parse_ports(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn probe(f: impl FnOnce(&mut pb::ProbeRequest)) -> pb::ProbeRequest {
        let mut r = pb::ProbeRequest {
            from_agent: "a1".into(),
            to_agent: "a2".into(),
            ports: "80".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    fn bw(f: impl FnOnce(&mut pb::BandwidthRequest)) -> pb::BandwidthRequest {
        let mut r = pb::BandwidthRequest {
            from_agent: "a1".into(),
            to_agent: "a2".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    /// The refusal names the field first, as the person typed it.
    fn refused<T>(r: Result<T, InvalidRequest>, field: &str) {
        let Err(e) = r else {
            panic!("{field}: accepted")
        };
        assert_eq!(e.field, field, "{e}");
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with(&format!("{field}: ")),
            "{}",
            s.message()
        );
    }

    #[test]
    fn network_requests_are_checked_field_by_field() {
        let ok = ProbeAsk::try_from(probe(|_| {})).unwrap();
        assert_eq!((ok.ports, ok.timeout), (vec![80], DEFAULT_PROBE_TIMEOUT));
        refused(
            ProbeAsk::try_from(probe(|r| r.ports = "90-80".into())),
            "ports",
        );
        refused(
            ProbeAsk::try_from(probe(|r| r.from_agent.clear())),
            "from_agent",
        );
        refused(
            ProbeAsk::try_from(probe(|r| r.to_agent = "../x".into())),
            "to_agent",
        );
        refused(
            ProbeAsk::try_from(probe(|r| r.timeout_ms = 30_001)),
            "timeout_ms",
        );
        refused(
            ProbeAsk::try_from(probe(|r| r.keep_ms = 600_001)),
            "keep_ms",
        );
        refused(
            ProbeAsk::try_from(probe(|r| r.to_addr = "10.0.0".into())),
            "to_addr",
        );

        let ok = BandwidthAsk::try_from(bw(|_| {})).unwrap();
        assert_eq!((ok.duration_s, ok.streams, ok.port), (10, 1, 0));
        refused(
            BandwidthAsk::try_from(bw(|r| r.duration_s = 61)),
            "duration_s",
        );
        refused(BandwidthAsk::try_from(bw(|r| r.streams = 17)), "streams");
        refused(BandwidthAsk::try_from(bw(|r| r.port = 65_536)), "port");
        refused(
            BandwidthAsk::try_from(bw(|r| r.to_addr = "x".into())),
            "to_addr",
        );
        refused(
            BandwidthAsk::try_from(bw(|r| r.to_agent.clear())),
            "to_agent",
        );

        refused(
            PortsAsk::try_from(pb::AgentPortsRequest::default()),
            "agent_id",
        );
    }

    /// The network replies' enums keep the words `--output json` always showed.
    #[test]
    fn network_replies_keep_their_words_in_json() {
        let port = pb::ProbePortResult {
            port: 80,
            outcome: pb::ProbeOutcome::Verified as i32,
            listener: pb::ListenerStatus::InUse as i32,
            ..Default::default()
        };
        let j = serde_json::to_value(&port).unwrap();
        assert_eq!(
            (&j["outcome"], &j["listener"]),
            (&"verified".into(), &"in_use".into())
        );
        let sock = pb::ListeningSocket {
            proto: pb::Protocol::Udp as i32,
            family: pb::AddressFamily::Ipv6 as i32,
            ..Default::default()
        };
        let j = serde_json::to_value(&sock).unwrap();
        assert_eq!((&j["proto"], &j["family"]), (&"udp".into(), &"ipv6".into()));
        let rep = pb::BandwidthReport {
            direction: pb::BandwidthDirection::Reverse as i32,
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&rep).unwrap()["direction"], "reverse");
        let lst = pb::ProbeListenerPort {
            status: pb::ListenerStatus::Forbidden as i32,
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&lst).unwrap()["status"], "forbidden");
        assert_eq!(
            crate::engine::net::listener_note(&lst),
            "the target agent's own port"
        );
    }
}
