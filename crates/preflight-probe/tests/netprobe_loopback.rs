//! Probe listeners and the probe connector over real loopback sockets (no root needed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use preflight_probe::netprobe::{
    probe_many, scan_ports, ListenerLimits, ListenerRequestError, PortStatus, ProbeListeners,
    ProbeOutcome, ProbeRequestError, ScanState, MAX_LISTENER_PORTS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NONCE: [u8; 32] = [7u8; 32];
const TIMEOUT: Duration = Duration::from_millis(1000);

/// A port that was free a moment ago (the kernel picked it).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((LO, 0))?;
    Ok(l.local_addr()?.port())
}

async fn probe1(port: u16, nonce: [u8; 32]) -> Result<preflight_probe::netprobe::ProbeResult> {
    let mut r = probe_many(vec![(LO, port)], nonce, TIMEOUT, 4).await?;
    r.pop().context("one result per target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_proves_itself() -> Result<()> {
    let ports = [free_port()?, free_port()?];
    let (handle, outcomes) = ProbeListeners::open(
        LO,
        &ports,
        NONCE,
        Duration::from_secs(30),
        &[],
        &ListenerLimits::default(),
    )
    .await?;
    ensure!(
        outcomes.iter().all(|o| o.status == PortStatus::Listening),
        "{outcomes:?}"
    );
    let results = probe_many(ports.iter().map(|&p| (LO, p)).collect(), NONCE, TIMEOUT, 4).await?;
    for r in &results {
        ensure!(r.outcome == ProbeOutcome::Verified, "{r:?}");
        ensure!(r.connect_us.is_some(), "{r:?}");
    }
    ensure!(
        results.iter().map(|r| r.port).collect::<Vec<_>>() == ports,
        "results keep target order"
    );
    ensure!(
        handle.proofs_sent() == 2,
        "proofs sent {}",
        handle.proofs_sent()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_nonce_is_not_verified() -> Result<()> {
    let port = free_port()?;
    let (_handle, _) = ProbeListeners::open(
        LO,
        &[port],
        NONCE,
        Duration::from_secs(30),
        &[],
        &ListenerLimits::default(),
    )
    .await?;
    let mut other = NONCE;
    other[0] ^= 1;
    let r = probe1(port, other).await?;
    ensure!(r.outcome == ProbeOutcome::Open, "{r:?}");
    ensure!(
        r.detail.as_deref().unwrap_or("").contains("does not match"),
        "{r:?}"
    );
    Ok(())
}

/// Plain servers that accept but cannot prove: silent, closing, garbage, a forged proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_services_are_open_not_verified() -> Result<()> {
    for behaviour in ["silent", "close", "http", "forged"] {
        let listener = tokio::net::TcpListener::bind((LO, 0)).await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 20];
                let _ = s.read_exact(&mut req).await;
                match behaviour {
                    "silent" => tokio::time::sleep(Duration::from_secs(5)).await,
                    "close" => {}
                    "http" => {
                        let _ = s
                            .write_all(b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    _ => {
                        let mut a = b"PFP1".to_vec();
                        a.extend_from_slice(&[0xab; 32]);
                        let _ = s.write_all(&a).await;
                    }
                }
            }
        });
        let t = Instant::now();
        let r = probe_many(vec![(LO, port)], NONCE, Duration::from_millis(300), 1).await?;
        server.abort();
        ensure!(
            r[0].outcome == ProbeOutcome::Open,
            "{behaviour}: {:?}",
            r[0]
        );
        ensure!(
            t.elapsed() < Duration::from_secs(3),
            "{behaviour}: probe not bounded by its timeout"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_refused() -> Result<()> {
    let port = free_port()?;
    let r = probe1(port, NONCE).await?;
    ensure!(r.outcome == ProbeOutcome::Refused, "{r:?}");
    Ok(())
}

/// A listener whose accept queue is full drops SYNs: the probe times out as `filtered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backlog_is_filtered() -> Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(LO, 0).into())?;
    sock.listen(0)?;
    let addr = sock.local_addr()?.as_socket().context("inet address")?;
    // Fill the accept queue (backlog 0 still queues one) without ever accepting.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let r = probe_many(
        vec![(LO, addr.port())],
        NONCE,
        Duration::from_millis(300),
        1,
    )
    .await?;
    ensure!(r[0].outcome == ProbeOutcome::Filtered, "{:?}", r[0]);
    ensure!(r[0].connect_us.is_none(), "{:?}", r[0]);
    let s = scan_ports(LO, &[addr.port()], Duration::from_millis(300), 1).await?;
    ensure!(s[0].state == ScanState::Filtered, "{:?}", s[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_is_gone_after_ttl_and_on_drop() -> Result<()> {
    let port = free_port()?;
    let ttl = Duration::from_millis(400);
    let (handle, _) =
        ProbeListeners::open(LO, &[port], NONCE, ttl, &[], &ListenerLimits::default()).await?;
    ensure!(probe1(port, NONCE).await?.outcome == ProbeOutcome::Verified);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = probe1(port, NONCE).await?;
        if r.outcome == ProbeOutcome::Refused {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "listener still answers 5 s after a 400 ms ttl: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(handle.expires_at() <= Instant::now());
    ensure!(handle.is_closed());

    let port = free_port()?;
    let (handle, _) = ProbeListeners::open(
        LO,
        &[port],
        NONCE,
        Duration::from_secs(60),
        &[],
        &ListenerLimits::default(),
    )
    .await?;
    ensure!(probe1(port, NONCE).await?.outcome == ProbeOutcome::Verified);
    handle.close().await;
    ensure!(
        probe1(port, NONCE).await?.outcome == ProbeOutcome::Refused,
        "closed listener still answers"
    );

    // Dropping the handle closes the listeners; detaching keeps them until the ttl.
    let (p1, p2) = (free_port()?, free_port()?);
    let limits = ListenerLimits::default();
    let (dropped, _) =
        ProbeListeners::open(LO, &[p1], NONCE, Duration::from_secs(60), &[], &limits).await?;
    let (detached, _) =
        ProbeListeners::open(LO, &[p2], NONCE, Duration::from_millis(1500), &[], &limits).await?;
    drop(dropped);
    detached.detach();
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe1(p1, NONCE).await?.outcome != ProbeOutcome::Refused {
        ensure!(
            Instant::now() < deadline,
            "dropped handle left its listener open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        probe1(p2, NONCE).await?.outcome == ProbeOutcome::Verified,
        "detached listener closed early"
    );
    while probe1(p2, NONCE).await?.outcome != ProbeOutcome::Refused {
        ensure!(
            Instant::now() < deadline,
            "detached listener outlived its ttl"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_and_forbidden_ports_are_refused_per_port() -> Result<()> {
    let busy = std::net::TcpListener::bind((LO, 0))?;
    let busy_port = busy.local_addr()?.port();
    let agent_port = free_port()?;
    let free = free_port()?;
    let (handle, outcomes) = ProbeListeners::open(
        LO,
        &[busy_port, agent_port, free],
        NONCE,
        Duration::from_secs(30),
        &[agent_port],
        &ListenerLimits::default(),
    )
    .await?;
    match &outcomes[0].status {
        PortStatus::InUse { owner: Some(owner) } => {
            ensure!(
                owner.pid == std::process::id(),
                "owner {owner:?} is not this test process"
            );
            ensure!(!owner.name.is_empty());
        }
        other => anyhow::bail!("busy port: {other:?}"),
    }
    ensure!(
        outcomes[1].status == PortStatus::Forbidden,
        "{:?}",
        outcomes[1]
    );
    ensure!(
        outcomes[2].status == PortStatus::Listening,
        "{:?}",
        outcomes[2]
    );
    ensure!(handle.ports() == [free]);
    // The busy port still belongs to its owner: a probe reaches it but it cannot prove itself.
    let r = probe_many(vec![(LO, busy_port)], NONCE, Duration::from_millis(200), 1).await?;
    ensure!(r[0].outcome == ProbeOutcome::Open, "{:?}", r[0]);
    drop(busy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listener_requests_are_refused_whole() -> Result<()> {
    let limits = ListenerLimits::default();
    let ttl = Duration::from_secs(5);
    let too_many: Vec<u16> = (20000..20000 + MAX_LISTENER_PORTS as u16 + 1).collect();
    let e = ProbeListeners::open(LO, &too_many, NONCE, ttl, &[], &limits)
        .await
        .err();
    ensure!(
        e == Some(ListenerRequestError::TooManyPorts {
            requested: MAX_LISTENER_PORTS + 1,
            max: MAX_LISTENER_PORTS
        }),
        "{e:?}"
    );
    let small = ListenerLimits {
        max_ports: 2,
        ..ListenerLimits::default()
    };
    let e = ProbeListeners::open(LO, &[1, 2, 3], NONCE, ttl, &[], &small)
        .await
        .err();
    ensure!(
        matches!(
            e,
            Some(ListenerRequestError::TooManyPorts {
                requested: 3,
                max: 2
            })
        ),
        "{e:?}"
    );
    let e = ProbeListeners::open(LO, &[], NONCE, ttl, &[], &limits)
        .await
        .err();
    ensure!(e == Some(ListenerRequestError::NoPorts), "{e:?}");
    let e = ProbeListeners::open(LO, &[0], NONCE, ttl, &[], &limits)
        .await
        .err();
    ensure!(e == Some(ListenerRequestError::PortZero), "{e:?}");
    let e = ProbeListeners::open(LO, &[5000, 5000], NONCE, ttl, &[], &limits)
        .await
        .err();
    ensure!(
        e == Some(ListenerRequestError::DuplicatePort(5000)),
        "{e:?}"
    );
    let e = ProbeListeners::open(LO, &[5000], NONCE, Duration::from_secs(601), &[], &limits)
        .await
        .err();
    ensure!(matches!(e, Some(ListenerRequestError::Ttl { .. })), "{e:?}");
    let e = ProbeListeners::open(LO, &[5000], NONCE, Duration::ZERO, &[], &limits)
        .await
        .err();
    ensure!(matches!(e, Some(ListenerRequestError::Ttl { .. })), "{e:?}");
    let e = ProbeListeners::open(LO, &[5000], [0u8; 32], ttl, &[], &limits)
        .await
        .err();
    ensure!(e == Some(ListenerRequestError::ZeroNonce), "{e:?}");
    let multicast = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1));
    let e = ProbeListeners::open(multicast, &[5000], NONCE, ttl, &[], &limits)
        .await
        .err();
    ensure!(
        e == Some(ListenerRequestError::BindAddress(multicast)),
        "{e:?}"
    );
    let e = e.context("error")?.to_string();
    ensure!(e.contains("224.0.0.1"), "message names the value: {e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_probe_requests_are_refused_whole() -> Result<()> {
    let e = probe_many(vec![], NONCE, TIMEOUT, 4).await.err();
    ensure!(e == Some(ProbeRequestError::NoTargets));
    let e = probe_many(vec![(LO, 1); 4097], NONCE, TIMEOUT, 4)
        .await
        .err();
    ensure!(
        matches!(
            e,
            Some(ProbeRequestError::TooManyTargets {
                requested: 4097,
                ..
            })
        ),
        "{e:?}"
    );
    let e = probe_many(vec![(LO, 0)], NONCE, TIMEOUT, 4).await.err();
    ensure!(e == Some(ProbeRequestError::PortZero(LO)));
    let e = probe_many(vec![(LO, 1)], NONCE, Duration::ZERO, 4)
        .await
        .err();
    ensure!(
        matches!(e, Some(ProbeRequestError::Timeout { .. })),
        "{e:?}"
    );
    let e = probe_many(vec![(LO, 1)], NONCE, Duration::from_secs(31), 4)
        .await
        .err();
    ensure!(
        matches!(e, Some(ProbeRequestError::Timeout { .. })),
        "{e:?}"
    );
    let e = probe_many(vec![(LO, 1)], NONCE, TIMEOUT, 0).await.err();
    ensure!(e == Some(ProbeRequestError::Concurrency(0)));
    let e = probe_many(vec![(LO, 1)], [0u8; 32], TIMEOUT, 1).await.err();
    ensure!(e == Some(ProbeRequestError::ZeroNonce));
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let e = probe_many(vec![(any, 1)], NONCE, TIMEOUT, 1).await.err();
    ensure!(e == Some(ProbeRequestError::BadAddress(any)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_scan_finds_exactly_the_open_ports() -> Result<()> {
    let servers: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind((LO, 0)))
        .collect::<std::io::Result<_>>()?;
    let open: Vec<u16> = servers
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    // A window of ports around the open ones, plus the open ones themselves.
    let mut ports: Vec<u16> =
        (open[0].saturating_sub(200).max(1)..open[0].saturating_add(200)).collect();
    let extra: Vec<u16> = open
        .iter()
        .copied()
        .filter(|p| !ports.contains(p))
        .collect();
    ports.extend(extra);
    let results = scan_ports(LO, &ports, Duration::from_millis(500), 256).await?;
    ensure!(results.len() == ports.len());
    let mut found: Vec<u16> = results
        .iter()
        .filter(|r| r.state == ScanState::Open)
        .map(|r| r.port)
        .collect();
    found.sort_unstable();
    let mut want = open.clone();
    want.sort_unstable();
    // Other processes may listen inside the window; every port we opened must be found and
    // everything found must really accept.
    for p in &want {
        ensure!(found.contains(p), "open port {p} not found: {found:?}");
    }
    for p in &found {
        ensure!(
            std::net::TcpStream::connect((LO, *p)).is_ok(),
            "port {p} reported open but refuses"
        );
    }
    ensure!(
        results
            .iter()
            .all(|r| matches!(r.state, ScanState::Open | ScanState::Closed)),
        "loopback gives open or closed only"
    );
    drop(servers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_listener_proves_itself() -> Result<()> {
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let Ok(probe) = std::net::TcpListener::bind((v6, 0)) else {
        eprintln!("SKIP: no IPv6 loopback on this host");
        return Ok(());
    };
    let port = probe.local_addr()?.port();
    drop(probe);
    let (_handle, outcomes) = ProbeListeners::open(
        v6,
        &[port],
        NONCE,
        Duration::from_secs(30),
        &[],
        &ListenerLimits::default(),
    )
    .await?;
    ensure!(outcomes[0].status == PortStatus::Listening, "{outcomes:?}");
    let r = probe_many(vec![(v6, port)], NONCE, TIMEOUT, 1).await?;
    ensure!(r[0].outcome == ProbeOutcome::Verified, "{:?}", r[0]);
    Ok(())
}

/// A connection that sends nothing is closed after the handshake timeout; one that sends
/// something other than a probe request gets no answer and is not read beyond 20 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_bounds_each_connection() -> Result<()> {
    let port = free_port()?;
    let limits = ListenerLimits {
        handshake_timeout: Duration::from_millis(200),
        ..ListenerLimits::default()
    };
    let (handle, _) =
        ProbeListeners::open(LO, &[port], NONCE, Duration::from_secs(30), &[], &limits).await?;

    let mut silent = tokio::net::TcpStream::connect((LO, port)).await?;
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await??;
    ensure!(n == 0, "silent connection got {n} bytes");
    ensure!(
        t.elapsed() < Duration::from_secs(2),
        "silent connection held for {:?}",
        t.elapsed()
    );

    let mut garbage = tokio::net::TcpStream::connect((LO, port)).await?;
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n\r\n\r\n").await?;
    // The listener reads only the 20 request bytes and closes; the unread rest makes the
    // kernel answer with a reset, which is just as much "no answer".
    let n = match tokio::time::timeout(Duration::from_secs(3), garbage.read(&mut buf)).await? {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
        Err(e) => return Err(e.into()),
    };
    ensure!(n == 0, "garbage request got an answer of {n} bytes");

    // A well-formed request gets exactly the 36-byte answer, then the listener closes.
    let mut big = tokio::net::TcpStream::connect((LO, port)).await?;
    let mut req = b"PFP1".to_vec();
    req.extend_from_slice(&[1u8; 16]);
    big.write_all(&req).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), big.read_to_end(&mut answer)).await??;
    ensure!(
        answer.len() == 36 && answer.starts_with(b"PFP1"),
        "answer {} bytes",
        answer.len()
    );
    ensure!(handle.proofs_sent() == 1 && handle.connections_accepted() == 3);
    Ok(())
}
