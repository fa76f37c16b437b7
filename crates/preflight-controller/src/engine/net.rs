//! Probes and bandwidth between two agents: the network work shared by `preflight probe`,
//! `preflight bandwidth` and the sweep's network phase. Takes the agent pool and records;
//! knows nothing of the service that asked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use preflight_proto::v1 as pb;
use preflight_store::AgentRecord;
use ring::rand::SecureRandom;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use crate::agents::{agent_status, AgentPool};

/// Most ports one probe request may name (the agent's cap on probe listeners).
pub const MAX_PROBE_PORTS: usize = 1024;
/// Per-probe timeout when the request does not name one.
pub(crate) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest per-probe timeout.
pub(crate) const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time listeners may be kept open after a probe, and their longest TTL.
pub(crate) const MAX_LISTENER_TTL: Duration = Duration::from_secs(600);
/// Probes the source agent keeps in flight at once.
pub(crate) const PROBE_CONCURRENCY: u32 = 256;
/// Longest bandwidth test, and the most streams.
pub(crate) const MAX_BW_DURATION_S: u32 = 60;
pub(crate) const MAX_BW_STREAMS: u32 = 16;
/// Time allowed beyond a bandwidth test's duration for handshakes and the result.
pub(crate) const BW_GRACE: Duration = Duration::from_secs(30);

pub(crate) fn secret32() -> Result<[u8; 32], Status> {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Status::internal("system random generator failed"))?;
    Ok(b)
}

pub(crate) fn listener_note(p: &pb::ProbeListenerPort) -> String {
    match p.status() {
        pb::ListenerStatus::InUse => match p.owner_pid {
            Some(pid) => format!("in use by {} (pid {pid})", p.owner_process),
            None => "in use by another process".into(),
        },
        pb::ListenerStatus::Forbidden => "the target agent's own port".into(),
        pb::ListenerStatus::Failed => format!("listener failed: {}", p.error),
        pb::ListenerStatus::Listening | pb::ListenerStatus::Unspecified => String::new(),
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
    agents: &AgentPool,
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
    let mut to_client = agents.client(to).map_err(|e| (Side::To, e))?;
    let mut from_client = agents.client(from).map_err(|e| (Side::From, e))?;

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
                outcome: res.map(|r| r.outcome).unwrap_or_default(),
                connect_us: res.and_then(|r| r.connect_us),
                listener: lst.map(|p| p.status).unwrap_or_default(),
                note,
            }
        })
        .collect();
    Ok(Probed { ports, ttl })
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
    agents: &AgentPool,
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
    let mut to_client = agents.client(to).map_err(|e| (Side::To, e))?;
    let mut from_client = agents.client(from).map_err(|e| (Side::From, e))?;

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
