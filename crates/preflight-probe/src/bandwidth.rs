//! TCP bandwidth between two agents: a one-shot, token-authenticated receiver on the target and
//! a sender on the source, N parallel streams, either direction, goodput measured at the
//! receiving end, retransmissions from TCP_INFO on the sending sockets.
//!
//! # Protocol (version 1), per stream
//!
//! 1. Server (the [`BandwidthReceiver`]) → client: [`BW_MAGIC`] + 16-byte server challenge.
//! 2. Client → server: [`BW_MAGIC`] + 12 bytes of parameters (direction, stream count, stream
//!    index, duration in ms, write size) + `HMAC-SHA256(key = token, "preflight-bandwidth-v1" ||
//!    server challenge || parameters)`. The token never crosses the wire, a recorded hello does
//!    not authenticate against a fresh challenge, and the parameters cannot be altered in flight.
//! 3. Server → client: one byte, 1 = accepted (anything else, or a close, is a rejection).
//! 4. The sending end writes `write_size` chunks for the duration, then shuts its write side.
//!    The receiving end reads until EOF, timing from the first byte to EOF.
//! 5. Receiving end → sending end: [`BW_RESULT_MAGIC`] + bytes (u64) + microseconds (u64), so the
//!    sending end can report receiver-measured goodput together with its own retransmissions.
//!
//! In the forward direction the client (source agent) sends: [`send`] returns the complete
//! report. In reverse the server sends: [`BandwidthReceiver::wait`] has the complete report and
//! [`send`] returns the same goodput without retransmissions (the client socket only received).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// First four bytes of the server hello and the client hello.
pub const BW_MAGIC: [u8; 4] = *b"PFB1";
/// First four bytes of the end-of-stream summary.
pub const BW_RESULT_MAGIC: [u8; 4] = *b"PFBR";
/// Domain-separation label mixed into every hello tag.
pub const BW_LABEL: &[u8] = b"preflight-bandwidth-v1";
/// Most parallel streams in one test.
pub const MAX_STREAMS: u32 = 16;
/// Longest test duration.
pub const MAX_DURATION: Duration = Duration::from_secs(60);
/// Longest time a receiver waits for its streams.
pub const MAX_RECEIVER_TTL: Duration = Duration::from_secs(600);
/// Default size of each write (and of the receive buffer), as iperf3 uses.
pub const DEFAULT_WRITE_SIZE: usize = 128 * 1024;
/// Largest write size accepted.
pub const MAX_WRITE_SIZE: usize = 4 * 1024 * 1024;
/// Time a connection gets to complete the hello exchange.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time past the duration before a stream is abandoned.
const GRACE: Duration = Duration::from_secs(10);
/// Longest a blocking read or write of the data phase may wait.
const IO_IDLE: Duration = Duration::from_secs(5);
/// Most unauthenticated connections handled at once by a receiver.
const MAX_PENDING_HELLOS: usize = 32;

const CHALLENGE_LEN: usize = 16;
const PARAMS_LEN: usize = 12;
const SERVER_HELLO_LEN: usize = BW_MAGIC.len() + CHALLENGE_LEN;
const CLIENT_HELLO_LEN: usize = BW_MAGIC.len() + PARAMS_LEN + 32;
const SUMMARY_LEN: usize = BW_RESULT_MAGIC.len() + 16;
const ACCEPTED: u8 = 1;

/// Which way the data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The client ([`send`], on the source) sends; the receiver (target) receives.
    Forward,
    /// The receiver (target) sends; the client (source) receives.
    Reverse,
}

impl Direction {
    fn to_byte(self) -> u8 {
        match self {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Direction::Forward),
            1 => Some(Direction::Reverse),
            _ => None,
        }
    }
}

/// Which end of the connection produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The end that wrote the data (its report carries retransmissions).
    Sending,
    /// The end that read the data.
    Receiving,
}

/// One stream's figures. Bytes and goodput are always as measured by the receiving end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Stream index, 0-based.
    pub stream: u32,
    /// Bytes received.
    pub bytes: u64,
    /// Receiving time, first byte to end of stream, in microseconds.
    pub duration_us: u64,
    /// Goodput in megabits (10^6 bits) per second.
    pub mbit_per_s: f64,
    /// TCP retransmissions of the sending socket (`tcpi_total_retrans`); only known at the
    /// sending end.
    pub retransmits: Option<u64>,
    /// Bytes this end moved in each second of the stream (written when it sent, read when it
    /// received), for iperf3-like per-second lines; the last second may be partial.
    #[serde(default)]
    pub per_second_bytes: Vec<u64>,
}

