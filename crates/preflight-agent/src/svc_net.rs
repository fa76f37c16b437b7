//! Agent network RPCs: listening ports, probe listeners and connector, bandwidth.
//!
//! The agent keeps two small tables: open probe-listener sets (closed on request or by
//! themselves at their TTL) and bandwidth receivers (one test each, gone after their TTL or
//! once their result is fetched). Both are capped so that a confused controller cannot make an
//! agent hold sockets without bound.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use preflight_probe::bandwidth::{
    self, BandwidthError, BandwidthReport, Direction, ReceiverOptions, SendOptions,
};
use preflight_probe::netprobe::{
    self, ListenerLimits, ListenerRequestError, PortStatus, ProbeListeners, ProbeRequestError,
};
use preflight_probe::ports::{self, ListOptions, Listener};
use preflight_proto::v1 as pb;
use tokio::task::JoinHandle;
use tonic::{Request, Status};

/// Most probe-listener sets open at once.
const MAX_LISTENER_SETS: usize = 16;
/// Most bandwidth receivers waiting or holding an unfetched result at once.
const MAX_RECEIVERS: usize = 4;
/// Concurrency of the probe connector when the request does not say.
const DEFAULT_PROBE_CONCURRENCY: usize = 256;
/// Longest GetBandwidthResult waits for a test to end.
const MAX_RESULT_WAIT: Duration = Duration::from_secs(120);
/// A finished receiver's result is kept this long for GetBandwidthResult.
const RESULT_KEEP: Duration = Duration::from_secs(120);

/// A bandwidth receiver's test, running or finished.
pub(crate) struct ReceiverEntry {
    task: JoinHandle<Result<BandwidthReport, BandwidthError>>,
    /// After this the entry is dropped (aborting the test if it still runs).
    expires_at: Instant,
}

/// Network state shared by all requests (open probe listeners, bandwidth receivers).
#[derive(Default)]
pub struct NetState {
    /// The agent's own port, never opened as a probe listener.
    pub own_port: u16,
    /// Open probe-listener sets by id.
    pub(crate) listeners: Mutex<HashMap<String, ProbeListeners>>,
    /// Bandwidth receivers by id.
    pub(crate) receivers: Mutex<HashMap<String, ReceiverEntry>>,
    /// Source of ids for listener sets and receivers.
    pub(crate) next_id: AtomicU64,
}

impl NetState {
    fn new_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}",
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// Forgets listener sets that closed at their TTL.
    fn prune_listeners(map: &mut HashMap<String, ProbeListeners>) {
        map.retain(|_, l| !l.is_closed());
    }

    /// Drops receivers past their expiry (aborting any still running).
    fn prune_receivers(map: &mut HashMap<String, ReceiverEntry>) {
        let now = Instant::now();
        map.retain(|id, r| {
            let keep = r.expires_at > now;
            if !keep {
                tracing::debug!(receiver = %id, "bandwidth receiver expired");
                r.task.abort();
            }
            keep
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Converts a listener to its wire form.
pub fn socket_to_pb(l: &Listener) -> pb::ListeningSocket {
    pb::ListeningSocket {
        proto: pb::Protocol::from(l.proto) as i32,
        family: match l.family {
            ports::Family::V4 => pb::AddressFamily::Ipv4,
            ports::Family::V6 => pb::AddressFamily::Ipv6,
        } as i32,
        address: l.address.to_string(),
        port: u32::from(l.port),
        pid: l.pid,
        process: l.process.clone().unwrap_or_default(),
        user: l.user.clone().unwrap_or_default(),
    }
}

pub async fn list_listening_ports(
    _st: &NetState,
    r: Request<pb::ListListeningPortsRequest>,
) -> Result<pb::ListListeningPortsResponse, Status> {
    let r = r.into_inner();
    let both = !r.tcp && !r.udp;
    let opts = ListOptions {
        tcp: r.tcp || both,
        udp: r.udp || both,
        processes: !r.no_processes,
    };
    let list = tokio::task::spawn_blocking(move || ports::list_listening(&opts))
        .await
        .map_err(|e| Status::internal(format!("listing task failed: {e}")))?
        .map_err(|e| Status::internal(format!("listing listening sockets: {e}")))?;
    Ok(pb::ListListeningPortsResponse {
        sockets: list.iter().map(socket_to_pb).collect(),
    })
}

fn nonce32(field: &str, b: &[u8]) -> Result<[u8; 32], Status> {
    <[u8; 32]>::try_from(b).map_err(|_| {
        Status::invalid_argument(format!(
            "{field} has {} bytes: it must be exactly 32 random bytes",
            b.len()
        ))
    })
}

fn port_of(field: &str, p: u32) -> Result<u16, Status> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Status::invalid_argument(format!(
            "{field} {p} is out of range: use 1 to 65535"
        ))),
    }
}

