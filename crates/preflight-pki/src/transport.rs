//! TLS transport for tonic on both sides, with our own rustls configurations: a client channel
//! that verifies the peer by identity name (not by the address dialled), and a server accept
//! loop under [`Limits`] (first-byte and handshake deadlines, per-source and total caps, a
//! reserve for preferred sources, an idle timeout), so a connection flood cannot starve the
//! listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::limits::Gate;
pub use crate::limits::{IdleLayer, LimitedTcp, Limits, HANDSHAKE_TIMEOUT};

/// Failure to reach a TLS peer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid address {0:?}: expected HOST:PORT")]
    Address(String),
    #[error("cannot connect to {addr}: {source}")]
    Transport {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Opens a gRPC channel to `addr` (HOST:PORT) over TLS with `config`, verifying the server
/// certificate for `server_name`. Connects eagerly so errors surface here.
pub async fn connect(
    addr: &str,
    config: ClientConfig,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(addr, timeout)?;
    let connector = connector(addr.to_string(), Arc::new(config), server_name);
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| ConnectError::Transport {
            addr: addr.to_string(),
            source,
        })
}

/// As [`connect`], but the connection is made on first use and re-made after failures.
pub fn connect_lazy(
    addr: &str,
    config: ClientConfig,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(addr, timeout)?;
    Ok(endpoint.connect_with_connector_lazy(connector(
        addr.to_string(),
        Arc::new(config),
        server_name,
    )))
}

fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, ConnectError> {
    // The scheme is http because TLS is done by our connector, not by tonic.
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| {
            e.connect_timeout(timeout)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .tcp_nodelay(true)
        })
        .map_err(|_| ConnectError::Address(addr.to_string()))
}

fn connector(
    addr: String,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Send,
> + Send
       + 'static {
    tower::service_fn(move |_uri: http::Uri| {
        let addr = addr.clone();
        let config = config.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    })
}

/// A TLS listener feeding tonic: accepts TCP, admits each connection under the listener's
/// [`Limits`] (closed at once when over a cap, never left waiting behind a flood), runs each
/// handshake in its own task under a first-byte and a handshake deadline, and yields finished
/// TLS streams. Add [`TlsIncoming::idle_layer`] to the server for the idle timeout.
pub struct TlsIncoming {
    pub local_addr: SocketAddr,
    pub stream: ReceiverStream<Result<TlsStream<LimitedTcp>, io::Error>>,
    gate: Arc<Gate>,
}

impl TlsIncoming {
    /// The server layer that closes connections idle for the idle timeout.
    pub fn idle_layer(&self) -> IdleLayer {
        self.gate.idle_layer()
    }
}

/// Binds `addr` and starts the accept loop; it ends when the returned stream is dropped.
pub async fn tls_incoming(
    addr: SocketAddr,
    config: ServerConfig,
    limits: Limits,
) -> io::Result<TlsIncoming> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tls_incoming_from(listener, config, limits))
}

/// As [`tls_incoming`] on an already bound listener.
pub fn tls_incoming_from(
    listener: TcpListener,
    config: ServerConfig,
    limits: Limits,
) -> TlsIncoming {
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    let gate = Gate::new(fit_to_fd_limit(limits));
    let g = gate.clone();
    tokio::spawn(async move {
        let gate = g;
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            // Admission before any work: over a cap, the connection is closed at once, so a
            // flood from one source (or many) never queues real clients behind it.
            let admission = match gate.admit(peer) {
                Ok(a) => a,
                Err(why) => {
                    gate.refused(peer, why);
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let limits = gate.limits.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
                // A TLS client speaks first: one that has sent nothing is let go early.
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.first_byte_timeout, tcp.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection failed before TLS");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "connection sent nothing: closed");
                        return;
                    }
                }
                let mut admission = admission;
                if let Err(why) = admission.begin_handshake(deadline).await {
                    tracing::debug!(%peer, reason = why.text(), "no handshake slot before the deadline: closed");
                    return;
                }
                let conn = LimitedTcp::new(tcp, admission, limits.idle_timeout);
                match tokio::time::timeout_at(deadline, acceptor.accept(conn)).await {
                    Ok(Ok(mut tls)) => {
                        tls.get_mut().0.established();
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming {
        local_addr,
        stream: ReceiverStream::new(rx),
        gate,
    }
}

/// Raises the soft limit on open files to the hard one, and lowers the connection cap when
/// even that leaves too few descriptors, so the cap (not EMFILE at accept, which would stall
/// every client) is what a flood meets.
fn fit_to_fd_limit(mut limits: Limits) -> Limits {
    const SPARE: u64 = 128;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return limits;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    };
    let room = soft.saturating_sub(SPARE).max(16);
    if (limits.max_connections as u64) > room {
        tracing::warn!(
            open_files = soft,
            max_connections = room,
            "the open-file limit is low: connections capped to fit (raise LimitNOFILE)"
        );
        limits.max_connections = room as usize;
    }
    limits
}

/// The verified client certificate chain of a request, if any.
pub fn peer_identity_of<T>(req: &tonic::Request<T>) -> Option<crate::PeerIdentity> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    crate::peer_identity(leaf).ok()
}
