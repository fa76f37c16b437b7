//! Probes and bandwidth between network namespaces (root only; prints `SKIP: ...` otherwise).
//!
//! Three hosts on a bridge. h2 runs probe listeners, an unrelated TCP service and two bandwidth
//! receivers, with nftables dropping one probed port, resetting another and answering a third
//! with ICMP host-unreachable. h1 and h3 probe h2 and must classify every port correctly; h1 then
//! measures bandwidth to h2 in both directions.

#[path = "../../../tests/src/netns.rs"]
mod netns;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use preflight_probe::bandwidth::{
    self, BandwidthReceiver, BandwidthReport, Direction, ReceiverOptions, SendOptions,
};
use preflight_probe::netprobe::{
    probe_many, scan_ports, ListenerLimits, PortStatus, ProbeListeners, ProbeOutcome, ScanState,
};
use tokio::io::AsyncWriteExt;

const NONCE: [u8; 32] = [0x5a; 32];
const TOKEN: [u8; 32] = [0xc3; 32];
const P_OK: u16 = 8080;
const P_DROP: u16 = 8081;
const P_RESET: u16 = 8082;
const P_UNREACH: u16 = 8083;
const P_OTHER: u16 = 8084;
const P_CLOSED: u16 = 8085;
const P_BW_FWD: u16 = 5201;
const P_BW_REV: u16 = 5202;
const STREAMS: u32 = 2;
const BW_DURATION: Duration = Duration::from_secs(1);

fn ruleset() -> String {
    format!(
        "table ip pf_probe_test {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {P_DROP} drop
    tcp dport {P_RESET} reject with tcp reset
    tcp dport {P_UNREACH} reject with icmp type host-unreachable
  }}
}}
"
    )
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn expected() -> Vec<(u16, ProbeOutcome)> {
    vec![
        (P_OK, ProbeOutcome::Verified),
        (P_DROP, ProbeOutcome::Filtered),
        (P_RESET, ProbeOutcome::Refused),
        (P_UNREACH, ProbeOutcome::Unreachable),
        (P_OTHER, ProbeOutcome::Open),
        (P_CLOSED, ProbeOutcome::Refused),
    ]
}

