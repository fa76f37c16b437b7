//! Peer port probes: temporary proof-answering TCP listeners on the target, and a connector on
//! the source that classifies each (address, port) as verified, open, refused, filtered or
//! unreachable.
//!
//! # Proof protocol (version 1)
//!
//! The controller hands both agents the same random 32-byte nonce. The connector sends
//! [`PROBE_MAGIC`] followed by a fresh 16-byte client challenge (20 bytes in total). The listener
//! answers [`PROBE_MAGIC`] followed by
//! `HMAC-SHA256(key = nonce, "preflight-probe-v1" || port (u16, big endian) || challenge)` and
//! closes. Another service answering cannot produce the tag without the nonce, an answer recorded
//! under another nonce or for another challenge does not verify, and the port in the tag stops an
//! answer from one listener being relayed for another port. The listener reads at most 20 bytes
//! per connection and gives every connection a bounded time.
//!
//! Everything here is async (tokio) and bounded: port counts, TTLs, timeouts and concurrency
//! are validated against caps before any socket is opened.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// First four bytes of both the probe request and the probe answer.
pub const PROBE_MAGIC: [u8; 4] = *b"PFP1";
/// Domain-separation label mixed into every proof tag.
pub const PROOF_LABEL: &[u8] = b"preflight-probe-v1";
/// Length of the client challenge that follows [`PROBE_MAGIC`] in a request.
pub const CHALLENGE_LEN: usize = 16;
const REQUEST_LEN: usize = PROBE_MAGIC.len() + CHALLENGE_LEN;
const ANSWER_LEN: usize = PROBE_MAGIC.len() + 32;

/// Most ports one probe-listener request may open.
pub const MAX_LISTENER_PORTS: usize = 1024;
/// Longest time a probe listener may stay open.
pub const MAX_LISTENER_TTL: Duration = Duration::from_secs(600);
/// Most targets one `probe_many` call may probe.
pub const MAX_PROBE_TARGETS: usize = 4096;
/// Most ports one `scan_ports` call may sweep (all of them).
pub const MAX_SCAN_PORTS: usize = 65535;
/// Longest per-probe timeout accepted by the connector.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest per-probe timeout accepted by the connector.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(1);
/// Most probes the connector keeps in flight at once.
pub const MAX_PROBE_CONCURRENCY: usize = 16384;

/// Limits a probe-listener request is checked against. [`Default`] gives the agent's caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most ports one request may open (never above [`MAX_LISTENER_PORTS`]).
    pub max_ports: usize,
    /// Longest TTL one request may ask for (never above [`MAX_LISTENER_TTL`]).
    pub max_ttl: Duration,
    /// Time a connection gets to send its request and receive the answer.
    pub handshake_timeout: Duration,
    /// Most connections answered at once across all listeners of one request; further
    /// connections are closed unanswered until a slot frees up.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_ports: MAX_LISTENER_PORTS,
            max_ttl: MAX_LISTENER_TTL,
            handshake_timeout: Duration::from_secs(3),
            max_connections: 256,
        }
    }
}

/// Why a probe-listener request was refused as a whole (nothing was opened).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenerRequestError {
    /// The request named no port.
    #[error("no ports requested: name at least one port between 1 and 65535")]
    NoPorts,
    /// The request named more ports than the cap.
    #[error("too many ports: {requested} requested, at most {max} per request")]
    TooManyPorts {
        /// Ports in the request.
        requested: usize,
        /// The cap.
        max: usize,
    },
    /// Port 0 is not a port a peer can connect to.
    #[error("port 0 is not a valid probe port: name ports between 1 and 65535")]
    PortZero,
    /// A port was named twice.
    #[error("port {0} is named twice: name each port once")]
    DuplicatePort(u16),
    /// The TTL is zero or above the cap.
    #[error("ttl {ttl_ms} ms is out of range: use more than 0 and at most {max_s} s")]
    Ttl {
        /// Requested TTL in milliseconds.
        ttl_ms: u128,
        /// The cap in seconds.
        max_s: u64,
    },
    /// The bind address cannot carry a TCP listener.
    #[error("bind address {0} cannot carry a tcp listener: use a unicast or unspecified address")]
    BindAddress(IpAddr),
    /// The nonce is all zero: the caller forgot to generate one.
    #[error("nonce is all zero: pass 32 random bytes from the controller")]
    ZeroNonce,
    /// The limits themselves exceed the hard caps.
    #[error("listener limits exceed the hard caps: at most {MAX_LISTENER_PORTS} ports and {} s", MAX_LISTENER_TTL.as_secs())]
    Limits,
}