/// Result of one bandwidth test, as seen by one end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthReport {
    /// Which way the data flowed.
    pub direction: Direction,
    /// Which end produced this report.
    pub role: Role,
    /// Streams asked for.
    pub expected_streams: u32,
    /// Per-stream figures, by stream index; fewer than expected if some never connected.
    pub streams: Vec<StreamReport>,
    /// Sum of bytes over the streams.
    pub total_bytes: u64,
    /// Wall time covered by the streams, in microseconds.
    pub duration_us: u64,
    /// Total goodput in megabits per second.
    pub total_mbit_per_s: f64,
    /// Sum of retransmissions over the streams, when this end sent.
    pub retransmits: Option<u64>,
    /// Connections the receiver closed because they did not authenticate (receiver only).
    pub rejected_connections: u64,
    /// [`StreamReport::per_second_bytes`] summed over the streams.
    #[serde(default)]
    pub per_second_bytes: Vec<u64>,
}

/// Why a bandwidth test could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    /// Stream count outside 1..=MAX_STREAMS.
    #[error("streams {0} is out of range: use 1 to {MAX_STREAMS}")]
    Streams(u32),
    /// Duration zero or above the cap.
    #[error("duration {ms} ms is out of range: use more than 0 and at most {max_s} s")]
    Duration {
        /// Requested duration in milliseconds.
        ms: u128,
        /// The cap in seconds.
        max_s: u64,
    },
    /// Receiver TTL zero or above the cap.
    #[error("ttl {ms} ms is out of range: use more than 0 and at most {} s", MAX_RECEIVER_TTL.as_secs())]
    Ttl {
        /// Requested TTL in milliseconds.
        ms: u128,
    },
    /// Write size zero or above the cap.
    #[error("write size {0} bytes is out of range: use 1 to {MAX_WRITE_SIZE}")]
    WriteSize(usize),
    /// The receiver could not listen on the bind address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The bind address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The sender could not connect to the receiver.
    #[error("cannot connect to receiver {addr}: {source}")]
    Connect {
        /// The receiver's address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The receiver closed the connection instead of accepting the hello.
    #[error("receiver {0} rejected the stream: check the token, stream count, direction and duration it was started with")]
    Rejected(SocketAddr),
    /// The peer broke the protocol.
    #[error("protocol error with {addr}: {what}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        what: String,
    },
    /// A stream failed during the transfer.
    #[error("stream {stream} to {addr} failed: {source}")]
    Stream {
        /// The peer.
        addr: SocketAddr,
        /// Stream index.
        stream: u32,
        /// The operating system's error.
        source: io::Error,
    },
    /// A stream did not finish in time.
    #[error("stream {stream} with {addr} did not finish within its duration plus {} s", GRACE.as_secs())]
    StreamTimeout {
        /// The peer.
        addr: SocketAddr,
        /// Stream index.
        stream: u32,
    },
    /// The receiver's TTL passed before any stream authenticated.
    #[error("no authenticated stream reached the receiver within its ttl of {ttl_s} s")]
    NoStreams {
        /// The TTL in seconds.
        ttl_s: u64,
    },
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// The receiver task ended abnormally.
    #[error("receiver task ended abnormally: {0}")]
    Task(String),
}

fn check_streams(streams: u32) -> Result<(), BandwidthError> {
    if streams == 0 || streams > MAX_STREAMS {
        return Err(BandwidthError::Streams(streams));
    }
    Ok(())
}

fn check_duration(d: Duration) -> Result<(), BandwidthError> {
    if d.is_zero() || d > MAX_DURATION {
        return Err(BandwidthError::Duration {
            ms: d.as_millis(),
            max_s: MAX_DURATION.as_secs(),
        });
    }
    Ok(())
}

fn check_write_size(w: usize) -> Result<(), BandwidthError> {
    if w == 0 || w > MAX_WRITE_SIZE {
        return Err(BandwidthError::WriteSize(w));
    }
    Ok(())
}

/// Parameters of one stream, carried in the client hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    direction: Direction,
    streams: u8,
    index: u8,
    duration_ms: u32,
    write_size: u32,
}

