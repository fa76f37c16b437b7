//! TLS transport for tonic on both sides, with our own rustls configurations: a client channel
//! that verifies the peer by identity name (not by the address dialled), and a server accept
//! loop with a handshake deadline and a cap on concurrent handshakes, so a connection flood
//! cannot starve the listener.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Deadline for one TLS handshake on the server.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, per listener.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

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

/// A TLS listener feeding tonic: accepts TCP, runs each handshake in its own task under a
/// deadline and a concurrency cap (beyond it, connections wait in the kernel's backlog), and
/// yields finished TLS streams.
pub struct TlsIncoming {
    pub local_addr: SocketAddr,
    pub stream: ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>,
}

/// Binds `addr` and starts the accept loop; it ends when the returned stream is dropped.
pub async fn tls_incoming(addr: SocketAddr, config: ServerConfig) -> io::Result<TlsIncoming> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tls_incoming_from(listener, config))
}

/// As [`tls_incoming`] on an already bound listener.
pub fn tls_incoming_from(listener: TcpListener, config: ServerConfig) -> TlsIncoming {
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            // Backpressure, not refusal: with every handshake slot taken, stop accepting and
            // let the kernel's backlog hold new connections until a slot frees (a handshake
            // ends or times out). A burst of real clients then waits briefly instead of being
            // reset; a flood of idle connections still holds at most this many slots.
            let permit = tokio::select! {
                p = pending.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
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
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                match r {
                    Ok(Ok(tls)) => {
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
    }
}

/// The verified client certificate chain of a request, if any.
pub fn peer_identity_of<T>(req: &tonic::Request<T>) -> Option<crate::PeerIdentity> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    crate::peer_identity(leaf).ok()
}
