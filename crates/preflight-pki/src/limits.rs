//! Connection limits of the TLS listeners ([`crate::transport::tls_incoming`]): what a flood of
//! slow, idle or reconnecting connections can take from real clients.
//!
//! - **First byte**: a connection that sends nothing within [`Limits::first_byte_timeout`] is
//!   closed (a TLS client speaks first), long before the handshake deadline.
//! - **Pending handshakes** are capped per source address and in total; a connection over a
//!   cap waits (within the handshake deadline) for a slot of its own source, so a burst of real
//!   clients is served in turn while one source cannot starve another.
//! - **Open connections** (waiting, pending and established) are capped in total and per
//!   source; a connection over these caps is closed at once.
//! - **Reserve**: the last [`Limits::reserved`] slots of both totals are only for the
//!   [`Limits::preferred`] sources (on an agent: its controller's addresses from `agent.toml`),
//!   which are also exempt from the per-source caps, so the controller's own connection (the
//!   firewall confirmation opens a new one) is never starved by other sources.
//! - **Idle**: an established connection with no request in flight for
//!   [`Limits::idle_timeout`] is closed ([`IdleLayer`] sees the requests; HTTP/2 pings do not
//!   count).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The limits of one listener. [`Limits::controller`] and [`Limits::agent`] are the defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection that sent no byte by then is closed.
    pub first_byte_timeout: Duration,
    /// The whole TLS handshake, from accept.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once.
    pub max_pending: usize,
    /// Handshakes in progress at once from one source address.
    pub max_pending_per_source: usize,
    /// Connections open at once (pending and established).
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Slots of `max_pending` and `max_connections` only the preferred sources may take.
    pub reserved: usize,
    /// Sources exempt from the per-source caps, for whom the reserve is kept.
    pub preferred: Vec<IpAddr>,
    /// An established connection without a request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// Default first-byte deadline.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default handshake deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout of established connections.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Limits {
    /// The controller: many agents and people, no preferred source.
    pub fn controller() -> Self {
        Self {
            first_byte_timeout: FIRST_BYTE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_pending: 512,
            // Generous for offices behind one NAT address, far below the total.
            max_pending_per_source: 64,
            max_connections: 4096,
            max_connections_per_source: 512,
            reserved: 0,
            preferred: Vec::new(),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// An agent: its only legitimate client is the controller at `controller` (its addresses).
    pub fn agent(controller: Vec<IpAddr>) -> Self {
        Self {
            first_byte_timeout: FIRST_BYTE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_pending: 128,
            max_pending_per_source: 8,
            max_connections: 128,
            max_connections_per_source: 16,
            reserved: 16,
            preferred: controller.into_iter().map(|ip| ip.to_canonical()).collect(),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    fn is_preferred(&self, ip: IpAddr) -> bool {
        self.preferred.contains(&ip)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    pending: usize,
    open: usize,
}

#[derive(Default)]
struct Table {
    total: Counts,
    by_source: HashMap<IpAddr, Counts>,
    activity: HashMap<SocketAddr, Arc<Activity>>,
}

/// The shared state of one listener: counts by source, and the request activity of each
/// established connection (by peer address, which is how [`IdleLayer`] finds it).
pub struct Gate {
    pub(crate) limits: Limits,
    table: Mutex<Table>,
    refused: AtomicU64,
    /// Woken when a handshake slot is given back.
    released: tokio::sync::Notify,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    PendingPerSource,
    Pending,
    ConnectionsPerSource,
    Connections,
}

impl Refusal {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Refusal::PendingPerSource => "too many handshakes in progress from this address",
            Refusal::Pending => "too many handshakes in progress",
            Refusal::ConnectionsPerSource => "too many connections from this address",
            Refusal::Connections => "too many connections",
        }
    }
}

impl Gate {
    pub(crate) fn new(mut limits: Limits) -> Arc<Self> {
        limits.max_pending = limits.max_pending.max(1);
        limits.max_connections = limits.max_connections.max(1);
        limits.max_pending_per_source = limits.max_pending_per_source.max(1);
        limits.max_connections_per_source = limits.max_connections_per_source.max(1);
        limits.preferred = limits.preferred.iter().map(|i| i.to_canonical()).collect();
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
            refused: AtomicU64::new(0),
            released: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `peer` against the connection caps, or says why not
    /// (the caller then closes it at once).
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admission, Refusal> {
        let ip = peer.ip().to_canonical();
        let l = &self.limits;
        let preferred = l.is_preferred(ip);
        let mut t = self.lock();
        let src = t.by_source.get(&ip).copied().unwrap_or_default();
        let conn_cap = if preferred {
            l.max_connections
        } else {
            l.max_connections.saturating_sub(l.reserved).max(1)
        };
        if !preferred && src.open >= l.max_connections_per_source {
            return Err(Refusal::ConnectionsPerSource);
        }
        if t.total.open >= conn_cap {
            return Err(Refusal::Connections);
        }
        t.total.open += 1;
        t.by_source.entry(ip).or_default().open += 1;
        Ok(Admission {
            gate: self.clone(),
            ip,
            peer,
            preferred,
            pending: false,
            activity: None,
        })
    }

    /// Takes a handshake slot for `ip` if one is free under the pending caps.
    fn try_pending(&self, ip: IpAddr, preferred: bool) -> Result<(), Refusal> {
        let l = &self.limits;
        let mut t = self.lock();
        let src = t.by_source.get(&ip).copied().unwrap_or_default();
        let cap = if preferred {
            l.max_pending
        } else {
            l.max_pending.saturating_sub(l.reserved).max(1)
        };
        if !preferred && src.pending >= l.max_pending_per_source {
            return Err(Refusal::PendingPerSource);
        }
        if t.total.pending >= cap {
            return Err(Refusal::Pending);
        }
        t.total.pending += 1;
        t.by_source.entry(ip).or_default().pending += 1;
        Ok(())
    }

    /// Logs a refusal (a warning at powers of two, so a flood does not flood the log).
    pub(crate) fn refused(&self, peer: SocketAddr, why: Refusal) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(%peer, reason = why.text(), refused_total = n, "connection closed at accept");
        } else {
            tracing::debug!(%peer, reason = why.text(), "connection closed at accept");
        }
    }

    fn activity_of(&self, peer: &SocketAddr) -> Option<Arc<Activity>> {
        self.lock().activity.get(peer).cloned()
    }

    /// A layer for the server that tells this gate when requests start and end, for the
    /// idle timeout.
    pub fn idle_layer(self: &Arc<Self>) -> IdleLayer {
        IdleLayer { gate: self.clone() }
    }
}

/// One admitted connection's slot; freed on drop.
pub(crate) struct Admission {
    gate: Arc<Gate>,
    ip: IpAddr,
    peer: SocketAddr,
    preferred: bool,
    pending: bool,
    activity: Option<Arc<Activity>>,
}

impl Admission {
    /// Waits (until `deadline`) for a handshake slot under the pending caps: a source over its
    /// share waits for its own handshakes to end, never for other sources'.
    pub(crate) async fn begin_handshake(&mut self, deadline: Instant) -> Result<(), Refusal> {
        loop {
            let notified = self.gate.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.gate.try_pending(self.ip, self.preferred) {
                Ok(()) => {
                    self.pending = true;
                    return Ok(());
                }
                Err(why) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(why);
                    }
                }
            }
        }
    }

    /// The handshake is done: the pending slot is given back, the connection stays counted.
    fn established(&mut self) -> Arc<Activity> {
        let activity = Arc::new(Activity::new());
        let mut t = self.gate.lock();
        if self.pending {
            self.pending = false;
            t.total.pending -= 1;
            if let Some(e) = t.by_source.get_mut(&self.ip) {
                e.pending -= 1;
            }
        }
        t.activity.insert(self.peer, activity.clone());
        drop(t);
        self.gate.released.notify_waiters();
        self.activity = Some(activity.clone());
        activity
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut t = self.gate.lock();
        if self.pending {
            t.total.pending -= 1;
        }
        t.total.open -= 1;
        let pending = self.pending;
        let gone = t.by_source.get_mut(&self.ip).is_some_and(|e| {
            if pending {
                e.pending -= 1;
            }
            e.open -= 1;
            e.open == 0
        });
        if gone {
            t.by_source.remove(&self.ip);
        }
        if let Some(a) = &self.activity {
            if t.activity
                .get(&self.peer)
                .is_some_and(|b| Arc::ptr_eq(a, b))
            {
                t.activity.remove(&self.peer);
            }
        }
        drop(t);
        if pending {
            self.gate.released.notify_waiters();
        }
    }
}