fn ip_of(field: &str, s: &str) -> Result<Option<IpAddr>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        Status::invalid_argument(format!("{field} {s:?} is not an IP address, e.g. 10.0.0.5"))
    })
}

// Validation of each request, called by its handler before anything happens and by the fuzz
// targets (`crate::fuzzing`) on their own.

/// OpenProbeListeners: the nonce, the ports, the address to bind (all addresses when empty).
pub(crate) fn parse_open(
    r: &pb::OpenProbeListenersRequest,
) -> Result<([u8; 32], Vec<u16>, IpAddr), Status> {
    let nonce = nonce32("nonce", &r.nonce)?;
    let ports = r
        .ports
        .iter()
        .map(|&p| port_of("ports", p))
        .collect::<Result<Vec<u16>, _>>()?;
    let bind = ip_of("bind_ip", &r.bind_ip)?.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    Ok((nonce, ports, bind))
}

/// A probe target: address and port.
type Target = (IpAddr, u16);

/// RunProbes: the nonce and the targets.
pub(crate) fn parse_probes(r: &pb::RunProbesRequest) -> Result<([u8; 32], Vec<Target>), Status> {
    let nonce = nonce32("nonce", &r.nonce)?;
    let targets = r
        .targets
        .iter()
        .map(|t| {
            let ip = ip_of("targets.ip", &t.ip)?
                .ok_or_else(|| Status::invalid_argument("targets.ip is empty"))?;
            Ok((ip, port_of("targets.port", t.port)?))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok((nonce, targets))
}

/// StartBandwidthReceiver: the token (not all zero) and the address to bind.
/// The port a bandwidth receiver listens on: 0 (a free one), or 1..65535 other than the
/// agent's own port.
pub(crate) fn receiver_port(st: &NetState, port: u32) -> Result<u16, Status> {
    let p = u16::try_from(port).map_err(|_| {
        Status::invalid_argument(format!(
            "port {port} is out of range: use 1 to 65535, or 0 for a free port"
        ))
    })?;
    if p != 0 && p == st.own_port {
        return Err(Status::invalid_argument(format!(
            "port {p} is the agent's own port: give another planned port"
        )));
    }
    Ok(p)
}

pub(crate) fn parse_receiver(
    r: &pb::StartBandwidthReceiverRequest,
) -> Result<([u8; 32], IpAddr), Status> {
    let token = nonce32("token", &r.token)?;
    if token == [0u8; 32] {
        return Err(Status::invalid_argument(
            "token is all zero: pass 32 random bytes",
        ));
    }
    let bind = ip_of("bind_ip", &r.bind_ip)?.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    Ok((token, bind))
}

/// RunBandwidthSender: the token and the receiver's address.
pub(crate) fn parse_sender(
    r: &pb::RunBandwidthSenderRequest,
) -> Result<([u8; 32], SocketAddr), Status> {
    let token = nonce32("token", &r.token)?;
    let addr: SocketAddr = r
        .address
        .parse()
        .ok()
        .filter(|a: &SocketAddr| a.port() != 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "address {:?} is not IP:PORT with a port 1-65535, e.g. 10.0.0.5:40000",
                r.address.chars().take(64).collect::<String>()
            ))
        })?;
    Ok((token, addr))
}