/// A process that owns a socket, as found through /proc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortOwner {
    /// Process id.
    pub pid: u32,
    /// Process name (`/proc/PID/comm`).
    pub name: String,
}

/// What happened to one requested port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PortStatus {
    /// A probe listener is open on this port until the TTL.
    Listening,
    /// Something already listens on this port; nothing was opened.
    InUse {
        /// The owning process, when /proc names it.
        owner: Option<PortOwner>,
    },
    /// The port is on the caller's forbidden list (e.g. the agent's own port).
    Forbidden,
    /// Opening the listener failed for another reason.
    Failed {
        /// The operating system's error.
        error: String,
    },
}

/// Outcome for one requested port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortOutcome {
    /// The port.
    pub port: u16,
    /// What happened.
    #[serde(flatten)]
    pub status: PortStatus,
}

/// Counters shared by the listeners of one request.
#[derive(Debug, Default)]
struct ListenerStats {
    accepted: AtomicU64,
    proofs: AtomicU64,
}

/// Handle to the temporary probe listeners of one request. Every listener closes at the TTL at
/// the latest, or when [`ProbeListeners::close`] is called or the handle is dropped.
#[derive(Debug)]
pub struct ProbeListeners {
    supervisor: JoinHandle<()>,
    close_tx: Option<tokio::sync::oneshot::Sender<()>>,
    detached: bool,
    ports: Vec<u16>,
    expires_at: Instant,
    stats: Arc<ListenerStats>,
}

