//! Bandwidth receiver and sender over real loopback sockets (no root needed).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Result};
use preflight_probe::bandwidth::{
    send, BandwidthError, BandwidthReceiver, BandwidthReport, Direction, ReceiverOptions, Role,
    SendOptions, DEFAULT_WRITE_SIZE,
};

const TOKEN: [u8; 32] = [42u8; 32];
const DURATION: Duration = Duration::from_millis(700);

fn bind() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn receiver_opts(streams: u32, direction: Direction) -> ReceiverOptions {
    ReceiverOptions {
        ttl: Duration::from_secs(10),
        expected_streams: streams,
        max_duration: Duration::from_secs(5),
        direction,
    }
}

fn send_opts(streams: u32, direction: Direction) -> SendOptions {
    SendOptions {
        streams,
        duration: DURATION,
        write_size: DEFAULT_WRITE_SIZE,
        direction,
    }
}

fn check_goodput(r: &BandwidthReport, streams: u32) -> Result<()> {
    ensure!(r.streams.len() == streams as usize, "{r:?}");
    for (i, s) in r.streams.iter().enumerate() {
        ensure!(s.stream == i as u32, "streams in index order: {r:?}");
        ensure!(
            s.bytes > 0 && s.mbit_per_s > 0.0 && s.duration_us > 0,
            "stream {i}: {s:?}"
        );
    }
    ensure!(r.total_bytes == r.streams.iter().map(|s| s.bytes).sum::<u64>());
    ensure!(r.total_mbit_per_s > 0.0, "{r:?}");
    // The receiving end timed about the requested duration, not wildly more or less.
    let us = r.duration_us as f64;
    ensure!(
        us > DURATION.as_micros() as f64 * 0.5 && us < DURATION.as_micros() as f64 * 3.0,
        "duration {us} us"
    );
    Ok(())
}