fn listener_error(e: ListenerRequestError) -> Status {
    match e {
        ListenerRequestError::Limits => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub async fn open_probe_listeners(
    st: &NetState,
    r: Request<pb::OpenProbeListenersRequest>,
) -> Result<pb::OpenProbeListenersResponse, Status> {
    let r = r.into_inner();
    let (nonce, ports, bind) = parse_open(&r)?;
    let ttl = Duration::from_millis(u64::from(r.ttl_ms));
    {
        let mut map = lock(&st.listeners);
        NetState::prune_listeners(&mut map);
        if map.len() >= MAX_LISTENER_SETS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_LISTENER_SETS} probe-listener sets are open already: close some or wait for their ttl"
            )));
        }
    }
    let (set, outcomes) = ProbeListeners::open(
        bind,
        &ports,
        nonce,
        ttl,
        &[st.own_port],
        &ListenerLimits::default(),
    )
    .await
    .map_err(listener_error)?;
    let id = st.new_id("l");
    tracing::debug!(listeners = %id, %bind, open = set.ports().len(), ttl_ms = r.ttl_ms, "probe listeners opened");
    lock(&st.listeners).insert(id.clone(), set);
    let ports = outcomes
        .into_iter()
        .map(|o| {
            let mut p = pb::ProbeListenerPort {
                port: u32::from(o.port),
                ..Default::default()
            };
            match o.status {
                PortStatus::Listening => p.status = pb::ListenerStatus::Listening as i32,
                PortStatus::InUse { owner } => {
                    p.status = pb::ListenerStatus::InUse as i32;
                    if let Some(owner) = owner {
                        p.owner_pid = Some(owner.pid);
                        p.owner_process = owner.name;
                    }
                }
                PortStatus::Forbidden => p.status = pb::ListenerStatus::Forbidden as i32,
                PortStatus::Failed { error } => {
                    p.status = pb::ListenerStatus::Failed as i32;
                    p.error = error;
                }
            }
            p
        })
        .collect();
    Ok(pb::OpenProbeListenersResponse {
        listeners_id: id,
        ports,
        ttl_ms: r.ttl_ms,
    })
}

pub async fn close_probe_listeners(
    st: &NetState,
    r: Request<pb::CloseProbeListenersRequest>,
) -> Result<pb::CloseProbeListenersResponse, Status> {
    let id = r.into_inner().listeners_id;
    // Ids are ours ("l" and a number); anything else is a caller's mistake, while an unknown
    // well-formed id is answered `closed: false` (already closed at its TTL).
    let well_formed = id.len() <= 24
        && id
            .strip_prefix('l')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(Status::invalid_argument(format!(
            "listeners_id {:?} is not an id OpenProbeListeners returned (e.g. l1)",
            id.chars().take(64).collect::<String>()
        )));
    }
    let set = lock(&st.listeners).remove(&id);
    let closed = match set {
        Some(set) if !set.is_closed() => {
            set.close().await;
            tracing::debug!(listeners = %id, "probe listeners closed");
            true
        }
        _ => false,
    };
    Ok(pb::CloseProbeListenersResponse { closed })
}