impl ProbeListeners {
    /// Opens probe listeners on `bind_ip` for each port in `ports` that is free, answering every
    /// connection with a proof bound to `nonce`, for at most `ttl`.
    ///
    /// Ports in `forbidden` (the agent's own port, SSH, ...) are refused per port, as are ports
    /// already in use (naming the owning process when /proc shows it). The request as a whole
    /// is refused, with nothing opened, when it breaks a limit. Must be called inside a tokio
    /// runtime; the listeners run as tasks on it.
    pub async fn open(
        bind_ip: IpAddr,
        ports: &[u16],
        nonce: [u8; 32],
        ttl: Duration,
        forbidden: &[u16],
        limits: &ListenerLimits,
    ) -> Result<(ProbeListeners, Vec<PortOutcome>), ListenerRequestError> {
        validate_listener_request(bind_ip, ports, ttl, limits)?;
        if nonce == [0u8; 32] {
            return Err(ListenerRequestError::ZeroNonce);
        }
        let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &nonce));
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let stats = Arc::new(ListenerStats::default());
        let expires_at = Instant::now() + ttl;
        let mut outcomes = Vec::with_capacity(ports.len());
        let mut listeners = Vec::new();
        let mut in_use = Vec::new();
        for &port in ports {
            if forbidden.contains(&port) {
                outcomes.push(PortOutcome {
                    port,
                    status: PortStatus::Forbidden,
                });
                continue;
            }
            match bind_listener(SocketAddr::new(bind_ip, port)) {
                Ok(listener) => {
                    debug!(%bind_ip, port, "probe listener opened");
                    listeners.push((port, listener));
                    outcomes.push(PortOutcome {
                        port,
                        status: PortStatus::Listening,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    in_use.push(outcomes.len());
                    outcomes.push(PortOutcome {
                        port,
                        status: PortStatus::InUse { owner: None },
                    });
                }
                Err(e) => {
                    debug!(%bind_ip, port, error = %e, "probe listener not opened");
                    outcomes.push(PortOutcome {
                        port,
                        status: PortStatus::Failed {
                            error: e.to_string(),
                        },
                    });
                }
            }
        }
        if !in_use.is_empty() {
            let wanted: Vec<u16> = in_use.iter().map(|&i| outcomes[i].port).collect();
            let owners = tokio::task::spawn_blocking(move || listening_owners(&wanted))
                .await
                .unwrap_or_default();
            for i in in_use {
                let port = outcomes[i].port;
                if let Some(owner) = owners
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map(|(_, o)| o.clone())
                {
                    outcomes[i].status = PortStatus::InUse { owner: Some(owner) };
                }
            }
        }
        let open_ports: Vec<u16> = listeners.iter().map(|(p, _)| *p).collect();
        let handshake_timeout = limits.handshake_timeout;
        let task_stats = stats.clone();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(async move {
            // Shutting this set down (at the deadline or on close) aborts every listener task and
            // waits until each has dropped its listening socket and its connection tasks; if
            // the supervisor itself is aborted (handle dropped), dropping the set aborts them.
            let mut set = JoinSet::new();
            for (port, listener) in listeners {
                set.spawn(serve_listener(
                    listener,
                    port,
                    key.clone(),
                    permits.clone(),
                    handshake_timeout,
                    task_stats.clone(),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(expires_at.into()) => debug!("probe listeners closing at ttl"),
                // Only an explicit close counts: a dropped sender means the handle was detached.
                Ok(()) = close_rx => debug!("probe listeners closing on request"),
            }
            set.shutdown().await;
        });
        Ok((
            ProbeListeners {
                supervisor,
                close_tx: Some(close_tx),
                detached: false,
                ports: open_ports,
                expires_at,
                stats,
            },
            outcomes,
        ))
    }

    /// Ports on which a listener is open (until the TTL).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The instant every listener closes at the latest.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Connections accepted so far across all listeners.
    pub fn connections_accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    /// Proofs sent so far across all listeners.
    pub fn proofs_sent(&self) -> u64 {
        self.stats.proofs.load(Ordering::Relaxed)
    }

    /// True once the listeners have closed (TTL reached or closed).
    pub fn is_closed(&self) -> bool {
        self.supervisor.is_finished()
    }

    /// Lets the listeners run until their TTL without this handle (for an RPC that answers at
    /// once); they can no longer be closed early.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Closes every listener now and waits until their sockets are released.
    pub async fn close(mut self) {
        if let Some(tx) = self.close_tx.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.supervisor).await;
    }
}

impl Drop for ProbeListeners {
    fn drop(&mut self) {
        if !self.detached {
            self.supervisor.abort();
        }
    }
}

fn validate_listener_request(
    bind_ip: IpAddr,
    ports: &[u16],
    ttl: Duration,
    limits: &ListenerLimits,
) -> Result<(), ListenerRequestError> {
    if limits.max_ports > MAX_LISTENER_PORTS || limits.max_ttl > MAX_LISTENER_TTL {
        return Err(ListenerRequestError::Limits);
    }
    if ports.is_empty() {
        return Err(ListenerRequestError::NoPorts);
    }
    if ports.len() > limits.max_ports {
        return Err(ListenerRequestError::TooManyPorts {
            requested: ports.len(),
            max: limits.max_ports,
        });
    }
    let mut seen = HashSet::with_capacity(ports.len());
    for &p in ports {
        if p == 0 {
            return Err(ListenerRequestError::PortZero);
        }
        if !seen.insert(p) {
            return Err(ListenerRequestError::DuplicatePort(p));
        }
    }
    if ttl.is_zero() || ttl > limits.max_ttl {
        return Err(ListenerRequestError::Ttl {
            ttl_ms: ttl.as_millis(),
            max_s: limits.max_ttl.as_secs(),
        });
    }
    let bad_ip = match bind_ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    if bad_ip {
        return Err(ListenerRequestError::BindAddress(bind_ip));
    }
    Ok(())
}

/// Binds without SO_REUSEPORT, so a port another socket listens on is reported as in use
/// instead of being shared.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    // SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers; Linux still refuses a port
    // that has a listener.
    sock.set_reuse_address(true)?;
    // `::` means every address, IPv4 included; a specific IPv6 address is IPv6 only.
    if let IpAddr::V6(v6) = addr.ip() {
        sock.set_only_v6(!v6.is_unspecified())?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

async fn serve_listener(
    listener: TcpListener,
    port: u16,
    key: Arc<hmac::Key>,
    permits: Arc<Semaphore>,
    handshake_timeout: Duration,
    stats: Arc<ListenerStats>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(port, error = %e, "probe listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(port, %peer, "probe connection dropped: too many at once");
            continue;
        };
        let key = key.clone();
        let stats = stats.clone();
        conns.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(handshake_timeout, answer_probe(stream, port, &key)).await {
                Ok(Ok(true)) => {
                    stats.proofs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(false)) => debug!(port, %peer, "probe connection sent no valid request"),
                Ok(Err(e)) => debug!(port, %peer, error = %e, "probe connection failed"),
                Err(_) => debug!(port, %peer, "probe connection timed out"),
            }
        });
    }
}