impl Params {
    fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut b = [0u8; PARAMS_LEN];
        b[0] = self.direction.to_byte();
        b[1] = self.streams;
        b[2] = self.index;
        b[4..8].copy_from_slice(&self.duration_ms.to_be_bytes());
        b[8..12].copy_from_slice(&self.write_size.to_be_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; PARAMS_LEN] = b.try_into().ok()?;
        Some(Self {
            direction: Direction::from_byte(b[0])?,
            streams: b[1],
            index: b[2],
            duration_ms: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            write_size: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}

fn hello_message(challenge: &[u8], params: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(BW_LABEL.len() + challenge.len() + params.len());
    m.extend_from_slice(BW_LABEL);
    m.extend_from_slice(challenge);
    m.extend_from_slice(params);
    m
}

/// Options of a [`BandwidthReceiver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverOptions {
    /// How long the receiver waits for its streams (at most [`MAX_RECEIVER_TTL`]).
    pub ttl: Duration,
    /// Streams the sender will open (1..=[`MAX_STREAMS`]); the receiver accepts exactly these.
    pub expected_streams: u32,
    /// Longest duration a sender may ask for (at most [`MAX_DURATION`]).
    pub max_duration: Duration,
    /// Which way the data flows; a sender asking for the other direction is rejected.
    pub direction: Direction,
}

/// A one-shot bandwidth receiver: accepts `expected_streams` authenticated streams, measures
/// them, and closes its listener. Dropping it aborts the test and closes every socket.
#[derive(Debug)]
pub struct BandwidthReceiver {
    local_addr: SocketAddr,
    task: JoinHandle<Result<BandwidthReport, BandwidthError>>,
}

impl BandwidthReceiver {
    /// Validates the options, listens on `bind` (port 0 picks a free port) and starts serving
    /// in a tokio task. Only connections proving knowledge of `token` are measured.
    pub async fn start(
        bind: SocketAddr,
        token: [u8; 32],
        opts: ReceiverOptions,
    ) -> Result<BandwidthReceiver, BandwidthError> {
        check_streams(opts.expected_streams)?;
        check_duration(opts.max_duration)?;
        if opts.ttl.is_zero() || opts.ttl > MAX_RECEIVER_TTL {
            return Err(BandwidthError::Ttl {
                ms: opts.ttl.as_millis(),
            });
        }
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| BandwidthError::Bind { addr: bind, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BandwidthError::Bind { addr: bind, source })?;
        debug!(%local_addr, streams = opts.expected_streams, direction = ?opts.direction, "bandwidth receiver listening");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &token);
        let task = tokio::spawn(serve(listener, key, opts));
        Ok(BandwidthReceiver { local_addr, task })
    }

    /// The address the receiver listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the test to finish and returns the receiver's report.
    pub async fn wait(mut self) -> Result<BandwidthReport, BandwidthError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(BandwidthError::Task(e.to_string())),
        }
    }
}

impl Drop for BandwidthReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an authenticated stream turned into on the receiver.
struct ServedStream {
    index: u32,
    start: Instant,
    end: Instant,
    report: StreamReport,
}