fn probe_error(e: ProbeRequestError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub async fn run_probes(
    _st: &NetState,
    r: Request<pb::RunProbesRequest>,
) -> Result<pb::RunProbesResponse, Status> {
    let r = r.into_inner();
    let (nonce, targets) = parse_probes(&r)?;
    let concurrency = match r.concurrency {
        0 => DEFAULT_PROBE_CONCURRENCY,
        c => c as usize,
    };
    let timeout = Duration::from_millis(u64::from(r.timeout_ms));
    let n = targets.len();
    let results = netprobe::probe_many(targets, nonce, timeout, concurrency)
        .await
        .map_err(probe_error)?;
    tracing::debug!(targets = n, timeout_ms = r.timeout_ms, "probes done");
    Ok(pb::RunProbesResponse {
        results: results
            .into_iter()
            .map(|p| pb::ProbeTargetResult {
                ip: p.ip.to_string(),
                port: u32::from(p.port),
                outcome: outcome_pb(p.outcome) as i32,
                connect_us: p.connect_us,
                detail: p.detail.unwrap_or_default(),
            })
            .collect(),
    })
}

fn outcome_pb(o: netprobe::ProbeOutcome) -> pb::ProbeOutcome {
    use netprobe::ProbeOutcome as O;
    match o {
        O::Verified => pb::ProbeOutcome::Verified,
        O::Open => pb::ProbeOutcome::Open,
        O::Refused => pb::ProbeOutcome::Refused,
        O::Filtered => pb::ProbeOutcome::Filtered,
        O::Unreachable => pb::ProbeOutcome::Unreachable,
        O::Error => pb::ProbeOutcome::Error,
    }
}

fn report_to_pb(r: &BandwidthReport) -> pb::BandwidthReport {
    pb::BandwidthReport {
        direction: match r.direction {
            Direction::Forward => pb::BandwidthDirection::Forward,
            Direction::Reverse => pb::BandwidthDirection::Reverse,
        } as i32,
        expected_streams: r.expected_streams,
        streams: r
            .streams
            .iter()
            .map(|s| pb::BandwidthStream {
                stream: s.stream,
                bytes: s.bytes,
                duration_us: s.duration_us,
                mbit_per_s: s.mbit_per_s,
                retransmits: s.retransmits,
            })
            .collect(),
        total_bytes: r.total_bytes,
        duration_us: r.duration_us,
        total_mbit_per_s: r.total_mbit_per_s,
        retransmits: r.retransmits,
        rejected_connections: r.rejected_connections,
        per_second_bytes: r.per_second_bytes.clone(),
    }
}

fn bandwidth_status(e: BandwidthError) -> Status {
    match e {
        BandwidthError::Streams(_)
        | BandwidthError::Duration { .. }
        | BandwidthError::Ttl { .. }
        | BandwidthError::WriteSize(_) => Status::invalid_argument(e.to_string()),
        BandwidthError::Bind { .. } => Status::failed_precondition(e.to_string()),
        BandwidthError::Connect { .. }
        | BandwidthError::Rejected(_)
        | BandwidthError::Protocol { .. }
        | BandwidthError::Stream { .. }
        | BandwidthError::StreamTimeout { .. }
        | BandwidthError::NoStreams { .. } => Status::aborted(e.to_string()),
        BandwidthError::Random | BandwidthError::Task(_) => Status::internal(e.to_string()),
    }
}

fn direction(reverse: bool) -> Direction {
    if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    }
}

pub async fn start_bandwidth_receiver(
    st: &NetState,
    r: Request<pb::StartBandwidthReceiverRequest>,
) -> Result<pb::StartBandwidthReceiverResponse, Status> {
    let r = r.into_inner();
    let (token, bind) = parse_receiver(&r)?;
    let ttl = Duration::from_millis(u64::from(r.ttl_ms));
    let opts = ReceiverOptions {
        ttl,
        expected_streams: r.streams,
        max_duration: Duration::from_millis(u64::from(r.duration_ms)),
        direction: direction(r.reverse),
    };
    {
        let mut map = lock(&st.receivers);
        NetState::prune_receivers(&mut map);
        if map.len() >= MAX_RECEIVERS {
            return Err(Status::resource_exhausted(format!(
                "{MAX_RECEIVERS} bandwidth receivers are waiting already: wait for their ttl"
            )));
        }
    }
    let port = receiver_port(st, r.port)?;
    let rx = bandwidth::BandwidthReceiver::start(SocketAddr::new(bind, port), token, opts)
        .await
        .map_err(bandwidth_status)?;
    let port = rx.local_addr().port();
    let id = st.new_id("r");
    tracing::debug!(receiver = %id, %bind, port, streams = r.streams, reverse = r.reverse, "bandwidth receiver started");
    let entry = ReceiverEntry {
        task: tokio::spawn(rx.wait()),
        expires_at: Instant::now() + ttl + RESULT_KEEP,
    };
    lock(&st.receivers).insert(id.clone(), entry);
    Ok(pb::StartBandwidthReceiverResponse {
        receiver_id: id,
        port: u32::from(port),
    })
}