/// Reads one fixed-size request and answers it; returns whether a proof was sent.
async fn answer_probe(mut stream: TcpStream, port: u16, key: &hmac::Key) -> io::Result<bool> {
    let mut req = [0u8; REQUEST_LEN];
    stream.read_exact(&mut req).await?;
    if req[..PROBE_MAGIC.len()] != PROBE_MAGIC {
        return Ok(false);
    }
    let tag = proof_tag(key, port, &req[PROBE_MAGIC.len()..]);
    let mut answer = [0u8; ANSWER_LEN];
    answer[..PROBE_MAGIC.len()].copy_from_slice(&PROBE_MAGIC);
    answer[PROBE_MAGIC.len()..].copy_from_slice(tag.as_ref());
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    Ok(true)
}

fn proof_message(port: u16, challenge: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(PROOF_LABEL.len() + 2 + challenge.len());
    msg.extend_from_slice(PROOF_LABEL);
    msg.extend_from_slice(&port.to_be_bytes());
    msg.extend_from_slice(challenge);
    msg
}

fn proof_tag(key: &hmac::Key, port: u16, challenge: &[u8]) -> hmac::Tag {
    hmac::sign(key, &proof_message(port, challenge))
}

/// Finds the processes owning TCP listeners on `ports` (any address, IPv4 and IPv6) through
/// /proc/net/tcp{,6} and /proc/PID/fd. Best effort: unreadable entries are skipped.
fn listening_owners(ports: &[u16]) -> Vec<(u16, PortOwner)> {
    const TCP_LISTEN: &str = "0A";
    let mut inodes: Vec<(u64, u16)> = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != TCP_LISTEN {
                continue;
            }
            let Some(port) = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            if !ports.contains(&port) {
                continue;
            }
            if let Ok(inode) = f[9].parse::<u64>() {
                if inode != 0 {
                    inodes.push((inode, port));
                }
            }
        }
    }
    let mut found = Vec::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(&(_, port)) = inodes.iter().find(|(i, _)| *i == inode) {
                if found.iter().all(|(p, _)| *p != port) {
                    let name = std::fs::read_to_string(entry.path().join("comm"))
                        .map(|s| s.trim_end().to_string())
                        .unwrap_or_default();
                    found.push((port, PortOwner { pid, name }));
                }
            }
        }
        if found.len() == ports.len() {
            break;
        }
    }
    found
}

/// Classification of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// Our probe listener accepted and proved itself with the nonce.
    Verified,
    /// Something accepted but did not prove itself (no answer, wrong proof, garbage, closed).
    Open,
    /// The connection was reset (RST, or ICMP port unreachable).
    Refused,
    /// No answer before the timeout.
    Filtered,
    /// No route, or ICMP host/network unreachable.
    Unreachable,
    /// A local error prevented the probe (e.g. out of file descriptors); not a network verdict.
    Error,
}

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Target address.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// Classification.
    pub outcome: ProbeOutcome,
    /// Time from connect() to the connection being established or refused, in microseconds;
    /// absent for filtered probes.
    pub connect_us: Option<u64>,
    /// Why an `open`, `unreachable` or `error` probe got that outcome.
    pub detail: Option<String>,
}