async fn serve(
    listener: TcpListener,
    key: hmac::Key,
    opts: ReceiverOptions,
) -> Result<BandwidthReport, BandwidthError> {
    let key = Arc::new(key);
    let rng = SystemRandom::new();
    let deadline = tokio::time::Instant::now() + opts.ttl;
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HELLOS));
    // Hello tasks report the stream index they authenticated; the accept loop decides whether
    // the index is still free, so two connections can never claim the same stream.
    let (claim_tx, mut claim_rx) = mpsc::channel::<(u8, tokio::sync::oneshot::Sender<bool>)>(64);
    let mut hellos = JoinSet::new();
    let mut streams: JoinSet<Result<ServedStream, BandwidthError>> = JoinSet::new();
    let mut claimed = vec![false; opts.expected_streams as usize];
    let mut n_claimed = 0u32;
    let mut rejected = 0u64;
    while n_claimed < opts.expected_streams {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some((index, reply)) = claim_rx.recv() => {
                let slot = claimed.get_mut(usize::from(index));
                let ok = matches!(slot, Some(false));
                if let Some(s) = slot { *s = true; }
                if ok { n_claimed += 1; }
                let _ = reply.send(ok);
            }
            Some(done) = hellos.join_next(), if !hellos.is_empty() => {
                match done {
                    Ok(Some(stream_task)) => { streams.spawn(stream_task); }
                    Ok(None) => rejected += 1,
                    Err(e) => warn!(error = %e, "bandwidth hello task failed"),
                }
            }
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "bandwidth accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    rejected += 1;
                    continue;
                };
                let mut challenge = [0u8; CHALLENGE_LEN];
                rng.fill(&mut challenge).map_err(|_| BandwidthError::Random)?;
                let key = key.clone();
                let opts = opts.clone();
                let claim_tx = claim_tx.clone();
                hellos.spawn(async move {
                    let _permit = permit;
                    let r = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        server_hello(sock, peer, &key, &challenge, &opts, &claim_tx),
                    ).await;
                    match r {
                        Ok(Ok(s)) => Some(s),
                        Ok(Err(why)) => { debug!(%peer, why, "bandwidth connection rejected"); None }
                        Err(_) => { debug!(%peer, "bandwidth hello timed out"); None }
                    }
                });
            }
        }
    }
    // One-shot: stop listening as soon as the streams are in (or the TTL passed).
    // Hellos still in flight either already hold a granted stream (and must finish it) or will
    // find the claim channel closed and give up; each is bounded by the handshake timeout.
    drop(listener);
    drop(claim_rx);
    while let Some(done) = hellos.join_next().await {
        match done {
            Ok(Some(stream_task)) => {
                streams.spawn(stream_task);
            }
            Ok(None) => rejected += 1,
            Err(e) => warn!(error = %e, "bandwidth hello task failed"),
        }
    }
    let mut served = Vec::new();
    let mut first_err = None;
    while let Some(done) = streams.join_next().await {
        match done {
            Ok(Ok(s)) => served.push(s),
            Ok(Err(e)) => {
                warn!(error = %e, "bandwidth stream failed");
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(BandwidthError::Task(e.to_string()));
            }
        }
    }
    if served.is_empty() {
        return Err(first_err.unwrap_or(BandwidthError::NoStreams {
            ttl_s: opts.ttl.as_secs(),
        }));
    }
    let role = match opts.direction {
        Direction::Forward => Role::Receiving,
        Direction::Reverse => Role::Sending,
    };
    let span = match (
        served.iter().map(|s| s.start).min(),
        served.iter().map(|s| s.end).max(),
    ) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    served.sort_by_key(|s| s.index);
    let reports = served.into_iter().map(|s| s.report).collect();
    let mut report = build_report(
        opts.direction,
        role,
        opts.expected_streams,
        reports,
        Some(span),
    );
    report.rejected_connections = rejected;
    debug!(
        total_mbit_per_s = report.total_mbit_per_s,
        "bandwidth receiver done"
    );
    Ok(report)
}

type StreamTask = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ServedStream, BandwidthError>> + Send>,
>;