/// Requests in flight on one connection and when the last one ended.
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A TCP connection under the listener's limits: holds its slot, and ends (reads as closed)
/// once idle for the idle timeout.
pub struct LimitedTcp {
    inner: TcpStream,
    admission: Admission,
    idle_timeout: Duration,
    idle: Option<(Arc<Activity>, Pin<Box<Sleep>>)>,
    closed: bool,
}

impl LimitedTcp {
    pub(crate) fn new(inner: TcpStream, admission: Admission, idle_timeout: Duration) -> Self {
        Self {
            inner,
            admission,
            idle_timeout,
            idle: None,
            closed: false,
        }
    }

    /// Called once the TLS handshake is done: starts the idle clock.
    pub(crate) fn established(&mut self) {
        let activity = self.admission.established();
        let sleep = Box::pin(tokio::time::sleep(self.idle_timeout));
        self.idle = Some((activity, sleep));
    }

    /// True when the idle timeout has passed with nothing in flight; otherwise re-arms the
    /// timer (registering the waker).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.idle_timeout;
        let Some((activity, sleep)) = self.idle.as_mut() else {
            return false;
        };
        while sleep.as_mut().poll(cx).is_ready() {
            let next = if activity.in_flight.load(Ordering::Acquire) > 0 {
                Instant::now() + timeout
            } else {
                let due = activity.last() + timeout;
                if due <= Instant::now() {
                    return true;
                }
                due
            };
            sleep.as_mut().reset(next);
        }
        false
    }
}