/// Why a probe request was refused as a whole (nothing was sent).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeRequestError {
    /// No targets.
    #[error("no probe targets: name at least one address and port")]
    NoTargets,
    /// Too many targets.
    #[error("too many probe targets: {requested} requested, at most {max} per request")]
    TooManyTargets {
        /// Targets in the request.
        requested: usize,
        /// The cap.
        max: usize,
    },
    /// Port 0 in a target.
    #[error("target {0}:0 has port 0: name ports between 1 and 65535")]
    PortZero(IpAddr),
    /// A target address that cannot be connected to.
    #[error("target address {0} cannot be probed: use a unicast address")]
    BadAddress(IpAddr),
    /// Timeout out of range.
    #[error("per-probe timeout {ms} ms is out of range: use 1 ms to {} s", MAX_PROBE_TIMEOUT.as_secs())]
    Timeout {
        /// The requested timeout in milliseconds.
        ms: u128,
    },
    /// The nonce is all zero: the caller forgot to generate one.
    #[error("nonce is all zero: pass the 32 random bytes the target's listeners were opened with")]
    ZeroNonce,
    /// Concurrency out of range.
    #[error("concurrency {0} is out of range: use 1 to {MAX_PROBE_CONCURRENCY}")]
    Concurrency(usize),
}

fn validate_probe_common(timeout: Duration, concurrency: usize) -> Result<(), ProbeRequestError> {
    if timeout < MIN_PROBE_TIMEOUT || timeout > MAX_PROBE_TIMEOUT {
        return Err(ProbeRequestError::Timeout {
            ms: timeout.as_millis(),
        });
    }
    if concurrency == 0 || concurrency > MAX_PROBE_CONCURRENCY {
        return Err(ProbeRequestError::Concurrency(concurrency));
    }
    Ok(())
}

fn validate_target_ip(ip: IpAddr) -> Result<(), ProbeRequestError> {
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if bad {
        Err(ProbeRequestError::BadAddress(ip))
    } else {
        Ok(())
    }
}

/// Probes every target with the proof protocol, at most `concurrency` at once, each connect
/// (and separately each proof exchange) bounded by `per_probe_timeout`. Results come back in
/// the order of `targets`.
pub async fn probe_many(
    targets: Vec<(IpAddr, u16)>,
    nonce: [u8; 32],
    per_probe_timeout: Duration,
    concurrency: usize,
) -> Result<Vec<ProbeResult>, ProbeRequestError> {
    if targets.is_empty() {
        return Err(ProbeRequestError::NoTargets);
    }
    if targets.len() > MAX_PROBE_TARGETS {
        return Err(ProbeRequestError::TooManyTargets {
            requested: targets.len(),
            max: MAX_PROBE_TARGETS,
        });
    }
    validate_probe_common(per_probe_timeout, concurrency)?;
    let concurrency = fd_bounded(concurrency);
    if nonce == [0u8; 32] {
        return Err(ProbeRequestError::ZeroNonce);
    }
    for &(ip, port) in &targets {
        validate_target_ip(ip)?;
        if port == 0 {
            return Err(ProbeRequestError::PortZero(ip));
        }
    }
    let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &nonce));
    let rng = SystemRandom::new();
    let targets = Arc::new(targets);
    let results = run_bounded(targets.len(), concurrency, {
        let targets = targets.clone();
        move |i| {
            let (ip, port) = targets[i];
            let key = key.clone();
            let rng = rng.clone();
            async move { probe_one(SocketAddr::new(ip, port), &key, &rng, per_probe_timeout).await }
        }
    })
    .await;
    Ok(results)
}

/// Runs `job(i)` for every `i < n` with at most `concurrency` in flight, spread over one task
/// per runtime worker thread so that loopback sweeps use every core; results in index order.
async fn run_bounded<T, F, Fut>(n: usize, concurrency: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(concurrency)
        .min(n)
        .max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for w in 0..workers {
        // Split the in-flight budget over the workers without losing the remainder.
        let share = concurrency / workers + usize::from(w < concurrency % workers);
        let next = next.clone();
        let job = job.clone();
        set.spawn(async move {
            let indices = std::iter::from_fn(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (i < n).then_some(i)
            });
            stream::iter(indices)
                .map(|i| {
                    let fut = job(i);
                    async move { (i, fut.await) }
                })
                .buffer_unordered(share.max(1))
                .collect::<Vec<_>>()
                .await
        });
    }
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(part) => {
                for (i, r) in part {
                    slots[i] = Some(r);
                }
            }
            // Only a panic in a job lands here; re-raise it rather than report partial results.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    // Every index below n was handed to exactly one worker and every worker finished.
    slots
        .into_iter()
        .map(|s| s.expect("every index was run by a worker"))
        .collect()
}