/// Runs the hello exchange; on success returns the data-phase future for this stream.
async fn server_hello(
    mut sock: TcpStream,
    peer: SocketAddr,
    key: &hmac::Key,
    challenge: &[u8; CHALLENGE_LEN],
    opts: &ReceiverOptions,
    claim_tx: &mpsc::Sender<(u8, tokio::sync::oneshot::Sender<bool>)>,
) -> Result<StreamTask, &'static str> {
    let mut hello = [0u8; SERVER_HELLO_LEN];
    hello[..4].copy_from_slice(&BW_MAGIC);
    hello[4..].copy_from_slice(challenge);
    sock.write_all(&hello).await.map_err(|_| "write failed")?;
    let mut client = [0u8; CLIENT_HELLO_LEN];
    sock.read_exact(&mut client)
        .await
        .map_err(|_| "short hello")?;
    if client[..4] != BW_MAGIC {
        return Err("bad magic");
    }
    let params_bytes = &client[4..4 + PARAMS_LEN];
    let tag = &client[4 + PARAMS_LEN..];
    hmac::verify(key, &hello_message(challenge, params_bytes), tag)
        .map_err(|_| "bad token proof")?;
    let params = Params::decode(params_bytes).ok_or("bad parameters")?;
    if params.direction != opts.direction {
        return Err("wrong direction");
    }
    if u32::from(params.streams) != opts.expected_streams
        || u32::from(params.index) >= opts.expected_streams
    {
        return Err("wrong stream count or index");
    }
    let duration = Duration::from_millis(u64::from(params.duration_ms));
    if duration.is_zero() || duration > opts.max_duration {
        return Err("duration over the receiver's maximum");
    }
    let write_size = params.write_size as usize;
    if write_size == 0 || write_size > MAX_WRITE_SIZE {
        return Err("bad write size");
    }
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    claim_tx
        .send((params.index, reply_tx))
        .await
        .map_err(|_| "receiver closed")?;
    if !reply_rx.await.unwrap_or(false) {
        return Err("stream index already taken");
    }
    sock.write_all(&[ACCEPTED])
        .await
        .map_err(|_| "write failed")?;
    let index = u32::from(params.index);
    debug!(%peer, stream = index, "bandwidth stream authenticated");
    Ok(Box::pin(async move {
        let role = match params.direction {
            Direction::Forward => Role::Receiving,
            Direction::Reverse => Role::Sending,
        };
        let limit = duration + GRACE + IO_IDLE;
        let r =
            tokio::time::timeout(limit, data_phase(sock, role, duration, write_size, None)).await;
        match r {
            Err(_) => Err(BandwidthError::StreamTimeout {
                addr: peer,
                stream: index,
            }),
            Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Err(BandwidthError::StreamTimeout {
                    addr: peer,
                    stream: index,
                })
            }
            Ok(Err(source)) => Err(BandwidthError::Stream {
                addr: peer,
                stream: index,
                source,
            }),
            Ok(Ok(m)) => Ok(ServedStream {
                index,
                start: m.start,
                end: m.end,
                report: stream_report(index, &m),
            }),
        }
    }))
}

/// What one end measured on one stream.
struct Measured {
    /// Bytes moved in each second from the first one (see [`count_second`]).
    per_second: Vec<u64>,
    bytes: u64,
    duration_us: u64,
    retransmits: Option<u64>,
    start: Instant,
    end: Instant,
}

/// Runs one stream's data phase on a blocking thread. Plain blocking reads and writes of large
/// buffers cost fewer system calls than readiness-driven ones (no EAGAIN and epoll round
/// trips), which is what lets this match iperf3's CPU per byte. Every call is bounded: socket
/// timeouts of [`IO_IDLE`] and a hard deadline of `duration` + [`GRACE`].
async fn data_phase(
    sock: TcpStream,
    role: Role,
    duration: Duration,
    write_size: usize,
    live: Option<Arc<LiveSeconds>>,
) -> io::Result<Measured> {
    let sock = sock.into_std()?;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(IO_IDLE))?;
    sock.set_write_timeout(Some(IO_IDLE))?;
    let deadline = Instant::now() + duration + GRACE;
    tokio::task::spawn_blocking(move || {
        let mut sock = sock;
        match role {
            Role::Sending => send_blocking(&mut sock, duration, write_size, deadline, live),
            Role::Receiving => receive_blocking(&mut sock, write_size, deadline, live),
        }
    })
    .await
    .map_err(|e| io::Error::other(format!("data phase task failed: {e}")))?
    .map_err(|e| {
        // A socket timeout surfaces as EAGAIN: report it as the stall it is.
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress for {} s", IO_IDLE.as_secs()),
            )
        } else {
            e
        }
    })
}

fn past(deadline: Instant) -> io::Result<()> {
    if Instant::now() > deadline {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "stream ran past its duration plus grace",
        ));
    }
    Ok(())
}

/// Reads to EOF, then tells the sending end what arrived.
/// Most per-second entries kept for one stream (the longest test, plus its grace).
const MAX_SECONDS: usize = 80;

/// Adds `n` bytes to the entry of the second `since` falls in (and to the live count of that
/// second, shared by the streams, when there is one).
fn count_second(per_second: &mut Vec<u64>, since: Instant, n: u64, live: Option<&LiveSeconds>) {
    let i = since.elapsed().as_secs() as usize;
    if i >= MAX_SECONDS {
        return;
    }
    if per_second.len() <= i {
        per_second.resize(i + 1, 0);
    }
    per_second[i] += n;
    if let Some(l) = live {
        l.0[i].fetch_add(n, Ordering::Relaxed);
    }
}