async fn run(streams: u32, direction: Direction) -> Result<(BandwidthReport, BandwidthReport)> {
    let rx = BandwidthReceiver::start(bind(), TOKEN, receiver_opts(streams, direction)).await?;
    let addr = rx.local_addr();
    let client = send(addr, TOKEN, &send_opts(streams, direction)).await?;
    let server = rx.wait().await?;
    check_goodput(&client, streams)?;
    check_goodput(&server, streams)?;
    // Both ends report the bytes counted by the receiving end.
    ensure!(
        client.total_bytes == server.total_bytes,
        "client {client:?} server {server:?}"
    );
    Ok((client, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_one_and_four_streams() -> Result<()> {
    for streams in [1, 4] {
        let (client, server) = run(streams, Direction::Forward).await?;
        ensure!(client.role == Role::Sending && server.role == Role::Receiving);
        ensure!(
            client.streams.iter().all(|s| s.retransmits.is_some()),
            "sender has tcp_info: {client:?}"
        );
        ensure!(client.retransmits.is_some() && server.retransmits.is_none());
        ensure!(server.rejected_connections == 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_one_and_four_streams() -> Result<()> {
    for streams in [1, 4] {
        let (client, server) = run(streams, Direction::Reverse).await?;
        ensure!(client.role == Role::Receiving && server.role == Role::Sending);
        ensure!(
            server.retransmits.is_some() && client.retransmits.is_none(),
            "{server:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_rejected() -> Result<()> {
    let opts = ReceiverOptions {
        ttl: Duration::from_millis(1500),
        ..receiver_opts(1, Direction::Forward)
    };
    let rx = BandwidthReceiver::start(bind(), TOKEN, opts).await?;
    let mut wrong = TOKEN;
    wrong[31] ^= 0x80;
    let e = send(rx.local_addr(), wrong, &send_opts(1, Direction::Forward))
        .await
        .err();
    ensure!(matches!(e, Some(BandwidthError::Rejected(_))), "{e:?}");
    // Nothing authenticated, so the one-shot receiver ends at its ttl without a measurement.
    let e = rx.wait().await.err();
    ensure!(matches!(e, Some(BandwidthError::NoStreams { .. })), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_parameters_are_rejected() -> Result<()> {
    // Direction differs from the receiver's.
    let rx = BandwidthReceiver::start(bind(), TOKEN, receiver_opts(1, Direction::Forward)).await?;
    let e = send(rx.local_addr(), TOKEN, &send_opts(1, Direction::Reverse))
        .await
        .err();
    ensure!(matches!(e, Some(BandwidthError::Rejected(_))), "{e:?}");
    drop(rx);
    // Duration over the receiver's maximum.
    let rx = BandwidthReceiver::start(bind(), TOKEN, receiver_opts(1, Direction::Forward)).await?;
    let long = SendOptions {
        duration: Duration::from_secs(6),
        ..send_opts(1, Direction::Forward)
    };
    let e = send(rx.local_addr(), TOKEN, &long).await.err();
    ensure!(matches!(e, Some(BandwidthError::Rejected(_))), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_enforced_before_any_traffic() -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    let e = send(
        addr,
        TOKEN,
        &SendOptions {
            streams: 17,
            ..SendOptions::default()
        },
    )
    .await
    .err();
    ensure!(matches!(e, Some(BandwidthError::Streams(17))), "{e:?}");
    let e = send(
        addr,
        TOKEN,
        &SendOptions {
            streams: 0,
            ..SendOptions::default()
        },
    )
    .await
    .err();
    ensure!(matches!(e, Some(BandwidthError::Streams(0))), "{e:?}");
    let e = send(
        addr,
        TOKEN,
        &SendOptions {
            duration: Duration::from_secs(61),
            ..SendOptions::default()
        },
    )
    .await
    .err();
    ensure!(matches!(e, Some(BandwidthError::Duration { .. })), "{e:?}");
    let e = send(
        addr,
        TOKEN,
        &SendOptions {
            write_size: 0,
            ..SendOptions::default()
        },
    )
    .await
    .err();
    ensure!(matches!(e, Some(BandwidthError::WriteSize(0))), "{e:?}");
    let bad = ReceiverOptions {
        expected_streams: 17,
        ..receiver_opts(1, Direction::Forward)
    };
    ensure!(matches!(
        BandwidthReceiver::start(bind(), TOKEN, bad).await.err(),
        Some(BandwidthError::Streams(17))
    ));
    let bad = ReceiverOptions {
        ttl: Duration::from_secs(601),
        ..receiver_opts(1, Direction::Forward)
    };
    ensure!(matches!(
        BandwidthReceiver::start(bind(), TOKEN, bad).await.err(),
        Some(BandwidthError::Ttl { .. })
    ));
    let bad = ReceiverOptions {
        max_duration: Duration::from_secs(61),
        ..receiver_opts(1, Direction::Forward)
    };
    let e = BandwidthReceiver::start(bind(), TOKEN, bad).await.err();
    ensure!(matches!(e, Some(BandwidthError::Duration { .. })), "{e:?}");
    ensure!(
        e.map(|e| e.to_string())
            .unwrap_or_default()
            .contains("61000 ms"),
        "message names the value"
    );
    Ok(())
}

/// `send_with_progress` reports each whole second while the data still flows (the first one
/// long before the test ends), in order, at most one per second, and with the bytes the
/// report counts for that second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_each_second_while_the_test_runs() -> Result<()> {
    use preflight_probe::bandwidth::send_with_progress;
    for direction in [Direction::Forward, Direction::Reverse] {
        let mut ropts = receiver_opts(2, direction);
        ropts.max_duration = Duration::from_secs(3);
        let rx = BandwidthReceiver::start(bind(), TOKEN, ropts).await?;
        let addr = rx.local_addr();
        let opts = SendOptions {
            duration: Duration::from_secs(3),
            ..send_opts(2, direction)
        };
        let (tx, mut seconds) = tokio::sync::mpsc::channel(64);
        let started = std::time::Instant::now();
        let test =
            tokio::spawn(async move { send_with_progress(addr, TOKEN, &opts, Some(tx)).await });
        let first = tokio::time::timeout(Duration::from_secs(10), seconds.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no progress before the channel closed"))?;
        let at = started.elapsed();
        ensure!(first.second == 0 && first.bytes > 0, "{first:?}");
        ensure!(
            !test.is_finished(),
            "second 0 arrived only after the test ended ({at:?})"
        );
        ensure!(
            at < Duration::from_millis(2500),
            "second 0 arrived at {at:?}"
        );
        let report = test.await??;
        rx.wait().await?;
        let mut got = vec![first];
        while let Some(s) = seconds.recv().await {
            got.push(s);
        }
        ensure!(
            got.iter().enumerate().all(|(i, s)| s.second == i as u32),
            "{got:?}"
        );
        ensure!(got.len() == 3, "one message per whole second: {got:?}");
        for s in &got {
            let in_report = report.per_second_bytes[s.second as usize];
            ensure!(
                s.bytes > 0 && s.bytes <= in_report,
                "second {}: live {} report {in_report}",
                s.second,
                s.bytes
            );
        }
    }
    Ok(())
}
