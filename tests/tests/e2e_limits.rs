//! Load shedding on both real servers: given a tiny in-flight bound (the hidden `--max-inflight` of `serve` and `run`),
//! a flood of concurrent requests over separate TLS connections gets some RESOURCE_EXHAUSTED
//! answers quickly, never another error, and the server serves normally afterwards.

use std::time::{Duration, Instant};

use preflight_proto::v1 as pb;
use preflight_tests::cluster::{Agent, Controller};
use tonic::transport::Channel;

const FLOOD: usize = 48;
const LIMIT: &str = "2";

fn rt() -> tokio::runtime::Runtime {
    preflight_pki::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Counts of a flood's outcomes, and the slowest shed answer.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    shed: usize,
    other: Vec<String>,
    slowest_shed: Duration,
}

/// Fires one request per channel at the same moment (the connections are made first) and
/// tallies the answers.
async fn flood<F, Fut>(channels: Vec<Channel>, call: F) -> Outcome
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(channels.len()));
    let mut tasks = Vec::new();
    for ch in channels {
        let fut = call(ch);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            (fut.await, t.elapsed())
        }));
    }
    let mut o = Outcome::default();
    for t in tasks {
        match t.await.unwrap() {
            (Ok(()), _) => o.ok += 1,
            (Err(s), d) if s.code() == tonic::Code::ResourceExhausted => {
                assert!(s.message().contains("over capacity"), "{s:?}");
                o.shed += 1;
                o.slowest_shed = o.slowest_shed.max(d);
            }
            (Err(s), _) => o.other.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    o
}

fn check(what: &str, o: &Outcome) {
    eprintln!("{what}: {o:?}");
    assert!(
        o.other.is_empty(),
        "{what}: unexpected errors {:?}",
        o.other
    );
    assert!(
        o.shed > 0,
        "{what}: nothing shed with {FLOOD} requests over a bound of {LIMIT}: {o:?}"
    );
    assert!(o.ok > 0, "{what}: nothing served: {o:?}");
    assert!(
        o.slowest_shed < Duration::from_secs(2),
        "{what}: shedding must answer at once: {o:?}"
    );
}

#[test]
fn both_servers_shed_load_with_resource_exhausted_and_recover() {
    let ctl = Controller::start(&["--heartbeat-interval", "1s", "--max-inflight", LIMIT]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "shed-1", "127.0.0.41").unwrap();
    a.start_with(&["--max-inflight", LIMIT]).unwrap();
    let agent_addr = ctl.wait_online("shed-1").to_string();

    let ca_pem = std::fs::read_to_string(ctl.data().join("ca.pem")).unwrap();
    let ca = preflight_pki::CertificateAuthority::from_pem(
        &ca_pem,
        &std::fs::read_to_string(ctl.data().join("ca.key")).unwrap(),
    )
    .unwrap();
    let controller_id = ca.issue_controller(&[], Duration::from_secs(600)).unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", ctl.admin_token).parse().unwrap();
    let ctl_addr = ctl.addr.to_string();

    rt().block_on(async {
        let to_controller = || async {
            let tls = preflight_pki::client_config(&ca_pem, None).unwrap();
            preflight_pki::transport::connect(
                &ctl_addr,
                tls,
                preflight_pki::controller_server_name(),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
        };
        let to_agent = || async {
            let tls = preflight_pki::client_config(&ca_pem, Some(&controller_id)).unwrap();
            preflight_pki::transport::connect(
                &agent_addr,
                tls,
                preflight_pki::agent_server_name("shed-1").unwrap(),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
        };
        let inventory_via_controller = |ch: Channel| {
            let token = token.clone();
            async move {
                let mut req = tonic::Request::new(pb::GetAgentInventoryRequest {
                    agent_id: "shed-1".into(),
                });
                req.metadata_mut().insert("authorization", token);
                pb::controller_client::ControllerClient::new(ch)
                    .get_agent_inventory(req)
                    .await
                    .map(|_| ())
            }
        };
        let inventory_at_agent = |ch: Channel| async move {
            pb::agent_client::AgentClient::new(ch)
                .get_inventory(pb::GetInventoryRequest {})
                .await
                .map(|_| ())
        };

        // The controller.
        let mut chans = Vec::new();
        for _ in 0..FLOOD {
            chans.push(to_controller().await);
        }
        let o = flood(chans, inventory_via_controller).await;
        check("controller", &o);
        // It recovers: one request at a time is served.
        for _ in 0..3 {
            inventory_via_controller(to_controller().await)
                .await
                .expect("controller serves again after the flood");
        }

        // The agent, called directly with a controller certificate.
        let mut chans = Vec::new();
        for _ in 0..FLOOD {
            chans.push(to_agent().await);
        }
        let o = flood(chans, inventory_at_agent).await;
        check("agent", &o);
        for _ in 0..3 {
            inventory_at_agent(to_agent().await)
                .await
                .expect("agent serves again after the flood");
        }
    });
    // The agent kept heartbeating through it (or caught up right after).
    ctl.wait_online("shed-1");
}

// ---- Connection limits of the TLS listeners (preflight_pki::limits) ----

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A flood of `n` idle TCP connections to `dst` from the source addresses `srcs` (round robin):
/// each connects, sends nothing, waits until the server closes it, and reconnects (after a
/// short pause, so a refusing server is not spun at full speed on a shared test machine).
/// Floods run one test at a time ([`FLOODS`]), so their timings measure the server, not the
/// other floods.
struct Flood {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicUsize>,
}

impl Flood {
    /// With `one_byte`, each connection sends the first byte of a TLS record and stalls (a
    /// slow handshake, which holds a handshake slot), else nothing at all.
    fn start(
        rt: &tokio::runtime::Runtime,
        srcs: &[IpAddr],
        dst: SocketAddr,
        n: usize,
        one_byte: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicUsize::new(0));
        for i in 0..n {
            let src = srcs[i % srcs.len()];
            let (stop, connects) = (stop.clone(), connects.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = tcp_from(src, dst).await {
                        connects.fetch_add(1, Ordering::Relaxed);
                        if one_byte {
                            let _ = s.write_all(&[0x16]).await;
                        }
                        let mut b = [0u8; 64];
                        // Held until the server closes it (or the flood stops).
                        let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b)).await;
                    }
                    // Reconnect pacing of the flood itself (it waits for nothing).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        Self { stop, connects }
    }

    /// Waits until every flood connection was made at least once.
    fn wait_started(&self, n: usize) {
        preflight_tests::cluster::eventually(Duration::from_secs(20), "flood connected", || {
            (self.connects.load(Ordering::Relaxed) >= n).then_some(())
        });
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());

async fn tcp_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    s.connect(dst).await
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn controller_identity(ctl: &Controller) -> preflight_pki::Identity {
    preflight_pki::Identity {
        cert_pem: std::fs::read_to_string(ctl.data().join("controller.pem")).unwrap(),
        key_pem: std::fs::read_to_string(ctl.data().join("controller.key")).unwrap(),
    }
}

fn ca_pem(ctl: &Controller) -> String {
    std::fs::read_to_string(ctl.data().join("ca.pem")).unwrap()
}

/// What firewall confirmation does: a fresh mTLS connection with the controller's identity to
/// the agent, and a `ConfirmFirewall` call (for a change that does not exist, so the agent
/// answers with an error of its own, not a transport failure). Returns the connect time.
async fn controller_to_agent(ctl: &Controller, agent_id: &str, addr: SocketAddr) -> Duration {
    let tls = preflight_pki::client_config(&ca_pem(ctl), Some(&controller_identity(ctl))).unwrap();
    let t = Instant::now();
    let ch = preflight_pki::transport::connect(
        &addr.to_string(),
        tls,
        preflight_pki::agent_server_name(agent_id).unwrap(),
        Duration::from_secs(10),
    )
    .await
    .expect("controller identity connects to the agent");
    let took = t.elapsed();
    let r = pb::agent_client::AgentClient::new(ch)
        .confirm_firewall(pb::ConfirmFirewallRequest {
            change_id: "no-such-change".into(),
            caller: None,
        })
        .await;
    if let Err(s) = &r {
        assert!(
            !matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "the agent answered over the connection: {s:?}"
        );
    }
    took
}

fn timed_agents(ctl: &Controller) -> Duration {
    let t = Instant::now();
    ctl.run(&["agents"]).expect("preflight agents");
    t.elapsed()
}

/// 300 idle reconnecting connections from one address to each server: `preflight agents` (from
/// another address) stays fast, and so does the controller's fresh mTLS connection to the
/// agent (firewall confirmation).
#[test]
fn idle_flood_from_one_source_does_not_stall_other_clients() {
    let _one = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "flood-1", "127.0.0.42").unwrap();
    a.start().unwrap();
    let agent_addr = ctl.wait_online("flood-1");
    let rt = rt();
    let f1 = Flood::start(&rt, &[ip("127.0.0.2")], ctl.addr, 300, false);
    let f2 = Flood::start(&rt, &[ip("127.0.0.3")], agent_addr, 300, false);
    f1.wait_started(300);
    f2.wait_started(300);
    // Before the fix each round took 7-9 s. The median of three rounds must be under 1 s and
    // none over 3 s, so one slow process start on a loaded CI machine is no failure.
    let (mut cli, mut confirm) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        cli.push(timed_agents(&ctl));
        confirm.push(rt.block_on(controller_to_agent(&ctl, "flood-1", agent_addr)));
    }
    for (what, mut t) in [
        ("preflight agents", cli),
        ("the controller's connection to the agent", confirm),
    ] {
        t.sort();
        assert!(
            t[1] < Duration::from_secs(1) && t[2] < Duration::from_secs(3),
            "{what} under the flood took {t:?} (median must be under 1 s, every round under 3 s)"
        );
    }
    drop((f1, f2));
}

/// 300 slow handshakes (one byte, then nothing) spread over 30 addresses, against an agent with
/// a small handshake cap: other sources stop at the caps, and the reserve keeps the
/// controller's address (from agent.toml) getting through.
#[test]
fn spread_flood_leaves_the_reserve_to_the_controller() {
    let _one = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
    let ctl = Controller::start(&["--heartbeat-interval", "1s"]).unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut a = Agent::enroll(&ctl, base.path(), "flood-2", "127.0.0.43").unwrap();
    a.start_with(&["--max-pending-handshakes", "40"]).unwrap();
    let agent_addr = ctl.wait_online("flood-2");
    let rt = rt();
    let srcs: Vec<IpAddr> = (1..=30).map(|i| ip(&format!("127.0.1.{i}"))).collect();
    let flood = Flood::start(&rt, &srcs, agent_addr, 300, true);
    flood.wait_started(300);
    // The median of three rounds under 1 s, none over 3 s (a loaded CI machine may be slow
    // once; without the reserve the connection waits for the 10 s handshake deadline).
    let mut t: Vec<Duration> = (0..3)
        .map(|_| rt.block_on(controller_to_agent(&ctl, "flood-2", agent_addr)))
        .collect();
    t.sort();
    assert!(
        t[1] < Duration::from_secs(1) && t[2] < Duration::from_secs(3),
        "the controller's connection to the agent took {t:?} under the flood"
    );
    drop(flood);
}

/// A connection that sends nothing is closed at the first-byte deadline, long before the
/// handshake deadline (10 s).
#[test]
fn silent_connection_is_closed_at_the_first_byte_deadline() {
    let ctl = Controller::start(&["--first-byte-timeout-ms", "300"]).unwrap();
    let rt = rt();
    rt.block_on(async {
        let t = Instant::now();
        let mut s = tcp_from(ip("127.0.0.4"), ctl.addr).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("closed within 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "the server sent nothing and closed");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    });
}

/// A TLS + HTTP/2 connection from `src` to the controller that sends the HTTP/2 preface and
/// then nothing: `Some` once the server's SETTINGS arrived, `None` when the server closed it
/// instead.
async fn idle_h2(
    ctl: &Controller,
    src: IpAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = preflight_pki::client_config(&ca_pem(ctl), None).unwrap();
    let mut cfg = tls;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tcp_from(src, ctl.addr).await.ok()?;
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(preflight_pki::controller_server_name(), tcp)
        .await
        .ok()?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .ok()?;
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    (head[3] == 0x04).then_some(s)
}

/// Reads until the server closes `s`; false when it is still open after `within`.
async fn closed_within(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Idle TLS + HTTP/2 connections beyond the caps are refused: per source, then in total;
/// and an idle connection is closed after the idle timeout while the server keeps serving.
#[test]
fn connections_beyond_the_caps_are_refused_and_idle_ones_closed() {
    let ctl = Controller::start(&[
        "--max-connections",
        "5",
        "--max-connections-per-source",
        "3",
    ])
    .unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(
                idle_h2(&ctl, ip("127.0.0.5"))
                    .await
                    .unwrap_or_else(|| panic!("connection {i} from 127.0.0.5")),
            );
        }
        assert!(
            idle_h2(&ctl, ip("127.0.0.5")).await.is_none(),
            "a 4th from the same source is refused"
        );
        for i in 0..2 {
            held.push(
                idle_h2(&ctl, ip("127.0.0.6"))
                    .await
                    .unwrap_or_else(|| panic!("connection {i} from 127.0.0.6")),
            );
        }
        assert!(
            idle_h2(&ctl, ip("127.0.0.7")).await.is_none(),
            "a 6th over all is refused"
        );
        // Held connections stay open (no idle timeout at the default), and closing them frees
        // the slots.
        assert!(!closed_within(&mut held[0], Duration::from_millis(300)).await);
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while idle_h2(&ctl, ip("127.0.0.7")).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "slots are given back when connections close"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// An established connection that makes no request is closed after the (hidden, test-sized)
/// idle timeout; the server goes on serving new connections.
#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    let ctl = Controller::start(&["--idle-timeout-ms", "500"]).unwrap();
    let rt = rt();
    rt.block_on(async {
        let t = Instant::now();
        let mut s = idle_h2(&ctl, ip("127.0.0.8")).await.expect("connects");
        assert!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            "idle connection closed"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(450),
            "{:?}",
            t.elapsed()
        );
    });
    assert!(ctl.run(&["agents"]).is_ok());
}