/// Bytes moved in each second so far, all streams together, updated as the data flows so that
/// [`send_with_progress`] can report each second as it completes.
#[derive(Debug)]
pub struct LiveSeconds([AtomicU64; MAX_SECONDS]);

impl LiveSeconds {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
    fn get(&self, second: usize) -> u64 {
        self.0.get(second).map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

/// A second of a test that completed: its 0-based index and the bytes moved in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondDone {
    /// 0-based second of the test.
    pub second: u32,
    /// Bytes this end moved in it, all streams together.
    pub bytes: u64,
}

/// Slack after a second's end before it is reported, for streams that started a little later
/// than the first.
const SECOND_SLACK: Duration = Duration::from_millis(50);

fn receive_blocking(
    sock: &mut std::net::TcpStream,
    buf_size: usize,
    deadline: Instant,
    live: Option<Arc<LiveSeconds>>,
) -> io::Result<Measured> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; buf_size.max(64 * 1024)];
    let mut bytes = 0u64;
    let mut start = None;
    let mut per_second = Vec::new();
    loop {
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        let first = *start.get_or_insert_with(Instant::now);
        count_second(&mut per_second, first, n as u64, live.as_deref());
        bytes += n as u64;
        past(deadline)?;
    }
    let end = Instant::now();
    let start = start.unwrap_or(end);
    let duration_us = u64::try_from(end.duration_since(start).as_micros()).unwrap_or(u64::MAX);
    let mut summary = [0u8; SUMMARY_LEN];
    summary[..4].copy_from_slice(&BW_RESULT_MAGIC);
    summary[4..12].copy_from_slice(&bytes.to_be_bytes());
    summary[12..20].copy_from_slice(&duration_us.to_be_bytes());
    sock.write_all(&summary)?;
    sock.shutdown(std::net::Shutdown::Write)?;
    Ok(Measured {
        per_second,
        bytes,
        duration_us,
        retransmits: None,
        start,
        end,
    })
}

/// Writes for `duration`, half-closes, then reads the receiving end's summary and this socket's
/// retransmission count.
fn send_blocking(
    sock: &mut std::net::TcpStream,
    duration: Duration,
    write_size: usize,
    deadline: Instant,
    live: Option<Arc<LiveSeconds>>,
) -> io::Result<Measured> {
    use std::io::{Read, Write};
    let buf = vec![0x5au8; write_size];
    let start = Instant::now();
    let mut per_second = Vec::new();
    while start.elapsed() < duration {
        sock.write_all(&buf)?;
        count_second(&mut per_second, start, buf.len() as u64, live.as_deref());
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    past(deadline)?;
    let mut summary = [0u8; SUMMARY_LEN];
    sock.read_exact(&mut summary)?;
    if summary[..4] != BW_RESULT_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad end-of-stream summary",
        ));
    }
    let bytes = u64::from_be_bytes(summary[4..12].try_into().unwrap_or_default());
    let duration_us = u64::from_be_bytes(summary[12..20].try_into().unwrap_or_default());
    // Every byte was acknowledged once the summary arrived, so the count is final.
    let retransmits = tcp_total_retrans(sock).ok();
    let end = Instant::now();
    Ok(Measured {
        per_second,
        bytes,
        duration_us,
        retransmits,
        start,
        end,
    })
}

/// Reads `tcpi_total_retrans` from TCP_INFO.
fn tcp_total_retrans(sock: &impl AsRawFd) -> io::Result<u64> {
    // SAFETY: tcp_info is a plain C struct of integers, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is a live TCP socket owned by `sock`; `info` and `len` point to writable
    // memory of the size passed, and the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(info.tcpi_total_retrans))
}

fn mbit_per_s(bytes: u64, duration_us: u64) -> f64 {
    if duration_us == 0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / duration_us as f64
}

fn stream_report(stream: u32, m: &Measured) -> StreamReport {
    StreamReport {
        stream,
        bytes: m.bytes,
        duration_us: m.duration_us,
        mbit_per_s: mbit_per_s(m.bytes, m.duration_us),
        retransmits: m.retransmits,
        per_second_bytes: m.per_second.clone(),
    }
}