enum Connected {
    Stream(TcpStream, u64),
    Failed(ProbeOutcome, Option<u64>, String),
}

async fn connect_classified(addr: SocketAddr, timeout: Duration) -> Connected {
    let socket = match if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => return Connected::Failed(ProbeOutcome::Error, None, format!("socket: {e}")),
    };
    let start = Instant::now();
    let res = tokio::time::timeout(timeout, socket.connect(addr)).await;
    let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    match res {
        Err(_) => Connected::Failed(
            ProbeOutcome::Filtered,
            None,
            "no answer before timeout".into(),
        ),
        Ok(Ok(stream)) => {
            // Connecting to a closed loopback port inside the ephemeral range can pick that very
            // port as the source and "connect" to itself (TCP simultaneous open): not a listener.
            if stream.local_addr().ok() == Some(addr) {
                return Connected::Failed(ProbeOutcome::Refused, Some(us), "self-connect".into());
            }
            Connected::Stream(stream, us)
        }
        Ok(Err(e)) => {
            let (outcome, us) = classify_connect_error(&e, us);
            Connected::Failed(outcome, us, e.to_string())
        }
    }
}

fn classify_connect_error(e: &io::Error, us: u64) -> (ProbeOutcome, Option<u64>) {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) | Some(libc::ECONNRESET) => (ProbeOutcome::Refused, Some(us)),
        Some(libc::EHOSTUNREACH)
        | Some(libc::ENETUNREACH)
        | Some(libc::ENETDOWN)
        | Some(libc::EHOSTDOWN) => (ProbeOutcome::Unreachable, Some(us)),
        Some(libc::ETIMEDOUT) => (ProbeOutcome::Filtered, None),
        _ => (ProbeOutcome::Error, None),
    }
}

async fn probe_one(
    addr: SocketAddr,
    key: &hmac::Key,
    rng: &SystemRandom,
    timeout: Duration,
) -> ProbeResult {
    let mut result = ProbeResult {
        ip: addr.ip(),
        port: addr.port(),
        outcome: ProbeOutcome::Error,
        connect_us: None,
        detail: None,
    };
    let (mut stream, us) = match connect_classified(addr, timeout).await {
        Connected::Stream(s, us) => (s, us),
        Connected::Failed(outcome, us, detail) => {
            result.outcome = outcome;
            result.connect_us = us;
            result.detail = (outcome != ProbeOutcome::Refused).then_some(detail);
            return result;
        }
    };
    result.connect_us = Some(us);
    let mut request = [0u8; REQUEST_LEN];
    request[..PROBE_MAGIC.len()].copy_from_slice(&PROBE_MAGIC);
    if rng.fill(&mut request[PROBE_MAGIC.len()..]).is_err() {
        result.detail = Some("system random generator failed".into());
        return result;
    }
    let exchange = async {
        stream.write_all(&request).await?;
        let mut answer = [0u8; ANSWER_LEN];
        stream.read_exact(&mut answer).await?;
        io::Result::Ok(answer)
    };
    let (outcome, detail) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => (
            ProbeOutcome::Open,
            "accepted but sent no proof before the timeout".to_string(),
        ),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => (
            ProbeOutcome::Open,
            "accepted but closed without a complete proof".to_string(),
        ),
        Ok(Err(e)) => (
            ProbeOutcome::Open,
            format!("accepted but failed before proving: {e}"),
        ),
        Ok(Ok(answer)) => {
            let msg = proof_message(addr.port(), &request[PROBE_MAGIC.len()..]);
            if answer[..PROBE_MAGIC.len()] != PROBE_MAGIC {
                (
                    ProbeOutcome::Open,
                    "accepted but answered something other than a probe proof".to_string(),
                )
            } else if hmac::verify(key, &msg, &answer[PROBE_MAGIC.len()..]).is_ok() {
                (ProbeOutcome::Verified, String::new())
            } else {
                (
                    ProbeOutcome::Open,
                    "answered with a proof that does not match the nonce".to_string(),
                )
            }
        }
    };
    result.outcome = outcome;
    result.detail = (!detail.is_empty()).then_some(detail);
    result
}