impl Connected for LimitedTcp {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        if self.idle_expired(cx) {
            tracing::debug!(peer = %self.admission.peer, "idle connection closed");
            self.closed = true;
            // Reads as end of stream: the server ends the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Marks a request in flight on its connection until its response body ends.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tower layer of [`Gate::idle_layer`].
#[derive(Clone)]
pub struct IdleLayer {
    gate: Arc<Gate>,
}

impl<S> tower::Layer<S> for IdleLayer {
    type Service = IdleTracked<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdleTracked {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service [`IdleLayer`] makes.
#[derive(Clone)]
pub struct IdleTracked<S> {
    inner: S,
    gate: Arc<Gate>,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for IdleTracked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: http_body::Body + Send + 'static,
{
    type Response = http::Response<TrackedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFut<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr)
            .or_else(|| {
                req.extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(|i| i.remote_addr)
            });
        let guard = peer
            .and_then(|p| self.gate.activity_of(&p))
            .map(InFlight::new);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await?;
            Ok(r.map(|body| TrackedBody {
                inner: Box::pin(body),
                guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it ends.
pub struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    guard: Option<InFlight>,
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B: http_body::Body + Default> Default for TrackedBody<B> {
    fn default() -> Self {
        Self {
            inner: Box::pin(B::default()),
            guard: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    async fn handshaking(gate: &Arc<Gate>, p: SocketAddr) -> Result<Admission, Refusal> {
        let mut a = gate.admit(p)?;
        a.begin_handshake(soon()).await?;
        Ok(a)
    }

    #[tokio::test]
    async fn a_source_over_its_handshake_share_waits_for_its_own_slots() {
        let mut l = Limits::controller();
        l.max_pending = 10;
        l.max_pending_per_source = 3;
        let gate = Gate::new(l);
        let mut held = Vec::new();
        for p in 0..3 {
            held.push(handshaking(&gate, peer([127, 0, 0, 2], p)).await.unwrap());
        }
        assert_eq!(
            handshaking(&gate, peer([127, 0, 0, 2], 9)).await.err(),
            Some(Refusal::PendingPerSource),
            "waits, then gives up at the deadline"
        );
        let other = handshaking(&gate, peer([127, 0, 0, 3], 1)).await;
        assert!(other.is_ok(), "another source is not held up");
        // A waiter gets the slot a finished handshake gives back.
        let mut waiter = gate.admit(peer([127, 0, 0, 2], 10)).unwrap();
        let wait = tokio::spawn(async move {
            let r = waiter
                .begin_handshake(Instant::now() + Duration::from_secs(5))
                .await;
            (r, waiter)
        });
        tokio::task::yield_now().await;
        held[0].established();
        let (r, waiter) = wait.await.unwrap();
        assert!(r.is_ok());
        drop((held, other, waiter));
        let t = gate.lock();
        assert_eq!((t.total.pending, t.total.open), (0, 0));
        assert!(t.by_source.is_empty(), "slots are given back");
    }

    #[tokio::test]
    async fn the_reserve_is_only_for_preferred_sources() {
        let mut l = Limits::agent(vec![IpAddr::from([127, 0, 0, 1])]);
        l.max_pending = 6;
        l.reserved = 2;
        l.max_pending_per_source = 100;
        let gate = Gate::new(l);
        let mut held = Vec::new();
        for p in 0..4u16 {
            held.push(
                handshaking(&gate, peer([127, 0, 1, p as u8], p))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            handshaking(&gate, peer([127, 0, 2, 1], 1)).await.err(),
            Some(Refusal::Pending),
            "other sources stop before the reserve"
        );
        held.push(
            handshaking(&gate, peer([127, 0, 0, 1], 1))
                .await
                .expect("controller"),
        );
        held.push(
            handshaking(&gate, peer([127, 0, 0, 1], 2))
                .await
                .expect("controller"),
        );
        assert_eq!(
            handshaking(&gate, peer([127, 0, 0, 1], 3)).await.err(),
            Some(Refusal::Pending),
            "the total still holds"
        );
    }

    #[test]
    fn connections_over_the_caps_are_refused_at_once() {
        let mut l = Limits::controller();
        l.max_connections = 3;
        l.max_connections_per_source = 2;
        let gate = Gate::new(l);
        let mut a = gate.admit(peer([127, 0, 0, 5], 1)).unwrap();
        a.established();
        let _b = gate.admit(peer([127, 0, 0, 5], 2)).unwrap();
        assert_eq!(
            gate.admit(peer([127, 0, 0, 5], 3)).err(),
            Some(Refusal::ConnectionsPerSource)
        );
        let _c = gate.admit(peer([127, 0, 0, 6], 1)).unwrap();
        assert_eq!(
            gate.admit(peer([127, 0, 0, 7], 1)).err(),
            Some(Refusal::Connections)
        );
        assert!(gate.activity_of(&peer([127, 0, 0, 5], 1)).is_some());
        drop(a);
        assert!(gate.activity_of(&peer([127, 0, 0, 5], 1)).is_none());
        gate.admit(peer([127, 0, 0, 7], 1)).expect("a slot freed");
    }

    #[test]
    fn mapped_v4_counts_as_the_same_source() {
        let mut l = Limits::agent(vec!["127.0.0.1".parse().unwrap()]);
        l.max_connections_per_source = 1;
        let gate = Gate::new(l);
        let v6: SocketAddr = "[::ffff:127.0.0.9]:1".parse().unwrap();
        let _a = gate.admit(v6).unwrap();
        assert!(gate.admit(peer([127, 0, 0, 9], 2)).is_err());
        let mapped_ctl: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        let _b = gate.admit(mapped_ctl).unwrap();
        let _c = gate
            .admit(mapped_ctl)
            .expect("preferred: no per-source cap");
    }
}