fn build_report(
    direction: Direction,
    role: Role,
    expected_streams: u32,
    streams: Vec<StreamReport>,
    span: Option<Duration>,
) -> BandwidthReport {
    let total_bytes = streams.iter().map(|s| s.bytes).sum();
    // Without absolute times (the sending end), the longest stream stands in for the span.
    let duration_us = span
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_else(|| streams.iter().map(|s| s.duration_us).max().unwrap_or(0));
    let retransmits = match role {
        Role::Sending => streams.iter().map(|s| s.retransmits).sum::<Option<u64>>(),
        Role::Receiving => None,
    };
    let mut per_second_bytes: Vec<u64> = Vec::new();
    for s in &streams {
        if per_second_bytes.len() < s.per_second_bytes.len() {
            per_second_bytes.resize(s.per_second_bytes.len(), 0);
        }
        for (t, b) in per_second_bytes.iter_mut().zip(&s.per_second_bytes) {
            *t += b;
        }
    }
    BandwidthReport {
        per_second_bytes,
        direction,
        role,
        expected_streams,
        total_mbit_per_s: mbit_per_s(total_bytes, duration_us),
        streams,
        total_bytes,
        duration_us,
        retransmits,
        rejected_connections: 0,
    }
}

/// Options of [`send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// Parallel streams (1..=[`MAX_STREAMS`]); must equal the receiver's `expected_streams`.
    pub streams: u32,
    /// How long data flows (at most [`MAX_DURATION`] and the receiver's `max_duration`).
    pub duration: Duration,
    /// Size of each write, [`DEFAULT_WRITE_SIZE`] unless there is a reason.
    pub write_size: usize,
    /// Which way the data flows; must equal the receiver's.
    pub direction: Direction,
}

impl SendOptions {
    /// Checks the stream count, duration and write size against the caps, as [`send`] does
    /// before it connects.
    pub fn check(&self) -> Result<(), BandwidthError> {
        check_streams(self.streams)?;
        check_duration(self.duration)?;
        check_write_size(self.write_size)
    }
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            streams: 1,
            duration: Duration::from_secs(10),
            write_size: DEFAULT_WRITE_SIZE,
            direction: Direction::Forward,
        }
    }
}

/// Runs a bandwidth test against the receiver at `addr` with `token`. In the forward direction
/// this end sends and the report is complete (receiver-measured goodput plus retransmissions);
/// in reverse this end receives and measures, and retransmissions are in the receiver's report.
pub async fn send(
    addr: SocketAddr,
    token: [u8; 32],
    opts: &SendOptions,
) -> Result<BandwidthReport, BandwidthError> {
    send_with_progress(addr, token, opts, None).await
}