/// State of one port in a plain connect scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanState {
    /// The connection was accepted.
    Open,
    /// The connection was reset.
    Closed,
    /// No answer before the timeout.
    Filtered,
    /// No route, or ICMP host/network unreachable.
    Unreachable,
    /// A local error prevented the probe; not a network verdict.
    Error,
}

/// Result for one port of a connect scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResult {
    /// The port.
    pub port: u16,
    /// Its state.
    pub state: ScanState,
    /// Connect time in microseconds, when the connect finished before the timeout.
    pub connect_us: Option<u64>,
}

/// Plain connect scan (no proof, like `nmap -sT`) of `ports` on `ip`, at most `concurrency`
/// connects in flight, each bounded by `timeout`; results in the order of `ports`. Call
/// [`raise_nofile_limit`] first for concurrency in the thousands.
pub async fn scan_ports(
    ip: IpAddr,
    ports: &[u16],
    timeout: Duration,
    concurrency: usize,
) -> Result<Vec<ScanResult>, ProbeRequestError> {
    if ports.is_empty() {
        return Err(ProbeRequestError::NoTargets);
    }
    if ports.len() > MAX_SCAN_PORTS {
        return Err(ProbeRequestError::TooManyTargets {
            requested: ports.len(),
            max: MAX_SCAN_PORTS,
        });
    }
    validate_probe_common(timeout, concurrency)?;
    let concurrency = fd_bounded(concurrency);
    validate_target_ip(ip)?;
    if ports.contains(&0) {
        return Err(ProbeRequestError::PortZero(ip));
    }
    // Readiness-driven sweep on plain threads (mio, one epoll set per worker): a connect scan is
    // syscall-bound, and skipping the async runtime's per-socket bookkeeping and cross-thread
    // wake-ups roughly halves its CPU cost.
    let ports: Arc<Vec<u16>> = Arc::new(ports.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(concurrency)
        .max(1);
    let mut set = JoinSet::new();
    for w in 0..workers {
        let share = (concurrency / workers + usize::from(w < concurrency % workers)).max(1);
        let (ports, next) = (ports.clone(), next.clone());
        set.spawn_blocking(move || scan_worker(ip, &ports, &next, timeout, share));
    }
    let mut slots: Vec<Option<ScanResult>> = vec![None; ports.len()];
    while let Some(done) = set.join_next().await {
        match done {
            Ok(part) => {
                for (i, r) in part {
                    slots[i] = Some(r);
                }
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(slots
        .into_iter()
        .zip(ports.iter())
        // Every index was taken by exactly one worker, and workers finish every index they take.
        .map(|(r, &port)| {
            r.unwrap_or(ScanResult {
                port,
                state: ScanState::Error,
                connect_us: None,
            })
        })
        .collect())
}

/// One scan worker: keeps up to `cap` non-blocking connects in flight on its own epoll set and
/// takes port indices from `next` until none are left.
fn scan_worker(
    ip: IpAddr,
    ports: &[u16],
    next: &AtomicUsize,
    timeout: Duration,
    cap: usize,
) -> Vec<(usize, ScanResult)> {
    use mio::{Events, Interest, Poll, Token};
    use std::collections::VecDeque;

    struct Pending {
        stream: mio::net::TcpStream,
        index: usize,
        start: Instant,
    }
    let mut out = Vec::new();
    let finish = |out: &mut Vec<(usize, ScanResult)>,
                  index: usize,
                  state: ScanState,
                  start: Option<Instant>| {
        let connect_us = start.map(|s| u64::try_from(s.elapsed().as_micros()).unwrap_or(u64::MAX));
        out.push((
            index,
            ScanResult {
                port: ports[index],
                state,
                connect_us,
            },
        ));
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot create a poll set for the scan");
            // Claim and fail the remaining indices so the caller still gets one result per port.
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ports.len() {
                    return out;
                }
                finish(&mut out, i, ScanState::Error, None);
            }
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Pending>> = (0..cap).map(|_| None).collect();
    let mut free: Vec<usize> = (0..cap).rev().collect();
    // All probes share one timeout, so start order is deadline order: a FIFO is enough.
    let mut deadlines: VecDeque<(Instant, usize, usize)> = VecDeque::with_capacity(cap);
    let mut exhausted = false;
    loop {
        while !exhausted && !free.is_empty() {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= ports.len() {
                exhausted = true;
                break;
            }
            let addr = SocketAddr::new(ip, ports[index]);
            let start = Instant::now();
            let mut stream = match mio::net::TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    let (o, us) = classify_connect_error(&e, 0);
                    finish(&mut out, index, scan_state(o), us.map(|_| start));
                    continue;
                }
            };
            // On loopback the answer (RST or SYN-ACK) is processed before connect() returns: a
            // refused port already carries its error and needs no readiness round trip.
            if let Ok(Some(e)) = stream.take_error() {
                let (o, us) = classify_connect_error(&e, 0);
                finish(&mut out, index, scan_state(o), us.map(|_| start));
                continue;
            }
            let Some(slot) = free.pop() else {
                // Unreachable: the loop runs only while a slot is free.
                finish(&mut out, index, ScanState::Error, None);
                break;
            };
            if let Err(e) = poll
                .registry()
                .register(&mut stream, Token(slot), Interest::WRITABLE)
            {
                debug!(error = %e, "cannot register a scan socket");
                finish(&mut out, index, ScanState::Error, None);
                free.push(slot);
                continue;
            }
            slots[slot] = Some(Pending {
                stream,
                index,
                start,
            });
            deadlines.push_back((start + timeout, slot, index));
        }
        if exhausted && free.len() == cap {
            return out;
        }
        let wait = deadlines
            .front()
            .map(|(d, _, _)| d.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, wait) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!(error = %e, "scan poll failed");
            }
        }
        for ev in events.iter() {
            let slot = ev.token().0;
            let Some(p) = slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            let state = match p.stream.take_error() {
                Ok(Some(e)) | Err(e) => scan_state(classify_connect_error(&e, 0).0),
                Ok(None) => match p.stream.peer_addr() {
                    // Self-connect on loopback: see `connect_classified`.
                    Ok(peer) if p.stream.local_addr().ok() == Some(peer) => ScanState::Closed,
                    Ok(_) => ScanState::Open,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        // Spurious wake-up: still connecting.
                        slots[slot] = Some(p);
                        continue;
                    }
                    Err(e) => scan_state(classify_connect_error(&e, 0).0),
                },
            };
            let filtered = state == ScanState::Filtered;
            finish(&mut out, p.index, state, (!filtered).then_some(p.start));
            free.push(slot);
        }
        let now = Instant::now();
        while let Some(&(deadline, slot, index)) = deadlines.front() {
            if deadline > now {
                break;
            }
            deadlines.pop_front();
            // The slot may have finished and been reused since: match on the port index too.
            if slots[slot].as_ref().is_some_and(|p| p.index == index) {
                slots[slot] = None;
                finish(&mut out, index, ScanState::Filtered, None);
                free.push(slot);
            }
        }
    }
}

fn scan_state(o: ProbeOutcome) -> ScanState {
    match o {
        ProbeOutcome::Refused => ScanState::Closed,
        ProbeOutcome::Filtered => ScanState::Filtered,
        ProbeOutcome::Unreachable => ScanState::Unreachable,
        ProbeOutcome::Verified | ProbeOutcome::Open => ScanState::Open,
        ProbeOutcome::Error => ScanState::Error,
    }
}

/// Clamps the number of sockets in flight to half of the open-file soft limit (less some
/// headroom), so two concurrent sweeps and the agent's own sockets fit and a large request
/// degrades to a slower sweep instead of a column of `error` results.
fn fd_bounded(concurrency: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    const HEADROOM: u64 = 128;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => {
            let allowed = usize::try_from(soft.saturating_sub(HEADROOM) / 2)
                .unwrap_or(usize::MAX)
                .max(1);
            if allowed < concurrency {
                debug!(
                    concurrency,
                    allowed, "probe concurrency limited by the open-file limit"
                );
            }
            concurrency.min(allowed)
        }
        Err(_) => concurrency,
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        debug!(from = soft, to = hard, "raised open-file soft limit");
    }
    Ok(hard.max(soft))
}