pub async fn run_bandwidth_sender(
    _st: &NetState,
    r: Request<pb::RunBandwidthSenderRequest>,
) -> Result<pb::RunBandwidthSenderResponse, Status> {
    let r = r.into_inner();
    let (token, addr) = parse_sender(&r)?;
    let opts = SendOptions {
        streams: r.streams,
        duration: Duration::from_millis(u64::from(r.duration_ms)),
        direction: direction(r.reverse),
        ..SendOptions::default()
    };
    tracing::debug!(%addr, streams = r.streams, duration_ms = r.duration_ms, reverse = r.reverse, "bandwidth sender starting");
    let report = bandwidth::send(addr, token, &opts)
        .await
        .map_err(bandwidth_status)?;
    Ok(pb::RunBandwidthSenderResponse {
        report: Some(report_to_pb(&report)),
    })
}

/// RunBandwidthSenderLive's messages: seconds as they complete, then the report.
pub type SenderProgressStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::BandwidthSenderProgress, Status>>;

/// Room for every message of one test: a second each (the duration is capped at 60 s) and the
/// report.
const PROGRESS_BUFFER: usize = 64;

/// RunBandwidthSenderLive: RunBandwidthSender, with one message per whole second of the test
/// as it completes (counted here, at the source), and the report as the last message. The
/// request is checked before anything is sent; a failed test ends the stream with its error.
/// When the caller goes away the test is dropped (its sockets close).
pub async fn run_bandwidth_sender_live(
    _st: &NetState,
    r: Request<pb::RunBandwidthSenderRequest>,
) -> Result<SenderProgressStream, Status> {
    let r = r.into_inner();
    let (token, addr) = parse_sender(&r)?;
    let opts = SendOptions {
        streams: r.streams,
        duration: Duration::from_millis(u64::from(r.duration_ms)),
        direction: direction(r.reverse),
        ..SendOptions::default()
    };
    // A bad request fails the call itself, not the stream.
    opts.check().map_err(bandwidth_status)?;
    tracing::debug!(%addr, streams = r.streams, duration_ms = r.duration_ms, reverse = r.reverse, "bandwidth sender starting (live)");
    let (out, rx) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
    let (sec_tx, mut sec_rx) = tokio::sync::mpsc::channel(PROGRESS_BUFFER);
    tokio::spawn(async move {
        let test = bandwidth::send_with_progress(addr, token, &opts, Some(sec_tx));
        tokio::pin!(test);
        let result = loop {
            tokio::select! {
                res = &mut test => break res,
                Some(s) = sec_rx.recv() => {
                    let msg = pb::BandwidthSenderProgress {
                        second: s.second,
                        bytes: s.bytes,
                        report: None,
                    };
                    if out.send(Ok(msg)).await.is_err() {
                        return; // the caller went away: drop the test
                    }
                }
                _ = out.closed() => return,
            }
        };
        // Seconds reported just before the end.
        while let Ok(s) = sec_rx.try_recv() {
            let msg = pb::BandwidthSenderProgress {
                second: s.second,
                bytes: s.bytes,
                report: None,
            };
            if out.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        let last = result
            .map_err(bandwidth_status)
            .map(|report| pb::BandwidthSenderProgress {
                report: Some(report_to_pb(&report)),
                ..Default::default()
            });
        let _ = out.send(last).await;
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

pub async fn get_bandwidth_result(
    st: &NetState,
    r: Request<pb::GetBandwidthResultRequest>,
) -> Result<pb::GetBandwidthResultResponse, Status> {
    let r = r.into_inner();
    let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_RESULT_WAIT);
    let Some(mut entry) = lock(&st.receivers).remove(&r.receiver_id) else {
        return Err(Status::not_found(format!(
            "no bandwidth receiver {:?}: it expired or its result was fetched",
            r.receiver_id
        )));
    };
    match tokio::time::timeout(wait, &mut entry.task).await {
        Ok(Ok(res)) => Ok(pb::GetBandwidthResultResponse {
            report: Some(report_to_pb(&res.map_err(bandwidth_status)?)),
        }),
        Ok(Err(e)) => Err(Status::internal(format!("receiver task failed: {e}"))),
        Err(_) => {
            // Still running: keep it for a later call.
            lock(&st.receivers).insert(r.receiver_id, entry);
            Err(Status::deadline_exceeded(
                "the bandwidth test is still running: ask again later",
            ))
        }
    }
}