/// [`send`], and while the data flows, one [`SecondDone`] on `progress` as each whole second
/// of the test completes (counted by this end: written when it sends, read when it receives).
/// At most one message a second and at most the duration's whole seconds; a full or closed
/// channel loses the message, never slows the test.
pub async fn send_with_progress(
    addr: SocketAddr,
    token: [u8; 32],
    opts: &SendOptions,
    progress: Option<mpsc::Sender<SecondDone>>,
) -> Result<BandwidthReport, BandwidthError> {
    opts.check()?;
    let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &token));
    // Handshake every stream first, so the data phases start together.
    let mut hellos = JoinSet::new();
    for index in 0..opts.streams {
        let params = Params {
            direction: opts.direction,
            streams: opts.streams as u8,
            index: index as u8,
            duration_ms: u32::try_from(opts.duration.as_millis()).unwrap_or(u32::MAX),
            write_size: opts.write_size as u32,
        };
        let key = key.clone();
        hellos.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, client_hello(addr, &key, params)).await {
                Ok(r) => r.map(|s| (index, s)),
                Err(_) => Err(BandwidthError::Protocol {
                    addr,
                    what: "hello timed out".into(),
                }),
            }
        });
    }
    let mut socks = Vec::with_capacity(opts.streams as usize);
    while let Some(done) = hellos.join_next().await {
        socks.push(done.map_err(|e| BandwidthError::Task(e.to_string()))??);
    }
    let live = progress.as_ref().map(|_| Arc::new(LiveSeconds::new()));
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ticker = match (&progress, &live) {
        (Some(tx), Some(live)) => Some(AbortOnDrop(Some(tokio::spawn(tick_seconds(
            tx.clone(),
            live.clone(),
            opts.duration,
            ended_rx,
        ))))),
        _ => None,
    };
    let mut runs = JoinSet::new();
    for (index, sock) in socks {
        let (duration, write_size, direction) = (opts.duration, opts.write_size, opts.direction);
        let live = live.clone();
        runs.spawn(async move {
            let role = match direction {
                Direction::Forward => Role::Sending,
                Direction::Reverse => Role::Receiving,
            };
            let limit = duration + GRACE + IO_IDLE;
            let r = tokio::time::timeout(limit, data_phase(sock, role, duration, write_size, live))
                .await;
            match r {
                Err(_) => Err(BandwidthError::StreamTimeout {
                    addr,
                    stream: index,
                }),
                Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                    Err(BandwidthError::StreamTimeout {
                        addr,
                        stream: index,
                    })
                }
                Ok(Err(source)) => Err(BandwidthError::Stream {
                    addr,
                    stream: index,
                    source,
                }),
                Ok(Ok(m)) => Ok((index, m)),
            }
        });
    }
    let mut measured = Vec::with_capacity(opts.streams as usize);
    while let Some(done) = runs.join_next().await {
        measured.push(done.map_err(|e| BandwidthError::Task(e.to_string()))??);
    }
    // The data is in: the ticker reports the whole seconds it has not reported yet, and ends.
    let _ = ended_tx.send(());
    if let Some(handle) = ticker.as_mut().and_then(|t| t.0.take()) {
        let _ = handle.await;
    }
    measured.sort_by_key(|(i, _)| *i);
    let (role, span) = match opts.direction {
        Direction::Forward => (Role::Sending, None),
        Direction::Reverse => {
            let a = measured.iter().map(|(_, m)| m.start).min();
            let b = measured.iter().map(|(_, m)| m.end).max();
            (Role::Receiving, a.zip(b).map(|(a, b)| b.duration_since(a)))
        }
    };
    let streams = measured
        .into_iter()
        .map(|(i, m)| stream_report(i, &m))
        .collect();
    Ok(build_report(
        opts.direction,
        role,
        opts.streams,
        streams,
        span,
    ))
}

/// Aborts the task (if still held) when dropped.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Reports each whole second of `duration` on `tx` once it has passed (plus a little slack),
/// from the moment the data phases start; when `ended` fires (every stream is done), the
/// seconds not reported yet at once.
async fn tick_seconds(
    tx: mpsc::Sender<SecondDone>,
    live: Arc<LiveSeconds>,
    duration: Duration,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) {
    let t0 = tokio::time::Instant::now();
    let whole = (duration.as_secs() as usize).min(MAX_SECONDS);
    let mut done = false;
    for second in 0..whole {
        if !done {
            let end = Duration::from_secs(second as u64 + 1);
            tokio::select! {
                _ = tokio::time::sleep_until(t0 + end + SECOND_SLACK) => {}
                _ = &mut ended => done = true,
            }
        }
        let msg = SecondDone {
            second: second as u32,
            bytes: live.get(second),
        };
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(msg) {
            return;
        }
    }
}

async fn client_hello(
    addr: SocketAddr,
    key: &hmac::Key,
    params: Params,
) -> Result<TcpStream, BandwidthError> {
    let proto = |what: &str| BandwidthError::Protocol {
        addr,
        what: what.to_string(),
    };
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|source| BandwidthError::Connect { addr, source })?;
    let mut hello = [0u8; SERVER_HELLO_LEN];
    sock.read_exact(&mut hello)
        .await
        .map_err(|_| proto("no server hello"))?;
    if hello[..4] != BW_MAGIC {
        return Err(proto(
            "server hello has the wrong magic: is this a preflight bandwidth receiver?",
        ));
    }
    let p = params.encode();
    let tag = hmac::sign(key, &hello_message(&hello[4..], &p));
    let mut client = [0u8; CLIENT_HELLO_LEN];
    client[..4].copy_from_slice(&BW_MAGIC);
    client[4..4 + PARAMS_LEN].copy_from_slice(&p);
    client[4 + PARAMS_LEN..].copy_from_slice(tag.as_ref());
    sock.write_all(&client)
        .await
        .map_err(|source| BandwidthError::Connect { addr, source })?;
    let mut ack = [0u8; 1];
    match sock.read_exact(&mut ack).await {
        Ok(_) if ack[0] == ACCEPTED => Ok(sock),
        _ => Err(BandwidthError::Rejected(addr)),
    }
}