#[test]
fn probes_and_bandwidth_across_namespaces() -> Result<()> {
    if let Some(why) = netns::root_available() {
        eprintln!("SKIP: {why}");
        return Ok(());
    }
    netns::cleanup_stale()?;
    let lab = netns::NetLab::new(3)?;
    let names = lab.namespaces().to_vec();
    let h2 = lab.host(2).clone();
    let h2_ip = IpAddr::V4(h2.ip);

    let rules = tempfile::NamedTempFile::new()?;
    std::fs::write(rules.path(), ruleset())?;
    h2.exec(
        "nft",
        &["-f", rules.path().to_str().context("utf-8 temp path")?],
    )?;

    // h2: the target side.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let target = h2.run_in(move || {
        runtime()?.block_on(async move {
            let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let ports = [P_OK, P_DROP, P_RESET, P_UNREACH];
            let (listeners, outcomes) = ProbeListeners::open(
                any,
                &ports,
                NONCE,
                Duration::from_secs(60),
                &[],
                &ListenerLimits::default(),
            )
            .await?;
            // An unrelated service that greets like SSH and hangs up.
            let other = tokio::net::TcpListener::bind((any, P_OTHER)).await?;
            let other = tokio::spawn(async move {
                while let Ok((mut s, _)) = other.accept().await {
                    let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
                }
            });
            let opts = |direction| ReceiverOptions {
                ttl: Duration::from_secs(30),
                expected_streams: STREAMS,
                max_duration: Duration::from_secs(5),
                direction,
            };
            let fwd = BandwidthReceiver::start(
                SocketAddr::new(any, P_BW_FWD),
                TOKEN,
                opts(Direction::Forward),
            )
            .await?;
            let rev = BandwidthReceiver::start(
                SocketAddr::new(any, P_BW_REV),
                TOKEN,
                opts(Direction::Reverse),
            )
            .await?;
            ready_tx.send(outcomes)?;
            let (fwd, rev) = tokio::join!(fwd.wait(), rev.wait());
            let _ = stop_rx.await;
            other.abort();
            listeners.close().await;
            Ok((fwd?, rev?))
        })
    })?;
    let outcomes = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("target side never got ready")?;
    ensure!(
        outcomes.iter().all(|o| o.status == PortStatus::Listening),
        "{outcomes:?}"
    );

    // h1 and h3: the source side.
    for source in [1, 3] {
        let results = lab
            .host(source)
            .run_in(move || {
                runtime()?.block_on(async move {
                    let targets = expected().iter().map(|(p, _)| (h2_ip, *p)).collect();
                    Ok(probe_many(targets, NONCE, Duration::from_millis(800), 8).await?)
                })
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        for ((port, want), got) in expected().into_iter().zip(&results) {
            ensure!(
                got.port == port && got.outcome == want,
                "from h{source}: port {port} want {want:?}, got {got:?}"
            );
        }
    }

    // A plain connect scan of the same window agrees.
    let scan = lab
        .host(1)
        .run_in(move || {
            runtime()?.block_on(async move {
                let ports: Vec<u16> = (8070..8100).collect();
                Ok(scan_ports(h2_ip, &ports, Duration::from_millis(800), 64).await?)
            })
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("scan thread panicked"))??;
    for r in &scan {
        let want = match r.port {
            P_OK | P_OTHER => ScanState::Open,
            P_DROP => ScanState::Filtered,
            P_UNREACH => ScanState::Unreachable,
            _ => ScanState::Closed,
        };
        ensure!(
            r.state == want,
            "scan port {}: want {want:?}, got {r:?}",
            r.port
        );
    }

    // Bandwidth h1 -> h2 and h2 -> h1.
    let client = lab
        .host(1)
        .run_in(move || {
            runtime()?.block_on(async move {
                let opts = |direction| SendOptions {
                    streams: STREAMS,
                    duration: BW_DURATION,
                    write_size: bandwidth::DEFAULT_WRITE_SIZE,
                    direction,
                };
                let fwd = bandwidth::send(
                    SocketAddr::new(h2_ip, P_BW_FWD),
                    TOKEN,
                    &opts(Direction::Forward),
                )
                .await?;
                let rev = bandwidth::send(
                    SocketAddr::new(h2_ip, P_BW_REV),
                    TOKEN,
                    &opts(Direction::Reverse),
                )
                .await?;
                Ok((fwd, rev))
            })
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("bandwidth thread panicked"))??;
    let _ = stop_tx.send(());
    let server = target
        .join()
        .map_err(|_| anyhow::anyhow!("target thread panicked"))??;
    let check = |r: &BandwidthReport, what: &str| -> Result<()> {
        ensure!(r.streams.len() == STREAMS as usize, "{what}: {r:?}");
        ensure!(
            r.streams.iter().all(|s| s.bytes > 0 && s.mbit_per_s > 0.0),
            "{what}: {r:?}"
        );
        ensure!(r.total_mbit_per_s > 0.0, "{what}: {r:?}");
        Ok(())
    };
    check(&client.0, "forward, sender")?;
    check(&server.0, "forward, receiver")?;
    check(&client.1, "reverse, receiving client")?;
    check(&server.1, "reverse, sending receiver")?;
    ensure!(
        client.0.total_bytes == server.0.total_bytes
            && client.1.total_bytes == server.1.total_bytes
    );
    ensure!(
        client.0.retransmits.is_some() && server.1.retransmits.is_some(),
        "senders read tcp_info"
    );
    eprintln!(
        "veth bandwidth: forward {:.0} Mbit/s, reverse {:.0} Mbit/s",
        client.0.total_mbit_per_s, client.1.total_mbit_per_s
    );

    drop(lab);
    for n in &names {
        ensure!(!netns::namespace_exists(n), "namespace {n} left behind");
    }
    Ok(())
}
